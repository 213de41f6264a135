// The aufs driver (contract in aufs.h).  Follows Docker's aufs driver
// (daemon/graphdriver/aufs/{aufs.go,dirs.go,mount.go}, moby 20.10) rule for rule; each rule
// cites its reason.
#include "aufs/aufs.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <time.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <set>

#include "aufs/branches.h"
#include "core/naive_diff.h"
#include "core/refcount.h"
#include "cowlab/archive.h"
#include "cowlab/changes.h"
#include "cowlab/fs.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"

namespace cowlab {

namespace {

constexpr const char* kLayersDir = "layers";
constexpr const char* kDiffDir = "diff";
constexpr const char* kMntDir = "mnt";
constexpr const char* kXinoDir = "xino";
constexpr const char* kXinoFile = "aufs.xino";
constexpr const char* kRemovingSuffix = "-removing";
constexpr const char* kProbePrefix = ".probe-";
constexpr const char* kProbeCacheFile = "probes";  // see "probe cache" below
constexpr int kUnmountRetries = 5;  // Docker's aufs Unmount: 5 tries, 100 ms apart, on EBUSY

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (::nanosleep(&ts, &ts) != 0) {
  }
}

Result<void> check_id(const std::string& op, const std::string& id) {
  if (id.empty() || id == "." || id == ".." || id.find('/') != std::string::npos || id[0] == '.')
    return Error::invalid(op + ": invalid layer id \"" + id + "\"");
  // "-removing" marks a directory being deleted (Docker's atomicRemove); init deletes such
  // directories, so a layer named like that would be lost at the next start.
  if (ends_with(id, kRemovingSuffix))
    return Error::invalid(op + ": layer id \"" + id +
                          "\" ends in \"-removing\", which the aufs layout reserves");
  // ':', ',' and '=' are separators in aufs's branch syntax.
  for (char c : {':', ',', '='})
    if (id.find(c) != std::string::npos)
      return Error::invalid(op + ": layer id \"" + id + "\" contains '" + std::string(1, c) +
                            "', which aufs's mount options cannot carry");
  return {};
}

// argv[0] as execvp would find it, or "".
std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
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

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

// Docker's refused backing filesystems for aufs (daemon/graphdriver/aufs/aufs.go Init).
std::optional<std::string> refused_backing_fs(long magic) {
  switch (magic & 0xffffffffL) {
    case kMagicAufs:
      return "aufs cannot be stacked on aufs";
    case kMagicBtrfs:
      return "aufs on btrfs is refused by Docker (use the btrfs driver)";
    case kMagicEcryptfs:
      return "ecryptfs cannot serve as an aufs branch filesystem";
    default:
      return std::nullopt;
  }
}

// The si_<id> of the aufs mounted at `target`: aufs lists "si=<hex>" among its options.
Result<std::optional<sys::MountInfo>> find_mount(const std::string& target) {
  auto mounts = COWLAB_TRY(sys::mountinfo());
  std::optional<sys::MountInfo> found;
  for (auto& m : mounts)
    if (m.mount_point == target) found = m;  // the last one is the top of the stack
  return found;
}

std::optional<std::string> option_value(const std::string& options, const std::string& key) {
  size_t start = 0;
  while (start <= options.size()) {
    size_t end = options.find(',', start);
    if (end == std::string::npos) end = options.size();
    std::string opt = options.substr(start, end - start);
    if (opt.rfind(key + "=", 0) == 0) return opt.substr(key.size() + 1);
    if (key == "br" && opt.rfind("br:", 0) == 0) return opt.substr(3);
    start = end + 1;
  }
  return std::nullopt;
}

// The branch list the kernel holds for the aufs mounted at `target`, as "<dir>=<perm>" specs.
// With sysaufs (CONFIG_SYSFS) the list is in /sys/fs/aufs/si_<id>/br<N>; without it aufs shows
// the branches in the mount options.
Result<std::vector<std::string>> mounted_branches(const std::string& target) {
  auto m = COWLAB_TRY(find_mount(target));
  if (!m) return Error::not_found("aufs: " + target + " is not mounted");
  if (m->fstype != "aufs")
    return Error::corrupt("aufs: " + target + " holds a " + m->fstype + " mount, not aufs");
  std::string opts = m->super_options + "," + m->options;
  if (auto si = option_value(opts, "si")) {
    std::string dir = "/sys/fs/aufs/si_" + *si;
    auto entries = sys::read_dir(dir);
    if (entries.ok()) {
      std::vector<std::pair<long, std::string>> indexed;
      for (const auto& e : *entries) {
        if (e.name.size() < 3 || e.name.rfind("br", 0) != 0) continue;
        std::string num = e.name.substr(2);
        if (!std::all_of(num.begin(), num.end(), [](unsigned char c) { return std::isdigit(c); }))
          continue;
        indexed.emplace_back(std::stol(num), e.name);
      }
      std::sort(indexed.begin(), indexed.end());
      std::vector<std::string> out;
      for (const auto& [n, name] : indexed)
        out.push_back(trim(COWLAB_TRY(sys::read_file(dir + "/" + name))));
      return out;
    }
  }
  if (auto br = option_value(opts, "br")) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= br->size()) {
      size_t end = br->find(':', start);
      if (end == std::string::npos) end = br->size();
      out.push_back(br->substr(start, end - start));
      start = end + 1;
    }
    return out;
  }
  return Error(
      ErrorKind::kNotSupported,
      "aufs: cannot read the branch list of " + target +
          " (no /sys/fs/aufs/si_<id> and no br: in the mount options), so a truncated mount "
          "(moby#9151) could not be detected",
      ENOTSUP);
}

