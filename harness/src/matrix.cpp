// The matrix scheduler: guests per profile × driver, restarted after crashes, sharded, with
// live progress, then reports.
#include "cowlab/harness/matrix.h"
#include "cowlab/harness/self_binary.h"

#include <fnmatch.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <nlohmann/json.hpp>
#include <set>

#include "cowlab/command_line.h"
#include "cowlab/harness/accel.h"
#include "cowlab/harness/applicability.h"
#include "cowlab/harness/guest.h"
#include "cowlab/harness/profile.h"
#include "cowlab/harness/stop.h"
#include "cowlab/harness/verdict.h"
#include "cowlab/log.h"
#include "cowlab/registry.h"
#include "cowlab/scenario.h"
#include "cowlab/sys.h"
#include "progress.h"
#include "scratch.h"
#include "strip.h"
#include "work_pool.h"

namespace cowlab::harness {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

struct ScenarioFile {
  std::string host;   // path on the host
  std::string guest;  // path inside the guest payload (relative to $COWLAB_PAYLOAD)
  std::string name;   // scenario name
  int timeout = 300;
  size_t points = 1;
};

// One guest's work: the scenarios of one driver on one profile that it took from their pool,
// one at a time, as it asked (work_pool.h).
struct Batch {
  std::shared_ptr<WorkPool> pool;
  std::vector<size_t> scenarios;     // indexes into the scenario list, in the order handed out
  fs::path console_log, kernel_log;  // of the guest (set when it starts)
  const std::string& profile() const { return pool->profile(); }
  const std::string& driver() const { return pool->driver(); }
};

std::string iso8601_utc(std::time_t t) {
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return b;
}

std::string host_name() {
  char b[256] = {};
  if (::gethostname(b, sizeof b - 1) != 0) return "unknown";
  return b;
}

// Does the scenario pass the --group / -k selection?  Groups: any listed group; patterns: a
// glob (fnmatch) or, without glob characters, a substring of the name (pytest -k style).
bool selected(const scenario::Scenario& s, const MatrixOptions& o) {
  if (!o.groups.empty()) {
    bool in = false;
    for (const auto& g : o.groups)
      if (std::find(s.groups().begin(), s.groups().end(), g) != s.groups().end()) in = true;
    if (!in) return false;
  }
  if (!o.name_patterns.empty()) {
    bool match = false;
    for (const auto& p : o.name_patterns) {
      bool glob = p.find_first_of("*?[") != std::string::npos;
      if (glob ? ::fnmatch(p.c_str(), s.name().c_str(), 0) == 0 : s.name().find(p) != std::string::npos) match = true;
    }
    if (!match) return false;
  }
  return true;
}

// A reproducer reruns on the kernel it failed on: the profile's kernel package and release must
// match the bundled manifest's, or the rerun proves nothing.
Result<void> check_kernel(const ProfileImage& img, const fs::path& manifest, bool any_kernel) {
  auto text = COWLAB_TRY(sys::read_file(manifest.string()));
  json want = json::parse(text, nullptr, false);
  if (want.is_discarded() || !want.contains("versions") || !want["versions"].is_object())
    return Error::invalid("--expect-manifest " + manifest.string() + ": not a cowlab profile manifest");
  std::string diff;
  for (const char* key : {"kernel_release", "kernel"}) {
    std::string have = img.versions.count(key) ? img.versions.at(key) : "", was = want["versions"].value(key, "");
    if (have != was) diff += std::string(diff.empty() ? "" : "; ") + key + " is " + have + ", the reproducer's was " + was;
  }
  if (diff.empty()) return ok();
  std::string msg = "profile " + img.profile + ": " + diff + " (" + manifest.string() + ")";
  if (!any_kernel) return Error::invalid(msg + "; build that kernel's profile, or pass --any-kernel to run anyway");
  spdlog::warn("matrix: warning: {}; running anyway (--any-kernel)", msg);
  return ok();
}

std::string guest_status_to_cell(GuestStatus s) {
  switch (s) {
    case GuestStatus::kPanic: return "panic";
    case GuestStatus::kTimeout:
    case GuestStatus::kHang: return "timeout";
    default: return "error";
  }
}

}  // namespace

