#include "btrfs/btrfs.h"

#include <btrfsutil.h>  // BTRFS_UTIL_VERSION_* only; every call goes through the sys seam
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <vector>

#include "core/naive_diff.h"
#include "cowlab/archive.h"
#include "cowlab/fs.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"

namespace cowlab {

namespace {

// A deleted subvolume is dropped by the kernel's cleaner thread after the next commit; remove()
// waits this long for that before it gives up on destroying the subvolume's qgroup.
constexpr int kSubvolumeCleanupTimeoutMs = 60 * 1000;

enum class LayerKind { kReadOnly, kReadWrite };

struct BtrfsOptions {
  uint64_t min_space = 0;     // btrfs.min_space; 0 = no minimum
  uint64_t default_size = 0;  // btrfs.size for read-write layers; 0 = none
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Docker's setStorageSize checks (daemon/graphdriver/btrfs/btrfs.go).
Result<void> check_size(uint64_t size, uint64_t min_space) {
  if (size == 0) return Error::invalid("btrfs: invalid storage size: " + human_size(size));
  if (min_space > 0 && size < min_space)
    return Error::invalid("btrfs: storage size " + human_size(size) + " cannot be less than " +
                          human_size(min_space) + " (btrfs.min_space)");
  return {};
}

Result<BtrfsOptions> parse_options(const std::map<std::string, std::string>& options) {
  BtrfsOptions out;
  bool size_given = false;
  for (const auto& [raw_key, value] : options) {
    std::string key = lower(raw_key);
    if (key == "btrfs.min_space") {
      out.min_space = COWLAB_TRY_CTX(parse_size(value), "btrfs: option " + key);
    } else if (key == "btrfs.size") {
      out.default_size = COWLAB_TRY_CTX(parse_size(value), "btrfs: option " + key);
      size_given = true;
    } else if (key == "btrfs.mountopt") {
      // containers/storage refuses it the same way: the driver never mounts anything.
      return Error::invalid("btrfs: option " + key +
                            ": the btrfs driver does not support mount options");
    } else {
      return Error::invalid("btrfs: unknown option " + key);
    }
  }
  if (size_given)
    COWLAB_TRY_CTX(check_size(out.default_size, out.min_space), "btrfs: option btrfs.size");
  return out;
}

class BtrfsDriver final : public NaiveDiffDriver {
 public:
  BtrfsDriver(std::string home, BtrfsOptions options) : home_(std::move(home)), options_(options) {}

  std::string name() const override { return "btrfs"; }
  std::string home() const override { return home_; }

  Result<void> create(const std::string& id, const std::string& parent,
                      const CreateOpts& opts) override {
    return create_layer(id, parent, opts, LayerKind::kReadOnly);
  }
  Result<void> create_rw(const std::string& id, const std::string& parent,
                         const CreateOpts& opts) override {
    return create_layer(id, parent, opts, LayerKind::kReadWrite);
  }
  Result<void> remove(const std::string& id) override;
  Result<std::string> get(const std::string& id, const std::string& mount_label) override;
  Result<void> put(const std::string& id) override;
  Result<std::string> mount_dir(const std::string& id) override;
  bool exists(const std::string& id) override;
  Result<std::vector<std::string>> list() override {
    return COWLAB_TRY_CTX(subdirectories(subvolumes_dir()), "btrfs: list layers");
  }
  KeyValues status() override;
  Result<KeyValues> metadata(const std::string& id) override;
  Result<void> cleanup() override;
  Result<int64_t> apply_diff(const std::string& id, const std::string& parent,
                             Reader& tar) override;

  WhiteoutFormat whiteout_format() const override { return WhiteoutFormat::kDeleteInPlace; }
  bool supports_quota() const override { return true; }

  // Called by init_btrfs: btrfs.min_space enables quota up front, as Docker's Init does.
  Result<void> enable_quota() { return ensure_quota_enabled(); }

