// The two things a DeviceSet drives, as small interfaces so its logic (device ids,
// transactions, rollback, deferred deletion, status) runs against fakes in unit tests:
//
//   ThinPool   a dm-thin pool and the thin devices activated from it (real: DmThinPool over
//              libdevmapper, backends.h)
//   BlockOps   what is done to a thin device's block device: mkfs, superblock probe, mount,
//              grow, discard (real: SystemBlockOps over the sys seam, backends.h)
//
// Errors follow dm.h: kBusy for EBUSY, kNotFound for ENXIO, the kernel's errno in err() —
// EEXIST from create_thin/create_snap for an id in use, EBUSY from delete_thin for an open
// device.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cowlab/result.h"
#include "devicemapper/options.h"

namespace cowlab::devmapper {

// A thin-pool's status line plus the data block size from its table.
struct PoolStatus {
  uint64_t transaction_id = 0;
  uint64_t metadata_used_blocks = 0;  // metadata blocks are always 4 KiB
  uint64_t metadata_total_blocks = 0;
  uint64_t data_used_blocks = 0;
  uint64_t data_total_blocks = 0;
  uint64_t data_block_sectors = 0;  // 512-byte sectors per data block
  std::string mode;                 // "rw", "ro", "out_of_data_space"
};
inline constexpr uint64_t kMetadataBlockBytes = 4096;

// Parses the parameters of a thin-pool status line ("<transaction id> <used>/<total metadata
// blocks> <used>/<total data blocks> <held root> rw|ro|out_of_data_space ...", kernel
// Documentation/admin-guide/device-mapper/thin-provisioning.rst).  A failed pool reports
// "Fail" (or "Error"): kCorrupt saying so.
Result<PoolStatus> parse_pool_status(std::string_view params);
// The data block size (sectors) from a thin-pool table line
// ("<metadata dev> <data dev> <data block size> <low water mark> [features]").
Result<uint64_t> parse_pool_table_block_sectors(std::string_view params);

struct ThinDeviceState {
  bool active = false;
  bool suspended = false;
  int32_t open_count = 0;
  bool deferred_remove = false;  // a deferred removal is scheduled
};

enum class Deactivation { kImmediate, kDeferred };

// How a pool's status is read.  kCommitFirst: the kernel commits the pool's metadata, then
// reports (a plain status query; dm-thin's pool_status commits unless asked not to), so the
// counts are those on disk.  kNoCommit: the in-core counts, and the metadata device is not
// written — what a reader of the store must use, since a reader writes nothing (measured: each
// plain `dmsetup status` of an idle pool moved its metadata file's mtime; --noflush did not).
enum class StatusQuery { kCommitFirst, kNoCommit };

// How a layer's filesystem is mounted: read-write (writers), or read-only (readers: MS_RDONLY).
enum class MountMode { kReadWrite, kReadOnly };

class ThinPool {
 public:
  virtual ~ThinPool() = default;
  virtual std::string pool_name() const = 0;
  virtual Result<PoolStatus> status(StatusQuery query) = 0;

  // Pool messages (dm-thin): the pool's metadata changes, no device is activated.
  virtual Result<void> create_thin(uint32_t device_id) = 0;
  // The origin must not change meanwhile: if it is active, suspend it first (moby: "suspend
  // the origin while taking the snapshot", kernel thin-provisioning.rst).
  virtual Result<void> create_snap(uint32_t device_id, uint32_t origin_id) = 0;
  virtual Result<void> delete_thin(uint32_t device_id) = 0;
  virtual Result<void> set_transaction_id(uint64_t current, uint64_t next) = 0;

  // Thin devices: dm devices with a "thin" table on this pool.
  virtual Result<ThinDeviceState> state(const std::string& name) = 0;
  virtual Result<void> activate(const std::string& name, uint32_t device_id,
                                uint64_t size_bytes) = 0;
  // One attempt; EBUSY comes back as kBusy for the caller's retry policy.
  virtual Result<void> deactivate(const std::string& name, Deactivation how) = 0;
  virtual Result<void> cancel_deferred_removal(const std::string& name) = 0;
  virtual Result<void> suspend(const std::string& name) = 0;
  virtual Result<void> resume(const std::string& name) = 0;
  // The block device node of an active device.
  virtual std::string device_path(const std::string& name) const = 0;
  // Names of live dm devices starting with `prefix`.
  virtual Result<std::vector<std::string>> active_devices(const std::string& prefix) = 0;
};

// What a superblock says.
struct FsIdentity {
  std::string type;  // "ext4" (any ext2/3/4 superblock, as Docker's ProbeFsType), "xfs", ""
  std::string uuid;  // lower-case 8-4-4-4-12, as blkid prints it; "" when type is ""
};
// Recognises ext2/3/4 and xfs from the first 64 KiB of a device (or less, when the device is
// smaller); anything else gives an empty type.
FsIdentity parse_superblock(std::string_view head);

class BlockOps {
 public:
  virtual ~BlockOps() = default;
  // Docker's createFilesystem: ext4 with "-E nodiscard,lazy_itable_init=0,lazy_journal_init=0"
  // (retried with only nodiscard) then "tune2fs -c -1 -i 0"; xfs ("-m crc=0,finobt=0" before
  // Linux 3.16).  `args` (dm.mkfsarg) go before the device.
  virtual Result<void> make_filesystem(BaseFilesystem fs, const std::string& device,
                                       const std::vector<std::string>& args) = 0;
  virtual Result<FsIdentity> identify(const std::string& device) = 0;
  virtual Result<void> mount(const std::string& device, const std::string& target,
                             const std::string& fstype, const std::string& options,
                             MountMode mode) = 0;
  // umount2(MNT_DETACH).
  virtual Result<void> unmount(const std::string& target) = 0;
  virtual Result<bool> is_mounted(const std::string& target) = 0;
  // resize2fs / xfs_growfs of a filesystem mounted at `mount_point` from `device`.
  virtual Result<void> grow_filesystem(BaseFilesystem fs, const std::string& device,
                                       const std::string& mount_point) = 0;
  // BLKDISCARD over the whole device, then flush.
  virtual Result<void> discard(const std::string& device) = 0;
  // Waits between EBUSY retries (a fake returns at once).
  virtual void sleep_ms(int ms) = 0;
};

}  // namespace cowlab::devmapper