Result<void> run_matrix(const MatrixOptions& o, MatrixReport* report_out) {
  auto started = std::chrono::steady_clock::now();
  MatrixReport report;
  report.started_utc = iso8601_utc(std::time(nullptr));
  report.hostname = host_name();
  report.cowlab_version = cowlab_version();
  std::vector<std::string> drivers;
  if (o.drivers.empty()) {
    for (const auto& e : driver_table()) drivers.push_back(e.name);
  } else {
    for (const auto& d : o.drivers) {
      const DriverEntry* e = find_driver(d);  // "overlay2" is overlay, as in Docker
      if (!e) return Error::usage("unknown driver \"" + d + "\" (valid: " + driver_names_text() + ", or all)");
      if (std::find(drivers.begin(), drivers.end(), e->name) == drivers.end()) drivers.push_back(e->name);
    }
  }
  if (o.shard_count == 0 || o.shard_index >= o.shard_count)
    return Error::usage("--shard " + std::to_string(o.shard_index) + "/" + std::to_string(o.shard_count) +
                        ": must be I/N with 0 <= I < N");

  // Scenarios: validated on the host first, so a broken file fails before any guest boots.
  auto files = COWLAB_TRY(scenario::collect_files(o.scenario_args));
  std::vector<ScenarioFile> scenarios;
  std::map<std::string, std::string> dir_slot;  // host dir -> payload dir
  std::vector<PayloadFile> payload;
  for (const auto& f : files) {
    auto s = scenario::load(f);
    if (!s.ok()) return std::move(s).error();
    if (!selected(**s, o)) continue;
    fs::path host = fs::absolute(f);
    std::string dir = host.parent_path().string();
    if (!dir_slot.count(dir)) {
      std::string slot = "scenarios/" + std::to_string(dir_slot.size());
      dir_slot[dir] = slot;
      payload.push_back({dir, slot});
    }
    scenarios.push_back({host.string(), dir_slot[dir] + "/" + host.filename().string(), (*s)->name(),
                         (*s)->timeout_seconds(), (*s)->sweep_points().size()});
  }
  if (scenarios.empty())
    return Error::usage("no scenario selected (" + std::to_string(files.size()) + " files; --group/-k matched none)");
  // This process's own binary through its pinned descriptor: a long run outlives a rebuild of the
  // file (self_binary.h).
  SelfBinary binary{o.cowlab_binary, o.cowlab_binary};
  if (o.cowlab_binary.empty()) binary = COWLAB_TRY(self_binary());
  // Guests get the binary without its debug information (kept on the host: strip.h).
  auto guest_binary = COWLAB_TRY(stripped_binary(binary.readable, binary.path));
  payload.push_back({guest_binary.stripped, "bin/cowlab"});

  // Profiles.
  std::vector<ProfileSpec> specs;
  std::vector<std::string> profile_names = o.profiles.empty() && o.extra_profiles.empty()
                                               ? std::vector<std::string>{std::string(kDefaultProfile)}
                                               : o.profiles;
  for (const auto& p : profile_names) specs.push_back(COWLAB_TRY(find_profile(p)));
  specs.insert(specs.end(), o.extra_profiles.begin(), o.extra_profiles.end());
  if (!o.aufs_kernel.empty()) specs.push_back(COWLAB_TRY(byo_profile(o.aufs_kernel, o.aufs_modules, {}, "aufs")));
  std::map<std::string, ProfileImage> images;
  std::map<std::string, Accel> accels;
  for (const auto& spec : specs) {
    BuildOptions bo;
    bo.runtime_binary = binary.readable;
    bo.resolve = o.resolve;
    auto img = COWLAB_TRY(build_profile(spec, bo));
    if (!o.expect_manifest.empty()) COWLAB_TRY(check_kernel(img, o.expect_manifest, o.any_kernel));
    Accel a = choose_accel(img);
    spdlog::info("matrix: profile {} (kernel {}), {}: {}", spec.name, img.kernel_release, accel_name(a.kind), a.reason);
    report.profiles.push_back({spec.name, img.kernel_release, img.manifest,
                               std::string(accel_name(a.kind)) + (a.reason.empty() ? "" : " (" + a.reason + ")")});
    accels[spec.name] = a;
    images[spec.name] = img;
  }
  report.drivers = drivers;
  report.command = o.command;

  // --resume: the cells an earlier, interrupted run finished are kept as they are; a scenario runs
  // again only if one of its points did not finish (its points run in one `scenario run`).
  std::set<std::tuple<std::string, std::string, std::string>> finished_before;
  if (!o.resume.empty()) {
    auto prev = COWLAB_TRY(read_report(o.resume));
    std::map<std::tuple<std::string, std::string, std::string>, bool> complete;
    for (const auto& line : prev.results) {
      json r = json::parse(line, nullptr, false);
      if (r.is_discarded()) continue;
      auto key = std::make_tuple(r.value("profile", ""), r.value("driver", ""), r.value("host_file", ""));
      bool done = r.value("status", "") != "interrupted";
      auto it = complete.find(key);
      complete[key] = (it == complete.end() ? true : it->second) && done;
    }
    for (const auto& line : prev.results) {
      json r = json::parse(line, nullptr, false);
      if (r.is_discarded()) continue;
      auto key = std::make_tuple(r.value("profile", ""), r.value("driver", ""), r.value("host_file", ""));
      if (complete[key]) {
        finished_before.insert(key);
        report.results.push_back(line);
      }
    }
    spdlog::info("matrix: resuming {}: {} cells already finished", o.resume.string(), report.results.size());
  }

  // Cells, sharded by a stable order: (profile, driver, scenario).  A pool per (profile, driver);
  // the queue holds the guests to start, a first one per pool.
  std::vector<std::shared_ptr<WorkPool>> pools;
  std::map<const WorkPool*, long> budgets;  // a guest's command timeout: its pool's whole work
  std::vector<Batch> queue;
  std::vector<json> inapplicable;  // cells the profile cannot run (applicability.h): skips
  size_t cell = 0;
  for (const auto& spec : specs) {
    KernelConfig config;
    const ProfileFacts facts = profile_facts(spec, &images[spec.name], &config);
    for (const auto& d : drivers) {
      // The aufs profile exists for the aufs driver only.
      if (spec.name == "aufs" && d != "aufs") continue;
      std::deque<size_t> mine;
      for (size_t i = 0; i < scenarios.size(); ++i, ++cell)
        if (cell % o.shard_count == o.shard_index && !finished_before.count({spec.name, d, scenarios[i].host}))
          mine.push_back(i);
      const DriverFit fit = driver_fit(facts, d);
      if (!fit.runnable) {
        for (size_t i : mine)
          inapplicable.push_back({{"scenario", scenarios[i].name}, {"file", scenarios[i].guest},
                                  {"host_file", scenarios[i].host}, {"driver", d}, {"profile", spec.name},
                                  {"kernel", images[spec.name].kernel_release}, {"status", "skip"},
                                  {"reason", fit.reason}, {"failures", json::array()},
                                  {"measurements", json::object()}, {"units", json::object()},
                                  {"sweep", json::object()}, {"duration_s", 0.0}});
        continue;
      }
      if (mine.empty()) continue;
      long budget = 120;
      for (size_t i : mine)
        budget += static_cast<long>(scenarios[i].timeout) * static_cast<long>(scenarios[i].points) *
                  static_cast<long>(o.repeat + o.rerun_failures);
      auto pool = std::make_shared<WorkPool>(spec.name, d, std::move(mine));
      budgets[pool.get()] = budget;
      pools.push_back(pool);
      queue.push_back(Batch{pool, {}, {}, {}});
    }
  }
  // Every sweep point is a cell of its own in the results: count them, or the counter overflows.
  // A cell the profile cannot run is one skip, whatever its sweep.
  size_t total_cells = inapplicable.size(), total_scenarios = 0;
  for (const auto& p : pools)
    for (size_t i : p->waiting_list()) {
      total_cells += scenarios[i].points;
      ++total_scenarios;
    }
  spdlog::info("matrix: {} scenarios x {} drivers x {} profiles: {} runs, {} cells with sweep points, in this shard ({}/{})",
               scenarios.size(), drivers.size(), specs.size(), total_scenarios, total_cells, o.shard_index, o.shard_count);
  MatrixProgress progress_line(total_cells);
  // With --repeat a cell reports one record per run: it counts once, at its last scheduled run
  // (reruns of a failed cell come after that and do not move the counter).
  auto progress = [&](const json& r, const std::string& profile) {
    if (r.contains("run") && (r.value("rerun", false) || r.value("run", 1u) != o.repeat)) return;
    progress_line.cell_done(r, profile);
  };
  fs::path logs_dir = o.out / "logs";
  COWLAB_TRY(sys::mkdir_all(logs_dir.string(), 0755));
  std::mutex log_mu;
  std::map<std::string, int> guest_seq;  // per profile/driver: numbers the guests' log files

  for (const auto& r : inapplicable) {
    progress(r, r["profile"]);
    report.results.push_back(r.dump());
  }

  unsigned jobs = o.jobs ? o.jobs : guest_slots(o.memory_mb);
  // The slowest drivers first (devicemapper and zfs do the most work under emulation); what
  // still waits in a pool when a slot falls idle goes to a helper guest of that pool, where
  // one pays (WorkPool::helper_pays).
  static const std::map<std::string, int> kWeight = {{"zfs", 6}, {"devicemapper", 5}, {"btrfs", 4},
                                                      {"vfs", 3}, {"overlay", 2}, {"aufs", 1}};
  std::stable_sort(queue.begin(), queue.end(), [](const Batch& a, const Batch& b) {
    auto w = [](const Batch& x) {
      auto it = kWeight.find(x.driver());
      return it == kWeight.end() ? 0 : it->second;
    };
    return w(a) > w(b);
  });

  // A pool of `jobs` workers: each takes the next batch as soon as its guest is done, and a
  // guest that crashed puts its unstarted scenarios back on the queue.
  auto make_spec = [&](const Batch& b) -> Result<GuestSpec> {
    GuestSpec g;
    g.image = images[b.profile()];
    g.accel = accels[b.profile()];
    g.payload = payload;
    g.memory_mb = o.memory_mb;
    g.disks.push_back({COWLAB_TRY(parse_size(o.scratch_size))});
    // The scenarios come one at a time on the work port (GuestSpec::next_work).
    std::string cmd =
        scratch_setup_script(b.driver()) + "exec cowlab scenario run --events --driver " +
        b.driver() +
        " --work-dir /run/cowlab/work --out \"$COWLAB_RESULTS\" --queue \"$COWLAB_QUEUE\"";
    if (o.repeat > 1) cmd += " --repeat " + std::to_string(o.repeat);
    if (o.rerun_failures > 0) cmd += " --rerun-failures " + std::to_string(o.rerun_failures);
    if (o.repeat_from == MatrixOptions::RepeatFrom::kImport) cmd += " --repeat-from import";
    g.command = {"/bin/sh", "-c", cmd};
    g.command_timeout = std::chrono::seconds(budgets.at(b.pool.get()));
    g.hang_timeout = std::chrono::seconds(300);
    g.label = b.profile() + "/" + b.driver();
    // The full console and the kernel log of every guest stay in the report directory; the
    // cells this guest ran point at them.
    g.console_log = b.console_log;
    g.kernel_log = b.kernel_log;
    return g;
  };
  auto rel_log = [&](const fs::path& p) { return p.empty() ? std::string() : "logs/" + p.filename().string(); };
  // A scenario that will not run because the matrix was interrupted: one "interrupted" cell
  // per sweep point, so the report and --resume know what is missing.
  auto interrupted = [&](const Batch& b, size_t i) {
    json r = {{"scenario", scenarios[i].name},
              {"file", scenarios[i].guest},
              {"host_file", scenarios[i].host},
              {"driver", b.driver()},
              {"profile", b.profile()},
              {"status", "interrupted"},
              {"reason", "matrix interrupted by signal " + std::to_string(stop_signal()) +
                             " before this cell finished"},
              {"failures", json::array()},
              {"measurements", json::object()},
              {"sweep", json::object()}};
    for (size_t p = 0; p < scenarios[i].points; ++p) {
      progress_line.cell_dropped();
      report.results.push_back(r.dump());
    }
  };
  // A scenario's cell decided by its guest's fate (it died in it, before it, or its runner gave
  // no result): the guest's status and logs stand for the scenario's.
  auto guest_cell = [&](const Batch& b, size_t i, const GuestResult& gr, const std::string& status,
                        const std::string& reason) {
    json r = {{"scenario", scenarios[i].name},
              {"file", scenarios[i].guest},
              {"host_file", scenarios[i].host},
              {"driver", b.driver()},
              {"profile", b.profile()},
              {"kernel", gr.kernel_release},
              {"status", status},
              {"reason", reason},
              {"console_excerpt", gr.console_excerpt},
              {"failures", json::array()},
              {"measurements", json::object()},
              {"sweep", json::object()},
              {"duration_s", gr.total_seconds},
              {"console_log", rel_log(b.console_log)},
              {"dmesg_log", rel_log(b.kernel_log)}};
    progress(r, b.profile());
    report.results.push_back(r.dump());
  };
  // Turns one guest's outcome into cell results; what it took and may run again goes back to
  // its pool.
  auto process = [&](Batch& b, const GuestResult& result) -> bool {
    const GuestResult& gr = result;
    std::set<std::string> finished;
    std::string last_started;
    for (const auto& line : gr.records) {
      json r;
      try {
        r = json::parse(line);
      } catch (const std::exception& e) {
        continue;  // a torn line from a guest that died mid-write
      }
      if (r.contains("event")) {
        if (r["event"] == "start") last_started = r.value("file", "");
        continue;
      }
      std::string gfile = r.value("file", "");
      for (const auto& s : scenarios)
        if (gfile.size() >= s.guest.size() && gfile.compare(gfile.size() - s.guest.size(), s.guest.size(), s.guest) == 0)
          r["host_file"] = s.host;
      r["profile"] = b.profile();
      r["console_log"] = rel_log(b.console_log);
      r["dmesg_log"] = rel_log(b.kernel_log);
      finished.insert(gfile);
      report.results.push_back(r.dump());
    }
    bool guest_ok = gr.status == GuestStatus::kPass || gr.status == GuestStatus::kFail;
    if (gr.status == GuestStatus::kSplat) {
      // The command finished but the kernel complained: keep the results, and record the
      // splat against the guest's last scenario so the report shows it.
      guest_ok = true;
      json r = {{"scenario", "kernel-log"},
                {"driver", b.driver()},
                {"profile", b.profile()},
                {"kernel", gr.kernel_release},
                {"status", "error"},
                {"reason", "kernel splat after " + last_started + ": " + gr.reason},
                {"console_excerpt", gr.console_excerpt},
                {"failures", json::array()},
                {"measurements", json::object()},
                {"sweep", json::object()},
                {"console_log", rel_log(b.console_log)},
                {"dmesg_log", rel_log(b.kernel_log)}};
      report.results.push_back(r.dump());
    }
    // What this guest took and did not finish: the one it was running gets the guest's verdict;
    // the others (taken, never started: it died between the answer and the start) go back to
    // the pool.  A guest that finished nothing right after another of its pool that finished
    // nothing fails the pool's whole rest (WorkPool::fruitless_in_a_row), whether it failed or
    // its runner ran nothing (it failed before asking for work, or stopped asking).
    std::vector<size_t> rest;
    const bool give_up = finished.empty() && b.pool->fruitless_in_a_row() >= 1;
    const std::string why_nothing =
        guest_ok
            ? "the guest's runner ran no scenario (exit " + std::to_string(gr.exit_code) + "): " +
                  gr.stderr_text.substr(gr.stderr_text.size() > 400 ? gr.stderr_text.size() - 400
                                                                    : 0)
            : "guest failed before this scenario ran: " +
                  std::string(guest_status_name(gr.status)) + ": " + gr.reason;
    for (size_t i : b.scenarios) {
      bool done = false;
      for (const auto& f : finished)
        if (f.size() >= scenarios[i].guest.size() &&
            f.compare(f.size() - scenarios[i].guest.size(), scenarios[i].guest.size(), scenarios[i].guest) == 0)
          done = true;
      if (done) continue;
      if (stop_requested()) {
        rest.push_back(i);  // marked interrupted below
        continue;
      }
      bool was_running = !last_started.empty() && last_started.size() >= scenarios[i].guest.size() &&
                         last_started.compare(last_started.size() - scenarios[i].guest.size(),
                                              scenarios[i].guest.size(), scenarios[i].guest) == 0;
      if (!guest_ok && (was_running || give_up)) {
        guest_cell(b, i, gr, was_running ? guest_status_to_cell(gr.status) : "error",
                   std::string(was_running ? "guest " : "guest failed before this scenario ran: ") +
                       std::string(guest_status_name(gr.status)) + ": " + gr.reason);
        continue;
      }
      rest.push_back(i);
    }
    if (!rest.empty() && stop_requested()) {
      for (size_t i : rest) interrupted(b, i);
      rest.clear();
    }
    if (!rest.empty() && guest_ok) {
      // The command ended without reporting these: the runner itself failed.
      for (size_t i : rest)
        guest_cell(b, i, gr, "error",
                   "no result from the guest runner (exit " + std::to_string(gr.exit_code) + "): " +
                       gr.stderr_text.substr(
                           gr.stderr_text.size() > 400 ? gr.stderr_text.size() - 400 : 0));
      rest.clear();
    }
    if (!rest.empty()) {
      spdlog::warn(
          "matrix: guest {}/{} ended with {} ({}); {} scenario(s) it took go back to the pool",
          b.profile(), b.driver(), guest_status_name(gr.status), gr.reason, rest.size());
      b.pool->give_back({rest.begin(), rest.end()});
    }
    // Only the pool's last guest gives up on its rest; a helper's failure leaves the others'.
    if (give_up && b.pool->guests() == 1 && !stop_requested()) {
      for (size_t i : b.pool->drain()) guest_cell(b, i, gr, "error", why_nothing);
    }
    return finished.empty();
  };

  std::mutex qmu, report_mu;
  std::condition_variable qcv;
  size_t in_flight = 0;
  std::optional<Error> fatal;
  auto worker = [&] {
    for (;;) {
      Batch b;
      {
        std::unique_lock<std::mutex> lock(qmu);
        for (;;) {
          if (fatal || stop_requested()) return;  // what still waits is marked interrupted below
          while (!queue.empty() && queue.front().pool->waiting() == 0) queue.erase(queue.begin());
          if (!queue.empty()) {
            b = queue.front();
            queue.erase(queue.begin());
            break;
          }
          // A helper for the pool with the most still waiting, where one pays.
          std::shared_ptr<WorkPool> help;
          for (const auto& p : pools)
            if (p->helper_pays() && (!help || p->waiting() > help->waiting())) help = p;
          if (help) {
            b = Batch{help, {}, {}, {}};
            spdlog::info(
                "matrix: one more guest for {}/{} (it has {}): {} scenario(s) still waiting",
                help->profile(), help->driver(), help->guests(), help->waiting());
            break;
          }
          if (in_flight == 0) return;
          qcv.wait(lock);
        }
        ++in_flight;
        b.pool->guest_started();  // under qmu: two idle workers never both start the one helper
      }
      {
        std::lock_guard<std::mutex> lock(log_mu);
        std::string stem = b.profile() + "__" + b.driver() + "__guest" +
                           std::to_string(++guest_seq[b.profile() + "/" + b.driver()]);
        b.console_log = logs_dir / (stem + ".console.log");
        b.kernel_log = logs_dir / (stem + ".dmesg.log");
      }
      Result<void> outcome;
      bool ran_nothing = true;
      auto spec = make_spec(b);
      if (!spec.ok()) {
        outcome = std::move(spec).error();
      } else {
        GuestObserver obs;
        std::string profile = b.profile(), label = spec->label;
        auto boot_start = std::chrono::steady_clock::now();
        std::optional<std::chrono::steady_clock::time_point> last_request;
        // Each request ends the scenario before it (or the guest's set-up, for the first): what
        // helper_pays weighs.  Nothing more is handed out once the matrix is stopping.
        spec->next_work = [&]() -> std::string {
          auto now = std::chrono::steady_clock::now();
          if (last_request)
            b.pool->add_scenario(std::chrono::duration<double>(now - *last_request).count());
          else
            b.pool->add_overhead(std::chrono::duration<double>(now - boot_start).count());
          last_request = now;
          qcv.notify_all();  // an idle worker may now find that a helper pays
          if (stop_requested()) return "";
          auto i = b.pool->take();
          if (!i) return "";
          b.scenarios.push_back(*i);
          return scenarios[*i].guest;
        };
        progress_line.guest_booting(label, b.pool->waiting());
        obs.on_command_start = [&progress_line, label, boot_start] {
          progress_line.guest_running(label, std::chrono::duration<double>(std::chrono::steady_clock::now() - boot_start).count());
        };
        obs.on_record = [&, profile](std::string_view line) {
          try {
            json r = json::parse(line);
            if (!r.contains("event")) progress(r, profile);
          } catch (...) {
          }
        };
        auto result = run_guest(*spec, obs);
        if (!result.ok()) {
          outcome = std::move(result).error().with_context("matrix guest " + b.profile() + "/" +
                                                           b.driver());
        } else {
          std::lock_guard<std::mutex> lock(report_mu);  // `progress` takes `mu` itself
          ran_nothing = process(b, *result);
        }
      }
      std::lock_guard<std::mutex> lock(qmu);
      --in_flight;
      b.pool->guest_ended(ran_nothing ? WorkPool::GuestOutcome::kRanNothing
                                      : WorkPool::GuestOutcome::kRanSome);
      if (!outcome.ok() && !fatal) fatal = outcome.error();
      // The pool's last guest is gone with work still waiting (it crashed, or its runner
      // stopped asking): a fresh guest carries on, the matrix goes on.
      if (b.pool->waiting() > 0 && b.pool->guests() == 0)
        queue.push_back(Batch{b.pool, {}, {}, {}});
      qcv.notify_all();
    }
  };
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < std::max(1u, jobs); ++w) workers.emplace_back(worker);
  for (auto& t : workers) t.join();
  if (fatal) return *fatal;
  // A stopped matrix: every scenario no guest took is an "interrupted" cell.
  for (const auto& p : pools) {
    Batch b{p, {}, {}, {}};
    for (size_t i : p->drain()) interrupted(b, i);
  }
  report.interrupted = stop_requested();

  report.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  report.results = fold_runs(report.results);
  COWLAB_TRY(write_report(report, o.out));
  if (report_out) *report_out = report;
  return {};
}

}  // namespace cowlab::harness