class AufsDriver final : public NaiveDiffDriver {
 public:
  AufsDriver(std::string home, AufsProbes probes, std::vector<std::string> pending)
      : home_(std::move(home)), probes_(std::move(probes)), pending_(std::move(pending)) {}

  const AufsProbes& probes() const { return probes_; }

  std::string name() const override { return "aufs"; }
  std::string home() const override { return home_; }

  Result<void> create(const std::string& id, const std::string& parent,
                      const CreateOpts& opts) override {
    return create_layer("create layer " + id, id, parent, opts);
  }
  Result<void> create_rw(const std::string& id, const std::string& parent,
                         const CreateOpts& opts) override {
    return create_layer("create read-write layer " + id, id, parent, opts);
  }

  // Whatever is there of the layer: create makes mnt/<id>, then diff/<id>, then writes
  // layers/<id> (through a temp file), and a power cut can stop it after any of these — then
  // exists() is false, but the directories are the layer's all the same (the crash runner
  // found them orphaned after every cut create).  An interrupted remove leaves
  // <dir>-removing, which this finishes too.
  Result<void> remove(const std::string& id) override {
    const std::string ctx = "remove layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    auto pieces = COWLAB_TRY_CTX(pieces_of(id), ctx);
    if (pieces.empty()) return Error::not_found(ctx + ": no such layer");
    std::string mnt = mnt_dir(id);
    // Docker's TestRemoveMountedDir: a mounted layer is removed all the same.
    while (refs_.count(mnt) > 0) refs_.decrement(mnt);
    if (COWLAB_TRY_CTX(sys::is_mountpoint(mnt), ctx)) COWLAB_TRY_CTX(unmount(mnt), ctx);
    mounted_.erase(mnt);
    // The layers file first, so exists() turns false at once; then temp files of its write.
    for (const auto& p : pieces) {
      if (p.rfind(layers_file(id), 0) != 0) continue;
      auto r = sys::unlink(p);
      if (!r.ok() && r.error().err() != ENOENT) return std::move(r).error().with_context(ctx);
    }
    // Renamed out of the way first, so a half-deleted tree is never taken for the layer.
    COWLAB_TRY_CTX(atomic_remove(diff_dir(id)), ctx);
    COWLAB_TRY_CTX(atomic_remove(mnt), ctx);
    return {};
  }

  Result<std::string> get(const std::string& id, const std::string& mount_label) override {
    (void)mount_label;  // SELinux labels are not used by cowlab
    const std::string ctx = "get layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    if (!exists(id)) return Error::not_found(ctx + ": no such layer");
    auto parents = COWLAB_TRY_CTX(parent_ids(id), ctx);
    // A layer without ancestors is its diff dir: nothing to unite (Docker's Get).
    if (parents.empty()) return diff_dir(id);
    std::string mnt = mnt_dir(id);
    if (refs_.increment(mnt) > 1) return mnt;
    auto r = mount_layer(id, parents, mnt);
    if (!r.ok()) {
      refs_.decrement(mnt);
      return std::move(r).error().with_context(ctx);
    }
    mounted_.insert(mnt);
    return mnt;
  }

  Result<void> put(const std::string& id) override {
    const std::string ctx = "put layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    if (!exists(id)) return Error::not_found(ctx + ": no such layer");
    auto parents = COWLAB_TRY_CTX(parent_ids(id), ctx);
    if (parents.empty()) return {};  // get() did not mount
    std::string mnt = mnt_dir(id);
    if (refs_.decrement(mnt) > 0) return {};
    mounted_.erase(mnt);
    if (!COWLAB_TRY_CTX(sys::is_mountpoint(mnt), ctx)) return {};
    return unmount_ctx(mnt, ctx);
  }

  // mnt/<id> for a layer with ancestors, nothing for a base layer (get()).
  Result<std::string> mount_dir(const std::string& id) override {
    const std::string ctx = "mount dir of layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    if (!exists(id)) return Error::not_found(ctx + ": no such layer");
    auto parents = COWLAB_TRY_CTX(parent_ids(id), ctx);
    if (parents.empty()) return std::string();
    return mnt_dir(id);
  }

