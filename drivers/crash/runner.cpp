// The crash runner: record a scenario's phases on dm-log-writes, replay to every crash point,
// check each state (cowlab/crash.h).
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "cowlab/diag.h"
#include "cowlab/log_writes.h"
#include "cowlab/scenario.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "crash/internal.h"

namespace cowlab::crash {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

Result<void> run_tool(const std::vector<std::string>& argv) {
  std::string out;
  int rc = COWLAB_TRY(sys::run(argv, &out));
  if (rc != 0)
    return Error(ErrorKind::kSystem, argv[0] + ": exit " + std::to_string(rc) + ": " + out);
  return {};
}

// Test-only fault hook (docs/crash.md): COWLAB_TEST_FAULT=corrupt-thin-metadata damages the
// pool metadata's superblock in every crash state before thin_check runs, so a test shows that
// a pool dm-thin cannot use is caught and reported as the kernel facility's failure.
bool fault_corrupt_thin_metadata() {
  const char* f = std::getenv("COWLAB_TEST_FAULT");
  return f != nullptr && std::string_view(f) == "corrupt-thin-metadata";
}

// Flips one byte of the superblock (block 0) after its checksum field: persistent-data's
// superblock carries a crc32c of the rest of its block (dm-thin-metadata.c,
// thin_sb_validator), so dm-thin and thin_check both refuse it.
Result<void> corrupt_superblock(const std::string& meta) {
  auto fd = COWLAB_TRY(sys::open(meta, O_RDWR | O_CLOEXEC));
  unsigned char byte = 0;
  constexpr off_t kOffset = 64;  // data_space_map_root, covered by the checksum
  if (COWLAB_TRY(sys::pread(fd.get(), &byte, 1, kOffset)) != 1)
    return Error::corrupt("corrupt thin metadata: " + meta + " is too short");
  byte ^= 0xff;
  COWLAB_TRY(sys::pwrite_all(fd.get(), &byte, 1, kOffset));
  return sys::fsync(fd.get());
}

// What a reboot does before it activates a thin pool (lvm's thin_check_executable): check the
// pool's metadata.  For devicemapper's loop-lvm pool in the crash state: "" when the metadata
// is sound (or there is no pool yet), else thin_check's complaint.
std::string check_thin_pool(const std::string& root, const std::string& driver) {
  if (driver != "devicemapper") return "";
  const std::string meta = root + "/devicemapper/devicemapper/metadata";
  auto there = sys::lstat_if_exists(meta);
  if (!there.ok()) return there.error().message();
  if (!*there) return "";
  if (fault_corrupt_thin_metadata())
    if (auto c = corrupt_superblock(meta); !c.ok()) return c.error().message();
  auto r = run_tool({"thin_check", meta});
  return r.ok() ? "" : r.error().message();
}

// Opens the store on `root`, runs phases [from, to), releases everything.  With `stack`, each
// phase is framed by marks "cowlab-begin-<i>" and "cowlab-end-<i>".
Result<void> run_phases(const std::string& root, const std::string& driver, const Backing& b,
                        const std::vector<Phase>& phases, size_t from, size_t to, DmStack* stack) {
  StoreOptions so;
  so.root = root;
  so.driver = driver;
  so.storage_opts = b.storage_opts();
  auto store = COWLAB_TRY(LayerStore::open(so));
  Result<void> r;
  for (size_t i = from; i < to && r.ok(); ++i) {
    if (stack) r = stack->mark("cowlab-begin-" + std::to_string(i));
    if (r.ok()) r = perform(*store, phases[i]);
    if (r.ok() && stack) r = stack->mark("cowlab-end-" + std::to_string(i));
  }
  auto c = store->driver().cleanup();
  if (!r.ok()) return r;
  return c;
}

}  // namespace

std::string CrashResult::to_json_line() const {
  nlohmann::json j{{"scenario", scenario},
                   {"file", file},
                   {"driver", driver},
                   {"status", status},
                   {"reason", reason},
                   {"phases", phases},
                   {"crashed_phases", crashed},
                   {"log_entries", log_entries},
                   {"flush_points", flush_points},
                   {"random_points", random_points},
                   {"states_checked", states_checked},
                   {"kernel_failures", kernel_failures},
                   {"record_s", record_s},
                   {"check_s", check_s}};
  nlohmann::json f = nlohmann::json::array();
  for (const auto& x : findings)
    f.push_back({{"point", x.point},
                 {"phase", x.phase},
                 {"invariant", x.invariant},
                 {"observed", x.observed}});
  j["findings"] = f;
  return j.dump();
}