 protected:
  // Unused: apply_diff() below picks a scratch dir inside the layer's own subvolume.
  std::string scratch_dir() const override { return home_ + "/tmp"; }

 private:
  std::string subvolumes_dir() const { return home_ + "/subvolumes"; }
  std::string quotas_dir() const { return home_ + "/quotas"; }
  std::string subvolume(const std::string& id) const { return subvolumes_dir() + "/" + id; }
  std::string quota_file(const std::string& id) const { return quotas_dir() + "/" + id; }

  Result<void> create_layer(const std::string& id, const std::string& parent,
                            const CreateOpts& opts, LayerKind kind);
  Result<void> set_size(const std::string& dir, uint64_t size);
  Result<void> ensure_quota_enabled();
  Result<bool> quota_enabled();
  Result<std::optional<uint64_t>> read_quota(const std::string& id);
  Result<void> destroy_qgroups(const std::string& dir, const std::vector<uint64_t>& ids,
                               std::vector<uint64_t>* busy);

  std::string home_;
  BtrfsOptions options_;
  std::optional<std::string> build_version_;
};

// Probed every time (one ioctl and one lstat): quota can be turned off behind our back
// (`btrfs quota disable`, Docker's cleanup), and a stale answer would make remove() skip the
// qgroups or fail on them.
Result<bool> BtrfsDriver::quota_enabled() {
  auto on = sys::btrfs_quota_enabled(home_);
  if (!on.ok()) return std::move(on).error().with_context("btrfs: quota status of " + home_);
  return *on;
}

Result<void> BtrfsDriver::ensure_quota_enabled() {
  auto on = quota_enabled();
  // Without the sysfs qgroups directory (Linux < 5.9) the state is unknown; enabling an enabled
  // quota is a no-op in the kernel, so just enable.
  if (on.ok() && *on) return {};
  COWLAB_TRY_CTX(sys::btrfs_quota_ctl(home_, sys::BtrfsQuotaCmd::kEnable), "btrfs: enable quota");
  return {};
}

Result<void> BtrfsDriver::set_size(const std::string& dir, uint64_t size) {
  COWLAB_TRY(ensure_quota_enabled());
  COWLAB_TRY_CTX(sys::btrfs_qgroup_limit(dir, size),
                 "btrfs: limit " + dir + " to " + human_size(size));
  return {};
}

Result<std::optional<uint64_t>> BtrfsDriver::read_quota(const std::string& id) {
  auto st = COWLAB_TRY(sys::lstat_if_exists(quota_file(id)));
  if (!st) return std::optional<uint64_t>();
  std::string text = COWLAB_TRY(sys::read_file(quota_file(id)));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (text.empty() ||
      !std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); }))
    return Error::corrupt("btrfs: " + quota_file(id) + ": not a decimal size: \"" + text + "\"");
  return std::optional<uint64_t>(std::stoull(text));
}

