// The zfs driver (contract in zfs.h).  Follows Docker's zfs driver
// (daemon/graphdriver/zfs/{zfs.go,zfs_linux.go}, moby 20.10) rule for rule; each rule cites its
// reason.
#include "zfs/zfs.h"

#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <time.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <map>
#include <set>

#include "core/naive_diff.h"
#include "core/reader_mounts.h"
#include "core/refcount.h"
#include "cowlab/archive.h"
#include "cowlab/fs.h"
#include "cowlab/sys_process.h"
#include "cowlab/sys_text.h"

namespace cowlab {

namespace {

constexpr const char* kGraphDir = "graph";
constexpr const char* kRemovingDir = "removing";
// creating/<id>: the origin snapshot "<parent>@<id>" of a child's create in progress (zfs.h).
constexpr const char* kCreatingDir = "creating";
constexpr const char* kReadersDir = "readers";  // readers' own mount points (core/reader_mounts.h)
// Pending datasets are renamed to <fsname>/<kRemovingPrefix><nonce>; ':' cannot occur in a
// layer id, so the name never collides with a layer.
constexpr const char* kRemovingPrefix = "cowlab-removing:";
// The user property naming the home of the store that made a layer dataset (zfs.h: list()).
constexpr const char* kHomeProperty = "cowlab:home";
// A pending dataset's origin snapshot is renamed to <parent>@<kRemovingSnapshotPrefix><8 hex>
// (defer_removal): 19 characters with the '@', within kSnapshotSuffix.
constexpr const char* kRemovingSnapshotPrefix = "cowlab-rm:";
constexpr size_t kMaxDatasetName = 255;  // ZFS_MAX_DATASET_NAME_LEN - 1
// Room kept after a layer's dataset name for a suffix "@<...>": a pending removal's renamed
// origin snapshot (defer_removal).  A child's snapshot "<parent>@<id>" is checked at create.
constexpr size_t kSnapshotSuffix = 20;
constexpr int kDestroyBusyRetries = 20;  // x 100 ms
constexpr long kRetryMs = 100;

void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (::nanosleep(&ts, &ts) != 0) {
  }
}

std::string trim(std::string s) {
  while (!s.empty() &&
         (s.back() == '\n' || s.back() == ' ' || s.back() == '\r' || s.back() == '\t'))
    s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}

std::string first_line(const std::string& s) {
  std::string t = trim(s);
  auto nl = t.find('\n');
  return nl == std::string::npos ? t : t.substr(0, nl);
}

std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "";
  p += ":/usr/local/sbin:/usr/sbin:/sbin";  // zfs lives in /sbin; PATH of a plain user may lack it
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    if (!dir.empty()) {
      auto st = sys::stat(dir + "/" + name);
      if (st.ok() && S_ISREG(st->st_mode) && (st->st_mode & 0111)) return dir + "/" + name;
    }
    start = end + 1;
  }
  return "";
}

// Docker's layer id grammar (the layer store enforces it too): [A-Za-z0-9][A-Za-z0-9_.-]*.
// Every such id is a valid ZFS name component.
Result<void> check_id(const std::string& op, const std::string& id) {
  bool ok = !id.empty() && std::isalnum(static_cast<unsigned char>(id[0]));
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-'))
      ok = false;
  if (!ok) return Error::invalid(op + ": invalid layer id \"" + id + "\"");
  return {};
}

// ZFS dataset names: components of [A-Za-z0-9_.:- ] separated by '/', starting alphanumeric.
bool valid_dataset_name(const std::string& name) {
  if (name.empty() || name.size() > kMaxDatasetName || name.front() == '/' || name.back() == '/')
    return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    std::string c = name.substr(start, end - start);
    if (c.empty() || !std::isalnum(static_cast<unsigned char>(c[0]))) return false;
    for (char ch : c)
      if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' || ch == ':' ||
            ch == '-' || ch == ' '))
        return false;
    start = end + 1;
  }
  return true;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// ---- dataset operations: libzfs_core or the zfs command ----------------------------------------

class DatasetOps {
 public:
  virtual ~DatasetOps() = default;
  virtual Result<void> create(const std::string& ds,
                              const std::vector<sys::ZfsProperty>& props) = 0;
  virtual Result<void> snapshot(const std::string& snap) = 0;
  virtual Result<void> clone(const std::string& ds, const std::string& origin,
                             const std::vector<sys::ZfsProperty>& props) = 0;
  virtual Result<void> destroy(const std::string& ds) = 0;
  virtual Result<void> destroy_snapshot(const std::string& snap, sys::ZfsSnapshotDestroy when) = 0;
  virtual Result<bool> exists(const std::string& ds) = 0;
  virtual Result<void> rename(const std::string& from, const std::string& to) = 0;
};

class LibZfsCoreOps final : public DatasetOps {
 public:
  Result<void> create(const std::string& ds, const std::vector<sys::ZfsProperty>& props) override {
    return sys::zfs_create(ds, props);
  }
  Result<void> snapshot(const std::string& snap) override { return sys::zfs_snapshot(snap); }
  Result<void> clone(const std::string& ds, const std::string& origin,
                     const std::vector<sys::ZfsProperty>& props) override {
    return sys::zfs_clone(ds, origin, props);
  }
  Result<void> destroy(const std::string& ds) override { return sys::zfs_destroy(ds); }
  Result<void> destroy_snapshot(const std::string& snap, sys::ZfsSnapshotDestroy when) override {
    return sys::zfs_destroy_snapshot(snap, when);
  }
  Result<bool> exists(const std::string& ds) override { return sys::zfs_exists(ds); }
  Result<void> rename(const std::string& from, const std::string& to) override {
    return sys::zfs_rename(from, to);
  }
};

