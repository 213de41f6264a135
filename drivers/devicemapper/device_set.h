// DeviceSet: Docker's devmapper DeviceSet (daemon/graphdriver/devmapper/deviceset.go) — the
// thin devices of one store, their ids, metadata and pool transactions.
//
// Devices.  The base device (hash "") holds an empty filesystem; every layer is a thin
// snapshot of its parent's device, or of the base device for a layer without parent.  A
// device is named "<prefix>-<hash>" ("<prefix>-base" for the base), prefix
// "docker-<major>:<minor>-<inode of the home>" as in Docker.
//
// Ids and transactions.  Thin ids are 24-bit, allocated from a bitmap rebuilt at start-up
// from the metadata files, starting after next_device_id (deviceset-metadata).  Every pool
// message that creates or deletes a thin device runs inside a transaction:
//   1. open:  transaction-metadata := {pool transaction id + 1, hash, device id}  (atomic)
//   2. the pool message (create_thin / create_snap / delete), and the device's metadata file
//   3. close: set_transaction_id(current, open) on the pool
// A process that dies between 1 and 3 leaves the pool's transaction id behind the open one;
// init() then rolls the transaction back: it deletes the thin device (which may not exist),
// removes the device's metadata file and frees the id.  Device files whose transaction id is
// beyond the pool's were never committed and are ignored.
//
// Removal.  Put deactivates a device (deferred removal when enabled: the kernel removes an
// open device once its last opener goes away); EBUSY is retried 200 times 100 ms apart
// (Docker's removeDevice).  Deleting a device that is still open fails with EBUSY; with
// deferred deletion the device is marked "deleted" and its deletion retried at every start,
// every later delete and cleanup (Docker retries from a 30 s worker; cowlab has no daemon).
// A deleted device no longer exists for the driver, but keeps its id until it is gone.
//
// Crash safety: metadata files are written with sys::write_file_atomic; init() removes the
// temp files of writes a crash interrupted and never reads them as records.
//
// Thread-safety: one thread at a time (driver.h).  Metadata files are written with
// sys::write_file_atomic; the pool and block devices are reached only through the
// ThinPool and BlockOps given to the constructor, which must outlive the DeviceSet.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cowlab/driver.h"
#include "cowlab/result.h"
#include "cowlab/sys.h"
#include "devicemapper/metadata.h"
#include "devicemapper/options.h"
#include "devicemapper/pool.h"

namespace cowlab::devmapper {

// How a device is to be deleted.
enum class DeleteMode {
  kAllowDeferred,  // EBUSY with deferred deletion enabled marks the device deleted
  kSync,           // EBUSY is an error (Docker's syncDelete)
};

struct DeviceSetConfig {
  std::string home;           // the driver home; metadata/ and mnt/ live below it
  std::string device_prefix;  // "docker-8:1-1234"
  DmOptions options;
  // Effective settings after probing the kernel (init_devicemapper).
  bool deferred_remove = false;
  bool deferred_delete = false;
  BaseFilesystem default_filesystem = BaseFilesystem::kExt4;  // when dm.fs is not given
  // Reported by status().
  bool udev_sync_supported = false;
  std::string library_version;  // "" = omit the row, as Docker does when it cannot tell
  std::string data_device;      // "/dev/loop0" in loop-lvm mode, else ""
  std::string metadata_device;
  std::string data_loop_file;  // "<home>/devicemapper/data" in loop-lvm mode, else ""
  std::string metadata_loop_file;
  // EBUSY policy for device removal (Docker: 200 x 100 ms).
  int busy_retries = 200;
  int busy_retry_ms = 100;
};

class DeviceSet {
 public:
  DeviceSet(DeviceSetConfig config, ThinPool& pool, BlockOps& block);

  // kExclusive: loads the metadata, removes temp files of interrupted metadata writes, rolls
  // back an interrupted transaction, retries pending deletions and sets up the base device:
  // creates it with a filesystem, or verifies its UUID and filesystem and grows it when
  // dm.basesize asks for more (never less: kInvalid).
  // kShared (other readers may be initialising at the same time): loads the metadata and
  // changes nothing — no file, no pool message, no device activated — so two readers, or a
  // reader and a writer, never both repair.  What the exclusive init would do is listed in
  // pending() (temp files, a transaction to roll back, a base device to create or grow);
  // devices of an uncommitted transaction are left out either way, and deferred deletions and
  // the base device's UUID check wait for the next exclusive init.
  Result<void> init(DriverAccess access = DriverAccess::kExclusive);
  // The work an init under kShared left undone, one line each.
  const std::vector<std::string>& pending() const { return pending_; }

  // Whether a live (not deleted) device for `hash` is registered.
  bool has_device(const std::string& hash) const;
  // The hashes of every live device but the base device.
  std::vector<std::string> device_hashes() const;
  // The device's record; kNotFound for unknown or deleted devices.
  Result<DeviceRecord> lookup(const std::string& hash) const;
  std::string device_name(const std::string& hash) const;
  // "/dev/mapper/<name>".
  std::string device_path(const std::string& hash) const;