Result<void> BtrfsDriver::create_layer(const std::string& id, const std::string& parent,
                                       const CreateOpts& opts, LayerKind kind) {
  const std::string ctx = "btrfs: create layer " + id;
  if (id.empty() || id.find('/') != std::string::npos || id == "." || id == "..")
    return Error::invalid(ctx + ": invalid layer id");

  // Options are checked before anything is created, so a bad option leaves nothing behind.
  std::optional<uint64_t> size;
  for (const auto& [raw_key, value] : opts.storage_opt) {
    std::string key = lower(raw_key);
    if (key != "size") return Error::invalid(ctx + ": unknown option " + key);
    size = COWLAB_TRY_CTX(parse_size(value), ctx + ": option size");
  }
  if (!size && kind == LayerKind::kReadWrite && options_.default_size > 0)
    size = options_.default_size;
  if (size) COWLAB_TRY_CTX(check_size(*size, options_.min_space), ctx);

  const std::string dir = subvolume(id);
  if (COWLAB_TRY(sys::lstat_if_exists(dir)))
    return Error(ErrorKind::kExists, ctx + ": layer exists", EEXIST);

  if (parent.empty()) {
    COWLAB_TRY_CTX(sys::btrfs_create_subvolume(dir), ctx);
    // The subvolume root gets 0777 & ~umask; Docker's layers start at 0755 whatever the umask
    // (graphtest's CreateEmpty checks it).
    auto chmod = sys::fchmodat(sys::kCwd, dir, 0755);
    if (!chmod.ok()) {
      (void)sys::btrfs_delete_subvolume(dir);
      return std::move(chmod).error().with_context(ctx);
    }
  } else {
    const std::string parent_dir = subvolume(parent);
    auto st = COWLAB_TRY(sys::lstat_if_exists(parent_dir));
    if (!st || !S_ISDIR(st->st_mode))
      return Error::not_found(ctx + ": parent layer " + parent + " does not exist");
    COWLAB_TRY_CTX(sys::btrfs_create_snapshot(parent_dir, dir), ctx);
  }

  if (size) {
    auto limited = set_size(dir, *size);
    if (limited.ok()) limited = sys::write_file_atomic(quota_file(id), std::to_string(*size), 0644);
    if (!limited.ok()) {
      // Roll back so a failed create leaves no layer (the layer store relies on it).
      (void)sys::unlink(quota_file(id));
      (void)sys::btrfs_delete_subvolume(dir);
      return std::move(limited).error().with_context(ctx);
    }
  }
  return {};
}

Result<void> BtrfsDriver::destroy_qgroups(const std::string& dir, const std::vector<uint64_t>& ids,
                                          std::vector<uint64_t>* busy) {
  for (uint64_t qgroup : ids) {
    auto r = sys::btrfs_qgroup_ctl(home_, sys::BtrfsQgroupOp::kDestroy, qgroup);
    if (r.ok() || r.error().err() == ENOENT) continue;  // ENOENT: the kernel dropped it already
    // Linux >= 6.10 refuses to destroy the qgroup of a subvolume that is not fully dropped yet
    // (and then drops the qgroup itself when it cleans the subvolume).
    if (r.error().err() == EBUSY && busy) {
      busy->push_back(qgroup);
      continue;
    }
    return std::move(r).error().with_context("btrfs: destroy qgroup of " + dir);
  }
  return {};
}

