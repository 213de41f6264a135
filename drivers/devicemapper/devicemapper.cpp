#include "devicemapper/devicemapper.h"
#include "cowlab/diag.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <set>

#include "core/naive_diff.h"
#include "core/reader_mounts.h"
#include "core/refcount.h"
#include "cowlab/archive.h"
#include "cowlab/fs.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "devicemapper/backends.h"
#include "devicemapper/device_set.h"
#include "devicemapper/dm.h"
#include "devicemapper/options.h"

namespace cowlab {

namespace {

using devmapper::BaseFilesystem;
using devmapper::DeleteMode;
using devmapper::DeviceSet;
using devmapper::DeviceSetConfig;
using devmapper::DmOptions;
using devmapper::MountMode;
using devmapper::PoolSetup;
using devmapper::Setting;

// '@' starts no layer id the layer store accepts; it marks escaped device hashes below.
bool valid_id(const std::string& id) {
  return !id.empty() && id.find('/') == std::string::npos && id != "." && id != ".." &&
         id[0] != '@';
}

// A layer's device hash: Docker uses the layer id itself ("<prefix>-<id>", metadata/<id>).
// Docker's ids are 64 hex digits, cowlab's any [A-Za-z0-9][A-Za-z0-9_.-]*, so the names the
// device set keeps for itself ("base" for the base device's metadata file and device name,
// and the two set-wide metadata files) would collide: those ids are stored as "@<id>" ('@' is
// in device-mapper's name whitelist and starts no layer id, so the mapping is one-to-one).
std::string device_hash(const std::string& id) {
  if (id == "base" || id == devmapper::kDeviceSetMetadataFile ||
      id == devmapper::kTransactionMetadataFile)
    return "@" + id;
  return id;
}

class DevicemapperDriver final : public NaiveDiffDriver {
 public:
  // `pool` and `block` may be null when the device set works on ones the caller keeps alive
  // (devicemapper_driver_over, for tests).
  DevicemapperDriver(std::string home, PoolSetup setup, std::unique_ptr<devmapper::ThinPool> pool,
                     std::unique_ptr<devmapper::BlockOps> block, std::unique_ptr<DeviceSet> set,
                     DriverAccess access)
      : home_(std::move(home)),
        setup_(std::move(setup)),
        pool_(std::move(pool)),
        block_(std::move(block)),
        set_(std::move(set)),
        access_(access) {}
  // Opened under a shared lock on a store whose pool is not set up (a new store, or the pool
  // not active since a reboot): no device set; everything but exists() and status() is
  // refused naming `pending` until a writer sets the pool up.
  DevicemapperDriver(std::string home, std::string pending)
      : home_(std::move(home)), not_set_up_(std::move(pending)) {}

  std::string name() const override { return "devicemapper"; }
  std::string home() const override { return home_; }

  Result<void> create(const std::string& id, const std::string& parent,
                      const CreateOpts& opts) override {
    return create_layer(id, parent, opts);
  }
  Result<void> create_rw(const std::string& id, const std::string& parent,
                         const CreateOpts& opts) override {
    return create_layer(id, parent, opts);
  }
  Result<void> remove(const std::string& id) override;
  Result<std::string> get(const std::string& id, const std::string& mount_label) override;
  Result<void> put(const std::string& id) override;
  Result<std::string> mount_dir(const std::string& id) override;
  bool exists(const std::string& id) override {
    return set_ && valid_id(id) && set_->has_device(device_hash(id));
  }
  KeyValues status() override {
    if (!set_) return {{"Pool", "not set up: " + not_set_up_}};
    return set_->status();
  }
  Result<std::vector<std::string>> list() override {
    COWLAB_TRY(set_up("list layers"));
    std::vector<std::string> ids = set_->device_hashes();
    for (auto& id : ids)
      if (id[0] == '@') id.erase(0, 1);  // device_hash()'s escape
    return ids;
  }
  std::vector<std::string> pending_recovery() const override {
    if (!set_) return {not_set_up_};
    return set_->pending();
  }
  Result<KeyValues> metadata(const std::string& id) override;
  Result<void> cleanup() override;
  Result<int64_t> apply_diff(const std::string& id, const std::string& parent,
                             Reader& tar) override;
  Result<uint64_t> space_used() override {
    COWLAB_TRY(set_up("space used"));
    return set_->data_bytes_used();
  }