// The zfs command's messages mapped to the errno libzfs_core would have returned, so the
// driver's retry logic is the same for both.
int errno_for_zfs_message(const std::string& text) {
  if (text.find("dataset is busy") != std::string::npos ||
      text.find("pool or dataset is busy") != std::string::npos)
    return EBUSY;
  if (text.find("already exists") != std::string::npos) return EEXIST;
  if (text.find("has children") != std::string::npos ||
      text.find("dependent clones") != std::string::npos)
    return EEXIST;
  if (text.find("does not exist") != std::string::npos || text.find("no such") != std::string::npos)
    return ENOENT;
  if (text.find("out of space") != std::string::npos) return ENOSPC;
  return EIO;
}

class CommandOps final : public DatasetOps {
 public:
  explicit CommandOps(std::string zfs) : zfs_(std::move(zfs)) {}

  Result<void> create(const std::string& ds, const std::vector<sys::ZfsProperty>& props) override {
    std::vector<std::string> argv = {zfs_, "create"};
    add_props(argv, props);
    argv.push_back(ds);
    return run(argv, ds);
  }
  Result<void> snapshot(const std::string& snap) override {
    return run({zfs_, "snapshot", snap}, snap);
  }
  Result<void> clone(const std::string& ds, const std::string& origin,
                     const std::vector<sys::ZfsProperty>& props) override {
    std::vector<std::string> argv = {zfs_, "clone"};
    add_props(argv, props);
    argv.push_back(origin);
    argv.push_back(ds);
    return run(argv, ds);
  }
  Result<void> destroy(const std::string& ds) override { return run({zfs_, "destroy", ds}, ds); }
  Result<void> destroy_snapshot(const std::string& snap, sys::ZfsSnapshotDestroy when) override {
    if (when == sys::ZfsSnapshotDestroy::kDeferred) return run({zfs_, "destroy", "-d", snap}, snap);
    return run({zfs_, "destroy", snap}, snap);
  }
  Result<bool> exists(const std::string& ds) override {
    std::string out;
    auto rc = COWLAB_TRY(sys::run({zfs_, "list", "-H", "-o", "name", ds}, &out));
    if (rc == 0) return true;
    if (errno_for_zfs_message(out) == ENOENT) return false;
    return Error(ErrorKind::kSystem,
                 "zfs list " + ds + ": exit status " + std::to_string(rc) + ": " + first_line(out),
                 EIO);
  }
  Result<void> rename(const std::string& from, const std::string& to) override {
    return run({zfs_, "rename", from, to}, from);
  }

 private:
  static void add_props(std::vector<std::string>& argv,
                        const std::vector<sys::ZfsProperty>& props) {
    for (const auto& p : props) {
      argv.push_back("-o");
      argv.push_back(p.name + "=" +
                     (std::holds_alternative<uint64_t>(p.value)
                          ? std::to_string(std::get<uint64_t>(p.value))
                          : std::get<std::string>(p.value)));
    }
  }
  Result<void> run(const std::vector<std::string>& argv, const std::string& object) {
    std::string out;
    auto rc = COWLAB_TRY(sys::run(argv, &out));
    if (rc == 0) return {};
    std::string call = "zfs " + argv[1];
    if (argv.size() > 2 && argv[2] == "-d") call += " -d";
    return Error(
        ErrorKind::kSystem,
        call + " " + object + ": exit status " + std::to_string(rc) + ": " + first_line(out),
        errno_for_zfs_message(out));
  }
  std::string zfs_;
};

// ---- the driver --------------------------------------------------------------------------------

class ZfsDriver final : public NaiveDiffDriver {
 public:
  ZfsDriver(std::string home, ZfsOptions options, ZfsProbes probes, std::unique_ptr<DatasetOps> ops,
            DriverAccess access)
      : home_(std::move(home)),
        options_(std::move(options)),
        probes_(std::move(probes)),
        ops_(std::move(ops)),
        access_(access) {}

  const ZfsProbes& probes() const { return probes_; }

  std::string name() const override { return "zfs"; }
  std::string home() const override { return home_; }

  Result<void> create(const std::string& id, const std::string& parent,
                      const CreateOpts& opts) override {
    return create_layer("create layer " + id, id, parent, opts);
  }
  Result<void> create_rw(const std::string& id, const std::string& parent,
                         const CreateOpts& opts) override {
    return create_layer("create read-write layer " + id, id, parent, opts);
  }

  Result<void> remove(const std::string& id) override {
    const std::string ctx = "zfs: remove layer " + id;
    std::string ds = COWLAB_TRY_CTX(zfs_layer_dataset(probes_.fsname, id), ctx);
    const bool have = COWLAB_TRY_CTX(ops_->exists(ds), ctx);
    if (have) {
      std::string mnt = mount_point(id);
      while (refs_.count(mnt) > 0) refs_.decrement(mnt);
      mounted_.erase(mnt);
      COWLAB_TRY_CTX(release_mount(mnt), ctx);

      auto destroyed = destroy_dataset(ds);
      if (!destroyed.ok()) {
        if (destroyed.error().err() != EBUSY) return std::move(destroyed).error().with_context(ctx);
        // Still held by a process inside a copy of the mount (moby#16112): out of the layer's
        // name, destroyed later (see zfs.h).
        COWLAB_TRY_CTX(defer_removal(id, ds),
                       ctx + " (dataset busy: " + destroyed.error().message() + ")");
      }
    }
    // The origin snapshot "<parent>@<id>" goes with the clone (deferred destroy); one left by a
    // create cut before the clone or before the deferral goes here.
    const size_t stray = COWLAB_TRY_CTX(destroy_cut_create_snapshot(id), ctx);
    if (!have && stray == 0)
      return Error::not_found(ctx + ": no such layer (no dataset " + ds + ")");
    reap_pending();
    return {};
  }