Result<void> BtrfsDriver::remove(const std::string& id) {
  const std::string ctx = "btrfs: remove layer " + id;
  if (id.empty() || id.find('/') != std::string::npos || id == "." || id == "..")
    return Error::invalid(ctx + ": invalid layer id");
  const std::string dir = subvolume(id);
  auto st = COWLAB_TRY_CTX(sys::lstat_if_exists(dir), ctx);

  // 1. The size record, and temp files of its atomic write that a power cut left (create
  //    writes it after the subvolume; a remove cut after this step finds no record left).
  bool had_record = false;
  if (auto r = sys::unlink(quota_file(id)); r.ok()) {
    had_record = true;
  } else if (r.error().err() != ENOENT) {
    return std::move(r).error().with_context(ctx);
  }
  if (auto entries = sys::read_dir(quotas_dir()); entries.ok()) {
    for (const auto& e : *entries) {
      if (e.name.rfind(id + ".tmp-", 0) != 0 || !sys::is_atomic_write_temp_name(e.name)) continue;
      if (auto r = sys::unlink(quotas_dir() + "/" + e.name); !r.ok() && r.error().err() != ENOENT)
        return std::move(r).error().with_context(ctx);
      had_record = true;
    }
  }
  if (!st) {
    if (had_record) return {};
    return Error::not_found(ctx + ": no such layer");
  }

  bool quota_on = COWLAB_TRY_CTX(quota_enabled(), ctx);
  bool is_subvolume = S_ISDIR(st->st_mode) && COWLAB_TRY_CTX(sys::btrfs_is_subvolume(dir), ctx);
  if (!is_subvolume) {
    // Not a subvolume: debris of an interrupted create.  Plain removal.
    COWLAB_TRY_CTX(sys::remove_all(dir), ctx);
    return {};
  }

  // 2. Subvolumes nested in the layer, deepest first: SNAP_DESTROY refuses a subvolume that
  //    still has children ("directory not empty", moby#9939, fixed by moby#18686).
  std::vector<uint64_t> qgroups;
  auto nested = COWLAB_TRY_CTX(sys::btrfs_nested_subvolumes(dir), ctx);
  for (const auto& sub : nested) {
    COWLAB_TRY_CTX(sys::btrfs_delete_subvolume(dir + "/" + sub.path), ctx + ": nested subvolume");
    qgroups.push_back(sub.id);
  }
  qgroups.push_back(COWLAB_TRY_CTX(sys::btrfs_subvolume_id(dir), ctx));

  // 3. The qgroups, so none leak (moby#29325).  Docker's order: before the subvolume goes, which
  //    older kernels require; newer ones answer EBUSY until the subvolume is dropped.
  std::vector<uint64_t> busy;
  if (quota_on) COWLAB_TRY_CTX(destroy_qgroups(dir, qgroups, &busy), ctx);

  // 4. The subvolume.
  COWLAB_TRY_CTX(sys::btrfs_delete_subvolume(dir), ctx);

  // 3b. Qgroups the kernel would not destroy while their subvolume existed: wait until the
  //     cleaner has dropped the subvolume, then destroy them (ENOENT: the kernel did already).
  for (uint64_t qgroup : busy)
    COWLAB_TRY_CTX(sys::btrfs_wait_subvolume_cleaned(home_, qgroup, kSubvolumeCleanupTimeoutMs),
                   ctx);
  if (!busy.empty()) {
    // Linux 6.1 keeps a dropped subvolume's qgroup as "stale" with the usage it last had and
    // refuses to destroy a qgroup with usage (EBUSY) until a rescan zeroes it (seen in the
    // debian-6.1 guest: container-quota scenario).
    std::vector<uint64_t> still_busy;
    COWLAB_TRY_CTX(destroy_qgroups(dir, busy, &still_busy), ctx);
    if (!still_busy.empty()) {
      COWLAB_TRY_CTX(sys::btrfs_quota_rescan(home_), ctx);
      COWLAB_TRY_CTX(sys::btrfs_quota_rescan_wait(home_), ctx);
      COWLAB_TRY_CTX(destroy_qgroups(dir, still_busy, nullptr), ctx);
    }
  }

  // 5. Wait for a running rescan, only with quota on (moby#29810: the ioctl fails with EPERM in
  //    unprivileged containers when quota is off).
  if (quota_on) COWLAB_TRY_CTX(sys::btrfs_quota_rescan_wait(home_), ctx);
  return {};
}

Result<std::string> BtrfsDriver::get(const std::string& id, const std::string& mount_label) {
  const std::string ctx = "btrfs: get layer " + id;
  const std::string dir = subvolume(id);
  auto st = COWLAB_TRY_CTX(sys::lstat_if_exists(dir), ctx);
  if (!st) return Error::not_found(ctx + ": no such layer");
  if (!S_ISDIR(st->st_mode)) return Error::corrupt(ctx + ": " + dir + " is not a directory");
  auto size = COWLAB_TRY_CTX(read_quota(id), ctx);
  if (size && *size >= options_.min_space) COWLAB_TRY_CTX(set_size(dir, *size), ctx);
  return dir;
}

// get() creates nothing that needs releasing (no mount), as in Docker.
Result<void> BtrfsDriver::put(const std::string& id) {
  return {};
}

// A layer is a subvolume of the home's filesystem: get() mounts nothing.
Result<std::string> BtrfsDriver::mount_dir(const std::string& id) {
  if (!exists(id)) return Error::not_found("btrfs: mount dir of layer " + id + ": no such layer");
  return std::string();
}

