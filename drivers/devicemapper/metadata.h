// The devicemapper driver's on-disk metadata, in Docker's JSON form so a store is readable by
// anyone who has debugged /var/lib/docker/devicemapper (deviceset.go: devInfo,
// deviceSetMetaData, transaction):
//
//   <home>/metadata/<hash>               {"device_id":..,"size":..,"transaction_id":..,
//                                         "initialized":..,"deleted":..}
//   <home>/metadata/base                 the same for the base device (hash "")
//   <home>/metadata/deviceset-metadata   {"next_device_id":..,"BaseDeviceUUID":"..",
//                                         "BaseDeviceFilesystem":".."}
//   <home>/metadata/transaction-metadata {"open_transaction_id":..,"device_hash":"..",
//                                         "device_id":..}
//
// Parsing is strict about types (a wrong type or a missing device_id is kCorrupt naming the
// file) and lenient about unknown keys, which newer Docker versions may add.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::devmapper {

// Thin device ids are 24 bits (the kernel's dm-thin metadata limit, Docker's maxDeviceID).
inline constexpr uint32_t kMaxDeviceId = 0xffffff;

inline constexpr char kDeviceSetMetadataFile[] = "deviceset-metadata";
inline constexpr char kTransactionMetadataFile[] = "transaction-metadata";

// One thin device: a layer, or the base device (hash "").
struct DeviceRecord {
  std::string hash;  // not serialised: it is the file name
  uint32_t device_id = 0;
  uint64_t size = 0;            // bytes
  uint64_t transaction_id = 0;  // the pool transaction that created it
  bool initialized = false;     // base device: filesystem made
  bool deleted = false;         // deferred deletion pending
};

struct DeviceSetRecord {
  uint32_t next_device_id = 0;
  std::string base_device_uuid;
  std::string base_device_filesystem;
};

// The transaction opened before a pool message that creates or deletes a thin device.  It is
// closed by advancing the pool's transaction id to open_transaction_id; a mismatch at start-up
// means the process died in between (see DeviceSet::process_pending_transaction).
struct TransactionRecord {
  uint64_t open_transaction_id = 0;
  std::string device_hash;
  uint32_t device_id = 0;
};

// Metadata file name of a device: its hash, or "base" for the base device.
std::string metadata_file_name(const std::string& hash);
// Whether a file in the metadata directory is a device record: not the two set-wide files,
// not a hidden file, not a temp file of an interrupted sys::write_file_atomic.
bool is_device_file_name(const std::string& name);

std::string to_json(const DeviceRecord& r);
std::string to_json(const DeviceSetRecord& r);
std::string to_json(const TransactionRecord& r);
// `file` names the source in errors.
Result<DeviceRecord> parse_device_record(const std::string& text, const std::string& hash,
                                         const std::string& file);
Result<DeviceSetRecord> parse_device_set_record(const std::string& text, const std::string& file);
Result<TransactionRecord> parse_transaction_record(const std::string& text,
                                                   const std::string& file);

// Which thin device ids are in use: a 2^24-bit bitmap (2 MiB), Docker's deviceIDMap.
class DeviceIdMap {
 public:
  DeviceIdMap();
  bool is_free(uint32_t id) const;
  void mark_used(uint32_t id);
  void mark_free(uint32_t id);
  size_t used_count() const { return used_; }

  // Docker's getNextFreeDeviceID: advances `next` (wrapping at 24 bits) to the first free id
  // after it, marks it used and returns it; an error (ENOSPC) when every id is in use.
  Result<uint32_t> allocate(uint32_t& next);

 private:
  std::vector<uint8_t> bits_;
  size_t used_ = 0;
};

}  // namespace cowlab::devmapper