  bool exists(const std::string& id) override {
    if (!check_id("exists", id).ok()) return false;
    auto st = sys::lstat_if_exists(layers_file(id));
    return st.ok() && st->has_value();
  }
  // Every id with a piece in layers/ (its file or a temp file of that file's write), diff/ or
  // mnt/: complete layers and half-made ones (see remove()).  Directories being removed
  // (-removing) are init's to delete, not layers.
  Result<std::vector<std::string>> list() override {
    std::set<std::string> ids;
    for (const char* sub : {kLayersDir, kDiffDir, kMntDir}) {
      for (const auto& e : COWLAB_TRY_CTX(sys::read_dir(home_ + "/" + sub), "aufs: list layers")) {
        std::string id = e.name;
        if (sys::is_atomic_write_temp_name(id)) id = id.substr(0, id.rfind(".tmp-"));
        if (check_id("list", id).ok()) ids.insert(id);
      }
    }
    return std::vector<std::string>(ids.begin(), ids.end());
  }

  KeyValues status() override {
    std::string dirs;
    auto entries = sys::read_dir(home_ + "/" + kLayersDir);
    dirs = entries.ok() ? std::to_string(entries->size())
                        : "unknown (" + entries.error().message() + ")";
    // Docker's order (daemon/graphdriver/aufs/aufs.go Status).
    return {
        {"Root Dir", home_},
        {"Backing Filesystem", probes_.backing_fs},
        {"Dirs", dirs},
        {"Dirperm1 Supported", probes_.dirperm1 ? "true" : "false"},
    };
  }

  Result<KeyValues> metadata(const std::string& id) override {
    const std::string ctx = "metadata of layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    if (!exists(id)) return Error::not_found(ctx + ": no such layer");
    return KeyValues{};  // Docker's GetMetadata returns nil for aufs
  }

  // Under DriverAccess::kShared: the interrupted removes init found and left to a writer.
  std::vector<std::string> pending_recovery() const override { return pending_; }

  Result<void> cleanup() override {
    // Only mounts this process made; other processes' references are theirs.
    Result<void> first_error;
    for (const auto& mnt : std::set<std::string>(mounted_)) {
      while (refs_.count(mnt) > 0) refs_.decrement(mnt);
      auto m = sys::is_mountpoint(mnt);
      if (m.ok() && !*m) continue;
      auto r = unmount_ctx(mnt, "cleanup");
      if (!r.ok() && first_error.ok()) first_error = std::move(r).error();
    }
    mounted_.clear();
    return first_error;
  }

  Result<void> diff(const std::string& id, const std::string& parent, Writer& out) override {
    if (!is_direct_parent(id, parent)) return NaiveDiffDriver::diff(id, parent, out);
    ExportOptions eo;
    eo.format = WhiteoutFormat::kAufs;
    eo.lower_dirs = COWLAB_TRY_CTX(lower_dirs(id), "diff layer " + id);
    return export_tree(diff_dir(id), eo, out);
  }

  Result<std::vector<Change>> changes(const std::string& id, const std::string& parent) override {
    if (!is_direct_parent(id, parent)) return NaiveDiffDriver::changes(id, parent);
    const std::string ctx = "changes of layer " + id;
    auto lowers = COWLAB_TRY_CTX(lower_dirs(id), ctx);
    auto r = changes_aufs(diff_dir(id), lowers);
    if (!r.ok()) return std::move(r).error().with_context(ctx);
    return r;
  }

  Result<int64_t> apply_diff(const std::string& id, const std::string& parent,
                             Reader& tar) override {
    const std::string ctx = "apply-diff layer " + id;
    ApplyOptions ao;
    ao.context = ctx;
    if (is_direct_parent(id, parent)) {
      // Docker untars straight into diff/<id> with the aufs whiteout format.
      ao.format = WhiteoutFormat::kAufs;
      ao.scratch_dir = scratch_dir();
      auto stats = COWLAB_TRY(apply_layer(diff_dir(id), tar, ao));
      return stats.size;
    }
    // Naive: through the mounted union.  The plnk scratch dir must be on the union itself
    // (hard links cannot cross into the home's filesystem); apply_layer removes it.
    std::string dir = COWLAB_TRY_CTX(get(id, ""), ctx);
    ao.format = WhiteoutFormat::kDeleteInPlace;
    ao.scratch_dir = dir + "/.cowlab-apply-scratch";
    auto stats = apply_layer(dir, tar, ao);
    auto p = put(id);
    if (!stats.ok()) return std::move(stats).error();
    if (!p.ok()) return std::move(p).error().with_context(ctx);
    return stats->size;
  }

  Result<int64_t> diff_size(const std::string& id, const std::string& parent) override {
    if (!is_direct_parent(id, parent)) return NaiveDiffDriver::diff_size(id, parent);
    const std::string ctx = "diff-size of layer " + id;
    auto lowers = COWLAB_TRY_CTX(lower_dirs(id), ctx);
    auto ch = COWLAB_TRY_CTX(changes_aufs(diff_dir(id), lowers), ctx);
    auto size = changes_size(diff_dir(id), ch);
    if (!size.ok()) return std::move(size).error().with_context(ctx);
    return size;
  }