  // Snapshot of `base_hash`'s device ("" = the base device), size defaulting to the base's;
  // a larger size grows the new device's filesystem, a smaller one is kInvalid.
  Result<void> add_device(const std::string& hash, const std::string& base_hash,
                          std::optional<uint64_t> size);
  Result<void> delete_device(const std::string& hash, DeleteMode mode);
  // Activates the device and mounts its filesystem at `path` (xfs with nouuid, plus
  // dm.mountopt).  kReadOnly (readers) mounts with MS_RDONLY and without journal recovery
  // (ext4 noload, xfs norecovery), so a reader writes nothing to the pool; where the
  // filesystem is already mounted read-write (a writer's `cowlab mount` reference) it shares
  // that mount's read-write superblock instead, which the kernel requires (EBUSY otherwise).
  Result<void> mount_device(const std::string& hash, const std::string& path,
                            MountMode mode = MountMode::kReadWrite);
  // umount(MNT_DETACH), rmdir of `path` (which detaches the mount from other namespaces on
  // Linux >= 3.18, moby#34573), deactivation.  Under kShared the device is deactivated only
  // when nothing holds it open any more: other readers mount the same device on mount points
  // of their own, and a writer's mount (a `cowlab mount`) outlives its process.
  //
  // Several processes hold the store's lock shared at once, so under kShared activating and
  // mounting a device is serialised against unmounting and deactivating it by an flock(2) on
  // the device's metadata file: without it a reader could deactivate a device another had
  // just activated and not yet mounted (its open count still 0).  Every registered device has
  // that file, a read-only descriptor can lock it (a read-only store), and it is replaced only
  // under the exclusive lock, when no other process runs.
  Result<void> unmount_device(const std::string& hash, const std::string& path);
  // Where readers (kShared) make their own mount points: <home>/readers.  An init under
  // kExclusive unmounts and removes every directory there — no reader runs then, so they are
  // what readers killed while mounted left behind — before it deletes any device.
  std::string readers_dir() const { return config_.home + "/readers"; }
  // Retries the deletion of every device marked deleted; returns how many remain.
  Result<uint32_t> cleanup_deleted_devices();

  // Deactivates every active device of this set that nothing holds open (the base device
  // included).  Returns the names of devices that remain active.
  Result<std::vector<std::string>> deactivate_unused();

  // Docker's status rows, in Docker's order, values from the live pool (driver.go Status).
  // Under shared access the pool is queried without a metadata commit (StatusQuery::kNoCommit).
  KeyValues status();
  // Bytes allocated in the pool's data device.
  Result<uint64_t> data_bytes_used();

  uint32_t deleted_device_count() const { return deleted_count_; }
  uint64_t pool_transaction_id() const { return pool_transaction_id_; }
  const DeviceIdMap& device_ids() const { return ids_; }
  const std::string& base_filesystem() const { return set_record_.base_device_filesystem; }

 private:
  std::string metadata_dir() const { return config_.home + "/metadata"; }
  std::string metadata_path(const std::string& hash) const;

  Result<void> init_shared();
  // kNoCommit under shared access (a reader writes nothing to the pool), else kCommitFirst.
  StatusQuery status_query() const {
    return access_ == DriverAccess::kShared ? StatusQuery::kNoCommit : StatusQuery::kCommitFirst;
  }
  // The exclusive init's sweep of readers_dir(); returns how many it removed.
  Result<size_t> remove_stale_mounts();
  Result<void> remove_temp_files();
  Result<void> load_device_set_record();
  Result<void> save_device_set_record();
  Result<void> load_transaction_record();
  Result<void> load_device_files();
  Result<void> process_pending_transaction();

  Result<void> open_transaction(const std::string& hash, uint32_t device_id);
  Result<void> refresh_transaction(uint32_t device_id);
  Result<void> close_transaction();

  Result<DeviceRecord*> register_device(uint32_t device_id, const std::string& hash, uint64_t size,
                                        uint64_t transaction_id);
  Result<void> save_record(const DeviceRecord& record);
  Result<void> unregister_device(const std::string& hash);

  Result<DeviceRecord*> create_register_device(const std::string& hash);
  Result<void> create_register_snap_device(const std::string& hash, const DeviceRecord& base,
                                           uint64_t size);
  Result<void> take_snapshot(const std::string& hash, const DeviceRecord& base, uint64_t size);
  Result<void> pool_has_free_space();

  Result<void> setup_base_image();
  Result<void> create_base_image();
  Result<void> verify_base_image(DeviceRecord& base);
  // dm.basesize against the base device: kInvalid when smaller (it may only grow), true when
  // larger.
  Result<bool> base_needs_growing(const DeviceRecord& base) const;
  Result<void> check_grow_base(DeviceRecord& base);
  Result<void> grow_filesystem(DeviceRecord& record);

  // The device's lock under kShared (see unmount_device); an empty Fd under kExclusive.
  Result<sys::Fd> lock_device(const std::string& hash);
  Result<void> activate_if_needed(const DeviceRecord& record, bool ignore_deleted);
  Result<void> cancel_deferred_removal_if_needed(const DeviceRecord& record);
  Result<void> deactivate(const DeviceRecord& record);
  Result<void> deactivate_mode(const DeviceRecord& record, Deactivation how);
  Result<void> remove_device_retrying(const std::string& name);
  Result<void> delete_device_record(DeviceRecord record, DeleteMode mode);
  Result<void> delete_transaction(const DeviceRecord& record, DeleteMode mode);
  void issue_discard(const DeviceRecord& record);

  BaseFilesystem filesystem_for_new_base() const;

  DeviceSetConfig config_;
  ThinPool& pool_;
  BlockOps& block_;
  std::map<std::string, DeviceRecord> devices_;
  DeviceIdMap ids_;
  DeviceSetRecord set_record_;
  TransactionRecord transaction_;
  uint64_t pool_transaction_id_ = 0;
  uint32_t deleted_count_ = 0;
  std::vector<std::string> pending_;
  DriverAccess access_ = DriverAccess::kExclusive;  // as given to init()
};

}  // namespace cowlab::devmapper
