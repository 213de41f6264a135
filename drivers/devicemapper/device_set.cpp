#include "devicemapper/device_set.h"
#include "cowlab/diag.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cstdio>

#include "cowlab/fs.h"
#include "cowlab/sys.h"

namespace cowlab::devmapper {

namespace {

// The kernel's DM_NAME_LEN is 128 bytes including the terminating NUL.
constexpr size_t kMaxDmNameLength = 127;
// Docker's cancelDeferredRemoval: up to 100 tries, 100 ms apart, while the device is busy.
constexpr int kCancelDeferredRetries = 100;

void warn(const std::string& message) {
  diag::warn("cowlab: devicemapper: WARNING: " + message);
}

std::string bool_text(bool b) {
  return b ? "true" : "false";
}

}  // namespace

DeviceSet::DeviceSet(DeviceSetConfig config, ThinPool& pool, BlockOps& block)
    : config_(std::move(config)), pool_(pool), block_(block) {}

std::string DeviceSet::device_name(const std::string& hash) const {
  return config_.device_prefix + "-" + (hash.empty() ? "base" : hash);
}

std::string DeviceSet::device_path(const std::string& hash) const {
  return pool_.device_path(device_name(hash));
}

std::string DeviceSet::metadata_path(const std::string& hash) const {
  return metadata_dir() + "/" + metadata_file_name(hash);
}

bool DeviceSet::has_device(const std::string& hash) const {
  auto it = devices_.find(hash);
  return it != devices_.end() && !it->second.deleted;
}

std::vector<std::string> DeviceSet::device_hashes() const {
  std::vector<std::string> out;
  for (const auto& [hash, record] : devices_)
    if (!hash.empty() && !record.deleted) out.push_back(hash);
  return out;
}

Result<DeviceRecord> DeviceSet::lookup(const std::string& hash) const {
  auto it = devices_.find(hash);
  if (it == devices_.end() || it->second.deleted)
    return Error::not_found("devicemapper: unknown device " + (hash.empty() ? "base" : hash));
  return it->second;
}

// ---- metadata --------------------------------------------------------------------------------

Result<void> DeviceSet::load_device_set_record() {
  const std::string path = metadata_dir() + "/" + kDeviceSetMetadataFile;
  if (!COWLAB_TRY(sys::lstat_if_exists(path))) return {};
  std::string text = COWLAB_TRY(sys::read_file(path));
  set_record_ = COWLAB_TRY(parse_device_set_record(text, path));
  return {};
}

Result<void> DeviceSet::save_device_set_record() {
  return sys::write_file_atomic(metadata_dir() + "/" + kDeviceSetMetadataFile, to_json(set_record_),
                                0600);
}

Result<void> DeviceSet::load_transaction_record() {
  const std::string path = metadata_dir() + "/" + kTransactionMetadataFile;
  transaction_ = TransactionRecord{};
  transaction_.open_transaction_id = pool_transaction_id_;
  if (!COWLAB_TRY(sys::lstat_if_exists(path))) return {};
  std::string text = COWLAB_TRY(sys::read_file(path));
  transaction_ = COWLAB_TRY(parse_transaction_record(text, path));
  return {};
}

Result<void> DeviceSet::remove_temp_files() {
  // Every metadata write is sys::write_file_atomic; a crash between its create and its rename
  // leaves the temp file.  The store lock keeps other cowlab processes from writing here while
  // a DeviceSet is open, so every temp file found at init is a dead write's.
  auto entries = COWLAB_TRY(sys::read_dir(metadata_dir()));
  size_t removed = 0;
  for (const auto& e : entries) {
    if (!sys::is_atomic_write_temp_name(e.name)) continue;
    auto r = sys::unlink(metadata_dir() + "/" + e.name);
    if (!r.ok() && r.error().err() != ENOENT) return r;
    ++removed;
  }
  if (removed > 0) {
    COWLAB_TRY(sys::fsync_dir(metadata_dir()));
    warn("removed " + std::to_string(removed) +
         " temporary metadata file(s) of interrupted writes in " + metadata_dir());
  }
  return {};
}

Result<void> DeviceSet::load_device_files() {
  auto entries = COWLAB_TRY(sys::read_dir(metadata_dir()));
  for (const auto& e : entries) {
    if (!is_device_file_name(e.name)) continue;
    const std::string path = metadata_dir() + "/" + e.name;
    std::string hash = e.name == "base" ? "" : e.name;
    std::string text = COWLAB_TRY(sys::read_file(path));
    DeviceRecord r = COWLAB_TRY(parse_device_record(text, hash, path));
    // Docker's loadMetadata: a device from a transaction the pool never committed was lost in a
    // crash; the rollback below removes its file.
    if (r.transaction_id > pool_transaction_id_) continue;
    ids_.mark_used(r.device_id);
    if (r.deleted) ++deleted_count_;
    devices_[hash] = r;
  }
  return {};
}

Result<void> DeviceSet::process_pending_transaction() {
  if (transaction_.open_transaction_id == pool_transaction_id_) return {};
  if (transaction_.open_transaction_id < pool_transaction_id_) {
    // Docker logs this and carries on: the pool moved on without our record (e.g. a pool
    // shared by mistake); nothing of ours is half-done.
    warn("open transaction id " + std::to_string(transaction_.open_transaction_id) +
         " is below the pool's transaction id " + std::to_string(pool_transaction_id_));
    transaction_.open_transaction_id = pool_transaction_id_;
    return {};
  }
  // The process died between opening and closing a transaction: undo it.  The thin device
  // may never have been created (or already deleted), so a failed delete is only reported.
  const std::string what = "rolling back transaction " +
                           std::to_string(transaction_.open_transaction_id) + " (device " +
                           (transaction_.device_hash.empty() ? "base" : transaction_.device_hash) +
                           ", id " + std::to_string(transaction_.device_id) + ")";
  auto deleted = pool_.delete_thin(transaction_.device_id);
  if (!deleted.ok() && deleted.error().err() != ENODATA)
    warn(what + ": delete of thin device " + std::to_string(transaction_.device_id) + ": " +
         deleted.error().message());
  auto it = devices_.find(transaction_.device_hash);
  if (it != devices_.end() && it->second.device_id == transaction_.device_id) {
    if (it->second.deleted) --deleted_count_;
    devices_.erase(it);
  }
  auto removed = sys::unlink(metadata_path(transaction_.device_hash));
  if (!removed.ok() && removed.error().err() != ENOENT)
    return std::move(removed).error().with_context("devicemapper: " + what);
  ids_.mark_free(transaction_.device_id);
  transaction_.open_transaction_id = pool_transaction_id_;
  // Record that nothing is open any more: otherwise every later start would find the same
  // transaction open, and a reader (which may not roll back) would take the exclusive lock
  // for it each time.
  COWLAB_TRY_CTX(sys::write_file_atomic(metadata_dir() + "/" + kTransactionMetadataFile,
                                        to_json(transaction_), 0600),
                 "devicemapper: " + what);
  return {};
}

Result<void> DeviceSet::open_transaction(const std::string& hash, uint32_t device_id) {
  transaction_.open_transaction_id = pool_transaction_id_ + 1;
  transaction_.device_hash = hash;
  transaction_.device_id = device_id;
  COWLAB_TRY_CTX(sys::write_file_atomic(metadata_dir() + "/" + kTransactionMetadataFile,
                                        to_json(transaction_), 0600),
                 "devicemapper: saving transaction metadata");
  // next_device_id goes to disk with the transaction, so ids are not handed out twice in a
  // row across restarts (the bitmap is rebuilt from device files anyway).
  COWLAB_TRY_CTX(save_device_set_record(), "devicemapper: saving deviceset metadata");
  return {};
}

Result<void> DeviceSet::refresh_transaction(uint32_t device_id) {
  transaction_.device_id = device_id;
  COWLAB_TRY_CTX(sys::write_file_atomic(metadata_dir() + "/" + kTransactionMetadataFile,
                                        to_json(transaction_), 0600),
                 "devicemapper: saving transaction metadata");
  return {};
}

Result<void> DeviceSet::close_transaction() {
  COWLAB_TRY_CTX(
      pool_.set_transaction_id(pool_transaction_id_, transaction_.open_transaction_id),
      "devicemapper: closing transaction " + std::to_string(transaction_.open_transaction_id));
  pool_transaction_id_ = transaction_.open_transaction_id;
  return {};
}

Result<void> DeviceSet::save_record(const DeviceRecord& record) {
  return sys::write_file_atomic(metadata_path(record.hash), to_json(record), 0600);
}

Result<DeviceRecord*> DeviceSet::register_device(uint32_t device_id, const std::string& hash,
                                                 uint64_t size, uint64_t transaction_id) {
  DeviceRecord r;
  r.hash = hash;
  r.device_id = device_id;
  r.size = size;
  r.transaction_id = transaction_id;
  COWLAB_TRY_CTX(save_record(r), "devicemapper: registering device " + device_name(hash));
  devices_[hash] = r;
  return &devices_[hash];
}

Result<void> DeviceSet::unregister_device(const std::string& hash) {
  auto removed = sys::unlink(metadata_path(hash));
  if (!removed.ok() && removed.error().err() != ENOENT)
    return std::move(removed).error().with_context("devicemapper: unregistering " +
                                                   device_name(hash));
  devices_.erase(hash);
  return {};
}

// ---- creating devices ---------------------------------------------------------------------------

Result<DeviceRecord*> DeviceSet::create_register_device(const std::string& hash) {
  uint32_t id = COWLAB_TRY(ids_.allocate(set_record_.next_device_id));
  if (auto r = open_transaction(hash, id); !r.ok()) {
    ids_.mark_free(id);
    return std::move(r).error();
  }
  for (;;) {
    auto made = pool_.create_thin(id);
    if (made.ok()) break;
    if (made.error().err() == EEXIST) {
      // The pool has the id although our map says free (Docker logs the same surprise): take
      // the next one and record it in the open transaction.
      warn("thin device id " + std::to_string(id) + " exists in the pool but is not registered");
      id = COWLAB_TRY(ids_.allocate(set_record_.next_device_id));
      COWLAB_TRY(refresh_transaction(id));
      continue;
    }
    ids_.mark_free(id);
    return std::move(made).error().with_context("devicemapper: creating device " +
                                                device_name(hash));
  }
  auto registered =
      register_device(id, hash, config_.options.base_size, transaction_.open_transaction_id);
  if (!registered.ok()) {
    (void)pool_.delete_thin(id);
    ids_.mark_free(id);
    return std::move(registered).error();
  }
  if (auto closed = close_transaction(); !closed.ok()) {
    (void)unregister_device(hash);
    (void)pool_.delete_thin(id);
    ids_.mark_free(id);
    return std::move(closed).error();
  }
  return *registered;
}

Result<void> DeviceSet::create_register_snap_device(const std::string& hash,
                                                    const DeviceRecord& base, uint64_t size) {
  uint32_t id = COWLAB_TRY(ids_.allocate(set_record_.next_device_id));
  if (auto r = open_transaction(hash, id); !r.ok()) {
    ids_.mark_free(id);
    return std::move(r).error();
  }
  for (;;) {
    auto made = pool_.create_snap(id, base.device_id);
    if (made.ok()) break;
    if (made.error().err() == EEXIST) {
      warn("thin device id " + std::to_string(id) + " exists in the pool but is not registered");
      id = COWLAB_TRY(ids_.allocate(set_record_.next_device_id));
      COWLAB_TRY(refresh_transaction(id));
      continue;
    }
    ids_.mark_free(id);
    return std::move(made).error().with_context(
        "devicemapper: snapshot of " + device_name(base.hash) + " as " + device_name(hash));
  }
  auto registered = register_device(id, hash, size, transaction_.open_transaction_id);
  if (!registered.ok()) {
    (void)pool_.delete_thin(id);
    ids_.mark_free(id);
    return std::move(registered).error();
  }
  if (auto closed = close_transaction(); !closed.ok()) {
    (void)unregister_device(hash);
    (void)pool_.delete_thin(id);
    ids_.mark_free(id);
    return std::move(closed).error();
  }
  return {};
}

Result<void> DeviceSet::pool_has_free_space() {
  const uint32_t percent = config_.options.min_free_space_percent;
  if (percent == 0) return {};
  PoolStatus s = COWLAB_TRY_CTX(pool_.status(status_query()), "devicemapper: checking free space");
  uint64_t min_data = std::max<uint64_t>(1, s.data_total_blocks * percent / 100);
  uint64_t free_data = s.data_total_blocks - std::min(s.data_used_blocks, s.data_total_blocks);
  if (free_data < min_data)
    return Error(ErrorKind::kSystem,
                 "devicemapper: thin pool " + pool_.pool_name() + " has " +
                     std::to_string(free_data) + " free data blocks, less than the minimum " +
                     std::to_string(min_data) + " required (dm.min_free_space=" +
                     std::to_string(percent) + "%): free space in the pool or lower the option",
                 ENOSPC);
  uint64_t min_meta = std::max<uint64_t>(1, s.metadata_total_blocks * percent / 100);
  uint64_t free_meta =
      s.metadata_total_blocks - std::min(s.metadata_used_blocks, s.metadata_total_blocks);
  if (free_meta < min_meta)
    return Error(ErrorKind::kSystem,
                 "devicemapper: thin pool " + pool_.pool_name() + " has " +
                     std::to_string(free_meta) + " free metadata blocks, less than the minimum " +
                     std::to_string(min_meta) + " required (dm.min_free_space=" +
                     std::to_string(percent) + "%): free space in the pool or lower the option",
                 ENOSPC);
  return {};
}

Result<void> DeviceSet::take_snapshot(const std::string& hash, const DeviceRecord& base,
                                      uint64_t size) {
  COWLAB_TRY(pool_has_free_space());
  const std::string origin = device_name(base.hash);
  ThinDeviceState st = COWLAB_TRY(pool_.state(origin));
  bool deactivate_after = false;
  if (config_.deferred_remove && st.active && st.deferred_remove) {
    // The origin is on its way out (a deferred removal after Put); keep it while we snapshot
    // and finish its removal afterwards.
    auto cancelled = pool_.cancel_deferred_removal(origin);
    if (cancelled.ok()) {
      deactivate_after = true;
    } else if (cancelled.error().kind() == ErrorKind::kNotFound) {
      st.active = false;  // it went away meanwhile
    } else {
      return std::move(cancelled).error().with_context("devicemapper: snapshot of " + origin);
    }
  }
  // dm-thin requires the origin to be quiescent while create_snap runs: suspending flushes it
  // and freezes a mounted filesystem (kernel thin-provisioning.rst, "Internal snapshots").
  const bool suspended = st.active;
  if (suspended) COWLAB_TRY_CTX(pool_.suspend(origin), "devicemapper: snapshot of " + origin);
  auto made = create_register_snap_device(hash, base, size);
  Result<void> resumed;
  if (suspended) resumed = pool_.resume(origin);
  if (deactivate_after) (void)deactivate(base);
  if (!made.ok()) return made;
  if (!resumed.ok())
    return std::move(resumed).error().with_context("devicemapper: resuming " + origin +
                                                   " after the snapshot");
  return {};
}

Result<void> DeviceSet::add_device(const std::string& hash, const std::string& base_hash,
                                   std::optional<uint64_t> size) {
  const std::string name = device_name(hash);
  const std::string ctx = "devicemapper: create device " + name;
  if (hash.empty()) return Error::invalid(ctx + ": empty hash");
  // The base device's metadata file is "base" and the two set-wide files share the metadata
  // directory, so those names cannot be layers.
  if (hash == "base" || !is_device_file_name(hash))
    return Error::invalid(ctx + ": \"" + hash + "\" is reserved by the devicemapper driver");
  if (name.size() > kMaxDmNameLength)
    return Error::invalid(ctx + ": the device name is longer than device-mapper's " +
                          std::to_string(kMaxDmNameLength) + " bytes");
  auto base_it = devices_.find(base_hash);
  if (base_it == devices_.end() || base_it->second.deleted)
    return Error::not_found(ctx + ": parent device " + device_name(base_hash) + " does not exist");
  const DeviceRecord base = base_it->second;

  if (auto it = devices_.find(hash); it != devices_.end()) {
    if (!it->second.deleted) return Error(ErrorKind::kExists, ctx + ": device exists", EEXIST);
    // A deferred deletion of an earlier device with this hash is pending (cowlab's layer ids
    // are content ids, so a removed layer comes back): finish it first.
    auto again = delete_device_record(it->second, DeleteMode::kSync);
    if (!again.ok())
      return Error(ErrorKind::kBusy,
                   ctx + ": an earlier device with this id awaits deferred deletion: " +
                       again.error().message(),
                   EBUSY);
  }

  uint64_t new_size = size.value_or(base.size);
  if (new_size < base.size)
    return Error::invalid(ctx + ": container size " + human_size(new_size) +
                          " cannot be smaller than " + human_size(base.size));
  COWLAB_TRY_CTX(take_snapshot(hash, base, new_size), ctx);
  if (new_size > base.size) {
    auto grown = grow_filesystem(devices_[hash]);
    if (!grown.ok()) {
      // A failed create leaves nothing behind (the layer store relies on it).
      (void)delete_device_record(devices_[hash], DeleteMode::kSync);
      return std::move(grown).error().with_context(ctx);
    }
  }
  return {};
}

// ---- activation ---------------------------------------------------------------------------------

Result<void> DeviceSet::cancel_deferred_removal_if_needed(const DeviceRecord& record) {
  if (!config_.deferred_remove) return {};
  const std::string name = device_name(record.hash);
  ThinDeviceState st = COWLAB_TRY(pool_.state(name));
  if (!st.active || !st.deferred_remove) return {};
  for (int i = 0;; ++i) {
    auto r = pool_.cancel_deferred_removal(name);
    if (r.ok() || r.error().kind() == ErrorKind::kNotFound) return {};  // kNotFound: gone
    if (r.error().kind() != ErrorKind::kBusy || i + 1 >= kCancelDeferredRetries)
      return std::move(r).error().with_context("devicemapper: cancelling deferred removal");
    block_.sleep_ms(config_.busy_retry_ms);
  }
}

Result<void> DeviceSet::activate_if_needed(const DeviceRecord& record, bool ignore_deleted) {
  const std::string name = device_name(record.hash);
  if (record.deleted && !ignore_deleted)
    return Error::invalid("devicemapper: cannot activate " + name +
                          ": it is marked for deferred deletion");
  COWLAB_TRY(cancel_deferred_removal_if_needed(record));
  ThinDeviceState st = COWLAB_TRY(pool_.state(name));
  if (st.active) return {};
  COWLAB_TRY_CTX(pool_.activate(name, record.device_id, record.size),
                 "devicemapper: activating " + name);
  return {};
}

Result<void> DeviceSet::remove_device_retrying(const std::string& name) {
  for (int i = 0;; ++i) {
    auto r = pool_.deactivate(name, Deactivation::kImmediate);
    if (r.ok()) return {};
    // EBUSY can be transient (udev or blkid probing the device, a lazily detached mount
    // draining): Docker retries 200 times, 100 ms apart.
    if (r.error().kind() != ErrorKind::kBusy || i + 1 >= config_.busy_retries) return r;
    block_.sleep_ms(config_.busy_retry_ms);
  }
}

Result<void> DeviceSet::deactivate_mode(const DeviceRecord& record, Deactivation how) {
  const std::string name = device_name(record.hash);
  ThinDeviceState st = COWLAB_TRY(pool_.state(name));
  if (!st.active) return {};
  auto r = how == Deactivation::kDeferred ? pool_.deactivate(name, Deactivation::kDeferred)
                                          : remove_device_retrying(name);
  // Deactivation means "not active afterwards": a device that went away meanwhile is fine.
  if (!r.ok() && r.error().kind() != ErrorKind::kNotFound)
    return std::move(r).error().with_context("devicemapper: deactivating " + name);
  return {};
}

Result<void> DeviceSet::deactivate(const DeviceRecord& record) {
  return deactivate_mode(
      record, config_.deferred_remove ? Deactivation::kDeferred : Deactivation::kImmediate);
}

// ---- deleting devices ---------------------------------------------------------------------------

void DeviceSet::issue_discard(const DeviceRecord& record) {
  // Docker's workaround for pools that do not pass discards down when a thin device is
  // deleted: discard the whole device first.  Failures are ignored, as in Docker.
  if (!activate_if_needed(record, /*ignore_deleted=*/true).ok()) return;
  auto st = pool_.state(device_name(record.hash));
  if (!st.ok() || st->open_count != 0) return;  // in use: not ours to discard
  (void)block_.discard(device_path(record.hash));
}

Result<void> DeviceSet::delete_transaction(const DeviceRecord& record, DeleteMode mode) {
  COWLAB_TRY(open_transaction(record.hash, record.device_id));
  auto deleted = pool_.delete_thin(record.device_id);
  // ENODATA: the pool has no such thin device (dm-thin's btree lookup in __delete_device).  An
  // earlier delete of it was committed by the pool, its transaction closed, and the process
  // died before the record was removed (a power cut, docs/crash.md layer-delete): the device
  // is gone, so the deletion is finished rather than failed.
  if (!deleted.ok() && deleted.error().err() == ENODATA) deleted = Result<void>();
  // Docker closes the transaction whatever the delete did (a deferred close).
  auto closed = close_transaction();
  if (!deleted.ok()) {
    const bool defer = mode == DeleteMode::kAllowDeferred && config_.deferred_delete &&
                       deleted.error().kind() == ErrorKind::kBusy;
    if (!defer)
      return std::move(deleted).error().with_context("devicemapper: deleting " +
                                                     device_name(record.hash));
    COWLAB_TRY(closed);
    if (!record.deleted) {
      DeviceRecord marked = record;
      marked.deleted = true;
      COWLAB_TRY_CTX(save_record(marked), "devicemapper: marking " + device_name(record.hash) +
                                              " for deferred deletion");
      devices_[record.hash] = marked;
      ++deleted_count_;
    }
    return {};
  }
  COWLAB_TRY(closed);
  COWLAB_TRY(unregister_device(record.hash));
  if (record.deleted && deleted_count_ > 0) --deleted_count_;
  ids_.mark_free(record.device_id);
  return {};
}

Result<void> DeviceSet::delete_device_record(DeviceRecord record, DeleteMode mode) {
  if (config_.options.discard_enabled()) issue_discard(record);
  // With deferred removal but without deferred deletion the device must really be gone
  // before the delete message, so deactivate synchronously (Docker's deleteDevice).
  const bool deferred = config_.deferred_remove && config_.deferred_delete;
  COWLAB_TRY(
      deactivate_mode(record, deferred ? Deactivation::kDeferred : Deactivation::kImmediate));
  return delete_transaction(record, mode);
}

Result<void> DeviceSet::delete_device(const std::string& hash, DeleteMode mode) {
  auto it = devices_.find(hash);
  if (it == devices_.end() || it->second.deleted)
    return Error::not_found("devicemapper: delete device " + device_name(hash) +
                            ": no such device");
  COWLAB_TRY(delete_device_record(it->second, mode));
  // Retry earlier deferred deletions while we are at it.
  (void)cleanup_deleted_devices();
  return {};
}

Result<uint32_t> DeviceSet::cleanup_deleted_devices() {
  if (deleted_count_ == 0) return 0u;
  std::vector<DeviceRecord> pending;
  for (const auto& [hash, r] : devices_)
    if (r.deleted) pending.push_back(r);
  for (const auto& r : pending) {
    auto done = delete_device_record(r, DeleteMode::kAllowDeferred);
    if (!done.ok() && done.error().kind() != ErrorKind::kBusy) return std::move(done).error();
  }
  return deleted_count_;
}

// ---- mounting -----------------------------------------------------------------------------------

Result<sys::Fd> DeviceSet::lock_device(const std::string& hash) {
  if (access_ != DriverAccess::kShared) return sys::Fd();
  const std::string file = metadata_path(hash);
  auto fd =
      COWLAB_TRY_CTX(sys::open(file, O_RDONLY | O_CLOEXEC), "lock device " + device_name(hash));
  COWLAB_TRY_CTX(sys::flock(fd.get(), LOCK_EX),
                 "lock device " + device_name(hash) + " (" + file + ")");
  return fd;
}

Result<void> DeviceSet::mount_device(const std::string& hash, const std::string& path,
                                     MountMode mode) {
  const std::string name = device_name(hash);
  const std::string ctx = "devicemapper: mount " + name + " on " + path;
  auto it = devices_.find(hash);
  if (it == devices_.end()) return Error::not_found(ctx + ": no such device");
  if (it->second.deleted)
    return Error::invalid(ctx + ": the device is marked for deferred deletion");
  const DeviceRecord record = it->second;
  sys::Fd locked = COWLAB_TRY_CTX(lock_device(hash), ctx);
  COWLAB_TRY_CTX(activate_if_needed(record, false), ctx);
  auto mounted = [&]() -> Result<void> {
    FsIdentity fs = COWLAB_TRY(block_.identify(device_path(hash)));
    if (fs.type.empty()) return Error::corrupt("no ext4 or xfs filesystem on the device");
    std::string options;
    // Every snapshot carries its origin's UUID; xfs refuses a second mount of a UUID without
    // nouuid (Docker does the same).
    if (fs.type == "xfs") options = "nouuid";
    options = join_mount_options(options, config_.options.mount_options);
    if (mode == MountMode::kReadWrite)
      return block_.mount(device_path(hash), path, fs.type, options, MountMode::kReadWrite);
    // A reader only reads: mounted read-write, ext4 would still write its superblock (mount
    // count and time) and replay a journal, i.e. write into the pool's data file — on a
    // read-only store too, through its already attached loop device.  Read-only and without
    // log recovery (ext4 "noload", xfs "norecovery", both only valid with MS_RDONLY) it writes
    // nothing.  A log left dirty by a writer killed while mounted is the next writer's to
    // replay; until then a reader sees the last checkpointed state.
    const std::string ro = join_mount_options(options, fs.type == "xfs" ? "norecovery" : "noload");
    auto r = block_.mount(device_path(hash), path, fs.type, ro, MountMode::kReadOnly);
    if (r.ok() || r.error().err() != EBUSY) return r;
    // EBUSY: the filesystem is mounted read-write already (a writer's `cowlab mount`
    // reference), and one superblock cannot be both — fs/super.c refuses a mount that "would
    // change RO state".  Sharing that read-write superblock writes nothing the other mount
    // does not write anyway.
    return block_.mount(device_path(hash), path, fs.type, options, MountMode::kReadWrite);
  }();
  if (!mounted.ok()) {
    // Never leave an active device behind a failed mount — unless another process has it
    // open (shared).
    auto st = pool_.state(name);
    if (access_ != DriverAccess::kShared || (st.ok() && st->open_count == 0))
      (void)deactivate(record);
    return std::move(mounted).error().with_context(ctx);
  }
  return {};
}

Result<void> DeviceSet::unmount_device(const std::string& hash, const std::string& path) {
  const std::string name = device_name(hash);
  const std::string ctx = "devicemapper: unmount " + name + " from " + path;
  auto it = devices_.find(hash);
  if (it == devices_.end()) return Error::not_found(ctx + ": no such device");
  if (COWLAB_TRY_CTX(block_.is_mounted(path), ctx)) COWLAB_TRY_CTX(block_.unmount(path), ctx);
  // Removing the mount point detaches copies of the mount that leaked into other mount
  // namespaces (Linux >= 3.18), so they cannot keep the device busy (moby#34573).  A failure
  // is not an error: older kernels refuse with EBUSY.
  (void)sys::rmdir(path);
  sys::Fd locked = COWLAB_TRY_CTX(lock_device(hash), ctx);
  if (access_ == DriverAccess::kShared) {
    ThinDeviceState st = COWLAB_TRY_CTX(pool_.state(name), ctx);
    if (st.open_count > 0) return {};  // another reader's mount, or a writer's
  }
  COWLAB_TRY_CTX(deactivate(it->second), ctx);
  return {};
}

Result<size_t> DeviceSet::remove_stale_mounts() {
  const std::string dir = readers_dir();
  const std::string ctx = "devicemapper: readers' mounts left in " + dir;
  if (!COWLAB_TRY_CTX(sys::lstat_if_exists(dir), ctx)) return size_t{0};
  auto entries = COWLAB_TRY_CTX(sys::read_dir(dir), ctx);
  for (const auto& e : entries) {
    const std::string path = dir + "/" + e.name;
    if (COWLAB_TRY_CTX(block_.is_mounted(path), ctx)) COWLAB_TRY_CTX(block_.unmount(path), ctx);
    // Empty once unmounted; never emptied by hand (what is in it would be a layer's content).
    (void)sys::rmdir(path);
  }
  return entries.size();
}

Result<std::vector<std::string>> DeviceSet::deactivate_unused() {
  std::vector<std::string> remaining;
  auto names = COWLAB_TRY(pool_.active_devices(config_.device_prefix + "-"));
  for (const auto& name : names) {
    if (name == pool_.pool_name()) continue;
    ThinDeviceState st = COWLAB_TRY(pool_.state(name));
    if (!st.active) continue;
    if (st.open_count > 0) {
      remaining.push_back(name);
      continue;
    }
    auto r = remove_device_retrying(name);
    if (!r.ok() && r.error().kind() != ErrorKind::kNotFound) remaining.push_back(name);
  }
  return remaining;
}

// ---- the base device ----------------------------------------------------------------------------

BaseFilesystem DeviceSet::filesystem_for_new_base() const {
  return config_.options.filesystem.value_or(config_.default_filesystem);
}

Result<void> DeviceSet::grow_filesystem(DeviceRecord& record) {
  const std::string name = device_name(record.hash);
  const std::string ctx =
      "devicemapper: growing the filesystem of " + name + " to " + human_size(record.size);
  BaseFilesystem fs =
      set_record_.base_device_filesystem == "xfs" ? BaseFilesystem::kXfs : BaseFilesystem::kExt4;
  // The thin device's size is fixed in its table: an active device still has the old one.
  ThinDeviceState st = COWLAB_TRY_CTX(pool_.state(name), ctx);
  if (st.active) COWLAB_TRY_CTX(deactivate_mode(record, Deactivation::kImmediate), ctx);
  COWLAB_TRY_CTX(activate_if_needed(record, false), ctx);
  const std::string mount_point =
      config_.home + "/mnt/.growfs-" + (record.hash.empty() ? "base" : record.hash);
  auto grown = [&]() -> Result<void> {
    COWLAB_TRY(sys::mkdir_all(mount_point, 0700));
    std::string options = fs == BaseFilesystem::kXfs ? "nouuid" : "";
    options = join_mount_options(options, config_.options.mount_options);
    COWLAB_TRY(block_.mount(device_path(record.hash), mount_point, filesystem_name(fs), options,
                            MountMode::kReadWrite));
    auto r = block_.grow_filesystem(fs, device_path(record.hash), mount_point);
    auto u = block_.unmount(mount_point);
    COWLAB_TRY(r);
    COWLAB_TRY(u);
    return {};
  }();
  (void)sys::rmdir(mount_point);
  auto deactivated = deactivate_mode(record, Deactivation::kImmediate);
  if (!grown.ok()) return std::move(grown).error().with_context(ctx);
  COWLAB_TRY_CTX(deactivated, ctx);
  return {};
}

Result<void> DeviceSet::create_base_image() {
  // mkfs.xfs (xfsprogs >= 5.19) refuses filesystems below 300 MiB; say so before any device
  // exists rather than relaying its output.
  constexpr uint64_t kXfsMinimum = 300ULL << 20;
  if (filesystem_for_new_base() == BaseFilesystem::kXfs && config_.options.base_size < kXfsMinimum)
    return Error::invalid(
        "devicemapper: option dm.basesize=" + human_size(config_.options.base_size) +
        ": an xfs base device needs at least 300 MiB (use dm.fs=ext4 or a larger "
        "dm.basesize)");
  DeviceRecord* base = COWLAB_TRY_CTX(create_register_device(""), "devicemapper: base device");
  const std::string ctx = "devicemapper: making the base device " + device_name("");
  const BaseFilesystem fs = filesystem_for_new_base();
  auto made = [&]() -> Result<void> {
    COWLAB_TRY(activate_if_needed(*base, false));
    set_record_.base_device_filesystem = filesystem_name(fs);
    COWLAB_TRY(save_device_set_record());
    COWLAB_TRY(block_.make_filesystem(fs, device_path(""), config_.options.mkfs_args));
    FsIdentity id = COWLAB_TRY(block_.identify(device_path("")));
    if (id.type != filesystem_name(fs))
      return Error::corrupt("mkfs." + filesystem_name(fs) + " left no " + filesystem_name(fs) +
                            " superblock on the device");
    base->initialized = true;
    COWLAB_TRY(save_record(*base));
    set_record_.base_device_uuid = id.uuid;
    COWLAB_TRY(save_device_set_record());
    return {};
  }();
  // The base device is only ever snapshotted; leave it inactive.
  auto deactivated = deactivate_mode(*base, Deactivation::kImmediate);
  if (!made.ok()) return std::move(made).error().with_context(ctx);
  COWLAB_TRY_CTX(deactivated, ctx);
  return {};
}

Result<void> DeviceSet::verify_base_image(DeviceRecord& base) {
  const std::string ctx = "devicemapper: verifying the base device " + device_name("");
  COWLAB_TRY_CTX(activate_if_needed(base, false), ctx);
  auto id = block_.identify(device_path(""));
  auto deactivated = deactivate_mode(base, Deactivation::kImmediate);
  if (!id.ok()) return std::move(id).error().with_context(ctx);
  COWLAB_TRY_CTX(deactivated, ctx);
  if (set_record_.base_device_uuid.empty()) {
    // A store from a Docker version that did not record the UUID: record it now.
    set_record_.base_device_uuid = id->uuid;
    COWLAB_TRY_CTX(save_device_set_record(), ctx);
  } else if (id->uuid != set_record_.base_device_uuid) {
    return Error::corrupt(ctx + ": filesystem UUID " + id->uuid + " does not match the recorded " +
                          set_record_.base_device_uuid + " (the pool is not this store's)");
  }
  if (set_record_.base_device_filesystem.empty()) {
    set_record_.base_device_filesystem = id->type;
    COWLAB_TRY_CTX(save_device_set_record(), ctx);
  }
  if (config_.options.filesystem &&
      filesystem_name(*config_.options.filesystem) != set_record_.base_device_filesystem)
    warn("the base device already has a " + set_record_.base_device_filesystem +
         " filesystem; dm.fs=" + filesystem_name(*config_.options.filesystem) + " is ignored");
  return {};
}

Result<bool> DeviceSet::base_needs_growing(const DeviceRecord& base) const {
  if (!config_.options.base_size_given) return false;
  if (config_.options.base_size < base.size)
    return Error::invalid(
        "devicemapper: option dm.basesize=" + human_size(config_.options.base_size) +
        ": the base device size cannot be smaller than " + human_size(base.size) +
        " (it may only grow)");
  return config_.options.base_size > base.size;
}

Result<void> DeviceSet::check_grow_base(DeviceRecord& base) {
  if (!COWLAB_TRY(base_needs_growing(base))) return {};
  const uint64_t old_size = base.size;
  base.size = config_.options.base_size;
  if (auto saved = save_record(base); !saved.ok()) {
    base.size = old_size;
    return std::move(saved).error().with_context("devicemapper: growing the base device");
  }
  return grow_filesystem(base);
}

Result<void> DeviceSet::setup_base_image() {
  auto it = devices_.find("");
  if (it != devices_.end()) {
    if (it->second.initialized && !it->second.deleted) {
      COWLAB_TRY(verify_base_image(it->second));
      return check_grow_base(it->second);
    }
    // A base device whose filesystem was never finished: start over.  A pending deferred
    // deletion of it must complete now, hence synchronous.
    COWLAB_TRY_CTX(delete_device_record(it->second, DeleteMode::kSync),
                   "devicemapper: removing the uninitialized base device");
  } else if (!config_.options.thin_pool_device.empty()) {
    // Docker's checkThinPool: only take over an empty pool.
    PoolStatus s = COWLAB_TRY_CTX(pool_.status(StatusQuery::kCommitFirst),
                                  "devicemapper: checking dm.thinpooldev");
    if (s.data_used_blocks != 0)
      return Error::invalid("devicemapper: unable to take ownership of thin pool " +
                            pool_.pool_name() + ": it already has " +
                            std::to_string(s.data_used_blocks) + " used data blocks");
    if (s.transaction_id != 0)
      return Error::invalid("devicemapper: unable to take ownership of thin pool " +
                            pool_.pool_name() + ": its transaction id is " +
                            std::to_string(s.transaction_id) + ", expected 0");
  }
  return create_base_image();
}

// Under the store's shared lock nothing may change: several readers initialise at once, and
// two of them rolling back the same transaction or creating the same base device would race
// (each reads the pool's transaction id, then sends messages that assume it).
Result<void> DeviceSet::init_shared() {
  const std::string ctx = "devicemapper: init (shared)";
  pending_.clear();
  if (!COWLAB_TRY_CTX(sys::lstat_if_exists(metadata_dir()), ctx)) {
    pending_.push_back("no base device yet (a new store)");
    return {};
  }
  // A reader needs only the transaction id; a plain status query would make dm-thin commit,
  // writing the pool's metadata device under a read-only command.
  PoolStatus s = COWLAB_TRY_CTX(pool_.status(StatusQuery::kNoCommit), ctx);
  pool_transaction_id_ = s.transaction_id;
  size_t temps = 0;
  for (const auto& e : COWLAB_TRY_CTX(sys::read_dir(metadata_dir()), ctx))
    if (sys::is_atomic_write_temp_name(e.name)) ++temps;
  if (temps > 0)
    pending_.push_back(std::to_string(temps) +
                       " temporary metadata file(s) of interrupted writes in " + metadata_dir());
  COWLAB_TRY_CTX(load_device_set_record(), ctx);
  COWLAB_TRY_CTX(load_transaction_record(), ctx);
  COWLAB_TRY_CTX(load_device_files(), ctx);  // skips devices of an uncommitted transaction
  if (transaction_.open_transaction_id > pool_transaction_id_)
    pending_.push_back("interrupted pool transaction " +
                       std::to_string(transaction_.open_transaction_id) + " (device " +
                       (transaction_.device_hash.empty() ? "base" : transaction_.device_hash) +
                       ", thin id " + std::to_string(transaction_.device_id) + ") to roll back");
  auto base = devices_.find("");
  if (base == devices_.end() || !base->second.initialized || base->second.deleted) {
    pending_.push_back("no finished base device");
  } else if (COWLAB_TRY(base_needs_growing(base->second))) {
    pending_.push_back("base device to grow from " + human_size(base->second.size) + " to " +
                       human_size(config_.options.base_size) + " (dm.basesize)");
  }
  return {};
}

Result<void> DeviceSet::init(DriverAccess access) {
  access_ = access;
  if (access == DriverAccess::kShared) return init_shared();
  COWLAB_TRY_CTX(sys::mkdir_all(metadata_dir(), 0700), "devicemapper: init");
  COWLAB_TRY_CTX(sys::mkdir_all(config_.home + "/mnt", 0700), "devicemapper: init");
  PoolStatus s = COWLAB_TRY_CTX(pool_.status(StatusQuery::kCommitFirst), "devicemapper: init");
  pool_transaction_id_ = s.transaction_id;
  COWLAB_TRY_CTX(remove_temp_files(), "devicemapper: init");
  COWLAB_TRY_CTX(load_device_set_record(), "devicemapper: init");
  COWLAB_TRY_CTX(load_transaction_record(), "devicemapper: init");
  COWLAB_TRY_CTX(load_device_files(), "devicemapper: init");
  COWLAB_TRY_CTX(remove_stale_mounts(), "devicemapper: init");
  COWLAB_TRY_CTX(process_pending_transaction(), "devicemapper: init");
  COWLAB_TRY_CTX(cleanup_deleted_devices(), "devicemapper: init");
  COWLAB_TRY(setup_base_image());
  return {};
}

// ---- status -------------------------------------------------------------------------------------

Result<uint64_t> DeviceSet::data_bytes_used() {
  PoolStatus s = COWLAB_TRY(pool_.status(status_query()));
  return s.data_used_blocks * s.data_block_sectors * 512;
}

KeyValues DeviceSet::status() {
  KeyValues rows;
  auto pool = pool_.status(status_query());
  auto base = devices_.find("");
  const uint64_t block_bytes = pool.ok() ? pool->data_block_sectors * 512 : 0;
  rows.push_back({"Pool Name", pool_.pool_name()});
  rows.push_back({"Pool Blocksize", pool.ok() ? human_size(block_bytes) : "unknown"});
  rows.push_back(
      {"Base Device Size", base != devices_.end() ? human_size(base->second.size) : "unknown"});
  rows.push_back({"Backing Filesystem", set_record_.base_device_filesystem});
  rows.push_back({"Udev Sync Supported", bool_text(config_.udev_sync_supported)});
  if (!config_.data_device.empty()) rows.push_back({"Data file", config_.data_device});
  if (!config_.metadata_device.empty()) rows.push_back({"Metadata file", config_.metadata_device});
  if (!config_.data_loop_file.empty()) rows.push_back({"Data loop file", config_.data_loop_file});
  if (!config_.metadata_loop_file.empty())
    rows.push_back({"Metadata loop file", config_.metadata_loop_file});

  const char* kSpaceKeys[] = {"Data Space Used",
                              "Data Space Total",
                              "Data Space Available",
                              "Metadata Space Used",
                              "Metadata Space Total",
                              "Metadata Space Available",
                              "Thin Pool Minimum Free Space"};
  if (pool.ok()) {
    uint64_t data_used = pool->data_used_blocks * block_bytes;
    uint64_t data_total = pool->data_total_blocks * block_bytes;
    uint64_t data_avail = data_total - std::min(data_used, data_total);
    uint64_t meta_used = pool->metadata_used_blocks * kMetadataBlockBytes;
    uint64_t meta_total = pool->metadata_total_blocks * kMetadataBlockBytes;
    uint64_t meta_avail = meta_total - std::min(meta_used, meta_total);
    // A sparse loop file can only grow as far as its filesystem lets it (Docker's
    // getUnderlyingAvailableSpace).
    auto underlying = [](const std::string& file, uint64_t avail) {
      if (file.empty()) return avail;
      auto st = sys::statfs(file);
      if (!st.ok()) return avail;
      return std::min<uint64_t>(avail, static_cast<uint64_t>(st->f_bavail) * st->f_bsize);
    };
    data_avail = underlying(config_.data_loop_file, data_avail);
    meta_avail = underlying(config_.metadata_loop_file, meta_avail);
    uint64_t min_free =
        pool->data_total_blocks * config_.options.min_free_space_percent / 100 * block_bytes;
    const uint64_t values[] = {data_used,  data_total, data_avail, meta_used,
                               meta_total, meta_avail, min_free};
    for (size_t i = 0; i < 7; ++i) rows.push_back({kSpaceKeys[i], human_size(values[i])});
  } else {
    for (const char* key : kSpaceKeys)
      rows.push_back({key, "unknown (" + pool.error().message() + ")"});
  }
  rows.push_back({"Deferred Removal Enabled", bool_text(config_.deferred_remove)});
  rows.push_back({"Deferred Deletion Enabled", bool_text(config_.deferred_delete)});
  rows.push_back({"Deferred Deleted Device Count", std::to_string(deleted_count_)});
  if (!config_.library_version.empty())
    rows.push_back({"Library Version", config_.library_version});
  return rows;
}

}  // namespace cowlab::devmapper