  WhiteoutFormat whiteout_format() const override { return WhiteoutFormat::kAufs; }
  bool supports_quota() const override { return false; }

 protected:
  // Starts with '.', so it is never a layer id; on the home's filesystem, like diff/<id>.
  std::string scratch_dir() const override { return home_ + "/.tmp"; }

 private:
  std::string layers_file(const std::string& id) const {
    return home_ + "/" + kLayersDir + "/" + id;
  }
  std::string diff_dir(const std::string& id) const { return home_ + "/" + kDiffDir + "/" + id; }
  std::string mnt_dir(const std::string& id) const { return home_ + "/" + kMntDir + "/" + id; }

  // The paths that hold something of layer `id`: its layers file and temp files of that file's
  // atomic write, diff/<id> and mnt/<id>, and their -removing renames.
  Result<std::vector<std::string>> pieces_of(const std::string& id) {
    std::vector<std::string> out;
    for (const std::string& p : {layers_file(id), diff_dir(id), mnt_dir(id),
                                 diff_dir(id) + kRemovingSuffix, mnt_dir(id) + kRemovingSuffix})
      if (COWLAB_TRY(sys::lstat_if_exists(p))) out.push_back(p);
    const std::string temp_prefix = id + ".tmp-";
    for (const auto& e : COWLAB_TRY(sys::read_dir(home_ + "/" + kLayersDir)))
      if (e.name.rfind(temp_prefix, 0) == 0 && sys::is_atomic_write_temp_name(e.name))
        out.push_back(home_ + "/" + kLayersDir + "/" + e.name);
    return out;
  }

