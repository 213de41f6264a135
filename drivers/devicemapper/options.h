// devicemapper storage options (`--storage-opt dm.*`), Docker's names and defaults
// (daemon/graphdriver/devmapper/deviceset.go, NewDeviceSet).
//
// Parsing is pure: it checks syntax and ranges only.  Rules that need the live store (the
// base size may only grow, deferred removal needs kernel support) are applied by DeviceSet
// and init_devicemapper, which know the pool and the kernel.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::devmapper {

// A boolean option that may also be left to the driver's probe.
enum class Setting { kAuto, kEnabled, kDisabled };

enum class BaseFilesystem { kExt4, kXfs };
std::string filesystem_name(BaseFilesystem fs);  // "ext4", "xfs"

inline constexpr uint64_t kDefaultBaseSize = 10ULL << 30;         // dm.basesize
inline constexpr uint64_t kDefaultLoopDataSize = 100ULL << 30;    // dm.loopdatasize
inline constexpr uint64_t kDefaultLoopMetadataSize = 2ULL << 30;  // dm.loopmetadatasize
inline constexpr uint32_t kDefaultBlockSectors = 128;             // dm.blocksize 64 KiB
inline constexpr uint32_t kDefaultMinFreeSpacePercent = 10;       // dm.min_free_space

struct DmOptions {
  uint64_t base_size = kDefaultBaseSize;
  bool base_size_given = false;  // Docker's userBaseSize: only then is the base device grown
  uint64_t loop_data_size = kDefaultLoopDataSize;
  uint64_t loop_metadata_size = kDefaultLoopMetadataSize;
  std::optional<BaseFilesystem> filesystem;       // dm.fs; unset = xfs if usable, else ext4
  std::vector<std::string> mkfs_args;             // dm.mkfsarg, split on whitespace
  std::string mount_options;                      // dm.mountopt, comma-joined
  std::string thin_pool_device;                   // dm.thinpooldev without "/dev/mapper/"
  uint32_t block_sectors = kDefaultBlockSectors;  // dm.blocksize in 512-byte sectors
  uint32_t min_free_space_percent = kDefaultMinFreeSpacePercent;
  Setting deferred_removal = Setting::kAuto;   // dm.use_deferred_removal
  Setting deferred_deletion = Setting::kAuto;  // dm.use_deferred_deletion
  Setting blkdiscard = Setting::kAuto;         // dm.blkdiscard

  // Docker: discards default on in loop-lvm mode and off with a real pool, where they are
  // "rarely useful and expensive".
  bool discard_enabled() const {
    if (blkdiscard == Setting::kAuto) return thin_pool_device.empty();
    return blkdiscard == Setting::kEnabled;
  }
};

// Parses the dm.* keys of a driver config (keys are lower-case already).  Unknown keys, Docker
// keys cowlab does not implement and bad values are kInvalid errors naming key and value.
Result<DmOptions> parse_options(const std::map<std::string, std::string>& options);

// Go's strconv.ParseBool spellings: 1 t T TRUE true True / 0 f F FALSE false False.
std::optional<bool> parse_go_bool(const std::string& text);

// Joins mount option strings with ',' skipping empty ones (Docker's joinMountOptions).
std::string join_mount_options(const std::string& a, const std::string& b);

}  // namespace cowlab::devmapper
