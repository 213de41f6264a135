// The real ThinPool and BlockOps (pool.h), and setting up the pool itself.
//
// Loop-lvm mode (no dm.thinpooldev), Docker's layout: sparse files
//   <home>/devicemapper/data      (dm.loopdatasize, default 100 GiB)
//   <home>/devicemapper/metadata  (dm.loopmetadatasize, default 2 GiB)
// attached to loop devices with autoclear and combined into the pool
// "<prefix>-pool" with the table
//   0 <data sectors> thin-pool <metadata maj:min> <data maj:min> <block sectors> 32768 1
//   skip_block_zeroing
// (Docker's createPool).  The loop devices are referenced only by the pool, so removing the
// pool detaches them.  Files are grown to a larger configured size, never shrunk; a pool that
// is already active (left by an earlier cowlab process) is used as it is.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "cowlab/result.h"
#include "devicemapper/options.h"
#include "devicemapper/pool.h"

namespace cowlab::devmapper {

class DmThinPool final : public ThinPool {
 public:
  explicit DmThinPool(std::string pool_name) : name_(std::move(pool_name)) {}

  std::string pool_name() const override { return name_; }
  Result<PoolStatus> status(StatusQuery query) override;
  Result<void> create_thin(uint32_t device_id) override;
  Result<void> create_snap(uint32_t device_id, uint32_t origin_id) override;
  Result<void> delete_thin(uint32_t device_id) override;
  Result<void> set_transaction_id(uint64_t current, uint64_t next) override;
  Result<ThinDeviceState> state(const std::string& name) override;
  Result<void> activate(const std::string& name, uint32_t device_id, uint64_t size_bytes) override;
  Result<void> deactivate(const std::string& name, Deactivation how) override;
  Result<void> cancel_deferred_removal(const std::string& name) override;
  Result<void> suspend(const std::string& name) override;
  Result<void> resume(const std::string& name) override;
  std::string device_path(const std::string& name) const override;
  Result<std::vector<std::string>> active_devices(const std::string& prefix) override;

 private:
  Result<void> pool_message(const std::string& text);
  std::string name_;
  std::optional<uint64_t> block_sectors_;  // from the table; fixed for the pool's life
};

class SystemBlockOps final : public BlockOps {
 public:
  Result<void> make_filesystem(BaseFilesystem fs, const std::string& device,
                               const std::vector<std::string>& args) override;
  Result<FsIdentity> identify(const std::string& device) override;
  Result<void> mount(const std::string& device, const std::string& target,
                     const std::string& fstype, const std::string& options,
                     MountMode mode) override;
  Result<void> unmount(const std::string& target) override;
  Result<bool> is_mounted(const std::string& target) override;
  Result<void> grow_filesystem(BaseFilesystem fs, const std::string& device,
                               const std::string& mount_point) override;
  Result<void> discard(const std::string& device) override;
  void sleep_ms(int ms) override;
};

struct PoolSetup {
  std::string pool_name;
  bool loop_mode = false;   // loop-lvm: cowlab owns the pool and may remove it
  bool created = false;     // this process created the pool device
  std::string data_device;  // "/dev/loop0"
  std::string metadata_device;
  std::string data_file;  // "<home>/devicemapper/data"
  std::string metadata_file;
};

// Loop-lvm: creates or grows the files, attaches them and creates the pool — or, when the
// pool is active already, finds its loop devices and files from its table.
Result<PoolSetup> open_loopback_pool(const std::string& home, const std::string& pool_name,
                                     const DmOptions& options);
// dm.thinpooldev: the device must exist and be a thin-pool.
Result<PoolSetup> open_existing_pool(const std::string& pool_name);
// Removes a loop-lvm pool (its loop devices detach themselves); a no-op for dm.thinpooldev.
Result<void> close_pool(const PoolSetup& setup);

// "253:4" -> {253, 4}; the device fields of a thin-pool table.
std::optional<std::pair<unsigned, unsigned>> parse_major_minor(const std::string& text);

}  // namespace cowlab::devmapper