  // Ancestor ids, nearest first (Docker's getParentIDs).
  Result<std::vector<std::string>> parent_ids(const std::string& id) {
    std::string text = COWLAB_TRY(sys::read_file(layers_file(id)));
    std::vector<std::string> out;
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      std::string line = trim(text.substr(start, end - start));
      if (!line.empty()) {
        if (!check_id("layer " + id, line).ok())
          return Error::corrupt("aufs: " + layers_file(id) + ": invalid ancestor id \"" + line +
                                "\"");
        out.push_back(line);
      }
      start = end + 1;
    }
    return out;
  }

  Result<std::vector<std::string>> lower_dirs(const std::string& id) {
    auto parents = COWLAB_TRY(parent_ids(id));
    std::vector<std::string> out;
    for (const auto& p : parents) out.push_back(diff_dir(p));
    return out;
  }

  // Docker's isParent: "" matches a base layer, otherwise the nearest ancestor.
  bool is_direct_parent(const std::string& id, const std::string& parent) {
    auto parents = parent_ids(id);
    if (!parents.ok()) return false;
    if (parent.empty()) return parents->empty();
    return !parents->empty() && parents->front() == parent;
  }

  Result<void> create_layer(const std::string& ctx, const std::string& id,
                            const std::string& parent, const CreateOpts& opts) {
    COWLAB_TRY(check_id(ctx, id));
    // Docker: "--storage-opt is not supported for aufs".
    if (!opts.storage_opt.empty())
      return Error::invalid(ctx + ": --storage-opt is not supported for aufs (got \"" +
                            opts.storage_opt.begin()->first + "\")");
    std::string ancestry;
    if (!parent.empty()) {
      COWLAB_TRY(check_id(ctx, parent));
      if (!exists(parent))
        return Error::not_found(ctx + ": parent layer " + parent + " does not exist");
      auto grand = COWLAB_TRY_CTX(parent_ids(parent), ctx);
      ancestry = parent + "\n";
      for (const auto& g : grand) ancestry += g + "\n";
    }
    if (exists(id)) return Error(ErrorKind::kExists, ctx + ": layer exists", EEXIST);
    auto r = populate(id, ancestry);
    if (!r.ok()) {
      // No half-made layer: the layers file goes first so exists() turns false at once.
      (void)sys::unlink(layers_file(id));
      (void)sys::remove_all(diff_dir(id));
      (void)sys::rmdir(mnt_dir(id));
      return std::move(r).error().with_context(ctx);
    }
    return {};
  }

  Result<void> populate(const std::string& id, const std::string& ancestry) {
    for (const auto& dir : {mnt_dir(id), diff_dir(id)}) {
      auto made = sys::mkdir(dir, 0755);
      if (!made.ok()) {
        if (made.error().err() == EEXIST) return Error(ErrorKind::kExists, dir + " exists", EEXIST);
        return std::move(made).error();
      }
      COWLAB_TRY(sys::fchmodat(sys::kCwd, dir, 0755));  // umask-proof: graphtest wants 0755
    }
    // Written last and atomically: its presence is what makes the layer exist.
    COWLAB_TRY(sys::write_file_atomic(layers_file(id), ancestry, 0644));
    return {};
  }

  Result<void> mount_layer(const std::string& id, const std::vector<std::string>& parents,
                           const std::string& mnt) {
    aufs::BranchRequest req;
    req.rw = diff_dir(id);
    for (const auto& p : parents) req.ro.push_back(diff_dir(p));
    // A stack deeper than the kernel takes is refused before anything is mounted (aufs would
    // take the first branches and fail an append with ENOSPC, "number of branches exceeded").
    if (probes_.branch_max > 0 && req.ro.size() + 1 > static_cast<size_t>(probes_.branch_max))
      return Error::invalid("aufs: layer " + id + " needs " + std::to_string(req.ro.size() + 1) +
                            " branches; the kernel's aufs branch limit is " +
                            std::to_string(probes_.branch_max) + " (CONFIG_AUFS_BRANCH_MAX_" +
                            std::to_string(probes_.branch_max) + ", read from " +
                            probes_.branch_max_source + ")");
    req.page_size = static_cast<size_t>(probes_.page_size);
    req.xino = home_ + "/" + kXinoDir + "/" + kXinoFile;
    req.dirperm1 = probes_.dirperm1 ? aufs::Dirperm1::kOn : aufs::Dirperm1::kOff;
    auto plan = COWLAB_TRY(aufs::plan_branch_mounts(req));

    auto made = sys::mkdir(mnt, 0755);
    if (!made.ok() && made.error().err() != EEXIST) return std::move(made).error();
    // A mount left by an earlier process that lost track of it: start clean.
    if (COWLAB_TRY(sys::is_mountpoint(mnt))) COWLAB_TRY(unmount(mnt));

    COWLAB_TRY(sys::mount("none", mnt, "aufs", 0, plan.first));
    auto finish = [&]() -> Result<void> {
      for (size_t i = 0; i < plan.appends.size(); ++i) {
        auto r = sys::mount("none", mnt, "aufs", MS_REMOUNT, plan.appends[i]);
        if (!r.ok()) {
          size_t branch = plan.branches_in_first + i;
          std::string why;
          if (r.error().err() == ENOSPC)
            why =
                probes_.branch_max > 0
                    ? " (the kernel's aufs branch limit is " + std::to_string(probes_.branch_max) +
                          ")"
                    : " (the kernel's aufs branch limit, unknown here: CONFIG_AUFS_BRANCH_MAX_127 "
                      "allows 127 branches in all, _511 allows 511)";
          return std::move(r).error().with_context("aufs: append branch " + std::to_string(branch) +
                                                   " of " + std::to_string(req.ro.size() + 1) +
                                                   why);
        }
      }
      // The moby#9151 guard: the kernel must hold every branch, in order.
      auto got = COWLAB_TRY(mounted_branches(mnt));
      return aufs::verify_branches(aufs::expected_branch_specs(req), got);
    };
    auto r = finish();
    if (!r.ok()) {
      (void)unmount(mnt);
      return std::move(r).error();
    }
    return {};
  }

  Result<void> unmount_ctx(const std::string& mnt, const std::string& ctx) {
    auto r = unmount(mnt);
    if (!r.ok()) return std::move(r).error().with_context(ctx);
    return {};
  }

  // Docker's aufs Unmount: auplink flush (retried on EINVAL: it can miss the mount while the
  // mount table changes), then umount with EBUSY retries.  Still busy: detached lazily.
  Result<void> unmount(const std::string& mnt) {
    if (!probes_.auplink.empty()) {
      for (int i = 0; i <= kUnmountRetries; ++i) {
        auto rc = sys::run({probes_.auplink, mnt, "flush"});
        if (!rc.ok() || *rc != EINVAL) break;
      }
    }
    for (int i = 0; i < kUnmountRetries; ++i) {
      auto r = sys::umount2(mnt, 0);
      if (r.ok()) return {};
      int e = r.error().err();
      if (e == EINVAL || e == ENOENT) return {};  // not mounted (any more)
      if (e != EBUSY) return std::move(r).error();
      sleep_ms(100);
    }
    auto r = sys::umount2(mnt, MNT_DETACH);
    if (!r.ok() && r.error().err() != EINVAL) return std::move(r).error();
    return {};
  }

  // Docker's atomicRemove: rename to "<path>-removing", then delete.
  Result<void> atomic_remove(const std::string& path) {
    std::string gone = path + kRemovingSuffix;
    auto r = sys::rename(path, gone);
    if (!r.ok()) {
      if (r.error().err() != ENOENT) return std::move(r).error();
      // Already renamed by an interrupted remove, or never made.
    }
    return sys::remove_all(gone);
  }

  std::string home_;
  AufsProbes probes_;
  std::vector<std::string> pending_;
  RefCounter refs_{path_is_mounted};
  std::set<std::string> mounted_;  // mount points this process mounted and has not unmounted
};

