// The layer store (the intent/commit scheme is described in layer_store.h).
#include "cowlab/layer_store.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <thread>

#include "cowlab/archive.h"
#include "cowlab/digest.h"
#include "cowlab/fs.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"

namespace cowlab {

namespace {

using json = nlohmann::json;

constexpr const char* kLayersDir = "layers";
constexpr const char* kTmpDir = "tmp";
constexpr const char* kProbeDirPrefix = "probe-";  // tmp/probe-<pid>-<random>/
constexpr std::string_view kJson = ".json";
constexpr std::string_view kDeleting = ".json.deleting";
constexpr std::string_view kDamaged = ".json.damaged";
constexpr std::string_view kTmpInfix = ".json.tmp-";

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const char* intent_name(IntentOp op) {
  switch (op) {
    case IntentOp::kNone:
      return "";
    case IntentOp::kApplyDiff:
      return "applydiff";
    case IntentOp::kRetire:
      return "retire";
    case IntentOp::kMount:
      return "mount";
    case IntentOp::kUnmount:
      return "unmount";
  }
  return "";
}

IntentOp intent_op(const std::string& name) {
  for (IntentOp op :
       {IntentOp::kApplyDiff, IntentOp::kRetire, IntentOp::kMount, IntentOp::kUnmount})
    if (name == intent_name(op)) return op;
  return IntentOp::kNone;
}

// COWLAB_TEST_KILL_AT=<point> makes the process SIGKILL itself at that step, so kill tests
// hit every window of the scheme instead of hoping a random kill lands in it.  Points:
// create:recorded import:recorded import:applied applydiff:intent applydiff:staged
// applydiff:committed mount:intent mount:mounted unmount:intent unmount:unmounted
// delete:renamed delete:removed wipe:layer-removed
using sys::kill_point;

template <typename T>
Result<T> in_ctx(Result<T> r, const std::string& ctx) {
  if (!r.ok()) return std::move(r).error().with_context(ctx);
  return r;
}

// The running kernel's boot id (random per boot, proc(5)), "" when /proc does not say.  Mount
// references are held by processes, and none of them survives a reboot.
std::string current_boot_id() {
  auto b = sys::read_file("/proc/sys/kernel/random/boot_id");
  if (!b.ok()) return "";
  std::string id = *b;
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

// Test-only fault hook (power-cut tests, tests/vm/crash): COWLAB_TEST_FAULT=skip-layer-sync
// drops the data barrier before a commit, the bug of moby#17618, so the crash test can show it
// catches a store that commits before its data is durable.
bool fault_skip_layer_sync() {
  const char* f = std::getenv("COWLAB_TEST_FAULT");
  return f != nullptr && std::string_view(f) == "skip-layer-sync";
}

std::string fmt_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%gs", s);
  return buf;
}

// Driver errors name cache ids; the user knows the layer id.
Error user_named(Error e, const LayerInfo& l) {
  if (l.cache_id.empty() || l.cache_id == l.id) return e;
  std::string m = e.message();
  for (size_t p = m.find(l.cache_id); p != std::string::npos;
       p = m.find(l.cache_id, p + l.id.size()))
    m.replace(p, l.cache_id.size(), l.id);
  return Error(e.kind(), m, e.err());
}

json to_json(const LayerInfo& l) {
  return json{{"id", l.id},
              {"cache_id", l.cache_id},
              {"parent", l.parent},
              {"kind", l.kind == LayerKind::kReadWrite ? "rw" : "ro"},
              {"size", l.size},
              {"diff_id", l.diff_id},
              {"chain_id", l.chain_id},
              {"compressed_digest", l.compressed_digest},
              {"created", l.created},
              {"mount_count", l.mount_count},
              {"mount_point", l.mount_point},
              {"mount_boot", l.mount_boot},
              {"incomplete", l.incomplete},
              {"driver", l.driver},
              {"create_opts", l.create_opts},
              {"intent", json{{"op", intent_name(l.intent.op)}, {"cache_id", l.intent.cache_id}}}};
}

Result<LayerInfo> from_json(const std::string& text, const std::string& file) {
  try {
    json j = json::parse(text);
    LayerInfo l;
    l.id = j.at("id").get<std::string>();
    l.cache_id = j.value("cache_id", l.id);
    l.parent = j.value("parent", "");
    l.kind = j.value("kind", "ro") == "rw" ? LayerKind::kReadWrite : LayerKind::kReadOnly;
    l.size = j.value("size", int64_t{-1});
    l.diff_id = j.value("diff_id", "");
    l.chain_id = j.value("chain_id", "");
    l.compressed_digest = j.value("compressed_digest", "");
    l.created = j.value("created", int64_t{0});
    l.mount_count = j.value("mount_count", 0);
    l.mount_point = j.value("mount_point", "");
    l.mount_boot = j.value("mount_boot", "");
    l.incomplete = j.value("incomplete", false);
    l.driver = j.value("driver", "");
    if (j.contains("create_opts"))
      l.create_opts = j.at("create_opts").get<std::map<std::string, std::string>>();
    if (j.contains("intent")) {
      const auto& in = j.at("intent");
      l.intent.op = intent_op(in.value("op", ""));
      l.intent.cache_id = in.value("cache_id", "");
    }
    if (l.cache_id.empty() || !validate_layer_id(l.cache_id).ok())
      return Error::corrupt("layer metadata " + file + ": invalid cache id");
    return l;
  } catch (const std::exception& e) {
    return Error::corrupt("layer metadata " + escape_for_message(file) + ": " + e.what());
  }
}

// Every "cache_id": "<32 hex digits>" in a metadata text that is no longer JSON.
std::vector<std::string> salvage_cache_ids(const std::string& text) {
  static const std::regex kCacheId(R"re("cache_id"\s*:\s*"([0-9a-f]{32})")re");
  std::vector<std::string> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), kCacheId);
       it != std::sregex_iterator(); ++it)
    out.push_back((*it)[1].str());
  return out;
}

Result<std::string> new_cache_id() {
  unsigned char b[16];
  COWLAB_TRY(sys::random_bytes(b, sizeof b));
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : b) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

// Removes an entry of tmp/ under the exclusive lock.  A probe's directory (probe_drivers) can
// hold a mount of a killed probe (overlay's test mounts): those are detached first, or the
// removal would fail with EBUSY and lock every writer out.
Result<void> remove_tmp_entry(const std::string& path) {
  if (auto mounts = sys::mountinfo(); mounts.ok()) {
    std::vector<std::string> below;
    for (const auto& m : *mounts)
      if (m.mount_point == path || m.mount_point.rfind(path + "/", 0) == 0)
        below.push_back(m.mount_point);
    std::sort(below.begin(), below.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    for (const auto& t : below) (void)sys::umount2(t, MNT_DETACH);
  }
  return sys::remove_all(path);
}

}  // namespace

Result<void> validate_layer_id(const std::string& id) {
  auto bad = [&](const char* why) {
    return Error::usage("invalid layer id \"" + escape_for_message(id) + "\": " + why);
  };
  if (id.empty()) return bad("empty");
  if (id.size() > 128) return bad("longer than 128 bytes");
  if (!isalnum(static_cast<unsigned char>(id[0]))) return bad("must start with a letter or digit");
  for (char c : id)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-')
      return bad("only letters, digits, '_', '.' and '-' are allowed");
  return {};
}

