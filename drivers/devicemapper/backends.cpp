#include "devicemapper/backends.h"
#include "cowlab/diag.h"

#include <fcntl.h>
#include <linux/fs.h>  // BLKGETSIZE64, BLKDISCARD
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <chrono>
#include <cstdio>
#include <sstream>
#include <thread>

#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "devicemapper/dm.h"

namespace cowlab::devmapper {

namespace {

// Docker's createPool: low water mark 32768 blocks, and no zeroing of newly provisioned blocks
// (the filesystem never reads blocks it did not write).
constexpr char kPoolFeatures[] = "32768 1 skip_block_zeroing";
constexpr uint64_t kSector = 512;

Error tool_error(const std::vector<std::string>& argv, const Result<int>& rc,
                 const std::string& out) {
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  if (!rc.ok())
    return Error(rc.error().kind(), cmd + ": " + rc.error().message(), rc.error().err());
  std::string text = out;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return Error(ErrorKind::kSystem,
               cmd + ": exit status " + std::to_string(*rc) + (text.empty() ? "" : ": " + text));
}

Result<void> run_tool(const std::vector<std::string>& argv) {
  std::string out;
  auto rc = sys::run(argv, &out);
  if (rc.ok() && *rc == 0) return {};
  return tool_error(argv, rc, out);
}

Result<uint64_t> block_device_size(int fd, const std::string& device) {
  uint64_t bytes = 0;
  COWLAB_TRY(sys::ioctl(fd, BLKGETSIZE64, &bytes, "BLKGETSIZE64 " + device));
  return bytes;
}

std::string dev_text(dev_t dev) {
  return std::to_string(major(dev)) + ":" + std::to_string(minor(dev));
}

// Creates a sparse file of `size` or grows an existing smaller one (Docker's ensureImage).
Result<void> ensure_image(const std::string& path, uint64_t size) {
  auto st = COWLAB_TRY(sys::lstat_if_exists(path));
  if (!st) {
    auto fd = COWLAB_TRY(sys::open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    COWLAB_TRY(sys::ftruncate(fd.get(), static_cast<off_t>(size)));
    return {};
  }
  if (!S_ISREG(st->st_mode))
    return Error::invalid("devicemapper: " + path + " is not a regular file");
  if (static_cast<uint64_t>(st->st_size) < size) {
    auto fd = COWLAB_TRY(sys::open(path, O_RDWR | O_CLOEXEC));
    COWLAB_TRY_CTX(sys::ftruncate(fd.get(), static_cast<off_t>(size)),
                   "devicemapper: growing loop file " + path);
  } else if (static_cast<uint64_t>(st->st_size) > size) {
    diag::warn("cowlab: devicemapper: WARNING: loop file " + path + " is " +
               std::to_string(st->st_size) + " bytes; it cannot shrink to the configured " +
               std::to_string(size));
  }
  return {};
}

// The block device behind "maj:min": its /dev name and, for a loop device, its backing file.
struct BackingDevice {
  std::string device;
  std::string loop_file;
};
BackingDevice describe_device(const std::string& maj_min) {
  BackingDevice out;
  const std::string sys_dir = "/sys/dev/block/" + maj_min;
  auto link = sys::readlink(sys_dir);
  if (!link.ok()) {
    out.device = maj_min;
    return out;
  }
  out.device = "/dev/" + link->substr(link->rfind('/') + 1);
  auto backing = sys::read_file(sys_dir + "/loop/backing_file");
  if (backing.ok()) {
    std::string f = *backing;
    while (!f.empty() && f.back() == '\n') f.pop_back();
    out.loop_file = f;
  }
  return out;
}

// loop-lvm needs the loop driver; on a kernel that builds it as a module nothing may have
// loaded it yet (no udev, no static device nodes), so load it once.  Without loop devices
// this driver cannot run here: kNotSupported, and selection moves on.
Result<void> ensure_loop_driver() {
  if (COWLAB_TRY(sys::lstat_if_exists("/dev/loop-control"))) return {};
  std::string out;
  auto rc = sys::run({"modprobe", "loop"}, &out);
  if (COWLAB_TRY(sys::lstat_if_exists("/dev/loop-control"))) return {};
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return Error::not_supported(
      "devicemapper: loop-lvm mode needs loop devices and /dev/loop-control does not exist "
      "(modprobe loop: " +
      (rc.ok() ? "exit status " + std::to_string(*rc) + (out.empty() ? "" : ": " + out)
               : rc.error().message()) +
      "); give a thin pool with dm.thinpooldev instead");
}

}  // namespace

std::optional<std::pair<unsigned, unsigned>> parse_major_minor(const std::string& text) {
  unsigned ma = 0, mi = 0;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%u:%u%c", &ma, &mi, &tail) != 2) return std::nullopt;
  return std::pair<unsigned, unsigned>{ma, mi};
}

// ---- DmThinPool ---------------------------------------------------------------------------------

Result<PoolStatus> DmThinPool::status(StatusQuery query) {
  auto lines =
      COWLAB_TRY(dm::table(name_, query == StatusQuery::kNoCommit ? dm::TableKind::kStatusNoFlush
                                                                  : dm::TableKind::kStatus));
  if (lines.size() != 1 || lines[0].type != "thin-pool")
    return Error::corrupt("devicemapper: " + name_ + " is not a thin-pool device");
  PoolStatus s = COWLAB_TRY_CTX(parse_pool_status(lines[0].params), "devicemapper: pool " + name_);
  if (!block_sectors_) {
    auto table = COWLAB_TRY(dm::table(name_, dm::TableKind::kTable));
    if (table.size() != 1)
      return Error::corrupt("devicemapper: " + name_ + " has " + std::to_string(table.size()) +
                            " table lines, a thin-pool has one");
    block_sectors_ = COWLAB_TRY_CTX(parse_pool_table_block_sectors(table[0].params),
                                    "devicemapper: pool " + name_);
  }
  s.data_block_sectors = *block_sectors_;
  return s;
}

Result<void> DmThinPool::pool_message(const std::string& text) {
  COWLAB_TRY(dm::message(name_, text));
  return {};
}

Result<void> DmThinPool::create_thin(uint32_t device_id) {
  return pool_message("create_thin " + std::to_string(device_id));
}

Result<void> DmThinPool::create_snap(uint32_t device_id, uint32_t origin_id) {
  return pool_message("create_snap " + std::to_string(device_id) + " " + std::to_string(origin_id));
}

Result<void> DmThinPool::delete_thin(uint32_t device_id) {
  return pool_message("delete " + std::to_string(device_id));
}

Result<void> DmThinPool::set_transaction_id(uint64_t current, uint64_t next) {
  return pool_message("set_transaction_id " + std::to_string(current) + " " + std::to_string(next));
}

Result<ThinDeviceState> DmThinPool::state(const std::string& name) {
  dm::DeviceInfo i = COWLAB_TRY(dm::info(name));
  ThinDeviceState s;
  s.active = i.exists;
  s.suspended = i.suspended;
  s.open_count = i.open_count;
  s.deferred_remove = i.deferred_remove;
  return s;
}

Result<void> DmThinPool::activate(const std::string& name, uint32_t device_id,
                                  uint64_t size_bytes) {
  dm::DeviceInfo pool = COWLAB_TRY(dm::info(name_));
  if (!pool.exists)
    return Error::not_found("devicemapper: activating " + name + ": pool " + name_ +
                            " is not active");
  // Referring to the pool by major:minor works whether or not its /dev/mapper node exists.
  const std::string params = std::to_string(pool.major) + ":" + std::to_string(pool.minor) + " " +
                             std::to_string(device_id);
  COWLAB_TRY(dm::create(name, {{0, size_bytes / kSector, "thin", params}}));
  if (auto node = dm::ensure_node(name); !node.ok()) {
    (void)dm::remove(name, dm::Removal::kImmediate);
    return std::move(node).error();
  }
  return {};
}

Result<void> DmThinPool::deactivate(const std::string& name, Deactivation how) {
  return dm::remove(
      name, how == Deactivation::kDeferred ? dm::Removal::kDeferred : dm::Removal::kImmediate);
}

Result<void> DmThinPool::cancel_deferred_removal(const std::string& name) {
  COWLAB_TRY(dm::message(name, "@cancel_deferred_remove"));
  return {};
}

Result<void> DmThinPool::suspend(const std::string& name) {
  return dm::suspend(name);
}
Result<void> DmThinPool::resume(const std::string& name) {
  return dm::resume(name);
}
std::string DmThinPool::device_path(const std::string& name) const {
  return dm::device_path(name);
}

Result<std::vector<std::string>> DmThinPool::active_devices(const std::string& prefix) {
  auto all = COWLAB_TRY(dm::list_devices());
  std::vector<std::string> out;
  for (auto& n : all)
    if (n.rfind(prefix, 0) == 0) out.push_back(std::move(n));
  return out;
}

// ---- SystemBlockOps -----------------------------------------------------------------------------

Result<void> SystemBlockOps::make_filesystem(BaseFilesystem fs, const std::string& device,
                                             const std::vector<std::string>& args) {
  if (fs == BaseFilesystem::kXfs) {
    std::vector<std::string> argv = {"mkfs.xfs"};
    // Docker: kernels before 3.16 cannot mount xfs v5 (crc) with the free inode btree.
    if (!sys::kernel_version().at_least(3, 16)) argv.insert(argv.end(), {"-m", "crc=0,finobt=0"});
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(device);
    return run_tool(argv);
  }
  // Docker: no discard (a fresh thin device has nothing to discard), inode tables and journal
  // written now rather than lazily by a kernel thread that would keep the device busy.
  std::vector<std::string> argv = {"mkfs.ext4", "-E",
                                   "nodiscard,lazy_itable_init=0,lazy_journal_init=0"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(device);
  if (!run_tool(argv).ok()) {
    argv[2] = "nodiscard";  // older mke2fs without the lazy options
    COWLAB_TRY(run_tool(argv));
  }
  // No periodic fsck: a layer's filesystem is never checked at boot.
  return run_tool({"tune2fs", "-c", "-1", "-i", "0", device});
}

Result<FsIdentity> SystemBlockOps::identify(const std::string& device) {
  auto fd = COWLAB_TRY(sys::open(device, O_RDONLY | O_CLOEXEC));
  std::string head(64 * 1024, '\0');
  size_t got = COWLAB_TRY(sys::pread(fd.get(), head.data(), head.size(), 0));
  head.resize(got);
  return parse_superblock(head);
}

Result<void> SystemBlockOps::mount(const std::string& device, const std::string& target,
                                   const std::string& fstype, const std::string& options,
                                   MountMode mode) {
  return sys::mount(device, target, fstype, mode == MountMode::kReadOnly ? MS_RDONLY : 0, options);
}

Result<void> SystemBlockOps::unmount(const std::string& target) {
  return sys::umount2(target, MNT_DETACH);
}

Result<bool> SystemBlockOps::is_mounted(const std::string& target) {
  return sys::is_mountpoint(target);
}

Result<void> SystemBlockOps::grow_filesystem(BaseFilesystem fs, const std::string& device,
                                             const std::string& mount_point) {
  if (fs == BaseFilesystem::kXfs) return run_tool({"xfs_growfs", mount_point});
  return run_tool({"resize2fs", device});
}

Result<void> SystemBlockOps::discard(const std::string& device) {
  auto fd = COWLAB_TRY(sys::open(device, O_RDWR | O_CLOEXEC));
  uint64_t size = COWLAB_TRY(block_device_size(fd.get(), device));
  uint64_t range[2] = {0, size};
  COWLAB_TRY(sys::ioctl(fd.get(), BLKDISCARD, range, "BLKDISCARD " + device));
  // Docker syncs after the discard: without it the following device removal sometimes fails
  // with EBUSY.
  return sys::fsync(fd.get());
}

void SystemBlockOps::sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// ---- pool set-up --------------------------------------------------------------------------------

Result<PoolSetup> open_existing_pool(const std::string& pool_name) {
  const std::string ctx = "devicemapper: dm.thinpooldev=" + pool_name;
  dm::DeviceInfo i = COWLAB_TRY_CTX(dm::info(pool_name), ctx);
  if (!i.exists) return Error::not_found(ctx + ": no such device-mapper device");
  auto table = COWLAB_TRY_CTX(dm::table(pool_name, dm::TableKind::kTable), ctx);
  if (table.size() != 1 || table[0].type != "thin-pool")
    return Error::invalid(ctx + ": the device is not a thin-pool");
  PoolSetup s;
  s.pool_name = pool_name;
  return s;
}

Result<PoolSetup> open_loopback_pool(const std::string& home, const std::string& pool_name,
                                     const DmOptions& options) {
  const std::string ctx = "devicemapper: loop-lvm pool " + pool_name;
  PoolSetup s;
  s.pool_name = pool_name;
  s.loop_mode = true;
  const std::string dir = home + "/devicemapper";
  s.data_file = dir + "/data";
  s.metadata_file = dir + "/metadata";

  dm::DeviceInfo i = COWLAB_TRY_CTX(dm::info(pool_name), ctx);
  if (i.exists) {
    // Left active by an earlier cowlab process: read its devices from its table.
    auto table = COWLAB_TRY_CTX(dm::table(pool_name, dm::TableKind::kTable), ctx);
    if (table.size() != 1 || table[0].type != "thin-pool")
      return Error::invalid(ctx + ": a device of that name exists and is not a thin-pool");
    std::istringstream in(table[0].params);
    std::string metadata_dev, data_dev;
    in >> metadata_dev >> data_dev;
    BackingDevice meta = describe_device(metadata_dev), data = describe_device(data_dev);
    s.metadata_device = meta.device;
    s.data_device = data.device;
    if (!meta.loop_file.empty()) s.metadata_file = meta.loop_file;
    if (!data.loop_file.empty()) s.data_file = data.loop_file;
    return s;
  }

  COWLAB_TRY(ensure_loop_driver());
  COWLAB_TRY_CTX(sys::mkdir_all(dir, 0700), ctx);
  COWLAB_TRY_CTX(ensure_image(s.data_file, options.loop_data_size), ctx);
  COWLAB_TRY_CTX(ensure_image(s.metadata_file, options.loop_metadata_size), ctx);
  // Autoclear: the loop devices go away with their last opener, which after the table load
  // is the pool itself.  Until then these fds keep them bound.
  auto data = COWLAB_TRY_CTX(sys::loop_attach(s.data_file, sys::LoopFlags::kAutoclear), ctx);
  auto meta = COWLAB_TRY_CTX(sys::loop_attach(s.metadata_file, sys::LoopFlags::kAutoclear), ctx);
  s.data_device = data.device;
  s.metadata_device = meta.device;
  uint64_t data_bytes = COWLAB_TRY_CTX(block_device_size(data.fd.get(), data.device), ctx);
  auto data_st = COWLAB_TRY_CTX(sys::fstat(data.fd.get()), ctx);
  auto meta_st = COWLAB_TRY_CTX(sys::fstat(meta.fd.get()), ctx);
  const std::string params = dev_text(meta_st.st_rdev) + " " + dev_text(data_st.st_rdev) + " " +
                             std::to_string(options.block_sectors) + " " + kPoolFeatures;
  COWLAB_TRY_CTX(dm::create(pool_name, {{0, data_bytes / kSector, "thin-pool", params}}), ctx);
  s.created = true;
  return s;
}

Result<void> close_pool(const PoolSetup& setup) {
  if (!setup.loop_mode) return {};
  dm::DeviceInfo i = COWLAB_TRY(dm::info(setup.pool_name));
  if (i.exists) COWLAB_TRY(dm::remove(setup.pool_name, dm::Removal::kImmediate));
  // Autoclear detaches the loop devices once the pool has closed them; the kernel may do that
  // from a work item, so wait for it (callers check for leftovers right after), and detach
  // by hand what is still bound after 5 s: nothing can be using them any more.
  auto bound = [&]() -> Result<std::vector<std::string>> {
    std::vector<std::string> out;
    for (const auto& d : COWLAB_TRY(sys::loop_devices()))
      if (d.backing_file == setup.data_file || d.backing_file == setup.metadata_file)
        out.push_back(d.device);
    return out;
  };
  for (int i = 0; i < 100; ++i) {
    auto left = COWLAB_TRY(bound());
    if (left.empty()) return {};
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (const auto& device : COWLAB_TRY(bound()))
    COWLAB_TRY_CTX(sys::loop_detach(device), "devicemapper: detaching " + device);
  return {};
}

}  // namespace cowlab::devmapper