Result<void> require_aufs_fs() {
  if (COWLAB_TRY(sys::filesystem_supported("aufs"))) return {};
  std::string out;
  auto rc = sys::run({"modprobe", "aufs"}, &out);
  (void)rc;  // the verdict is /proc/filesystems, whatever modprobe says
  if (COWLAB_TRY(sys::filesystem_supported("aufs"))) return {};
  return Error::not_supported(
      "this kernel has no aufs (not in /proc/filesystems and modprobe aufs failed)");
}

// The directories an interrupted remove left (Docker's atomicRemove: "<dir>-removing" in diff/
// and mnt/), as paths.
std::vector<std::string> removing_dirs(const std::string& home) {
  std::vector<std::string> out;
  for (const char* sub : {kDiffDir, kMntDir}) {
    std::string dir = home + "/" + sub;
    auto entries = sys::read_dir(dir);
    if (!entries.ok()) continue;
    for (const auto& e : *entries)
      if (ends_with(e.name, kRemovingSuffix)) out.push_back(dir + "/" + e.name);
  }
  return out;
}

// Deletes what a killed init or remove left behind (Docker's TestInitStaleCleanup): the
// -removing dirs, every probe dir (<home>/.probe-*, its union unmounted first) and temp files of
// the probe cache's atomic write.  Only an init under DriverAccess::kExclusive may call it: then
// no other process uses the store, so each of them is stale.  Under kShared other readers run
// beside this one, each probing dirperm1 in a .probe-<random> dir of its own when the cached
// result does not fit this boot, and a reader that removed the dirs it found would unmount and
// delete another reader's probe while it runs (that reader's init then fails: ENOENT, EINVAL,
// or dirperm1 is reported unsupported because its test mount failed).  Readers remove only
// their own probe dir (probe_dirperm1), list -removing dirs as pending_recovery() and leave a
// killed reader's probe dir to the next writer.
void remove_stale(const std::string& home) {
  for (const auto& path : removing_dirs(home)) {
    auto m = sys::is_mountpoint(path);
    if (m.ok() && *m) (void)sys::umount2(path, MNT_DETACH);
    (void)sys::remove_all(path);
  }
  auto entries = sys::read_dir(home);
  if (!entries.ok()) return;
  for (const auto& e : *entries) {
    if (e.name.rfind(std::string(kProbeCacheFile) + ".", 0) == 0 &&
        sys::is_atomic_write_temp_name(e.name)) {
      (void)sys::unlink(home + "/" + e.name);
      continue;
    }
    if (e.name.rfind(kProbePrefix, 0) != 0) continue;
    std::string union_dir = home + "/" + e.name + "/union";
    auto m = sys::is_mountpoint(union_dir);
    if (m.ok() && *m) (void)sys::umount2(union_dir, MNT_DETACH);
    (void)sys::remove_all(home + "/" + e.name);
  }
}

// Docker's useDirperm: a test mount with dirperm1 either works or it does not.  The probe runs in
// a .probe-<random> dir of its own, which it alone removes.  Its xino path is the one every
// mount of the home uses; concurrent probes and mounts do not collide on it, because aufs
// creates and unlinks a xino file given at mount time under one mutex (fs/aufs/fsctx.c
// au_fsctx_parse_xino calls au_xino_create with wbrtop 0, which holds xino.c's static mtx
// across the O_CREAT|O_EXCL open and the unlink; aufs 6.x-rcN-20241021).
Result<bool> probe_dirperm1(const std::string& home) {
  char suffix[32];
  unsigned char raw[6];
  COWLAB_TRY(sys::random_bytes(raw, sizeof raw));
  std::snprintf(suffix, sizeof suffix, "%02x%02x%02x%02x%02x%02x", raw[0], raw[1], raw[2], raw[3],
                raw[4], raw[5]);
  std::string dir = home + "/" + kProbePrefix + suffix;
  COWLAB_TRY(sys::mkdir(dir, 0700));
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      auto m = sys::is_mountpoint(dir + "/union");
      if (m.ok() && *m) (void)sys::umount2(dir + "/union", MNT_DETACH);
      (void)sys::remove_all(dir);
    }
  } cleanup{dir};
  COWLAB_TRY(sys::mkdir(dir + "/base", 0755));
  COWLAB_TRY(sys::mkdir(dir + "/union", 0755));
  std::string data = "br:" + dir + "/base,dirperm1,xino=" + home + "/" + kXinoDir + "/" + kXinoFile;
  auto r = sys::mount("none", dir + "/union", "aufs", 0, data);
  if (!r.ok()) return false;
  COWLAB_TRY(sys::umount2(dir + "/union", 0));
  return true;
}