CrashResult run(const std::string& file, const Options& o) {
  CrashResult res;
  res.file = file;
  res.driver = o.driver;
  auto error = [&](const Error& e) {
    res.status = e.kind() == ErrorKind::kNotSupported ? "skip" : "error";
    res.reason = e.message();
    return res;
  };
  auto loaded = scenario::load(file);
  if (!loaded.ok()) return error(loaded.error());
  const auto& impl = (*loaded)->impl();
  res.scenario = impl.name;
  if (!impl.crash) return error(Error::invalid(file + ": not a crash scenario (no crash: key)"));
  if (impl.docs.size() != 1) return error(Error::invalid(file + ": sweeps cannot be crashed"));
  const auto& rq = impl.requires_;
  if ((!rq.drivers.empty() &&
       std::find(rq.drivers.begin(), rq.drivers.end(), o.driver) == rq.drivers.end()) ||
      std::find(rq.not_drivers.begin(), rq.not_drivers.end(), o.driver) != rq.not_drivers.end())
    return error(Error::not_supported(file + ": requires excludes driver " + o.driver));
  auto backing_r = backing_for(o.driver);
  if (!backing_r.ok()) return error(backing_r.error());

  // Tars and mount points live on the guest's root, never on the recorded device.
  std::string work = o.work_dir + "/" + impl.name + "-" + o.driver;
  // A leftover of an earlier run that died: detach its mounts before removing it.
  for (const auto& m : {work + "/store"})
    if (sys::is_mountpoint(m).value_or(false)) (void)unmount_dir(m);
  (void)sys::remove_all(work);
  if (auto r = sys::mkdir_all(work + "/tars", 0700); !r.ok()) return error(r.error());
  auto phases = build_phases(impl.docs[0], work + "/tars");
  if (!phases.ok()) return error(phases.error().with_context(file));
  auto crashed = crashed_phases(*phases, *impl.crash);
  if (!crashed.ok()) return error(crashed.error().with_context(file));
  for (const auto& p : *phases) res.phases.push_back(p.name);
  for (size_t i : *crashed) res.crashed.push_back((*phases)[i].name);
  Expectation want;
  want.phases = &*phases;
  for (const auto& p : *phases)
    if (p.kind == PhaseKind::kImport) {
      auto m = read_manifest(p.tar);
      if (!m.ok()) return error(m.error());
      want.manifests[p.id] = std::move(*m);
    }
  const size_t first = crashed->front(), last = crashed->back();

  // On every way out: unmount what is still mounted (before the stack's devices go), then
  // remove the work dir (after them; only when nothing is mounted below it any more).
  struct RemoveWork {
    std::string dir;
    ~RemoveWork() {
      for (const auto& m : {dir + "/store"})
        if (sys::is_mountpoint(m).value_or(false)) return;
      (void)sys::remove_all(dir);
    }
  } remove_work{work};
  auto stack_r = DmStack::create(o.device);
  if (!stack_r.ok()) return error(stack_r.error());
  DmStack& stack = *stack_r;
  // The store is recorded and every crash state checked on this one mount point: a reboot
  // finds the store where it was, so the paths its metadata recorded mean what they meant
  // (a mount_point of a layer mounted at the cut is the same directory, now unmounted).
  const std::string store_mnt = work + "/store";
  struct UnmountAll {
    std::vector<std::string> mounts;
    ~UnmountAll() {
      for (const auto& m : mounts)
        if (sys::is_mountpoint(m).value_or(false)) (void)unmount_dir(m);
    }
  } unmount_all{{store_mnt}};
  if (auto r = sys::mkdir_all(store_mnt, 0755); !r.ok()) return error(r.error());
  // Destroyed before the stack's devices go (a zfs pool is exported first).
  std::unique_ptr<Backing> backing = std::move(*backing_r);

  // Record: the phases before the first crashed one make the starting state; the crashed
  // ones run on dm-log-writes between marks.
  auto t0 = Clock::now();
  auto record = [&]() -> Result<void> {
    COWLAB_TRY(backing->make(stack.origin(), store_mnt));
    auto setup = run_phases(store_mnt + "/root", o.driver, *backing, *phases, 0, first, nullptr);
    COWLAB_TRY(backing->detach(store_mnt));
    COWLAB_TRY_CTX(std::move(setup), "crash: phases before the first crashed one");
    COWLAB_TRY(stack.snapshot_start());
    COWLAB_TRY(stack.start_logging());
    COWLAB_TRY_CTX(backing->attach(stack.logwrites(), store_mnt), "crash: on dm-log-writes");
    auto crashed_run =
        run_phases(store_mnt + "/root", o.driver, *backing, *phases, first, last + 1, &stack);
    auto u = backing->detach(store_mnt);
    COWLAB_TRY(stack.stop_logging());
    COWLAB_TRY_CTX(std::move(crashed_run), "crash: recorded phases");
    return u;
  };
  if (auto r = record(); !r.ok()) {
    (void)backing->detach(store_mnt);
    return error(r.error());
  }
  res.record_s = seconds_since(t0);

  auto log = logwrites::LogWrites::open(stack.log());
  if (!log.ok()) return error(log.error());
  const auto& entries = log->entries();
  res.log_entries = entries.size();
  std::map<size_t, uint64_t> begin, end;  // phase → index of its mark
  for (size_t i = first; i <= last; ++i) {
    auto b = log->find_mark("cowlab-begin-" + std::to_string(i));
    auto e = log->find_mark("cowlab-end-" + std::to_string(i));
    if (!b || !e)
      return error(
          Error::corrupt("crash: the log has no marks for phase \"" + (*phases)[i].name + "\""));
    begin[i] = *b;
    end[i] = *e;
  }
  // Points inside the crashed phases only: from the first begin mark to the last end mark.
  // A crash between two crashed phases counts too: nothing is running then.
  std::set<size_t> is_crashed(crashed->begin(), crashed->end());
  std::vector<uint64_t> points;
  int random =
      o.random.value_or(impl.crash->points == "all_flushes_and_random" ? impl.crash->random : 0);
  for (size_t i : *crashed) {
    auto flush_only = logwrites::crash_points(entries, begin[i], end[i] + 1, 0, 0);
    res.flush_points += flush_only.size();
    auto all = logwrites::crash_points(entries, begin[i], end[i] + 1, static_cast<unsigned>(random),
                                       o.seed + i);
    res.random_points += all.size() - flush_only.size();
    points.insert(points.end(), all.begin(), all.end());
  }
  std::sort(points.begin(), points.end());
  points.erase(std::unique(points.begin(), points.end()), points.end());

  auto t1 = Clock::now();
  if (auto r = stack.activate_replay(); !r.ok()) return error(r.error());
  uint64_t replayed = 0;
  for (uint64_t p : points) {
    if (auto r = log->replay(stack.replay(), replayed, p); !r.ok()) return error(r.error());
    replayed = p;
    Expectation at = want;
    for (size_t i = 0; i < phases->size(); ++i) {
      if (i < first || (i <= last && end[i] < p))
        at.done.insert(i);
      else if (i <= last && begin[i] < p)
        at.running = i;
    }
    auto note = [&](std::vector<Finding> fs) {
      for (auto& f : fs) {
        f.point = p;
        res.findings.push_back(std::move(f));
      }
    };
    if (auto r = stack.make_state(); !r.ok()) return error(r.error());
    // A reboot: the filesystem's own recovery (journal or log-tree replay) runs at mount, a
    // zfs pool is imported.
    auto m = backing->attach(stack.state(), store_mnt);
    if (!m.ok()) {
      res.kernel_failures++;
      Finding f;
      f.point = p;
      f.phase = at.running ? (*phases)[*at.running].name : "";
      f.invariant = "mount";
      f.observed = m.error().message();
      res.findings.push_back(std::move(f));
    } else if (auto bad = check_thin_pool(store_mnt + "/root", o.driver); !bad.empty()) {
      // dm-thin's own metadata does not survive the cut: the kernel facility's failure, like an
      // unmountable state, and the store is not opened on it.
      res.kernel_failures++;
      Finding f;
      f.point = p;
      f.phase = at.running ? (*phases)[*at.running].name : "";
      f.invariant = "thin-check";
      f.observed = bad;
      res.findings.push_back(std::move(f));
      if (auto u = backing->detach(store_mnt); !u.ok()) return error(u.error());
    } else {
      note(check_state(store_mnt + "/root", o.driver, backing->storage_opts(), at));
      if (auto u = backing->detach(store_mnt); !u.ok()) return error(u.error());
    }
    res.states_checked++;
    // Progress (info: on stderr unless -q): a guest that prints nothing for a while counts as
    // hung.
    diag::info("cowlab crash: " + impl.name + " on " + o.driver + ": state " +
               std::to_string(res.states_checked) + " of " + std::to_string(points.size()) +
               " (entry " + std::to_string(p) + ", " +
               (at.running ? (*phases)[*at.running].name : std::string("between phases")) +
               "): " + (res.findings.empty() ? "ok" : "findings so far"));
    if (auto r = stack.drop_state(); !r.ok()) return error(r.error());
  }
  res.check_s = seconds_since(t1);
  bool cowlab_failed = false;
  for (const auto& f : res.findings)
    if (f.invariant != "mount" && f.invariant != "thin-check") cowlab_failed = true;
  res.status = cowlab_failed ? "fail" : res.kernel_failures ? "kernel-failure" : "pass";
  return res;
}

}  // namespace cowlab::crash