// ---- staged input ---------------------------------------------------------------------------

Result<std::unique_ptr<StagedInput>> StagedInput::stage(const std::string& root, Reader& in) {
  const std::string ctx = "stage input " + escape_for_message(in.name());
  std::string dir = root + "/" + kTmpDir;
  COWLAB_TRY_CTX(sys::mkdir_all(dir, 0700), ctx);
  std::unique_ptr<StagedInput> s(new StagedInput());
  s->name_ = in.name();
  auto fd = sys::open(dir, O_RDWR | O_TMPFILE, 0600);
  if (!fd.ok() && (fd.error().err() == EOPNOTSUPP || fd.error().err() == EISDIR)) {
    // No O_TMPFILE on this filesystem: a named file, unlinked at once (a kill in between
    // leaves it to the next writer's recovery, which empties tmp/).
    unsigned char r[8];
    COWLAB_TRY_CTX(sys::random_bytes(r, sizeof r), ctx);
    std::string path = dir + "/stage-" + std::to_string(::getpid()) + "-" +
                       std::to_string(r[0] | r[1] << 8 | r[2] << 16);
    fd = sys::open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd.ok()) (void)sys::unlink(path);
  }
  if (!fd.ok()) return std::move(fd).error().with_context(ctx);
  s->fd_ = std::move(*fd);
  std::vector<char> buf(1 << 20);
  for (;;) {
    size_t n = COWLAB_TRY_CTX(in.read(buf.data(), buf.size()), ctx);
    if (n == 0) break;
    COWLAB_TRY_CTX(sys::write_all(s->fd_.get(), buf.data(), n), ctx);
    s->size_ += static_cast<int64_t>(n);
  }
  if (s->size_ == 0)
    return Error::invalid(
        ctx + ": empty input (0 bytes); a layer tar holds at least its end-of-archive marker");
  if (::lseek(s->fd_.get(), 0, SEEK_SET) != 0)
    return Error::from_errno("lseek", in.name(), errno).with_context(ctx);
  return s;
}

Result<size_t> StagedInput::read(void* buf, size_t len) {
  return sys::read(fd_.get(), buf, len);
}

// ---- open, lock, recovery --------------------------------------------------------------------

struct LayerStore::Scan {
  std::vector<LayerInfo> layers;      // parsed, not in a loop
  std::vector<DamagedLayer> damaged;  // unreadable, looping (to quarantine) or orphaned
  std::vector<std::string> temp_files;
  std::vector<std::pair<LayerInfo, std::string>> deleting;  // parsed .deleting files
  std::vector<std::string> unreadable_deleting;
  std::set<std::string> drivers;  // drivers recorded by the layers
  std::string driver_example;     // a layer of the first recorded driver
};

Result<LayerStore::Scan> LayerStore::scan() {
  Scan out;
  std::string dir = root_ + "/" + kLayersDir;
  auto entries = COWLAB_TRY(sys::read_dir(dir));
  std::map<std::string, LayerInfo> good;
  for (const auto& e : entries) {
    std::string file = dir + "/" + e.name;
    bool deleting = ends_with(e.name, kDeleting), damaged = ends_with(e.name, kDamaged);
    bool plain = ends_with(e.name, kJson);
    if (!deleting && !damaged && !plain && e.name.find(kTmpInfix) != std::string::npos) {
      out.temp_files.push_back(file);
      continue;
    }
    if (!deleting && !damaged && !plain) continue;
    std::string id = e.name.substr(0, e.name.rfind(kJson));
    auto text = sys::read_file(file);
    if (!text.ok() && text.error().err() == ENOENT) continue;  // removed since read_dir
    Result<LayerInfo> info = text.ok() ? from_json(*text, file) : Result<LayerInfo>(text.error());
    if (info.ok() && info->id != id)
      info = Error::corrupt("layer metadata " + escape_for_message(file) + " names layer \"" +
                            escape_for_message(info->id) + "\"");
    if (deleting) {
      if (info.ok())
        out.deleting.emplace_back(*info, file);
      else
        out.unreadable_deleting.push_back(file);
      continue;
    }
    if (damaged) {
      out.damaged.push_back({id, file,
                             info.ok() ? "quarantined: parent chain loops" : info.error().message(),
                             Damage::kQuarantined});
      continue;
    }
    if (!info.ok()) {
      out.damaged.push_back({id, file, info.error().message(), Damage::kUnreadable});
      continue;
    }
    good.emplace(id, *info);
  }
  // Parent loops: follow each chain; a chain that revisits a layer marks the whole loop.
  std::set<std::string> looping;
  for (const auto& [id, l] : good) {
    std::vector<std::string> path;
    std::set<std::string> seen;
    std::string cur = id;
    while (!cur.empty() && good.count(cur) && !looping.count(cur)) {
      if (!seen.insert(cur).second) {
        for (auto it = std::find(path.begin(), path.end(), cur); it != path.end(); ++it)
          looping.insert(*it);
        break;
      }
      path.push_back(cur);
      cur = good.at(cur).parent;
    }
  }
  for (const auto& id : looping)
    out.damaged.push_back({id, dir + "/" + id + std::string(kJson),
                           "parent chain loops through " + good.at(id).parent, Damage::kLoop});
  for (auto& [id, l] : good) {
    if (looping.count(id)) continue;
    if (!l.parent.empty() && !good.count(l.parent))
      out.damaged.push_back({id, dir + "/" + id + std::string(kJson),
                             "parent " + escape_for_message(l.parent) + " is missing or damaged",
                             Damage::kOrphan});
    if (!l.driver.empty() && out.drivers.insert(l.driver).second && out.driver_example.empty())
      out.driver_example = id;
    out.layers.push_back(std::move(l));
  }
  std::sort(out.layers.begin(), out.layers.end(), [](const LayerInfo& a, const LayerInfo& b) {
    return a.created != b.created ? a.created < b.created : a.id < b.id;
  });
  std::sort(out.damaged.begin(), out.damaged.end(),
            [](const DamagedLayer& a, const DamagedLayer& b) { return a.id < b.id; });
  return out;
}

Result<void> LayerStore::take_lock(const StoreOptions& options) {
  const std::string ctx = "lock store " + root_;
  std::string path = root_ + "/lock";
  auto lock = sys::open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  // A read-only store (EROFS, or a file we may only read): readers lock the file read-only.
  if (!lock.ok() && options.lock == LockMode::kShared &&
      (lock.error().err() == EROFS || lock.error().err() == EACCES)) {
    lock = sys::open(path, O_RDONLY | O_CLOEXEC);
    read_only_ = lock.ok();
  }
  if (!lock.ok()) return std::move(lock).error().with_context(ctx);
  lock_fd_ = lock->release();
  COWLAB_TRY(acquire_lock(options, options.lock));
  lock_mode_ = options.lock;
  return {};
}