// ---- probe cache -----------------------------------------------------------------------------
// The dirperm1 result, <home>/probes: line 1 a fingerprint of what it depends on (the boot, the
// kernel release, the aufs module's version when it is a module, the home's device), line 2
// "dirperm1 0|1".  Written atomically by an init that probed (a writer's, or a reader's on a
// writable home: concurrent readers write the same result, each through a temp file of its
// own); an init whose fingerprint matches uses it instead of a test mount.  A read-only home
// cannot be probed (the probe mounts in a dir it makes in the home) and cannot change, so its
// readers use the result the last writer recorded, whatever boot it was probed on; without one
// they fail naming the home and why.  The result only decides whether layer mounts ask for
// dirperm1 (and status()): should the kernel have changed since, a mount asking for it where
// it is unknown fails with the kernel's error, and one without it works as on an aufs before
// dirperm1 — never silently a wrong tree.
std::string probe_fingerprint(const std::string& home) {
  auto boot = sys::read_file("/proc/sys/kernel/random/boot_id");
  auto st = sys::lstat(home);
  if (!boot.ok() || boot->empty() || !st.ok()) return "";
  std::string fp = "boot " + trim(*boot) + "|kernel " + sys::kernel_version().release;
  if (auto version = sys::read_file("/sys/module/aufs/version"); version.ok())
    fp += "|aufs " + trim(*version);
  fp += "|dev " + std::to_string(st->st_dev);
  for (auto& c : fp)
    if (c == '\n') c = ' ';
  return fp;
}

// kAny takes a result probed under another fingerprint too (a read-only home, above).
enum class CacheMatch { kFingerprint, kAny };
std::optional<bool> load_probe_cache(const std::string& home, const std::string& fp,
                                     CacheMatch match) {
  if (fp.empty() && match == CacheMatch::kFingerprint) return std::nullopt;
  auto text = sys::read_file(home + "/" + kProbeCacheFile);
  if (!text.ok()) return std::nullopt;
  size_t nl = text->find('\n');
  if (nl == std::string::npos) return std::nullopt;
  if (match == CacheMatch::kFingerprint && text->substr(0, nl) != fp) return std::nullopt;
  const std::string value = trim(text->substr(nl + 1));
  if (value == "dirperm1 1") return true;
  if (value == "dirperm1 0") return false;
  return std::nullopt;
}

void save_probe_cache(const std::string& home, const std::string& fp, bool dirperm1) {
  if (fp.empty()) return;
  // Best effort: without the cache the next init simply probes again.
  (void)sys::write_file_atomic(home + "/" + kProbeCacheFile,
                               fp + "\ndirperm1 " + (dirperm1 ? "1" : "0") + "\n", 0600);
}

// dirperm1 from the cache, or a test mount (cached afterwards); see "probe cache" above.
Result<bool> dirperm1_of(const std::string& home, DriverAccess access) {
  const std::string fp = probe_fingerprint(home);
  if (auto cached = load_probe_cache(home, fp, CacheMatch::kFingerprint)) return *cached;
  auto probed = probe_dirperm1(home);
  if (probed.ok()) {
    save_probe_cache(home, fp, *probed);
    return *probed;
  }
  if (probed.error().err() == EROFS && access == DriverAccess::kShared) {
    if (auto cached = load_probe_cache(home, fp, CacheMatch::kAny)) return *cached;
    return Error(ErrorKind::kNotSupported,
                 "aufs init: " + home + " is read-only and holds no dirperm1 probe result (" +
                     kProbeCacheFile + ", written by a writer's init), and the probe cannot run (" +
                     probed.error().message() + ")",
                 EROFS);
  }
  return std::move(probed).error().with_context("aufs init: dirperm1 probe");
}

