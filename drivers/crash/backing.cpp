// The filesystem or pool that holds a crash scenario's store, per driver, and how a boot
// brings it up on a device (internal.h).
#include <sys/mount.h>
#include <unistd.h>

#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "crash/internal.h"

namespace cowlab::crash {

namespace {

Result<void> run_tool(const std::vector<std::string>& argv) {
  std::string out;
  int rc = COWLAB_TRY(sys::run(argv, &out));
  if (rc != 0)
    return Error(ErrorKind::kSystem, argv[0] + " " + (argv.size() > 1 ? argv[1] : "") + ": exit " +
                                         std::to_string(rc) + ": " + out);
  return {};
}

// ext4 or btrfs on the device itself.
class FsBacking final : public Backing {
 public:
  FsBacking(std::string fstype, std::vector<std::string> mkfs,
            std::map<std::string, std::string> opts)
      : fstype_(std::move(fstype)), mkfs_(std::move(mkfs)) {
    storage_opts_ = std::move(opts);
  }
  Result<void> make(const std::string& dev, const std::string& mnt) override {
    auto argv = mkfs_;
    argv.push_back(dev);
    COWLAB_TRY_CTX(run_tool(argv), "crash: mkfs");
    return attach(dev, mnt);
  }
  Result<void> attach(const std::string& dev, const std::string& mnt) override {
    if (fstype_ == "btrfs") {
      // Every crash state carries the recorded filesystem's fsid and devid; btrfs refuses to
      // register a device of a lower generation than the one it remembers (volumes.c,
      // device_list_add: "already registered with a higher generation"), so forget the
      // unmounted ones first, as fstests does between replays.  With nothing registered yet
      // (the first mount of a run) Linux 6.1 answers ENOENT (btrfs_free_stale_devices found
      // nothing to free): nothing to forget is not a failure.
      std::string out;
      int rc = COWLAB_TRY(sys::run({"btrfs", "device", "scan", "--forget"}, &out));
      if (rc != 0 && out.find("No such file or directory") == std::string::npos)
        return Error(ErrorKind::kSystem,
                     "btrfs device scan --forget: exit " + std::to_string(rc) + ": " + out);
    }
    return sys::mount(dev, mnt, fstype_, 0, "");
  }
  Result<void> detach(const std::string& mnt) override { return unmount_dir(mnt); }

 private:
  std::string fstype_;
  std::vector<std::string> mkfs_;
};

// zfs: the device is the pool's only vdev; the store root is on the legacy-mounted dataset
// <pool>/store, so the driver's parent dataset is found from the root's st_dev (zfs.h) and its
// layers are <pool>/store/<cache id>.  A boot imports the pool (zpool import), which replays
// nothing but picks the newest valid uberblock: ZFS relies on its flushes for that.
class ZfsBacking final : public Backing {
 public:
  ZfsBacking() : pool_("cowlabcrash" + std::to_string(::getpid())) {}
  Result<void> make(const std::string& dev, const std::string& mnt) override {
    std::string ignored;
    (void)sys::run({"modprobe", "zfs"}, &ignored);  // zpool says so itself when it is missing
    COWLAB_TRY_CTX(run_tool({"zpool", "create", "-f", "-o", "cachefile=none", "-O",
                             "mountpoint=none", "-O", "compression=off", pool_, dev}),
                   "crash: zfs pool");
    imported_ = true;
    COWLAB_TRY_CTX(run_tool({"zfs", "create", "-o", "mountpoint=legacy", pool_ + "/store"}),
                   "crash: zfs pool");
    return sys::mount(pool_ + "/store", mnt, "zfs", 0, "");
  }
  // `zpool import -d DEV` looks at that device only: the origin, replay and log-writes
  // volumes carry the same pool.  -f: the pool was not exported (the cut), and a reboot's
  // import from the cache file does not ask either.
  Result<void> attach(const std::string& dev, const std::string& mnt) override {
    COWLAB_TRY(run_tool({"zpool", "import", "-f", "-N", "-o", "cachefile=none", "-d", dev, pool_}));
    imported_ = true;
    auto m = sys::mount(pool_ + "/store", mnt, "zfs", 0, "");
    if (!m.ok()) (void)export_pool();
    return m;
  }
  Result<void> detach(const std::string& mnt) override {
    auto u = sys::is_mountpoint(mnt).value_or(false) ? unmount_dir(mnt) : Result<void>();
    auto e = export_pool();
    if (!u.ok()) return u;
    return e;
  }
  ~ZfsBacking() override {
    if (imported_) (void)run_tool({"zpool", "export", "-f", pool_});
  }

 private:
  Result<void> export_pool() {
    if (!imported_) return {};
    imported_ = false;
    return run_tool({"zpool", "export", pool_});
  }
  std::string pool_;
  bool imported_ = false;
};

}  // namespace

Result<void> unmount_dir(const std::string& mnt) {
  auto r = sys::umount2(mnt, 0);
  if (!r.ok()) return sys::umount2(mnt, MNT_DETACH);
  return {};
}

Result<std::unique_ptr<Backing>> backing_for(const std::string& driver) {
  // ext4 with its inode tables and journal initialised at mkfs time, so no lazy-init thread
  // writes into the recording; no discard at mkfs (the volume is fresh).
  std::vector<std::string> mkfs_ext4{"mkfs.ext4", "-q", "-F", "-E",
                                     "nodiscard,lazy_itable_init=0,lazy_journal_init=0"};
  if (driver == "vfs" || driver == "overlay" || driver == "aufs")
    return std::unique_ptr<Backing>(new FsBacking("ext4", mkfs_ext4, {}));
  if (driver == "devicemapper")
    // loop-lvm: the pool's data and metadata files live on the recorded ext4.
    return std::unique_ptr<Backing>(new FsBacking(
        "ext4", mkfs_ext4,
        {{"dm.loopdatasize", "2G"}, {"dm.loopmetadatasize", "128M"}, {"dm.basesize", "1G"}}));
  if (driver == "btrfs")
    return std::unique_ptr<Backing>(
        new FsBacking("btrfs", {"mkfs.btrfs", "-q", "-f", "--nodiscard"}, {}));
  if (driver == "zfs") return std::unique_ptr<Backing>(new ZfsBacking());
  return Error::not_supported(
      "crash runner: driver " + driver +
      " is not supported (aufs, btrfs, devicemapper, overlay, vfs and zfs are)");
}

}  // namespace cowlab::crash
