#include "devicemapper/metadata.h"

#include <limits>

#include <nlohmann/json.hpp>

#include "cowlab/sys.h"

namespace cowlab::devmapper {

namespace {

using Json = nlohmann::json;

Result<Json> parse_object(const std::string& text, const std::string& file) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return Error::corrupt("devicemapper: " + file + ": not a JSON object");
  return j;
}

// Reads an optional member of the given JSON type into `out`; a present member of another
// type is corruption.
template <typename T>
Result<void> member(const Json& j, const char* key, T& out, const std::string& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean())
      return Error::corrupt("devicemapper: " + file + ": \"" + key + "\" is not a boolean");
    out = it->get<bool>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string())
      return Error::corrupt("devicemapper: " + file + ": \"" + key + "\" is not a string");
    out = it->get<std::string>();
  } else {
    if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0))
      return Error::corrupt("devicemapper: " + file + ": \"" + key +
                            "\" is not a non-negative integer");
    uint64_t v = it->get<uint64_t>();
    if (v > std::numeric_limits<T>::max())
      return Error::corrupt("devicemapper: " + file + ": \"" + key + "\" is out of range");
    out = static_cast<T>(v);
  }
  return {};
}

Result<void> check_device_id(uint32_t id, const char* key, const std::string& file) {
  if (id > kMaxDeviceId)
    return Error::corrupt("devicemapper: " + file + ": \"" + key + "\" " + std::to_string(id) +
                          " exceeds the 24-bit thin device id range");
  return {};
}

}  // namespace

std::string metadata_file_name(const std::string& hash) {
  return hash.empty() ? "base" : hash;
}

bool is_device_file_name(const std::string& name) {
  if (name == kDeviceSetMetadataFile || name == kTransactionMetadataFile) return false;
  if (name.empty() || name[0] == '.') return false;
  // A temp file of an interrupted sys::write_file_atomic ("deviceset-metadata.tmp-<pid>-<n>",
  // "<hash>.tmp-<pid>-<n>"): empty or cut short after a crash, never a record.  Reading one as
  // a device once made the store refuse to start after a power cut (docs/crash.md).
  return !sys::is_atomic_write_temp_name(name);
}

std::string to_json(const DeviceRecord& r) {
  Json j = {{"device_id", r.device_id},
            {"size", r.size},
            {"transaction_id", r.transaction_id},
            {"initialized", r.initialized},
            {"deleted", r.deleted}};
  return j.dump();
}

std::string to_json(const DeviceSetRecord& r) {
  Json j = {{"next_device_id", r.next_device_id},
            {"BaseDeviceUUID", r.base_device_uuid},
            {"BaseDeviceFilesystem", r.base_device_filesystem}};
  return j.dump();
}

std::string to_json(const TransactionRecord& r) {
  Json j = {{"open_transaction_id", r.open_transaction_id},
            {"device_hash", r.device_hash},
            {"device_id", r.device_id}};
  return j.dump();
}

Result<DeviceRecord> parse_device_record(const std::string& text, const std::string& hash,
                                         const std::string& file) {
  Json j = COWLAB_TRY(parse_object(text, file));
  if (!j.contains("device_id"))
    return Error::corrupt("devicemapper: " + file + ": no \"device_id\"");
  DeviceRecord r;
  r.hash = hash;
  COWLAB_TRY(member(j, "device_id", r.device_id, file));
  COWLAB_TRY(check_device_id(r.device_id, "device_id", file));
  COWLAB_TRY(member(j, "size", r.size, file));
  COWLAB_TRY(member(j, "transaction_id", r.transaction_id, file));
  COWLAB_TRY(member(j, "initialized", r.initialized, file));
  COWLAB_TRY(member(j, "deleted", r.deleted, file));
  return r;
}

Result<DeviceSetRecord> parse_device_set_record(const std::string& text, const std::string& file) {
  Json j = COWLAB_TRY(parse_object(text, file));
  DeviceSetRecord r;
  COWLAB_TRY(member(j, "next_device_id", r.next_device_id, file));
  COWLAB_TRY(check_device_id(r.next_device_id, "next_device_id", file));
  COWLAB_TRY(member(j, "BaseDeviceUUID", r.base_device_uuid, file));
  COWLAB_TRY(member(j, "BaseDeviceFilesystem", r.base_device_filesystem, file));
  return r;
}

Result<TransactionRecord> parse_transaction_record(const std::string& text,
                                                   const std::string& file) {
  Json j = COWLAB_TRY(parse_object(text, file));
  TransactionRecord r;
  COWLAB_TRY(member(j, "open_transaction_id", r.open_transaction_id, file));
  COWLAB_TRY(member(j, "device_hash", r.device_hash, file));
  COWLAB_TRY(member(j, "device_id", r.device_id, file));
  COWLAB_TRY(check_device_id(r.device_id, "device_id", file));
  return r;
}

DeviceIdMap::DeviceIdMap() : bits_((static_cast<size_t>(kMaxDeviceId) + 1) / 8, 0) {}

bool DeviceIdMap::is_free(uint32_t id) const {
  id &= kMaxDeviceId;
  return (bits_[id / 8] & (1u << (id % 8))) == 0;
}

void DeviceIdMap::mark_used(uint32_t id) {
  id &= kMaxDeviceId;
  if (is_free(id)) ++used_;
  bits_[id / 8] |= static_cast<uint8_t>(1u << (id % 8));
}

void DeviceIdMap::mark_free(uint32_t id) {
  id &= kMaxDeviceId;
  if (!is_free(id)) --used_;
  bits_[id / 8] &= static_cast<uint8_t>(~(1u << (id % 8)));
}

Result<uint32_t> DeviceIdMap::allocate(uint32_t& next) {
  for (uint64_t tries = 0; tries <= kMaxDeviceId; ++tries) {
    next = (next + 1) & kMaxDeviceId;
    if (is_free(next)) {
      mark_used(next);
      return next;
    }
  }
  return Error(ErrorKind::kSystem, "devicemapper: no free thin device id (all 2^24 ids are in use)",
               ENOSPC);
}

}  // namespace cowlab::devmapper