Result<std::unique_ptr<Driver>> make_driver(const DriverConfig& config, AufsProbes probes,
                                            bool probe) {
  // No aufs.* options exist; every key is unknown.
  if (!config.options.empty())
    return Error::invalid("aufs: unknown option \"" + config.options.begin()->first + "\"");
  const std::string& home = config.home;

  if (probe) {
    COWLAB_TRY(require_aufs_fs());
    // Docker refuses aufs inside a user namespace (it needs the initial namespace's
    // CAP_SYS_ADMIN for whiteouts and trusted xattrs).
    if (!COWLAB_TRY_CTX(sys::in_initial_user_namespace(), "aufs init"))
      return Error::not_supported("aufs is not supported in a user namespace");
    long magic = COWLAB_TRY_CTX(backing_fs_magic(home), "aufs init");
    probes.backing_fs = fs_name_for_magic(magic);
    if (auto why = refused_backing_fs(magic))
      return Error::not_supported("aufs is not supported over " + probes.backing_fs + ": " + *why);
    probes.page_size = sys::page_size();
    probes.auplink = find_program("auplink");
  } else if (probes.backing_fs.empty()) {
    probes.backing_fs = fs_name_for_magic(COWLAB_TRY_CTX(backing_fs_magic(home), "aufs init"));
  }

  bool fresh = !COWLAB_TRY(sys::lstat_if_exists(home)).has_value();
  // A home made only for a failed init must not stay: it would pin the driver (prior-driver
  // scan in selection).
  struct FreshHomeGuard {
    std::string path;
    bool armed;
    ~FreshHomeGuard() {
      if (armed) (void)sys::remove_all(path);
    }
  } guard{home, fresh};

  // A reader changes nothing that exists (DriverAccess): on a read-only store even a chmod to the
  // same mode fails (EROFS).  A missing directory it can make, it makes; on a read-only home it
  // goes without (its layers cannot be listed or mounted then, and say so).
  const bool writer = config.access == DriverAccess::kExclusive;
  COWLAB_TRY_CTX(sys::mkdir_all(home, 0710), "aufs init");
  if (writer || fresh) COWLAB_TRY_CTX(sys::fchmodat(sys::kCwd, home, 0710), "aufs init");
  for (const char* sub : {kLayersDir, kDiffDir, kMntDir, kXinoDir}) {
    const std::string dir = home + "/" + sub;
    if (COWLAB_TRY_CTX(sys::lstat_if_exists(dir), "aufs init").has_value()) continue;
    auto made = sys::mkdir(dir, 0710);
    if (made.ok() || made.error().err() == EEXIST) continue;
    if (!writer && made.error().err() == EROFS) continue;
    return std::move(made).error().with_context("aufs init");
  }
  std::vector<std::string> pending;
  if (writer) {
    remove_stale(home);
  } else if (auto removing = removing_dirs(home); !removing.empty()) {
    pending.push_back(std::to_string(removing.size()) +
                      " dir(s) of interrupted removes to delete (" + removing.front() +
                      (removing.size() > 1 ? ", ..." : "") + ")");
  }
  if (probe) probes.dirperm1 = COWLAB_TRY(dirperm1_of(home, config.access));
  if (probe) {
    auto limit = kernel_aufs_branch_limit();
    if (limit.ok()) {
      probes.branch_max = limit->max;
      probes.branch_max_source = limit->source;
    } else {
      probes.branch_max_source = limit.error().message();
    }
  }

  guard.armed = false;
  return std::unique_ptr<Driver>(
      std::make_unique<AufsDriver>(home, std::move(probes), std::move(pending)));
}

}  // namespace

Result<std::unique_ptr<Driver>> init_aufs(const DriverConfig& config) {
  return make_driver(config, AufsProbes{}, true);
}

Result<std::unique_ptr<Driver>> init_aufs_unprobed_for_tests(const DriverConfig& config,
                                                             const AufsProbes& probes) {
  return make_driver(config, probes, false);
}

Result<aufs::BranchLimit> kernel_aufs_branch_limit() {
  // aufs built as a module shows its own config in /sys/fs/aufs/config (fs/aufs/sysfs.c); built
  // in, only the kernel's config tells: /proc/config.gz (CONFIG_IKCONFIG_PROC) or a config file
  // installed with the kernel.
  std::string release = sys::kernel_version().release;
  std::vector<std::string> tried;
  auto from = [&](const std::string& path,
                  const std::string& text) -> std::optional<aufs::BranchLimit> {
    auto max = aufs::branch_max_from_config(text);
    if (max.ok()) return aufs::BranchLimit{*max, path};
    tried.push_back(path + ": " + max.error().message());
    return std::nullopt;
  };
  if (auto t = sys::read_file("/sys/fs/aufs/config"); t.ok()) {
    if (auto l = from("/sys/fs/aufs/config", *t)) return *l;
  } else {
    tried.push_back("/sys/fs/aufs/config: absent (aufs is not a module)");
  }
  if (auto fd = sys::open("/proc/config.gz", O_RDONLY | O_CLOEXEC); fd.ok()) {
    auto in = decompress(std::make_unique<FdReader>(fd->release(), "/proc/config.gz", true));
    std::string text;
    if (in.ok()) {
      char buf[65536];
      for (;;) {
        auto n = (*in)->read(buf, sizeof buf);
        if (!n.ok() || *n == 0) break;
        text.append(buf, *n);
      }
    }
    if (auto l = from("/proc/config.gz", text)) return *l;
  } else {
    tried.push_back("/proc/config.gz: absent (no CONFIG_IKCONFIG_PROC)");
  }
  for (const std::string& p : {"/boot/config-" + release, "/lib/modules/" + release + "/config",
                               "/lib/modules/" + release + "/build/.config"}) {
    if (auto t = sys::read_file(p); t.ok()) {
      if (auto l = from(p, *t)) return *l;
    } else {
      tried.push_back(p + ": absent");
    }
  }
  std::string all;
  for (const auto& t : tried) all += (all.empty() ? "" : "; ") + t;
  return Error::not_found("aufs branch limit of kernel " + release + ": unknown (" + all + ")");
}

const AufsProbes* aufs_probes(const Driver& driver) {
  auto* d = dynamic_cast<const AufsDriver*>(&driver);
  return d ? &d->probes() : nullptr;
}

}  // namespace cowlab