Result<void> LayerStore::acquire_lock(const StoreOptions& options, LockMode mode) {
  const std::string ctx = "lock store " + root_;
  const std::string path = root_ + "/lock";
  int op = mode == LockMode::kShared ? LOCK_SH : LOCK_EX;
  auto start = std::chrono::steady_clock::now();
  bool told = false;
  for (int delay_ms = 1;; delay_ms = std::min(delay_ms * 2, 50)) {
    if (::flock(lock_fd_, op | LOCK_NB) == 0) break;
    if (errno != EWOULDBLOCK && errno != EINTR)
      return Error::from_errno("flock", path, errno).with_context(ctx);
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    auto holders = [&] {
      auto h = sys::flock_holders(lock_fd_);
      std::string s;
      if (h.ok())
        for (const auto& x : *h) s += (s.empty() ? "" : ", ") + x;
      return s.empty() ? std::string("another process") : "PID " + s;
    };
    if (options.lock_timeout_s >= 0 && waited >= options.lock_timeout_s)
      return Error(ErrorKind::kTimeout,
                   ctx + ": timed out after " + fmt_seconds(options.lock_timeout_s) +
                       " waiting for the store lock held by " + holders() + " (--lock-timeout)",
                   ETIMEDOUT);
    if (!told && waited >= 1.0 && options.on_lock_wait) {
      told = true;
      options.on_lock_wait("waiting for the store lock held by " + holders());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  }
  return {};
}

// What recover() would act on, one line each; empty for a store at rest.
std::vector<std::string> LayerStore::pending_recovery(const Scan& sc) {
  std::vector<std::string> out;
  // Probes' private directories (LayerStore::probe_drivers) are not work for a reader: they
  // are in use by a running probe, or a killed probe's, which pins nothing and goes with the
  // next writer's recovery.
  if (auto tmp = sys::read_dir(root_ + "/" + kTmpDir); tmp.ok()) {
    size_t staged = 0;
    for (const auto& e : *tmp)
      if (e.name.rfind(kProbeDirPrefix, 0) != 0) ++staged;
    if (staged > 0) out.push_back(std::to_string(staged) + " staging leftover(s) in tmp/");
  }
  if (!sc.temp_files.empty())
    out.push_back(std::to_string(sc.temp_files.size()) +
                  " temporary metadata file(s) of interrupted writes");
  for (const auto& [l, file] : sc.deleting)
    out.push_back("layer " + l.id + ": deletion interrupted");
  if (!sc.unreadable_deleting.empty())
    out.push_back(std::to_string(sc.unreadable_deleting.size()) +
                  " unreadable metadata file(s) of deleted layers");
  for (const auto& d : sc.damaged)
    if (d.damage == Damage::kUnreadable || d.damage == Damage::kLoop)
      out.push_back("layer " + escape_for_message(d.id) + ": damaged, not yet quarantined");
  for (const auto& l : sc.layers) {
    if (l.incomplete)
      out.push_back("layer " + l.id + ": creation interrupted");
    else if (l.intent.op != IntentOp::kNone)
      out.push_back("layer " + l.id + ": " + intent_name(l.intent.op) + " interrupted");
    else if (recorded_mount_gone(l))
      out.push_back("layer " + l.id + ": its recorded mount is gone");
  }
  return out;
}

// The store root as every message names it: absolute (a usage error otherwise), without
// trailing slashes.
static Result<std::string> store_root_of(const StoreOptions& options) {
  if (options.root.empty() || options.root[0] != '/')
    return Error::usage("store root must be an absolute path, got \"" +
                        escape_for_message(options.root) + "\"");
  std::string root = options.root;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  return root;
}

Result<std::unique_ptr<LayerStore>> LayerStore::open(const StoreOptions& options) {
  std::unique_ptr<LayerStore> s(new LayerStore());
  s->root_ = COWLAB_TRY(store_root_of(options));
  const std::string ctx = "open store " + s->root_;
  // mkdir_all leaves existing directories alone, so a read-only or full store opens.
  COWLAB_TRY_CTX(sys::mkdir_all(s->root_ + "/" + kLayersDir, 0700), ctx);
  if (options.lock == LockMode::kExclusive)
    COWLAB_TRY_CTX(sys::mkdir_all(s->root_ + "/" + kTmpDir, 0700), ctx);
  COWLAB_TRY(s->take_lock(options));

  // The layers say which driver made them: that one is used, and another one is refused.
  auto sc = COWLAB_TRY_CTX(s->scan(), ctx);
  std::string driver = options.driver_entry ? options.driver_entry->name : options.driver;
  if (const DriverEntry* e = find_driver(driver)) driver = e->name;  // overlay2 is overlay
  if (sc.drivers.size() > 1) {
    std::string names;
    for (const auto& d : sc.drivers) names += (names.empty() ? "" : ", ") + d;
    return Error::corrupt(ctx + ": layers of several drivers (" + names + ") in one store");
  }
  if (!sc.drivers.empty()) {
    const std::string& recorded = *sc.drivers.begin();
    if (!driver.empty() && driver != recorded)
      return Error::invalid(ctx + ": its layers were made by driver " + recorded + " (layer " +
                            sc.driver_example + "), not " + driver + "; use --driver " + recorded +
                            " or another root");
    driver = recorded;
  }
  SelectOptions so;
  so.root = s->root_;
  so.driver = driver;
  so.priority = options.priority;
  so.options = options.storage_opts;
  so.access = options.lock == LockMode::kShared ? DriverAccess::kShared : DriverAccess::kExclusive;
  // The driver, opened with the access the lock held at the time gives (readers reopen it when
  // they change the lock, below).
  auto open_driver = [&](DriverAccess access,
                         std::vector<DriverProbe>* tried) -> Result<std::unique_ptr<Driver>> {
    if (options.driver_entry) {
      DriverConfig cfg{s->root_, s->root_ + "/" + driver, options.storage_opts, access};
      auto d = COWLAB_TRY_CTX(options.driver_entry->init(cfg), ctx);
      if (tried) tried->push_back({driver, true, ""});
      return d;
    }
    SelectOptions sel = so;
    sel.access = access;
    return select_driver(sel, tried);
  };
  s->driver_ = COWLAB_TRY(open_driver(so.access, &s->tried_));
  // A store that cannot recover is not handed out, and the driver's init may already have
  // activated things (devicemapper's pool and its loop devices): release them, or a failed
  // open leaves them behind (the crash runner then could not detach the crash state: dm
  // remove EBUSY, docs/crash.md).
  auto recover_or_release = [&]() -> Result<void> {
    auto r = s->recover();
    if (r.ok()) return r;
    (void)s->driver_->cleanup();
    return std::move(r).error().with_context("recover store " + s->root_);
  };
  if (options.lock == LockMode::kExclusive) {
    COWLAB_TRY(recover_or_release());
    return s;
  }
  // A reader that finds an interrupted operation does what containers/storage's readers do
  // (layers.go: a load that needs cleanup retries with the write lock): it takes the lock
  // exclusive, recovers like a writer and goes back to shared, so readers are never locked
  // out and never wait for a writer to come along.  flock(2) converts by unlocking first, so
  // two readers upgrading at once do not deadlock; recover() rescans what it finds.  A
  // read-only store cannot be changed: its readers skip what is unfinished (incomplete
  // layers, layers being deleted, an applydiff's staged copy) and report it (not_recovered()).
  // The driver's own state (devicemapper's pool transactions, base device) follows the same
  // rule: opened shared it changes nothing and lists what it found (Driver::pending_recovery),
  // and the reader recovers it by opening the driver again under the exclusive lock.
  auto pending = s->pending_recovery(sc);
  const std::vector<std::string> driver_pending = s->driver_->pending_recovery();
  for (const auto& p : driver_pending) pending.push_back(s->driver_->name() + ": " + p);
  if (pending.empty()) return s;
  if (s->read_only_) {
    s->not_recovered_ = std::move(pending);
    return s;
  }
  so.driver = driver = s->driver_->name();
  COWLAB_TRY_CTX(s->acquire_lock(options, LockMode::kExclusive), ctx + ": recover");
  s->lock_mode_ = LockMode::kExclusive;
  COWLAB_TRY_CTX(sys::mkdir_all(s->root_ + "/" + kTmpDir, 0700), ctx);
  // What the driver read under the shared lock may be stale — flock converts by unlocking, so
  // a writer may have run in between (devicemapper would then send pool messages with an old
  // transaction id) — so the driver is opened again under each lock, and opened exclusive it
  // does its own recovery.
  s->driver_.reset();
  s->driver_ = COWLAB_TRY_CTX(open_driver(DriverAccess::kExclusive, nullptr), ctx + ": recover");
  for (const auto& p : driver_pending)
    s->recovered_.push_back(s->driver_->name() + ": " + p + ": done");
  COWLAB_TRY(recover_or_release());
  COWLAB_TRY_CTX(s->acquire_lock(options, LockMode::kShared), ctx);
  s->lock_mode_ = LockMode::kShared;
  s->driver_.reset();
  s->driver_ = COWLAB_TRY_CTX(open_driver(DriverAccess::kShared, nullptr), ctx);
  // A writer that died in the window of that second conversion leaves work this reader does
  // not do (the next open does).
  for (const auto& p : s->driver_->pending_recovery())
    s->not_recovered_.push_back(s->driver_->name() + ": " + p);
  return s;
}

Result<std::vector<DriverProbe>> LayerStore::probe_drivers(const StoreOptions& options) {
  std::unique_ptr<LayerStore> s(new LayerStore());
  s->root_ = COWLAB_TRY(store_root_of(options));
  // The root holds the lock file; layers/ is not made (a probe leaves no store behind, and no
  // driver home: only the lock file and tmp/).  mkdir_all leaves an existing root alone, so a
  // read-only store is probed too.
  COWLAB_TRY_CTX(sys::mkdir_all(s->root_, 0700), "probe drivers of " + s->root_);
  StoreOptions shared = options;
  shared.lock = LockMode::kShared;
  COWLAB_TRY(s->take_lock(shared));
  SelectOptions sel;
  sel.root = s->root_;
  sel.priority = options.priority;
  sel.options = options.storage_opts;
  sel.access = DriverAccess::kShared;
  // Drivers without a home are tried in tmp/probe-<pid>-<random>/, private to this probe
  // (SelectOptions::probe_dir): other probes and readers run beside it under the shared lock.
  // A probe killed before it removes the directory leaves it to the next writer's recovery,
  // which empties tmp/ (no probe runs then: they hold the shared lock); readers do not count
  // it as work to recover.  On a read-only store nothing can be made, so nothing is removed.
  const std::string ctx = "probe drivers of " + s->root_;
  const std::string tmp = s->root_ + "/" + kTmpDir;
  const std::string dir = tmp + "/" + kProbeDirPrefix + std::to_string(::getpid()) + "-" +
                          COWLAB_TRY_CTX(new_cache_id(), ctx).substr(0, 12);
  auto made = sys::mkdir(tmp, 0700);
  if (made.ok() || made.error().err() == EEXIST) made = sys::mkdir(dir, 0700);
  if (made.ok())
    sel.probe_dir = dir;
  else if (made.error().err() != EROFS)
    return std::move(made).error().with_context(ctx);
  auto probes = cowlab::probe_drivers(sel);
  // tmp/ stays: a writer may be staging its input there without the lock (an O_TMPFILE
  // leaves it looking empty), and removing it under that writer would fail its import.
  if (!sel.probe_dir.empty()) (void)sys::remove_all(sel.probe_dir);
  return probes;
}

LayerStore::~LayerStore() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

// The data barrier before a layer is marked complete or a staged applydiff is committed
// (issue 12): Driver::sync_data — syncfs(2) of the filesystem holding the driver's home by
// default — writes back every dirty page and inode there and flushes the device's cache.  The
// fsync of the metadata file alone does not: on ext4 it leaves other files' delayed
// allocations unwritten (the zero-length files after a crash of moby#17618), on btrfs it logs
// only that file.
Result<void> LayerStore::sync_layer(const LayerInfo& info) {
  if (fault_skip_layer_sync()) return {};
  return in_ctx(driver_->sync_data(), "sync layer " + info.id);
}

// Asked whatever exists() says: a power cut inside a driver's create can leave data for which
// exists() is false, and recovery used to skip remove() then (aufs: diff/<id> and mnt/<id>
// without layers/<id>, docs/crash.md: no-orphans at every create and import).
Result<void> LayerStore::remove_driver_data(const std::string& cache) {
  auto r = driver_->remove(cache);
  if (!r.ok() && r.error().kind() == ErrorKind::kNotFound) return {};
  return r;
}

Result<void> LayerStore::destroy(const LayerInfo& info, const std::string& file,
                                 const std::string& ctx) {
  for (const std::string& cache : {info.cache_id, info.intent.cache_id}) {
    if (cache.empty()) continue;
    if (cache == info.cache_id && driver_->exists(cache) &&
        (info.mount_count > 0 || info.intent.op == IntentOp::kMount ||
         info.intent.op == IntentOp::kUnmount))
      (void)driver_->put(cache);
    auto r = remove_driver_data(cache);
    if (!r.ok()) return user_named(std::move(r).error(), info).with_context(ctx);
  }
  auto r = sys::unlink(file);
  if (!r.ok() && r.error().err() != ENOENT) return std::move(r).error().with_context(ctx);
  return {};
}

Result<void> LayerStore::recover() {
  auto note = [&](std::string line) { recovered_.push_back(std::move(line)); };
  std::string ldir = root_ + "/" + kLayersDir;
  // Staging leftovers: we hold the exclusive lock and staged inputs have no names, so
  // nothing in tmp/ is in use.
  auto tmp_entries = COWLAB_TRY(sys::read_dir(root_ + "/" + kTmpDir));
  for (const auto& e : tmp_entries)
    COWLAB_TRY(remove_tmp_entry(root_ + "/" + kTmpDir + "/" + e.name));
  if (!tmp_entries.empty())
    note("removed " + std::to_string(tmp_entries.size()) + " staging leftover(s) in tmp/");

  auto sc = COWLAB_TRY(scan());
  for (const auto& f : sc.temp_files) COWLAB_TRY(sys::unlink(f));
  if (!sc.temp_files.empty())
    note("removed " + std::to_string(sc.temp_files.size()) +
         " temporary metadata file(s) of interrupted writes");
  // Deletions: finish them.
  for (const auto& [l, file] : sc.deleting) {
    COWLAB_TRY(destroy(l, file, "finish deleting layer " + l.id));
    note("finished the interrupted deletion of layer " + l.id);
  }
  for (const auto& file : sc.unreadable_deleting) {
    COWLAB_TRY(sys::unlink(file));
    note("removed unreadable metadata of a deleted layer: " + escape_for_message(file));
  }
  // Its layer's data, if the deletion had not removed it yet, is claimed by nothing now.
  if (!sc.unreadable_deleting.empty())
    COWLAB_TRY(collect_orphans("recover: data of deleted layers", ""));
  // Quarantine: unreadable metadata and parent loops move aside; orphans stay (readable).
  bool moved = false;
  for (const auto& d : sc.damaged) {
    if (d.damage == Damage::kQuarantined) continue;
    if (d.damage == Damage::kOrphan) {
      note("layer " + escape_for_message(d.id) + " is damaged: " + d.reason);
      continue;
    }
    COWLAB_TRY(sys::rename(d.file, d.file + ".damaged"));
    moved = true;
    note("quarantined layer " + escape_for_message(d.id) + " (" + d.reason + ") as " +
         escape_for_message(d.file) + ".damaged; delete-layer or wipe removes it");
  }
  if (moved) COWLAB_TRY(sys::fsync_dir(ldir));

  // Intents and incomplete layers.  Children first, so a parent's removal is not refused.
  std::set<std::string> parents;
  for (const auto& l : sc.layers) parents.insert(l.parent);
  std::vector<LayerInfo> todo = sc.layers;
  std::stable_sort(todo.begin(), todo.end(), [&](const LayerInfo& a, const LayerInfo& b) {
    return parents.count(a.id) < parents.count(b.id);  // leaves first
  });
  for (auto& l : todo) {
    std::string file = ldir + "/" + l.id + std::string(kJson);
    if (l.incomplete) {
      COWLAB_TRY(destroy(l, file, "remove interrupted layer " + l.id));
      note("removed layer " + l.id + ": its creation or deletion was interrupted");
      continue;
    }
    switch (l.intent.op) {
      case IntentOp::kNone:
        break;
      case IntentOp::kApplyDiff:
      case IntentOp::kRetire: {
        bool forward = l.intent.op == IntentOp::kRetire;
        if (!l.intent.cache_id.empty())
          COWLAB_TRY(in_ctx(remove_driver_data(l.intent.cache_id), "recover layer " + l.id));
        l.intent = {};
        COWLAB_TRY(write_info(l));
        note(forward
                 ? "layer " + l.id + ": removed the content an applydiff replaced"
                 : "layer " + l.id + ": rolled back an interrupted applydiff (old content kept)");
        continue;
      }
      case IntentOp::kMount:
      case IntentOp::kUnmount: {
        bool was_mount = l.intent.op == IntentOp::kMount;
        if (driver_->exists(l.cache_id))
          COWLAB_TRY(in_ctx(driver_->put(l.cache_id), "recover layer " + l.id));
        l.mount_count = 0;
        l.mount_point.clear();
        l.mount_boot.clear();
        l.intent = {};
        COWLAB_TRY(write_info(l));
        note("layer " + l.id +
             (was_mount ? ": undid an interrupted mount" : ": finished an interrupted unmount"));
        continue;
      }
    }
    // A recorded mount the kernel no longer has (reboot, umount by hand, another namespace).
    if (recorded_mount_gone(l)) {
      l.mount_count = 0;
      l.mount_point.clear();
      l.mount_boot.clear();
      COWLAB_TRY(write_info(l));
      note("layer " + l.id + ": its recorded mount is gone (reboot or umount); mount count reset");
    }
  }
  return {};
}

// The driver names the directory it mounts the layer on (Driver::mount_dir); the path the
// record holds may lie below it (devicemapper's rootfs/), so checking that path itself would
// miss a gone mount: after a power cut `mount` returned a path that no longer existed
// (docs/crash.md, copy-up-write on devicemapper).  Within one boot, a layer the driver mounts
// nothing for keeps its references: its path stays valid.
bool LayerStore::recorded_mount_gone(const LayerInfo& l) {
  if (l.mount_count <= 0) return false;
  // Taken in an earlier boot: whoever held the references is gone, whatever the driver
  // mounts (a vfs container mounted at a power cut could never be deleted otherwise).
  const std::string boot = current_boot_id();
  if (!l.mount_boot.empty() && !boot.empty() && l.mount_boot != boot) return true;
  auto dir = driver_->mount_dir(l.cache_id);
  if (!dir.ok() || dir->empty()) return false;
  auto m = sys::is_mountpoint(*dir);
  return m.ok() && !*m;
}

Result<void> LayerStore::write_info(const LayerInfo& info) {
  return sys::write_file_atomic(root_ + "/" + kLayersDir + "/" + info.id + std::string(kJson),
                                to_json(info).dump(2) + "\n", 0600);
}

Result<void> LayerStore::remove_info(const std::string& id) {
  auto r = sys::unlink(root_ + "/" + kLayersDir + "/" + id + std::string(kJson));
  if (!r.ok() && r.error().err() != ENOENT) return r;
  return {};
}

Result<std::vector<LayerInfo>> LayerStore::layers() {
  auto sc = COWLAB_TRY(scan());
  return std::move(sc.layers);
}

Result<std::vector<DamagedLayer>> LayerStore::damaged() {
  auto sc = COWLAB_TRY(scan());
  return std::move(sc.damaged);
}

Result<LayerInfo> LayerStore::layer(const std::string& id) {
  COWLAB_TRY(validate_layer_id(id));
  std::string file = root_ + "/" + kLayersDir + "/" + id + std::string(kJson);
  auto text = sys::read_file(file);
  if (!text.ok()) {
    if (text.error().err() == ENOENT) {
      if (sys::lstat_if_exists(file + ".damaged").value_or(std::nullopt))
        return Error::corrupt("layer " + id + ": damaged (quarantined as " + file +
                              ".damaged; delete-layer " + id + " or wipe removes it)");
      return Error::not_found("layer " + id + ": no such layer");
    }
    return std::move(text).error();
  }
  auto info = from_json(*text, file);
  if (!info.ok())
    return Error::corrupt("layer " + id + ": damaged: " + info.error().message() +
                          " (delete-layer " + id + " or wipe removes it)");
  if (info->incomplete)
    return Error::not_found("layer " + id + ": incomplete (interrupted operation)");
  return info;
}

bool LayerStore::exists(const std::string& id) {
  return layer(id).ok();
}

Result<std::optional<LayerInfo>> LayerStore::find_by_chain_id(const std::string& chain_id) {
  auto all = COWLAB_TRY(layers());
  for (auto& l : all)
    if (!l.incomplete && l.intent.op != IntentOp::kApplyDiff && l.chain_id == chain_id)
      return std::optional<LayerInfo>(l);
  return std::optional<LayerInfo>();
}

Result<std::vector<std::string>> LayerStore::ancestors(const std::string& id) {
  std::vector<std::string> out;
  auto cur = COWLAB_TRY(layer(id));
  std::set<std::string> seen{id};
  while (!cur.parent.empty()) {
    if (!seen.insert(cur.parent).second)
      return Error::corrupt("layer " + id + ": parent chain loops at " + cur.parent);
    out.push_back(cur.parent);
    cur = COWLAB_TRY_CTX(layer(cur.parent), "ancestors of " + id);
  }
  return out;
}

// ---- create and import -----------------------------------------------------------------------

Result<LayerInfo> LayerStore::create_layer(const std::string& id, const std::string& parent,
                                           LayerKind kind, const CreateOpts& opts) {
  const std::string ctx = "create-layer " + escape_for_message(id);
  auto info = COWLAB_TRY(create_incomplete(id, parent, kind, opts, ctx));
  kill_point("create:recorded");
  if (auto r = sync_layer(info); !r.ok()) {
    (void)destroy(info, root_ + "/" + kLayersDir + "/" + id + std::string(kJson), ctx);
    return r.error();
  }
  info.incomplete = false;
  COWLAB_TRY_CTX(write_info(info), ctx);
  return info;
}

Result<LayerInfo> LayerStore::create_incomplete(const std::string& id, const std::string& parent,
                                                LayerKind kind, const CreateOpts& opts,
                                                const std::string& ctx) {
  COWLAB_TRY_CTX(validate_layer_id(id), ctx);
  if (!parent.empty()) COWLAB_TRY_CTX(validate_layer_id(parent), ctx + ": --parent");
  for (std::string_view suffix : {kJson, kDamaged, kDeleting}) {
    std::string file = root_ + "/" + kLayersDir + "/" + id + std::string(suffix);
    if (COWLAB_TRY(sys::lstat_if_exists(file)).has_value())
      return Error(ErrorKind::kExists,
                   ctx + (suffix == kJson ? ": layer already exists"
                                          : ": a damaged or half-deleted layer of that id exists"),
                   EEXIST);
  }
  LayerInfo info;
  info.id = id;
  info.parent = parent;
  info.kind = kind;
  info.created = static_cast<int64_t>(::time(nullptr));
  info.incomplete = true;
  info.driver = driver_->name();
  info.create_opts = opts.storage_opt;
  info.cache_id = COWLAB_TRY_CTX(new_cache_id(), ctx);
  std::string parent_cache;
  if (!parent.empty()) parent_cache = COWLAB_TRY_CTX(layer(parent), ctx).cache_id;
  COWLAB_TRY_CTX(write_info(info), ctx);
  auto r = kind == LayerKind::kReadWrite ? driver_->create_rw(info.cache_id, parent_cache, opts)
                                         : driver_->create(info.cache_id, parent_cache, opts);
  if (!r.ok()) {
    // A failed create may leave what exists() does not show; if this removal fails too, the
    // incomplete record stays and the next open's recovery retries it.
    if (remove_driver_data(info.cache_id).ok()) (void)remove_info(id);
    return user_named(std::move(r).error(), info).with_context(ctx);
  }
  return info;
}

Result<LayerInfo> LayerStore::import_layer(const std::string& id, const std::string& parent,
                                           Reader& tar) {
  const std::string ctx = "import-layer " + escape_for_message(id);
  COWLAB_TRY_CTX(validate_layer_id(id), ctx);
  LayerInfo parent_info;
  if (!parent.empty()) parent_info = COWLAB_TRY_CTX(layer(parent), ctx);
  auto info = COWLAB_TRY(create_incomplete(id, parent, LayerKind::kReadOnly, {}, ctx));
  kill_point("import:recorded");
  // From here on, any failure removes the layer again: an import is all or nothing.
  auto undo = [&](Error e) -> Error {
    e = user_named(std::move(e), info);
    {
      auto rr = remove_driver_data(info.cache_id);
      if (!rr.ok()) {
        // Leave the incomplete record so the next open finishes the removal.
        return std::move(e).with_context(
            ctx + " (cleanup failed: " + user_named(rr.error(), info).message() + ")");
      }
    }
    (void)remove_info(id);
    return std::move(e).with_context(ctx);
  };
  DigestReader raw(tar);
  Compression compression = Compression::kNone;
  auto plain = decompress(std::make_unique<BorrowedReader>(raw), &compression);
  if (!plain.ok()) return undo(plain.error());
  // An uncompressed layer's DiffID is its blob digest: hash its bytes once, not twice.
  std::optional<DigestReader> uncompressed;
  if (compression != Compression::kNone) uncompressed.emplace(**plain);
  Reader& stream = uncompressed ? static_cast<Reader&>(*uncompressed) : **plain;
  auto applied = driver_->apply_diff(info.cache_id, parent_info.cache_id, stream);
  if (!applied.ok()) return undo(applied.error());
  auto compressed = raw.drain_and_digest();
  if (!compressed.ok()) return undo(compressed.error());
  auto diff_id = uncompressed ? uncompressed->drain_and_digest() : compressed;
  if (!diff_id.ok()) return undo(diff_id.error());
  kill_point("import:applied");

  info.size = *applied;
  info.diff_id = *diff_id;
  info.compressed_digest = *compressed;
  if (parent.empty()) {
    info.chain_id = info.diff_id;
  } else if (!parent_info.chain_id.empty()) {
    info.chain_id = chain_id(parent_info.chain_id, info.diff_id);
  }
  if (auto r = sync_layer(info); !r.ok()) return undo(r.error());
  info.incomplete = false;
  if (auto w = write_info(info); !w.ok()) return undo(w.error());
  return info;
}

// ---- applydiff -------------------------------------------------------------------------------

namespace {

// An unnamed file in `dir` for spooling (see StagedInput).
Result<sys::Fd> spool_file(const std::string& dir) {
  auto fd = sys::open(dir, O_RDWR | O_TMPFILE, 0600);
  if (fd.ok() || (fd.error().err() != EOPNOTSUPP && fd.error().err() != EISDIR)) return fd;
  unsigned char r[4];
  COWLAB_TRY(sys::random_bytes(r, sizeof r));
  std::string path = dir + "/spool-" + std::to_string(::getpid()) + "-" +
                     std::to_string(r[0] | r[1] << 8 | r[2] << 16);
  auto named = COWLAB_TRY(sys::open(path, O_RDWR | O_CREAT | O_EXCL, 0600));
  (void)sys::unlink(path);
  return named;
}

Result<void> rewind(int fd, const std::string& what) {
  if (::lseek(fd, 0, SEEK_SET) != 0) return Error::from_errno("lseek", what, errno);
  return {};
}

}  // namespace

Result<int64_t> LayerStore::apply_diff(const std::string& id, Reader& tar) {
  const std::string ctx = "apply-diff layer " + escape_for_message(id);
  auto info = COWLAB_TRY_CTX(layer(id), ctx);
  for (const auto& l : COWLAB_TRY_CTX(layers(), ctx))
    if (l.parent == id)
      return Error(ErrorKind::kBusy,
                   ctx + ": layer has children (" + l.id + "); changing it would change them",
                   EBUSY);
  if (info.mount_count > 0)
    return Error(ErrorKind::kBusy,
                 ctx + ": layer is mounted (unmount it first: applydiff replaces its content)",
                 EBUSY);
  std::string parent_cache;
  if (!info.parent.empty()) parent_cache = COWLAB_TRY_CTX(layer(info.parent), ctx).cache_id;

  // 1. Spool the (decompressed) input inside the store and validate it without touching
  //    the layer.
  std::string tmp = root_ + "/" + kTmpDir;
  auto spool = COWLAB_TRY_CTX(spool_file(tmp), ctx + ": spool input");
  {
    auto plain = COWLAB_TRY_CTX(decompress(std::make_unique<BorrowedReader>(tar)), ctx);
    std::vector<char> buf(1 << 20);
    for (;;) {
      size_t n = COWLAB_TRY_CTX(plain->read(buf.data(), buf.size()), ctx);
      if (n == 0) break;
      COWLAB_TRY_CTX(sys::write_all(spool.get(), buf.data(), n), ctx + ": spool input");
    }
  }
  {
    COWLAB_TRY_CTX(rewind(spool.get(), tar.name()), ctx);
    FdReader r(spool.get(), tar.name());
    ApplyOptions vo;
    vo.mode = ApplyMode::kValidateOnly;
    vo.context = ctx;
    COWLAB_TRY(apply_layer("", r, vo));
  }

  // 2. Record the intent, then build the staged copy: same parent, the layer's current
  //    changes, then the new tar.
  const std::string stage = COWLAB_TRY_CTX(new_cache_id(), ctx);
  LayerInfo staged = info;
  staged.intent = {IntentOp::kApplyDiff, stage};
  COWLAB_TRY_CTX(write_info(staged), ctx);
  kill_point("applydiff:intent");
  auto roll_back = [&](Error e) -> Error {
    e = user_named(std::move(e), info);
    {
      auto rr = remove_driver_data(stage);
      if (!rr.ok())
        return std::move(e).with_context(
            ctx + " (cleanup left for the next writer: " + rr.error().message() + ")");
    }
    (void)write_info(info);  // on failure the intent stays, and recovery finishes the job
    return std::move(e).with_context(ctx);
  };
  CreateOpts co;
  co.storage_opt = info.create_opts;
  auto created = info.kind == LayerKind::kReadWrite ? driver_->create_rw(stage, parent_cache, co)
                                                    : driver_->create(stage, parent_cache, co);
  if (!created.ok()) return roll_back(created.error());
  {
    auto current = spool_file(tmp);
    if (!current.ok()) return roll_back(current.error());
    FdWriter w(current->get(), "current content of layer " + id);
    if (auto r = driver_->diff(info.cache_id, parent_cache, w); !r.ok())
      return roll_back(r.error());
    if (auto r = rewind(current->get(), w.name()); !r.ok()) return roll_back(r.error());
    FdReader cr(current->get(), w.name());
    if (auto r = driver_->apply_diff(stage, parent_cache, cr); !r.ok()) return roll_back(r.error());
  }
  if (auto r = rewind(spool.get(), tar.name()); !r.ok()) return roll_back(r.error());
  FdReader r(spool.get(), tar.name());
  auto size = driver_->apply_diff(stage, parent_cache, r);
  if (!size.ok()) return roll_back(size.error());
  if (auto s = sync_layer(info); !s.ok()) return roll_back(s.error());
  kill_point("applydiff:staged");

  // 3. Commit: one metadata write switches to the staged copy.  The content no longer
  //    matches the tar the layer was imported from, so DiffID and ChainID go in that write.
  LayerInfo committed = info;
  committed.cache_id = stage;
  committed.intent = {IntentOp::kRetire, info.cache_id};
  committed.diff_id.clear();
  committed.chain_id.clear();
  committed.compressed_digest.clear();
  committed.size = *size;
  if (auto w = write_info(committed); !w.ok()) return roll_back(w.error());
  kill_point("applydiff:committed");
  // 4. Retire the old copy; a failure here is finished by the next writer's recovery.
  {
    auto rr = remove_driver_data(info.cache_id);
    if (!rr.ok()) {
      recovered_.push_back("applydiff layer " + id + ": removing the replaced content failed (" +
                           user_named(rr.error(), info).message() + "); the next writer retries");
      return *size;
    }
  }
  committed.intent = {};
  (void)write_info(committed);
  return *size;
}

// ---- reads -----------------------------------------------------------------------------------

Result<void> LayerStore::diff(const std::string& id, const std::optional<std::string>& parent,
                              Writer& out) {
  const std::string ctx = "diff layer " + escape_for_message(id);
  auto info = COWLAB_TRY_CTX(layer(id), ctx);
  std::string p = parent ? *parent : info.parent;
  std::string pc = p.empty() ? "" : COWLAB_TRY_CTX(layer(p), ctx).cache_id;
  auto r = driver_->diff(info.cache_id, pc, out);
  if (!r.ok()) return user_named(std::move(r).error(), info).with_context(ctx);
  return {};
}

Result<std::vector<Change>> LayerStore::changes(const std::string& id,
                                                const std::optional<std::string>& parent) {
  const std::string ctx = "changes of layer " + escape_for_message(id);
  auto info = COWLAB_TRY_CTX(layer(id), ctx);
  std::string p = parent ? *parent : info.parent;
  std::string pc = p.empty() ? "" : COWLAB_TRY_CTX(layer(p), ctx).cache_id;
  auto r = driver_->changes(info.cache_id, pc);
  if (!r.ok()) return user_named(std::move(r).error(), info).with_context(ctx);
  return r;
}

Result<int64_t> LayerStore::diff_size(const std::string& id,
                                      const std::optional<std::string>& parent) {
  const std::string ctx = "diffsize of layer " + escape_for_message(id);
  auto info = COWLAB_TRY_CTX(layer(id), ctx);
  std::string p = parent ? *parent : info.parent;
  std::string pc = p.empty() ? "" : COWLAB_TRY_CTX(layer(p), ctx).cache_id;
  auto r = driver_->diff_size(info.cache_id, pc);
  if (!r.ok()) return user_named(std::move(r).error(), info).with_context(ctx);
  return r;
}

// ---- mounts ----------------------------------------------------------------------------------

Result<std::string> LayerStore::mount(const std::string& id) {
  const std::string ctx = "mount " + escape_for_message(id);
  auto info = COWLAB_TRY_CTX(layer(id), ctx);
  if (info.mount_count > 0 && !info.mount_point.empty()) {
    info.mount_count++;
    COWLAB_TRY_CTX(write_info(info), ctx);
    return info.mount_point;
  }
  LayerInfo pending = info;
  pending.intent = {IntentOp::kMount, ""};
  COWLAB_TRY_CTX(write_info(pending), ctx);
  kill_point("mount:intent");
  auto path = driver_->get(info.cache_id, "");
  if (!path.ok()) {
    (void)write_info(info);
    return user_named(std::move(path).error(), info).with_context(ctx);
  }
  kill_point("mount:mounted");
  info.mount_count = 1;
  info.mount_point = *path;
  info.mount_boot = current_boot_id();
  if (auto w = write_info(info); !w.ok()) {
    // The intent is still recorded: put() now, and if that fails recovery does it.
    if (driver_->put(info.cache_id).ok()) {
      pending.intent = {};
      (void)write_info(pending);
    }
    return std::move(w).error().with_context(ctx);
  }
  return *path;
}

Result<void> LayerStore::unmount(const std::string& id) {
  const std::string ctx = "unmount " + escape_for_message(id);
  auto info = COWLAB_TRY_CTX(layer(id), ctx);
  if (info.mount_count <= 0) return Error::invalid(ctx + ": layer is not mounted");
  if (info.mount_count > 1) {
    info.mount_count--;
    return in_ctx(write_info(info), ctx);
  }
  LayerInfo pending = info;
  pending.intent = {IntentOp::kUnmount, ""};
  COWLAB_TRY_CTX(write_info(pending), ctx);
  kill_point("unmount:intent");
  if (auto r = driver_->put(info.cache_id); !r.ok()) {
    (void)write_info(info);
    return user_named(std::move(r).error(), info).with_context(ctx);
  }
  kill_point("unmount:unmounted");
  info.mount_count = 0;
  info.mount_point.clear();
  info.mount_boot.clear();
  COWLAB_TRY_CTX(write_info(info), ctx);
  return {};
}

// ---- delete and wipe -------------------------------------------------------------------------

// Data the driver holds that no metadata claims — a layer's cache id or an intent's, readable,
// being deleted or quarantined but parseable — belonged to metadata that is gone: unreadable
// metadata deleted (which may not have named all its data: a file cut short before its cache
// id, or before an intent's), or an unreadable .deleting file recovery dropped.  It is only
// collected once no unreadable metadata is left (`leaving` is the one being deleted now), since
// any unreadable file might own any unclaimed data.
Result<void> LayerStore::collect_orphans(const std::string& ctx, const std::string& leaving) {
  auto sc = COWLAB_TRY_CTX(scan(), ctx);
  if (!sc.unreadable_deleting.empty()) return {};
  std::set<std::string> claimed;
  auto claim = [&](const LayerInfo& l) {
    claimed.insert(l.cache_id);
    if (!l.intent.cache_id.empty()) claimed.insert(l.intent.cache_id);
  };
  for (const auto& l : sc.layers) claim(l);
  for (const auto& [l, file] : sc.deleting) claim(l);
  for (const auto& d : sc.damaged) {
    if (d.file == leaving || d.damage == Damage::kOrphan) continue;  // kOrphan: in sc.layers
    auto text = sys::read_file(d.file);
    if (!text.ok() && text.error().err() == ENOENT) continue;
    auto info = text.ok() ? from_json(*text, d.file) : Result<LayerInfo>(text.error());
    if (!info.ok()) return {};  // it may own any of it: wait until it is deleted too
    claim(*info);
  }
  auto held = driver_->list();
  if (!held.ok()) {
    if (held.error().kind() != ErrorKind::kNotSupported)
      return std::move(held).error().with_context(ctx + ": collect data no layer claims");
    recovered_.push_back("data no layer claims is left to wipe: " + held.error().message());
    return {};
  }
  std::sort(held->begin(), held->end());
  for (const auto& cache : *held) {
    if (claimed.count(cache)) continue;
    (void)driver_->put(cache);  // a mount reference the lost metadata may have recorded
    auto r = driver_->remove(cache);
    if (!r.ok())
      return std::move(r).error().with_context(ctx + ": remove data no layer claims (cache id " +
                                               cache + ")");
    recovered_.push_back("removed driver data " + cache +
                         " that no layer claims (its metadata was damaged and is deleted)");
  }
  return {};
}

Result<void> LayerStore::delete_damaged(const DamagedLayer& d, const std::string& ctx) {
  auto text = sys::read_file(d.file);
  Result<LayerInfo> info = text.ok() ? from_json(*text, d.file) : Result<LayerInfo>(text.error());
  if (info.ok()) return destroy(*info, d.file, ctx);
  // Unreadable as JSON: metadata damaged by hand or by the disk is mostly cut short or partly
  // overwritten, so its cache ids (the layer's, an intent's) are usually still in the text.
  // Those that no readable layer uses are the damaged layer's own data: remove it with the
  // file, rather than leaving it until wipe.
  if (text.ok()) {
    auto sc = COWLAB_TRY_CTX(scan(), ctx);
    std::set<std::string> in_use;
    for (const auto& l : sc.layers) in_use.insert({l.cache_id, l.intent.cache_id});
    for (const auto& [l, file] : sc.deleting) in_use.insert({l.cache_id, l.intent.cache_id});
    for (const auto& cache : salvage_cache_ids(*text)) {
      if (in_use.count(cache)) continue;
      if (driver_->exists(cache))
        (void)driver_->put(cache);  // a mount reference the damaged file may have recorded
      auto r = remove_driver_data(cache);
      if (!r.ok())
        return std::move(r).error().with_context(ctx + ": remove its data (cache id " + cache +
                                                 ")");
    }
  }
  // What it did not name (cut off before its cache id or an intent's) is data no metadata
  // claims; collected before the file goes, so a crash in between leaves it to the next try.
  COWLAB_TRY(collect_orphans(ctx, d.file));
  auto r = sys::unlink(d.file);
  if (!r.ok() && r.error().err() != ENOENT) return std::move(r).error().with_context(ctx);
  return {};
}

Result<void> LayerStore::delete_layer(const std::string& id) {
  const std::string ctx = "delete-layer " + escape_for_message(id);
  COWLAB_TRY_CTX(validate_layer_id(id), ctx);
  auto sc = COWLAB_TRY_CTX(scan(), ctx);
  for (const auto& l : sc.layers)
    if (l.parent == id && !l.incomplete)
      return Error(ErrorKind::kBusy, ctx + ": layer has a child (" + l.id + ")", EBUSY);
  for (const auto& d : sc.damaged) {
    if (d.id != id) continue;
    if (d.damage == Damage::kOrphan) break;  // readable: the normal path below
    return delete_damaged(d, ctx);
  }
  auto info = COWLAB_TRY_CTX(layer(id), ctx);
  if (info.mount_count > 0)
    return Error(ErrorKind::kBusy,
                 ctx + ": layer is mounted (" + std::to_string(info.mount_count) +
                     " references; unmount it first)",
                 EBUSY);
  // The intent is a rename: it needs no free space, so a full filesystem can be cleared.
  std::string file = root_ + "/" + kLayersDir + "/" + id + std::string(kJson);
  std::string marked = root_ + "/" + kLayersDir + "/" + id + std::string(kDeleting);
  COWLAB_TRY_CTX(sys::rename(file, marked), ctx);
  COWLAB_TRY_CTX(sys::fsync_dir(root_ + "/" + kLayersDir), ctx);
  kill_point("delete:renamed");
  COWLAB_TRY(destroy(info, marked, ctx));
  kill_point("delete:removed");
  return {};
}

Result<void> LayerStore::wipe() {
  const std::string ctx = "wipe";
  auto sc = COWLAB_TRY_CTX(scan(), ctx);
  std::vector<LayerInfo> all = sc.layers;
  std::string ldir = root_ + "/" + kLayersDir;
  // Leaves first, so no driver refuses a parent.
  while (!all.empty()) {
    std::set<std::string> parents;
    for (const auto& l : all) parents.insert(l.parent);
    std::vector<LayerInfo> rest;
    for (auto& l : all) {
      if (parents.count(l.id)) {
        rest.push_back(l);
        continue;
      }
      std::string file = ldir + "/" + l.id + std::string(kJson);
      std::string marked = ldir + "/" + l.id + std::string(kDeleting);
      COWLAB_TRY_CTX(sys::rename(file, marked), ctx);
      COWLAB_TRY(destroy(l, marked, ctx + ": layer " + l.id));
      kill_point("wipe:layer-removed");
    }
    if (rest.size() == all.size()) break;  // cannot happen: scan() takes loops out
    all = std::move(rest);
  }
  for (const auto& d : sc.damaged)
    if (sys::lstat_if_exists(d.file).value_or(std::nullopt))
      COWLAB_TRY(delete_damaged(d, ctx + ": damaged layer " + escape_for_message(d.id)));
  for (const auto& f : sc.temp_files) (void)sys::unlink(f);
  auto tmp_entries = COWLAB_TRY_CTX(sys::read_dir(root_ + "/" + kTmpDir), ctx);
  for (const auto& e : tmp_entries)
    COWLAB_TRY_CTX(remove_tmp_entry(root_ + "/" + kTmpDir + "/" + e.name), ctx);
  COWLAB_TRY_CTX(driver_->cleanup(), ctx);
  COWLAB_TRY_CTX(sys::remove_all(root_ + "/" + driver_->name()), ctx);
  COWLAB_TRY_CTX(sys::fsync_dir(ldir), ctx);
  return {};
}

}  // namespace cowlab