  WhiteoutFormat whiteout_format() const override { return WhiteoutFormat::kDeleteInPlace; }
  bool supports_quota() const override { return false; }

 protected:
  // Unused: apply_diff() below puts the scratch dir on the layer's own filesystem.
  std::string scratch_dir() const override { return home_ + "/tmp"; }

 private:
  std::string mount_path(const std::string& id) const { return home_ + "/mnt/" + id; }
  Result<std::string> get_private(const std::string& id);
  Result<void> put_private(const std::string& id);
  Result<void> create_layer(const std::string& id, const std::string& parent,
                            const CreateOpts& opts);
  // kNotFound naming what is missing when the driver was opened without a device set.
  Result<void> set_up(const std::string& what) const {
    if (set_) return {};
    return Error::not_found("devicemapper: " + what + ": the store's thin pool is not set up (" +
                            not_set_up_ + "); a writer sets it up");
  }

  std::string home_;
  PoolSetup setup_;
  std::unique_ptr<devmapper::ThinPool> pool_;
  std::unique_ptr<devmapper::BlockOps> block_;
  std::unique_ptr<DeviceSet> set_;
  DriverAccess access_ = DriverAccess::kShared;
  std::string not_set_up_;  // why set_ is null
  RefCounter counter_{path_is_mounted};
  std::set<std::string> held_;  // layers this process got and has not put back yet
  // Under the shared lock: the layers this process got, each on a mount point of its own.
  struct PrivateMount {
    std::string dir;
    int refs = 0;
  };
  std::map<std::string, PrivateMount> private_;
  // This process's mount points as a reader (see get_private).
  ReaderMountPoints reader_mounts_{home_ + "/readers", home_ + "/mnt"};
};

Result<void> DevicemapperDriver::create_layer(const std::string& id, const std::string& parent,
                                              const CreateOpts& opts) {
  const std::string ctx = "devicemapper: create layer " + id;
  COWLAB_TRY(set_up("create layer " + id));
  if (!valid_id(id)) return Error::invalid(ctx + ": invalid layer id");
  std::optional<uint64_t> size;
  for (const auto& [raw_key, value] : opts.storage_opt) {
    std::string key = raw_key;
    std::transform(key.begin(), key.end(), key.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (key != "size") return Error::invalid(ctx + ": unknown storage option " + raw_key);
    size = COWLAB_TRY_CTX(parse_size(value), ctx + ": option size");
  }
  if (!parent.empty() && !exists(parent))
    return Error::not_found(ctx + ": parent layer " + parent + " does not exist");
  if (exists(id)) return Error(ErrorKind::kExists, ctx + ": layer exists", EEXIST);
  // A layer without parent is a snapshot of the base device (hash "").
  COWLAB_TRY_CTX(set_->add_device(device_hash(id), parent.empty() ? "" : device_hash(parent), size),
                 ctx);
  return {};
}

Result<void> DevicemapperDriver::remove(const std::string& id) {
  const std::string ctx = "devicemapper: remove layer " + id;
  // Not kNotFound, which would say the layer held nothing (the layer store takes that as done).
  if (!set_)
    return Error(
        ErrorKind::kBusy,
        ctx + ": the store's thin pool is not set up (" + not_set_up_ + "); a writer sets it up",
        EBUSY);
  // A device whose create a power cut interrupted is rolled back by DeviceSet::init (its
  // transaction), so no record means nothing of the layer is left in the pool; a mount point
  // left by an interrupted get or remove goes with it.
  if (!exists(id)) {
    auto r = sys::rmdir(mount_path(id));
    if (r.ok()) return {};
    return Error::not_found(ctx + ": no such layer");
  }
  const std::string mp = mount_path(id);
  if (COWLAB_TRY_CTX(sys::is_mountpoint(mp), ctx))
    return Error(ErrorKind::kBusy, ctx + ": the layer is mounted on " + mp, EBUSY);
  COWLAB_TRY_CTX(set_->delete_device(device_hash(id), DeleteMode::kAllowDeferred), ctx);
  // Normally gone since put(); an old kernel may refuse (EBUSY) when the mount leaked into
  // another namespace, which does not make the removal fail (Docker's Remove).
  (void)sys::rmdir(mp);
  return {};
}

Result<std::string> DevicemapperDriver::get(const std::string& id, const std::string& /*label*/) {
  const std::string ctx = "devicemapper: get layer " + id;
  COWLAB_TRY(set_up("get layer " + id));
  if (!exists(id)) return Error::not_found(ctx + ": no such layer");
  if (access_ == DriverAccess::kShared) {
    auto r = get_private(id);
    if (!r.ok()) return std::move(r).error().with_context(ctx);
    return r;
  }
  const std::string mp = mount_path(id);
  const std::string rootfs = mp + "/rootfs";
  if (counter_.increment(mp) > 1) {
    held_.insert(id);
    return rootfs;
  }
  auto mounted = [&]() -> Result<void> {
    COWLAB_TRY(sys::mkdir_all(home_ + "/mnt", 0700));
    if (auto r = sys::mkdir(mp, 0755); !r.ok() && r.error().err() != EEXIST) return r;
    COWLAB_TRY(set_->mount_device(device_hash(id), mp));
    auto content = [&]() -> Result<void> {
      // rootfs/ is the layer; its mode does not depend on the umask (graphtest wants 0755).
      if (!COWLAB_TRY(sys::lstat_if_exists(rootfs))) {
        COWLAB_TRY(sys::mkdir(rootfs, 0755));
        COWLAB_TRY(sys::fchmodat(sys::kCwd, rootfs, 0755));
      }
      // Docker writes the layer id beside rootfs/ "to help reconstruct this in case of later
      // problems".
      if (!COWLAB_TRY(sys::lstat_if_exists(mp + "/id")))
        COWLAB_TRY(sys::write_file_atomic(mp + "/id", id, 0600));
      return {};
    }();
    if (!content.ok()) {
      (void)set_->unmount_device(device_hash(id), mp);
      return content;
    }
    return {};
  }();
  if (!mounted.ok()) {
    counter_.decrement(mp);
    (void)sys::rmdir(mp);
    return std::move(mounted).error().with_context(ctx);
  }
  held_.insert(id);
  return rootfs;
}

Result<void> DevicemapperDriver::put(const std::string& id) {
  const std::string ctx = "devicemapper: put layer " + id;
  COWLAB_TRY(set_up("put layer " + id));
  if (!valid_id(id)) return Error::invalid(ctx + ": invalid layer id");
  if (access_ == DriverAccess::kShared) {
    auto r = put_private(id);
    if (!r.ok()) return std::move(r).error().with_context(ctx);
    return r;
  }
  const std::string mp = mount_path(id);
  if (counter_.decrement(mp) > 0) return {};
  held_.erase(id);
  COWLAB_TRY_CTX(set_->unmount_device(device_hash(id), mp), ctx);
  return {};
}

// Readers (the shared lock) never mount on mnt/<id>.  Several processes hold the shared lock
// at once, and mnt/<id> was one mount point for all of them: the second reader of a layer
// found it mounted and counted that as a reference, and the first to finish unmounted it
// under the other (two `diff`s of one layer).  Counting references across processes would
// need a count that every reader updates under a lock of its own and that survives — and is
// repaired after — a reader killed between its mount and its count; the kernel already keeps
// that count: each mount holds the device open.  So each reader mounts the device on a
// directory of its own, readers/<id>.<pid>.<random>, unmounts only that, and deactivates the
// device only when nothing holds it open any more (DeviceSet::unmount_device, which also
// serialises activation against deactivation among readers).  mnt/<id> stays the mount of
// writers and of `cowlab mount` references, which only the exclusive lock changes.  A reader
// killed while mounted leaves its directory mounted; the next exclusive init removes it
// (no reader runs then).
//
// A read-only store (EROFS) has no room for readers/<...>: there a reader mounts in a private
// mount namespace of its own, on a tmpfs over mnt/ (ReaderMountPoints::make; readers never use
// mnt/<id>), which no writer needs to sweep.  What stays the same: the mount still holds the
// device open, and unmount_device still deactivates it only when nothing holds it any more,
// under the device's flock (a read-only descriptor locks it), so other readers — private or
// registered — keep theirs.  No writer runs while the store is read-only; one that comes after
// finds the device unopened, or open only while the reader lives.
Result<std::string> DevicemapperDriver::get_private(const std::string& id) {
  if (auto it = private_.find(id); it != private_.end()) {
    ++it->second.refs;
    return it->second.dir + "/rootfs";
  }
  const std::string hash = device_hash(id);
  std::string dir;
  auto mount = [&](MountMode mode) -> Result<void> {
    dir = COWLAB_TRY(reader_mounts_.make(id));
    auto m = set_->mount_device(hash, dir, mode);
    if (!m.ok()) (void)sys::rmdir(dir);
    return m;
  };
  // Read-only: a reader writes nothing to the pool (DeviceSet::mount_device).
  COWLAB_TRY(mount(MountMode::kReadOnly));
  auto has_rootfs = sys::lstat_if_exists(dir + "/rootfs");
  if (!has_rootfs.ok()) {
    (void)set_->unmount_device(hash, dir);
    return std::move(has_rootfs).error();
  }
  if (!*has_rootfs) {
    // A layer no writer has mounted yet has no rootfs/ (get() under the exclusive lock makes
    // it, Docker's layout), and a read-only mount cannot make it: this once, the reader mounts
    // read-write to make it; another reader may be making it at the same time.
    COWLAB_TRY(set_->unmount_device(hash, dir));
    COWLAB_TRY(mount(MountMode::kReadWrite));
    const std::string rootfs = dir + "/rootfs";
    auto made = [&]() -> Result<void> {
      auto mk = sys::mkdir(rootfs, 0755);
      if (!mk.ok() && mk.error().err() != EEXIST) return mk;
      if (mk.ok()) COWLAB_TRY(sys::fchmodat(sys::kCwd, rootfs, 0755));
      return {};
    }();
    if (!made.ok()) {
      (void)set_->unmount_device(hash, dir);
      return std::move(made).error();
    }
  }
  private_[id] = PrivateMount{dir, 1};
  return dir + "/rootfs";
}

Result<void> DevicemapperDriver::put_private(const std::string& id) {
  auto it = private_.find(id);
  if (it == private_.end()) return Error::invalid("the layer is not mounted by this process");
  if (--it->second.refs > 0) return {};
  const std::string dir = it->second.dir;
  private_.erase(it);
  return set_->unmount_device(device_hash(id), dir);
}

// The thin device is mounted on mnt/<id>; get() returns rootfs/ below it (Docker's layout).
Result<std::string> DevicemapperDriver::mount_dir(const std::string& id) {
  const std::string ctx = "devicemapper: mount dir of layer " + id;
  if (!exists(id)) return Error::not_found(ctx + ": no such layer");
  return mount_path(id);
}

Result<KeyValues> DevicemapperDriver::metadata(const std::string& id) {
  const std::string ctx = "devicemapper: metadata of layer " + id;
  COWLAB_TRY(set_up("metadata of layer " + id));
  if (!exists(id)) return Error::not_found(ctx + ": no such layer");
  auto r = COWLAB_TRY_CTX(set_->lookup(device_hash(id)), ctx);
  return KeyValues{{"DeviceId", std::to_string(r.device_id)},
                   {"DeviceSize", std::to_string(r.size)},
                   {"DeviceName", set_->device_name(device_hash(id))}};
}

Result<void> DevicemapperDriver::cleanup() {
  if (!set_) return {};  // nothing set up, nothing held
  Result<void> released;
  for (auto it = private_.begin(); it != private_.end(); it = private_.erase(it)) {
    auto r = set_->unmount_device(device_hash(it->first), it->second.dir);
    if (!r.ok() && released.ok())
      released = std::move(r).error().with_context("devicemapper: cleanup");
  }
  COWLAB_TRY(released);
  // What this process holds: its mounts.
  std::vector<std::string> held(held_.begin(), held_.end());
  for (const auto& id : held) {
    const std::string mp = mount_path(id);
    while (counter_.count(mp) > 0) counter_.decrement(mp);
    held_.erase(id);
    if (set_->has_device(device_hash(id)))
      COWLAB_TRY_CTX(set_->unmount_device(device_hash(id), mp), "devicemapper: cleanup");
  }
  // Under the shared lock other processes use the pool at the same time: a device nobody has
  // open may be one another reader has just activated and is about to mount, and the pool is
  // theirs too.  A reader releases what it holds and nothing else (`cowlab info --all` and
  // every reader); the pool's upkeep waits for the next exclusive cleanup.
  if (access_ == DriverAccess::kShared) return {};
  (void)set_->cleanup_deleted_devices();
  // Devices nobody has open (the base device, layers left active by an interrupted process);
  // a device mounted by another cowlab process stays, and so does the pool under it.
  auto remaining = COWLAB_TRY_CTX(set_->deactivate_unused(), "devicemapper: cleanup");
  if (remaining.empty()) COWLAB_TRY_CTX(devmapper::close_pool(setup_), "devicemapper: cleanup");
  return {};
}

Result<int64_t> DevicemapperDriver::apply_diff(const std::string& id, const std::string& parent,
                                               Reader& tar) {
  const std::string ctx = "apply-diff layer " + id;
  std::string dir = COWLAB_TRY_CTX(get(id, ""), ctx);
  ApplyOptions ao;
  ao.format = WhiteoutFormat::kDeleteInPlace;
  // Hard links cannot cross filesystems and every layer is its own filesystem: the scratch
  // dir for aufs `.wh..wh.plnk` targets sits beside rootfs/ on the layer's device.
  ao.scratch_dir = mount_path(id) + "/apply-scratch";
  ao.context = ctx;
  auto stats = apply_layer(dir, tar, ao);
  auto released = put(id);
  if (!stats.ok()) return std::move(stats).error();
  COWLAB_TRY_CTX(released, ctx);
  return stats->size;
}

// Docker's determineDefaultFS: xfs when mkfs.xfs exists and the kernel has xfs (loading the
// module if needed), else ext4.
BaseFilesystem default_filesystem() {
  auto mkfs = sys::run({"mkfs.xfs", "-V"}, nullptr);
  if (!mkfs.ok() || *mkfs != 0) return BaseFilesystem::kExt4;
  if (!sys::filesystem_supported("xfs").value_or(false)) {
    (void)sys::run({"modprobe", "xfs"}, nullptr);
    if (!sys::filesystem_supported("xfs").value_or(false)) return BaseFilesystem::kExt4;
  }
  return BaseFilesystem::kXfs;
}

// The effective deferred removal/deletion settings (Docker's enableDeferredRemovalDeletion,
// defaulting to on where supported).
Result<std::pair<bool, bool>> deferred_settings(const DmOptions& o, const dm::Version& driver) {
  const bool kernel = driver.at_least(4, 27);
  const bool library = dm::library_deferred_remove_supported();
  bool removal = false;
  switch (o.deferred_removal) {
    case Setting::kAuto:
      removal = kernel && library;
      break;
    case Setting::kDisabled:
      removal = false;
      break;
    case Setting::kEnabled:
      if (!kernel)
        return Error::not_supported(
            "devicemapper: dm.use_deferred_removal=true: the kernel's "
            "device-mapper driver " +
            driver.text() + " has no deferred removal (needs 4.27)");
      if (!library)
        return Error::not_supported(
            "devicemapper: dm.use_deferred_removal=true: libdevmapper has no deferred removal");
      removal = true;
      break;
  }
  bool deletion = false;
  switch (o.deferred_deletion) {
    case Setting::kAuto:
      deletion = removal;
      break;
    case Setting::kDisabled:
      deletion = false;
      break;
    case Setting::kEnabled:
      if (!removal)
        return Error::not_supported(
            "devicemapper: dm.use_deferred_deletion=true needs deferred "
            "removal, which is not available here");
      deletion = true;
      break;
  }
  return std::pair<bool, bool>{removal, deletion};
}

// Docker's device names: docker-<maj>:<min>-<inode of the home>, then "-<id>" or "-pool".
std::string device_prefix(const struct stat& home) {
  return "docker-" + std::to_string(major(home.st_dev)) + ":" + std::to_string(minor(home.st_dev)) +
         "-" + std::to_string(home.st_ino);
}

}  // namespace

Result<std::vector<std::string>> remove_store_devices(const std::string& home) {
  const std::string ctx = "devicemapper: removing the devices of " + home;
  auto st = COWLAB_TRY_CTX(sys::lstat_if_exists(home), ctx);
  if (!st) return std::vector<std::string>{};
  const std::string prefix = device_prefix(*st) + "-";
  const std::string pool = prefix + "pool";
  std::vector<std::string> mine;
  for (auto& name : COWLAB_TRY_CTX(dm::list_devices(), ctx))
    if (name.rfind(prefix, 0) == 0 && name != pool) mine.push_back(std::move(name));
  // The thin devices first: the pool cannot go while they are open on it.
  if (COWLAB_TRY_CTX(dm::info(pool), ctx).exists) mine.push_back(pool);
  for (const auto& name : mine) COWLAB_TRY_CTX(dm::remove(name, dm::Removal::kImmediate), ctx);
  return mine;
}

Result<std::unique_ptr<Driver>> init_devicemapper(const DriverConfig& config) {
  // Options first: a bad option is kInvalid whatever the kernel.
  DmOptions options = COWLAB_TRY(devmapper::parse_options(config.options));

  // The kernel, before anything is created, so a refused probe leaves no home behind.
  COWLAB_TRY(dm::probe_kernel());
  if (!COWLAB_TRY_CTX(dm::ensure_thin_pool_target(), "devicemapper"))
    return Error::not_supported(
        "device-mapper has no thin-pool target (modprobe dm_thin_pool did not load one)");
  dm::Version version = COWLAB_TRY_CTX(dm::driver_version(), "devicemapper");
  auto [deferred_remove, deferred_delete] = COWLAB_TRY(deferred_settings(options, version));

  const std::string& home = config.home;
  const bool shared = config.access == DriverAccess::kShared;
  // Under a shared lock a reader sets nothing up (driver.h): no home, no loop devices, no pool
  // device — two readers doing that at once would both attach the files and race to create
  // the pool.  It reports what is missing, and the layer store takes its lock exclusive.
  if (shared && !COWLAB_TRY_CTX(sys::lstat_if_exists(home), "devicemapper: init"))
    return std::unique_ptr<Driver>(
        std::make_unique<DevicemapperDriver>(home, "no home " + home + " yet (a new store)"));
  COWLAB_TRY_CTX(sys::mkdir_all(home, 0700), "devicemapper: init");
  struct stat st = COWLAB_TRY_CTX(sys::stat(home), "devicemapper: init");
  const std::string prefix = device_prefix(st);

  PoolSetup setup;
  if (shared && options.thin_pool_device.empty()) {
    dm::DeviceInfo pool = COWLAB_TRY_CTX(dm::info(prefix + "-pool"), "devicemapper: init");
    if (!pool.exists)
      return std::unique_ptr<Driver>(std::make_unique<DevicemapperDriver>(
          home, "thin pool " + prefix + "-pool is not active (made or reactivated by a writer)"));
  }
  if (options.thin_pool_device.empty()) {
    diag::warn(
        "cowlab: devicemapper: WARNING: loop-lvm mode: the thin pool sits on loop devices "
        "over sparse files in " +
        home +
        "/devicemapper. This is strongly discouraged for production use; use "
        "--storage-opt dm.thinpooldev to give a real thin pool.");
    setup = COWLAB_TRY(devmapper::open_loopback_pool(home, prefix + "-pool", options));
  } else {
    setup = COWLAB_TRY(devmapper::open_existing_pool(options.thin_pool_device));
  }

  DeviceSetConfig cfg;
  cfg.home = home;
  cfg.device_prefix = prefix;
  cfg.deferred_remove = deferred_remove;
  cfg.deferred_delete = deferred_delete;
  cfg.default_filesystem = options.filesystem ? *options.filesystem : default_filesystem();
  cfg.options = std::move(options);
  cfg.udev_sync_supported = dm::udev_sync_supported();
  cfg.library_version = dm::library_version();
  if (setup.loop_mode) {
    cfg.data_device = setup.data_device;
    cfg.metadata_device = setup.metadata_device;
    cfg.data_loop_file = setup.data_file;
    cfg.metadata_loop_file = setup.metadata_file;
  }

  auto pool = std::make_unique<devmapper::DmThinPool>(setup.pool_name);
  auto block = std::make_unique<devmapper::SystemBlockOps>();
  auto set = std::make_unique<DeviceSet>(std::move(cfg), *pool, *block);
  if (auto r = set->init(config.access); !r.ok()) {
    // Leave nothing active that this attempt started.
    if (setup.created) {
      (void)set->deactivate_unused();
      (void)devmapper::close_pool(setup);
    }
    return std::move(r).error();
  }
  return std::unique_ptr<Driver>(std::make_unique<DevicemapperDriver>(
      home, std::move(setup), std::move(pool), std::move(block), std::move(set), config.access));
}

Result<std::unique_ptr<Driver>> devicemapper_driver_over(const DriverConfig& config,
                                                         devmapper::DeviceSetConfig set_config,
                                                         devmapper::ThinPool& pool,
                                                         devmapper::BlockOps& block) {
  set_config.home = config.home;
  auto set = std::make_unique<DeviceSet>(std::move(set_config), pool, block);
  COWLAB_TRY(set->init(config.access));
  return std::unique_ptr<Driver>(std::make_unique<DevicemapperDriver>(
      config.home, PoolSetup{}, nullptr, nullptr, std::move(set), config.access));
}

}  // namespace cowlab