  Result<std::string> get(const std::string& id, const std::string& mount_label) override {
    (void)mount_label;  // SELinux labels are not used by cowlab
    const std::string ctx = "zfs: get layer " + id;
    std::string ds = COWLAB_TRY_CTX(zfs_layer_dataset(probes_.fsname, id), ctx);
    // A reader mounts on a directory of its own (core/reader_mounts.h): graph/<id> is one
    // mount point for every process, and of two readers of a layer (two `cowlab diff`s) the
    // first to finish unmounted it under the other.  graph/<id> stays the mount of writers
    // and of `cowlab mount` references, which only the exclusive lock changes.
    std::string mnt;
    if (access_ == DriverAccess::kShared) {
      auto it = reader_dirs_.find(id);
      if (it == reader_dirs_.end())
        it = reader_dirs_.emplace(id, COWLAB_TRY_CTX(reader_mounts_.make(id), ctx)).first;
      mnt = it->second;
    } else {
      mnt = mount_point(id);
    }
    if (refs_.increment(mnt) > 1) return mnt;
    auto r = mount_dataset(ds, mnt);
    if (!r.ok()) {
      refs_.decrement(mnt);
      (void)sys::rmdir(mnt);
      reader_dirs_.erase(id);
      return std::move(r).error().with_context(ctx);
    }
    mounted_.insert(mnt);
    return mnt;
  }

  Result<void> put(const std::string& id) override {
    const std::string ctx = "zfs: put layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    auto reader = reader_dirs_.find(id);
    std::string mnt = reader != reader_dirs_.end() ? reader->second : mount_point(id);
    if (refs_.decrement(mnt) > 0) return {};
    mounted_.erase(mnt);
    if (reader != reader_dirs_.end()) reader_dirs_.erase(reader);
    COWLAB_TRY_CTX(release_mount(mnt), ctx);
    return {};
  }

  // Every layer is a dataset that get() mounts on <home>/<id>.
  Result<std::string> mount_dir(const std::string& id) override {
    const std::string ctx = "zfs: mount dir of layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    if (!exists(id)) return Error::not_found(ctx + ": no such layer");
    return mount_point(id);
  }

  // The children of the parent dataset that this store made (zfs.h).  Listing datasets needs
  // the zfs command: libzfs_core has no call for it.
  Result<std::vector<std::string>> list() override {
    const std::string ctx = "zfs: list layers under " + probes_.fsname;
    if (probes_.zfs_command.empty())
      return Error::not_supported(ctx + ": no zfs command (libzfs_core cannot list datasets)");
    std::string out;
    auto rc = COWLAB_TRY_CTX(sys::run({probes_.zfs_command, "list", "-H", "-p", "-o",
                                       std::string("name,") + kHomeProperty, "-t", "filesystem",
                                       "-d", "1", probes_.fsname},
                                      &out),
                             ctx);
    if (rc != 0)
      return Error(ErrorKind::kSystem,
                   ctx + ": zfs list exited " + std::to_string(rc) + ": " + first_line(out), EIO);
    return parse_zfs_layer_list(out, probes_.fsname, home_);
  }

  bool exists(const std::string& id) override {
    auto ds = zfs_layer_dataset(probes_.fsname, id);
    if (!ds.ok()) return false;
    auto r = ops_->exists(*ds);
    return r.ok() && *r;
  }

  KeyValues status() override {
    ZfsStatusInputs in;
    in.fsname = probes_.fsname;
    in.health = pool_health();
    in.properties = properties(probes_.fsname, "used,available,quota,compression");
    return format_zfs_status(in);
  }

  Result<KeyValues> metadata(const std::string& id) override {
    const std::string ctx = "zfs: metadata of layer " + id;
    std::string ds = COWLAB_TRY_CTX(zfs_layer_dataset(probes_.fsname, id), ctx);
    if (!COWLAB_TRY_CTX(ops_->exists(ds), ctx)) return Error::not_found(ctx + ": no such layer");
    return KeyValues{{"Mountpoint", mount_point(id)}, {"Dataset", ds}};
  }

  Result<void> cleanup() override {
    Result<void> first_error;
    for (const auto& mnt : std::set<std::string>(mounted_)) {
      while (refs_.count(mnt) > 0) refs_.decrement(mnt);
      auto r = release_mount(mnt);
      if (!r.ok() && first_error.ok())
        first_error = std::move(r).error().with_context("zfs: cleanup");
    }
    mounted_.clear();
    reader_dirs_.clear();
    // Destroying what waits for removal is a writer's business (readers run at once).
    if (access_ == DriverAccess::kExclusive) reap_pending();
    return first_error;
  }

  Result<int64_t> apply_diff(const std::string& id, const std::string& parent,
                             Reader& tar) override {
    const std::string ctx = "apply-diff layer " + id;
    std::string dir = COWLAB_TRY_CTX(get(id, ""), ctx);
    ApplyOptions ao;
    ao.format = WhiteoutFormat::kDeleteInPlace;
    // Hard links cannot leave the dataset, so the `.wh..wh.plnk` scratch dir lives in the
    // layer's own dataset; apply_layer removes it.
    ao.scratch_dir = dir + "/.cowlab-apply-scratch";
    ao.context = ctx;
    auto stats = apply_layer(dir, tar, ao);
    auto p = put(id);
    if (!stats.ok()) return std::move(stats).error();
    if (!p.ok()) return std::move(p).error().with_context(ctx);
    return stats->size;
  }

  Result<uint64_t> space_used() override {
    if (probes_.zfs_command.empty()) return Driver::space_used();
    std::string pool = probes_.fsname.substr(0, probes_.fsname.find('/'));
    // "used" is updated when a transaction group syncs; force one so a fresh clone is counted.
    std::string zpool = find_program("zpool");
    if (!zpool.empty()) (void)sys::run({zpool, "sync", pool});
    auto props = COWLAB_TRY(properties(probes_.fsname, "used"));
    auto it = props.find("used");
    if (it == props.end()) return Error::corrupt("zfs get used " + probes_.fsname + ": no value");
    try {
      return static_cast<uint64_t>(std::stoull(it->second));
    } catch (...) {
      return Error::corrupt("zfs get used " + probes_.fsname + ": \"" + it->second +
                            "\" is not a number");
    }
  }