bool BtrfsDriver::exists(const std::string& id) {
  if (id.empty() || id.find('/') != std::string::npos) return false;
  auto st = sys::lstat_if_exists(subvolume(id));
  return st.ok() && st->has_value() && S_ISDIR((*st)->st_mode);
}

KeyValues BtrfsDriver::status() {
  if (!build_version_) {
    std::string out;
    auto rc = sys::run({"btrfs", "--version"}, &out);
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    if (auto nl = out.find('\n'); nl != std::string::npos) out.resize(nl);
    if (rc.ok() && *rc == 0 && !out.empty())
      build_version_ = out;  // "btrfs-progs v6.2"
    else
      build_version_ = "unknown (btrfs --version: " +
                       (rc.ok() ? "exit status " + std::to_string(*rc) : rc.error().message()) +
                       ")";
  }
  return {
      {"Build Version", *build_version_},
      {"Library Version", std::to_string(BTRFS_UTIL_VERSION_MAJOR) + "." +
                              std::to_string(BTRFS_UTIL_VERSION_MINOR) + "." +
                              std::to_string(BTRFS_UTIL_VERSION_PATCH)},
  };
}

Result<KeyValues> BtrfsDriver::metadata(const std::string& id) {
  if (!exists(id)) return Error::not_found("btrfs: metadata of layer " + id + ": no such layer");
  return KeyValues{};  // Docker's GetMetadata returns nil for btrfs
}

// Nothing to release: get() never mounts, and cowlab does not bind-mount the home onto itself
// as Docker's Init does (that only changes mount propagation for the daemon's namespace).
// Quota stays on, unlike Docker's Cleanup: turning it off drops every limit and turning it on
// again costs a full rescan on every cowlab invocation.
Result<void> BtrfsDriver::cleanup() {
  return {};
}

Result<int64_t> BtrfsDriver::apply_diff(const std::string& id, const std::string& parent,
                                        Reader& tar) {
  const std::string ctx = "apply-diff layer " + id;
  std::string dir = COWLAB_TRY_CTX(get(id, ""), ctx);
  ApplyOptions ao;
  ao.format = WhiteoutFormat::kDeleteInPlace;
  // Hard links cannot cross btrfs subvolumes (EXDEV), so the scratch dir that holds aufs
  // `.wh..wh.plnk` link targets must live in the layer's own subvolume; apply_layer removes it.
  ao.scratch_dir = dir + "/.cowlab-apply-scratch";
  ao.context = ctx;
  auto stats = COWLAB_TRY(apply_layer(dir, tar, ao));
  return stats.size;
}

}  // namespace

Result<std::unique_ptr<Driver>> init_btrfs(const DriverConfig& config) {
  // Options first: a bad option is an Invalid error whatever the backing filesystem.
  BtrfsOptions options = COWLAB_TRY(parse_options(config.options));

  // The home is probed before anything is created (its nearest existing ancestor when it does
  // not exist yet), so a refused probe leaves no home behind to pin the driver next time.
  long magic = COWLAB_TRY_CTX(backing_fs_magic(config.home), "btrfs");
  if ((magic & 0xffffffffL) != (kMagicBtrfs & 0xffffffffL))
    return Error::not_supported("backing filesystem is " + fs_name_for_magic(magic) +
                                ", btrfs driver needs btrfs");

  COWLAB_TRY_CTX(sys::mkdir_all(config.home, 0710), "btrfs: init");
  COWLAB_TRY_CTX(sys::mkdir_all(config.home + "/subvolumes", 0710), "btrfs: init");
  COWLAB_TRY_CTX(sys::mkdir_all(config.home + "/quotas", 0700), "btrfs: init");

  auto driver = std::make_unique<BtrfsDriver>(config.home, options);
  if (options.min_space > 0)
    COWLAB_TRY_CTX(driver->enable_quota(), "btrfs: init (btrfs.min_space)");
  return std::unique_ptr<Driver>(std::move(driver));
}

}  // namespace cowlab