  WhiteoutFormat whiteout_format() const override { return WhiteoutFormat::kDeleteInPlace; }
  bool supports_quota() const override { return true; }

  Result<std::vector<std::string>> pending() {
    std::vector<std::string> out;
    auto entries = COWLAB_TRY(sys::read_dir(home_ + "/" + kRemovingDir));
    for (const auto& e : entries) {
      auto ds = sys::read_file(home_ + "/" + kRemovingDir + "/" + e.name);
      if (ds.ok()) out.push_back(trim(*ds));
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  // Destroys pending datasets whose holders have gone; the rest wait for the next call.
  void reap_pending() {
    auto entries = sys::read_dir(home_ + "/" + kRemovingDir);
    if (!entries.ok()) return;
    for (const auto& e : *entries) {
      std::string ledger = home_ + "/" + kRemovingDir + "/" + e.name;
      auto text = sys::read_file(ledger);
      if (!text.ok()) continue;
      std::string ds = trim(*text);
      bool gone = false;
      if (ds.rfind(probes_.fsname + "/" + kRemovingPrefix, 0) != 0) {
        gone = true;  // not ours to destroy: a corrupt record
      } else if (auto ex = ops_->exists(ds); ex.ok() && !*ex) {
        gone = true;
      } else if (ex.ok()) {
        gone = destroy_snapshots_then(ds).ok();
      }
      if (gone) (void)sys::unlink(ledger);
    }
  }

 protected:
  std::string scratch_dir() const override { return home_ + "/.tmp"; }

 private:
  std::string mount_point(const std::string& id) const {
    return home_ + "/" + kGraphDir + "/" + id;
  }

  Result<void> create_layer(const std::string& ctx0, const std::string& id,
                            const std::string& parent, const CreateOpts& opts) {
    const std::string ctx = "zfs: " + ctx0;
    std::string ds = COWLAB_TRY_CTX(zfs_layer_dataset(probes_.fsname, id), ctx);
    auto size = COWLAB_TRY_CTX(parse_zfs_layer_size(opts.storage_opt), ctx);
    std::vector<sys::ZfsProperty> props = {{"mountpoint", std::string("legacy")},
                                           {kHomeProperty, home_}};
    if (size) props.push_back({"quota", *size});

    if (COWLAB_TRY_CTX(ops_->exists(ds), ctx))
      return Error(ErrorKind::kExists, ctx + ": layer exists (" + ds + ")", EEXIST);
    if (parent.empty()) {
      COWLAB_TRY_CTX(ops_->create(ds, props), ctx);
      return {};
    }
    std::string parent_ds = COWLAB_TRY_CTX(zfs_layer_dataset(probes_.fsname, parent), ctx);
    if (!COWLAB_TRY_CTX(ops_->exists(parent_ds), ctx))
      return Error::not_found(ctx + ": parent layer " + parent + " does not exist");

    // The snapshot is named after the child, "<parent>@<id>" (Docker names it after the clock):
    // a create cut between the snapshot and its deferred destroy leaves a snapshot that the
    // child's remove() — and so the store's recovery of the incomplete child — finds by name,
    // and that a retried create replaces.
    std::string snap = parent_ds + "@" + id;
    if (snap.size() > kMaxDatasetName)
      return Error::invalid(ctx + ": snapshot name " + snap + " exceeds " +
                            std::to_string(kMaxDatasetName) + " characters");
    // Written (and durable) before the snapshot exists, removed once its destroy is deferred:
    // remove(id) learns from it, without listing, whether a cut create left a snapshot.
    const std::string ledger = creating_ledger(id);
    COWLAB_TRY_CTX(sys::write_file_atomic(ledger, snap + "\n", 0600), ctx);
    // A create that fails from here on leaves its ledger only while the snapshot it names is
    // still there (its destroy failed too): then remove(id) still needs it.
    auto failed = [&](Error e) -> Error {
      if (!ops_->exists(snap).value_or(true)) (void)sys::unlink(ledger);
      return std::move(e).with_context(ctx);
    };
    auto taken = sys::fail_point("zfs:snapshot");
    if (taken.ok()) taken = ops_->snapshot(snap);
    if (!taken.ok() && taken.error().err() == EEXIST) {
      // Left by a cut create of this id (no clone: ZFS refuses to destroy one that has).
      auto old = ops_->destroy_snapshot(snap, sys::ZfsSnapshotDestroy::kNow);
      if (!old.ok()) return failed(std::move(old).error().with_context("snapshot left by an interrupted create"));
      taken = ops_->snapshot(snap);
    }
    if (!taken.ok()) return failed(std::move(taken).error());
    sys::kill_point("zfs:snapshotted");
    auto cloned = sys::fail_point("zfs:clone");
    if (cloned.ok()) cloned = ops_->clone(ds, snap, props);
    if (!cloned.ok()) {
      (void)ops_->destroy_snapshot(snap, sys::ZfsSnapshotDestroy::kNow);
      return failed(std::move(cloned).error());
    }
    sys::kill_point("zfs:cloned");
    // The snapshot now lives exactly as long as the clone (`zfs destroy -d`).
    auto deferred = ops_->destroy_snapshot(snap, sys::ZfsSnapshotDestroy::kDeferred);
    if (!deferred.ok()) {
      // Without the deferral the snapshot would outlive the child: undo the whole layer.
      (void)ops_->destroy(ds);
      (void)ops_->destroy_snapshot(snap, sys::ZfsSnapshotDestroy::kNow);
      return failed(std::move(deferred).error());
    }
    // Not made durable: a ledger that comes back after a crash costs remove() one lookup.
    (void)sys::unlink(ledger);
    return {};
  }

  std::string creating_ledger(const std::string& id) const {
    return home_ + "/" + kCreatingDir + "/" + id;
  }

  // What a cut create of `id` left: its ledger names the origin snapshot, destroyed here unless
  // it has a clone (the origin of a live or pending dataset); then the ledger goes.  No ledger:
  // every create of the id got as far as the deferral, so there is nothing (the listing that
  // used to run on every remove cost ~1 s of a zfs process under TCG, most of a 64-layer
  // store's teardown).  A ledger that does not name "<fsname>/<layer>@<id>" is not trusted:
  // the snapshots are listed instead (destroy_stray_snapshots).  Returns how many it destroyed.
  Result<size_t> destroy_cut_create_snapshot(const std::string& id) {
    const std::string ledger = creating_ledger(id);
    auto text = sys::read_file(ledger);
    if (!text.ok() && text.error().err() == ENOENT) return size_t{0};
    std::string snap = text.ok() ? trim(*text) : "";
    const std::string prefix = probes_.fsname + "/", suffix = "@" + id;
    const bool named = snap.size() > prefix.size() + suffix.size() && snap.rfind(prefix, 0) == 0 &&
                       snap.compare(snap.size() - suffix.size(), suffix.size(), suffix) == 0 &&
                       snap.substr(prefix.size(), snap.size() - prefix.size() - suffix.size())
                               .find_first_of("/@") == std::string::npos;
    size_t destroyed = 0;
    if (!named) {
      destroyed = COWLAB_TRY(destroy_stray_snapshots(id));
    } else if (COWLAB_TRY(ops_->exists(snap))) {
      auto r = ops_->destroy_snapshot(snap, sys::ZfsSnapshotDestroy::kNow);
      // EBUSY/EEXIST: it has a clone, a dataset that is not this layer's any more.
      if (r.ok())
        ++destroyed;
      else if (r.error().err() != ENOENT && r.error().err() != EBUSY && r.error().err() != EEXIST)
        return std::move(r).error();
    }
    COWLAB_TRY(sys::unlink(ledger));
    return destroyed;
  }

  Result<void> mount_dataset(const std::string& ds, const std::string& mnt) {
    if (!COWLAB_TRY(ops_->exists(ds)))
      return Error::not_found("no such layer (no dataset " + ds + ")");
    COWLAB_TRY(sys::mkdir_all(mnt, 0755));
    // A mount left by a process that lost track of it: the RefCounter counted it as one
    // reference already, so reaching here means it is not mounted, or mounted by another
    // dataset; mount(2) stacks on top either way, and put() detaches the top.
    COWLAB_TRY(sys::mount(ds, mnt, "zfs", options_.mount_flags, options_.mount_data));
    return {};
  }

  // Docker's Put: umount(MNT_DETACH), then rmdir.  The rmdir also detaches copies of the mount
  // held by other mount namespaces (Linux >= 3.18), which is what lets destroy succeed later.
  Result<void> release_mount(const std::string& mnt) {
    for (int i = 0; i < 8; ++i) {  // stacked mounts of an earlier crash
      auto m = sys::is_mountpoint(mnt);
      if (!m.ok() || !*m) break;
      auto u = sys::umount2(mnt, MNT_DETACH);
      if (!u.ok() && u.error().err() != EINVAL && u.error().err() != ENOENT)
        return std::move(u).error();
    }
    auto r = sys::rmdir(mnt);
    if (!r.ok() && r.error().err() != ENOENT) return std::move(r).error();
    return {};
  }

  // Destroys a layer dataset: EBUSY retried while the last mount reference drains; snapshots
  // left by an interrupted create (EEXIST: "has children") destroyed first.
  Result<void> destroy_dataset(const std::string& ds) {
    Result<void> r;
    for (int i = 0; i < kDestroyBusyRetries; ++i) {
      r = destroy_snapshots_then(ds);
      if (r.ok() || r.error().err() != EBUSY) return r;
      sleep_ms(kRetryMs);
    }
    return r;
  }

  Result<void> destroy_snapshots_then(const std::string& ds) {
    auto r = ops_->destroy(ds);
    if (r.ok() || r.error().err() != EEXIST) return r;
    // Snapshots of the dataset: listing needs the zfs command (libzfs_core has no call).
    if (probes_.zfs_command.empty()) return r;
    std::string out;
    auto rc = sys::run({probes_.zfs_command, "list", "-H", "-p", "-o", "name,clones", "-t",
                        "snapshot", "-d", "1", ds},
                       &out);
    if (!rc.ok() || *rc != 0) return r;
    size_t start = 0;
    bool any = false;
    while (start < out.size()) {
      size_t end = out.find('\n', start);
      if (end == std::string::npos) end = out.size();
      std::string line = out.substr(start, end - start);
      start = end + 1;
      auto tab = line.find('\t');
      std::string snap = line.substr(0, tab);
      std::string clones = tab == std::string::npos ? "" : trim(line.substr(tab + 1));
      if (snap.empty()) continue;
      // A snapshot with clones belongs to a child layer: that child must go first.
      if (!clones.empty() && clones != "-")
        return Error(
            ErrorKind::kBusy,
            "dataset " + ds + " has dependent layers (clones " + clones + " of " + snap + ")",
            EEXIST);
      COWLAB_TRY(ops_->destroy_snapshot(snap, sys::ZfsSnapshotDestroy::kNow));
      any = true;
    }
    if (!any) return r;
    return ops_->destroy(ds);
  }

  // Destroys the snapshots "<fsname>/<any layer>@<id>" that have no clone: what a create of `id`
  // cut before its clone or before the snapshot's deferred destroy leaves (create_layer).
  // Returns how many it destroyed.  Listing needs the zfs command (libzfs_core has no call):
  // without it, 0.
  Result<size_t> destroy_stray_snapshots(const std::string& id) {
    if (probes_.zfs_command.empty()) return size_t{0};
    std::string out;
    auto rc = COWLAB_TRY(sys::run({probes_.zfs_command, "list", "-H", "-p", "-o", "name,clones",
                                   "-t", "snapshot", "-d", "2", probes_.fsname},
                                  &out));
    if (rc != 0)
      return Error(ErrorKind::kSystem,
                   "zfs list snapshots below " + probes_.fsname + ": exit status " +
                       std::to_string(rc) + ": " + first_line(out),
                   EIO);
    size_t destroyed = 0;
    const std::string prefix = probes_.fsname + "/", suffix = "@" + id;
    for (const std::string& line : sys::split_lines(out)) {
      auto tab = line.find('\t');
      const std::string snap = line.substr(0, tab);
      const std::string clones = tab == std::string::npos ? "" : trim(line.substr(tab + 1));
      if (snap.size() <= prefix.size() + suffix.size() || snap.rfind(prefix, 0) != 0 ||
          snap.compare(snap.size() - suffix.size(), suffix.size(), suffix) != 0)
        continue;
      const std::string parent =
          snap.substr(prefix.size(), snap.size() - prefix.size() - suffix.size());
      if (parent.find_first_of("/@") != std::string::npos) continue;  // not a layer's snapshot
      if (!clones.empty() && clones != "-") continue;  // the origin of a live or pending dataset
      auto r = ops_->destroy_snapshot(snap, sys::ZfsSnapshotDestroy::kNow);
      if (!r.ok() && r.error().err() != ENOENT) return std::move(r).error();
      if (r.ok()) ++destroyed;
    }
    return destroyed;
  }

  Result<void> defer_removal(const std::string& id, const std::string& ds) {
    unsigned char raw[8];
    COWLAB_TRY(sys::random_bytes(raw, sizeof raw));
    char nonce[17];
    std::snprintf(nonce, sizeof nonce, "%02x%02x%02x%02x%02x%02x%02x%02x", raw[0], raw[1], raw[2],
                  raw[3], raw[4], raw[5], raw[6], raw[7]);
    std::string pending = probes_.fsname + "/" + kRemovingPrefix + nonce;
    std::string ledger = home_ + "/" + kRemovingDir + "/" + nonce;
    // Ledger first: a crash after the rename must not lose track of the dataset.
    COWLAB_TRY(sys::write_file_atomic(ledger, pending + "\n", 0600));
    // The origin snapshot "<parent>@<id>" moves out of the id's way too, so the id can be
    // created again from the same parent at once (create_layer names the snapshot after it).
    // It keeps its deferred destroy and goes with the pending dataset.  Renamed first: a cut
    // between the two renames leaves a live layer whose origin merely has another name.
    if (auto origin = properties(ds, "origin"); origin.ok()) {
      const std::string o = (*origin)["origin"];
      const std::string suffix = "@" + id;
      if (o.size() > suffix.size() &&
          o.compare(o.size() - suffix.size(), suffix.size(), suffix) == 0)
        COWLAB_TRY(ops_->rename(o, o.substr(0, o.size() - id.size()) + kRemovingSnapshotPrefix +
                                       std::string(nonce, 8)));
    }
    auto r = ops_->rename(ds, pending);
    if (!r.ok()) {
      (void)sys::unlink(ledger);
      return std::move(r).error();
    }
    return {};
  }

  Result<std::string> pool_health() {
    std::string zpool = find_program("zpool");
    if (zpool.empty()) return Error::not_found("no zpool command");
    std::string pool = probes_.fsname.substr(0, probes_.fsname.find('/'));
    std::string out;
    auto rc = COWLAB_TRY(sys::run({zpool, "list", "-H", "-o", "health", pool}, &out));
    if (rc != 0)
      return Error(ErrorKind::kSystem, "zpool list " + pool + ": " + first_line(out), EIO);
    return first_line(out);
  }

  Result<std::map<std::string, std::string>> properties(const std::string& ds,
                                                        const std::string& names) {
    if (probes_.zfs_command.empty()) return Error::not_found("no zfs command");
    std::string out;
    auto rc = COWLAB_TRY(sys::run(
        {probes_.zfs_command, "get", "-H", "-p", "-o", "property,value", names, ds}, &out));
    if (rc != 0) return Error(ErrorKind::kSystem, "zfs get " + ds + ": " + first_line(out), EIO);
    return parse_zfs_get(out);
  }

  std::string home_;
  ZfsOptions options_;
  ZfsProbes probes_;
  std::unique_ptr<DatasetOps> ops_;
  DriverAccess access_;
  RefCounter refs_{path_is_mounted};
  std::set<std::string> mounted_;  // mount points this process mounted and has not released
  // A reader's mount points (kShared): layer id -> its own directory (see get).
  std::map<std::string, std::string> reader_dirs_;
  ReaderMountPoints reader_mounts_{home_ + "/" + kReadersDir, home_ + "/" + kGraphDir};
};

// /dev/zfs appears when the zfs module is loaded; modprobe it once as Docker's users did.
Result<void> require_zfs_kernel() {
  if (COWLAB_TRY(sys::lstat_if_exists("/dev/zfs")).has_value()) return {};
  std::string out;
  auto rc = sys::run({"modprobe", "zfs"}, &out);
  if (COWLAB_TRY(sys::lstat_if_exists("/dev/zfs")).has_value()) return {};
  std::string why = !rc.ok()                  ? rc.error().message()
                    : first_line(out).empty() ? "modprobe zfs exited " + std::to_string(*rc)
                                              : "modprobe zfs: " + first_line(out);
  return Error::not_supported("this kernel has no zfs: /dev/zfs missing (" + why + ")");
}

// The store root's device (its nearest existing ancestor when it does not exist yet).
Result<dev_t> root_device(const std::string& root) {
  std::string p = root;
  for (;;) {
    auto st = COWLAB_TRY(sys::lstat_if_exists(p));
    if (st) return COWLAB_TRY(sys::stat(p)).st_dev;
    auto slash = p.find_last_of('/');
    if (slash == std::string::npos || p == "/")
      return Error::not_found("no existing ancestor of " + root);
    p = slash == 0 ? "/" : p.substr(0, slash);
  }
}

Result<std::unique_ptr<Driver>> init(const DriverConfig& config, ZfsBackend backend) {
  ZfsOptions options = COWLAB_TRY(parse_zfs_options(config.options));
  COWLAB_TRY(require_zfs_kernel());

  ZfsProbes probes;
  probes.zfs_command = find_program("zfs");
  std::unique_ptr<DatasetOps> ops;
  if (backend != ZfsBackend::kCommand) {
    auto lib = sys::zfs_core_load();
    if (lib.ok()) {
      probes.library = *lib;
      probes.backend = ZfsBackend::kLibZfsCore;
      ops = std::make_unique<LibZfsCoreOps>();
    } else {
      probes.library_unavailable = lib.error().message();
      if (backend == ZfsBackend::kLibZfsCore) return std::move(lib).error().with_context("zfs");
    }
  } else {
    probes.library_unavailable = "the zfs command was chosen";
  }
  if (!ops) {
    if (probes.zfs_command.empty())
      return Error::not_supported("zfs: no way to manage datasets: " + probes.library_unavailable +
                                  ", and no zfs command in PATH");
    probes.backend = ZfsBackend::kCommand;
    ops = std::make_unique<CommandOps>(probes.zfs_command);
  }

  if (!options.fsname.empty()) {
    probes.fsname = options.fsname;
    if (!COWLAB_TRY_CTX(ops->exists(options.fsname), "zfs"))
      return Error::invalid("zfs: option zfs.fsname: dataset " + options.fsname +
                            " does not exist");
  } else {
    // Docker: the dataset mounted where the root lives, matched by st_dev in mountinfo.
    dev_t dev = COWLAB_TRY_CTX(root_device(config.root), "zfs");
    auto mounts = COWLAB_TRY_CTX(sys::mountinfo(), "zfs");
    auto fsname = zfs_fsname_for_device(mounts, major(dev), minor(dev));
    if (!fsname.ok()) {
      std::string fs = backing_fs_name(config.root).value_or("unknown");
      return Error::not_supported("zfs: store root " + config.root + " is on " + fs +
                                  ", not a zfs dataset, and zfs.fsname is not set");
    }
    probes.fsname = *fsname;
  }
  // Room for "/<id>@<snapshot>" must remain under ZFS's name limit.
  if (probes.fsname.size() + 2 + kSnapshotSuffix > kMaxDatasetName)
    return Error::invalid("zfs: parent dataset name " + probes.fsname +
                          " is too long for layer datasets");

  bool fresh = !COWLAB_TRY(sys::lstat_if_exists(config.home)).has_value();
  struct FreshHomeGuard {
    std::string path;
    bool armed;
    ~FreshHomeGuard() {
      if (armed) (void)sys::remove_all(path);
    }
  } guard{config.home, fresh};
  // A reader (kShared) changes nothing that exists: on a read-only store the chmod alone made
  // every command fail with EROFS, even `layers`.
  const bool writer = config.access == DriverAccess::kExclusive;
  COWLAB_TRY_CTX(sys::mkdir_all(config.home, 0710), "zfs init");
  if (writer || fresh) COWLAB_TRY_CTX(sys::fchmodat(sys::kCwd, config.home, 0710), "zfs init");
  for (const char* sub : {kGraphDir, kRemovingDir, kCreatingDir}) {
    const std::string dir = config.home + "/" + sub;
    if (!writer && COWLAB_TRY_CTX(sys::lstat_if_exists(dir), "zfs init")) continue;
    auto made = sys::mkdir(dir, 0700);
    if (!made.ok() && made.error().err() != EEXIST)
      return std::move(made).error().with_context("zfs init");
  }
  // Under the exclusive lock no reader runs: a mount point under readers/ is a killed
  // reader's leftover, and its mount would keep the dataset busy (EBUSY on destroy).
  if (writer)
    COWLAB_TRY_CTX(sweep_reader_mount_points(config.home + "/" + kReadersDir), "zfs init");
  auto driver = std::make_unique<ZfsDriver>(config.home, std::move(options), std::move(probes),
                                            std::move(ops), config.access);
  if (writer) driver->reap_pending();
  guard.armed = false;
  return std::unique_ptr<Driver>(std::move(driver));
}

struct MountFlag {
  const char* name;
  unsigned long set;
  unsigned long clear;
};
constexpr MountFlag kMountFlags[] = {
    {"ro", MS_RDONLY, 0},         {"rw", 0, MS_RDONLY},
    {"nosuid", MS_NOSUID, 0},     {"suid", 0, MS_NOSUID},
    {"nodev", MS_NODEV, 0},       {"dev", 0, MS_NODEV},
    {"noexec", MS_NOEXEC, 0},     {"exec", 0, MS_NOEXEC},
    {"sync", MS_SYNCHRONOUS, 0},  {"async", 0, MS_SYNCHRONOUS},
    {"dirsync", MS_DIRSYNC, 0},   {"noatime", MS_NOATIME, 0},
    {"atime", 0, MS_NOATIME},     {"nodiratime", MS_NODIRATIME, 0},
    {"relatime", MS_RELATIME, 0}, {"strictatime", MS_STRICTATIME, 0},
};

}  // namespace

const char* zfs_backend_name(ZfsBackend backend) {
  switch (backend) {
    case ZfsBackend::kLibZfsCore:
      return "libzfs_core";
    case ZfsBackend::kCommand:
      return "zfs command";
    case ZfsBackend::kAuto:
      break;
  }
  return "auto";
}

Result<std::unique_ptr<Driver>> init_zfs(const DriverConfig& config) {
  return init(config, ZfsBackend::kAuto);
}

Result<std::unique_ptr<Driver>> init_zfs_with_backend(const DriverConfig& config,
                                                      ZfsBackend backend) {
  return init(config, backend);
}

const ZfsProbes* zfs_probes(const Driver& driver) {
  auto* d = dynamic_cast<const ZfsDriver*>(&driver);
  return d ? &d->probes() : nullptr;
}

Result<std::vector<std::string>> zfs_pending_removals(Driver& driver) {
  auto* d = dynamic_cast<ZfsDriver*>(&driver);
  if (!d) return Error::invalid("not a zfs driver");
  return d->pending();
}

void split_mount_options(const std::string& options, unsigned long* flags, std::string* data) {
  size_t start = 0;
  while (start <= options.size()) {
    size_t end = options.find(',', start);
    if (end == std::string::npos) end = options.size();
    std::string opt = trim(options.substr(start, end - start));
    start = end + 1;
    if (opt.empty()) continue;
    bool known = false;
    for (const auto& f : kMountFlags) {
      if (opt == f.name) {
        *flags = (*flags & ~f.clear) | f.set;
        known = true;
        break;
      }
    }
    if (!known) *data += (data->empty() ? "" : ",") + opt;
  }
}

Result<ZfsOptions> parse_zfs_options(const std::map<std::string, std::string>& options) {
  ZfsOptions out;
  for (const auto& [raw_key, value] : options) {
    std::string key = lower(raw_key);
    if (key == "zfs.fsname") {
      if (!valid_dataset_name(value) || value.find('@') != std::string::npos)
        return Error::invalid("zfs: option zfs.fsname: \"" + value +
                              "\" is not a valid dataset name");
      out.fsname = value;
    } else if (key == "zfs.mountopt") {
      split_mount_options(value, &out.mount_flags, &out.mount_data);
    } else {
      return Error::invalid("zfs: unknown option \"" + raw_key + "\"");
    }
  }
  return out;
}

Result<std::optional<uint64_t>> parse_zfs_layer_size(
    const std::map<std::string, std::string>& storage_opt) {
  std::optional<uint64_t> size;
  for (const auto& [raw_key, value] : storage_opt) {
    // Docker's parseStorageOpt: only "size", case-insensitive.
    if (lower(raw_key) != "size")
      return Error::invalid("unknown storage option \"" + raw_key + "\"");
    uint64_t bytes = COWLAB_TRY_CTX(parse_size(value), "storage option size");
    size = bytes > 0 ? std::optional<uint64_t>(bytes) : std::nullopt;  // 0: no quota, as Docker
  }
  return size;
}

Result<std::string> zfs_layer_dataset(const std::string& fsname, const std::string& id) {
  COWLAB_TRY(check_id("zfs", id));
  std::string ds = fsname + "/" + id;
  if (ds.size() + kSnapshotSuffix > kMaxDatasetName)
    return Error::invalid("zfs: layer id \"" + id + "\" is too long: dataset " + ds +
                          " plus a snapshot suffix exceeds " + std::to_string(kMaxDatasetName) +
                          " characters");
  return ds;
}

Result<std::string> zfs_fsname_for_device(const std::vector<sys::MountInfo>& mounts, unsigned maj,
                                          unsigned min) {
  const sys::MountInfo* found = nullptr;
  for (const auto& m : mounts)
    if (m.major == maj && m.minor == min) found = &m;  // the last one is on top
  if (!found)
    return Error::not_supported("no mount with device " + std::to_string(maj) + ":" +
                                std::to_string(min));
  if (found->fstype != "zfs")
    return Error::not_supported(found->mount_point + " is " + found->fstype + ", not zfs");
  return found->source;
}

std::vector<std::string> parse_zfs_layer_list(const std::string& output, const std::string& fsname,
                                              const std::string& home) {
  std::vector<std::string> ids;
  const std::string prefix = fsname + "/";
  for (const std::string& line : sys::split_lines(output)) {
    auto tab = line.find('\t');
    if (tab == std::string::npos) continue;
    const std::string name = line.substr(0, tab), value = line.substr(tab + 1);
    if (value != home || name.rfind(prefix, 0) != 0) continue;
    const std::string id = name.substr(prefix.size());
    // Only a direct child named like a layer: never the parent itself, a pending removal
    // ("cowlab-removing:<n>"), a snapshot or a grandchild.
    if (id.find_first_of("/@") != std::string::npos || !zfs_layer_dataset(fsname, id).ok())
      continue;
    ids.push_back(id);
  }
  return ids;
}

std::map<std::string, std::string> parse_zfs_get(const std::string& output) {
  std::map<std::string, std::string> out;
  for (const std::string& line : sys::split_lines(output)) {
    auto tab = line.find('\t');
    if (tab == std::string::npos) continue;
    out[line.substr(0, tab)] = trim(line.substr(tab + 1));
  }
  return out;
}

KeyValues format_zfs_status(const ZfsStatusInputs& in) {
  std::string pool = in.fsname.substr(0, in.fsname.find('/'));
  std::string pool_name = pool, health;
  if (in.health.ok()) {
    health = *in.health;
  } else {
    // Docker's wording when the pool cannot be read.
    pool_name = "error while getting pool information " + in.health.error().message();
    health = "not available";
  }
  auto prop = [&](const char* name) -> std::string {
    if (!in.properties.ok()) return "unknown (" + in.properties.error().message() + ")";
    auto it = in.properties->find(name);
    return it == in.properties->end() ? "unknown (not reported)" : it->second;
  };
  std::string quota = prop("quota");
  if (quota == "0" || quota == "none" || quota == "-") quota = "no";
  return {
      {"Zpool", pool_name},
      {"Zpool Health", health},
      {"Parent Dataset", in.fsname},
      {"Space Used By Parent", prop("used")},
      {"Space Available", prop("available")},
      {"Parent Quota", quota},
      {"Compression", prop("compression")},
  };
}

}  // namespace cowlab
