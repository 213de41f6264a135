// The pure parts of pool.h: thin-pool status/table lines and superblocks.
#include "devicemapper/pool.h"

#include <cstdio>
#include <sstream>

namespace cowlab::devmapper {

namespace {

Result<std::pair<uint64_t, uint64_t>> used_total(const std::string& field, const char* what,
                                                 std::string_view params) {
  unsigned long long used = 0, total = 0;
  char tail = 0;
  if (std::sscanf(field.c_str(), "%llu/%llu%c", &used, &total, &tail) != 2)
    return Error::corrupt("thin-pool status \"" + std::string(params) + "\": " + what +
                          " is not <used>/<total>");
  return std::pair<uint64_t, uint64_t>{used, total};
}

uint32_t le16(std::string_view b, size_t off) {
  return static_cast<uint8_t>(b[off]) | (static_cast<uint8_t>(b[off + 1]) << 8);
}

std::string format_uuid(std::string_view bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    auto c = static_cast<uint8_t>(bytes[i]);
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

}  // namespace

Result<PoolStatus> parse_pool_status(std::string_view params) {
  std::istringstream in{std::string(params)};
  std::vector<std::string> fields;
  for (std::string f; in >> f;) fields.push_back(f);
  if (fields.empty() || fields[0] == "Fail" || fields[0] == "Error")
    return Error::corrupt("thin-pool status \"" + std::string(params) +
                          "\": the pool has failed (run thin_check on its metadata)");
  if (fields.size() < 3)
    return Error::corrupt("thin-pool status \"" + std::string(params) + "\": too few fields");
  PoolStatus s;
  unsigned long long tid = 0;
  char tail = 0;
  if (std::sscanf(fields[0].c_str(), "%llu%c", &tid, &tail) != 1)
    return Error::corrupt("thin-pool status \"" + std::string(params) +
                          "\": transaction id is not a number");
  s.transaction_id = tid;
  auto meta = COWLAB_TRY(used_total(fields[1], "metadata usage", params));
  auto data = COWLAB_TRY(used_total(fields[2], "data usage", params));
  s.metadata_used_blocks = meta.first;
  s.metadata_total_blocks = meta.second;
  s.data_used_blocks = data.first;
  s.data_total_blocks = data.second;
  if (fields.size() > 4) s.mode = fields[4];
  return s;
}

Result<uint64_t> parse_pool_table_block_sectors(std::string_view params) {
  std::istringstream in{std::string(params)};
  std::string metadata_dev, data_dev;
  unsigned long long block = 0;
  if (!(in >> metadata_dev >> data_dev >> block) || block == 0)
    return Error::corrupt("thin-pool table \"" + std::string(params) +
                          "\": no data block size in the third field");
  return static_cast<uint64_t>(block);
}

FsIdentity parse_superblock(std::string_view head) {
  FsIdentity id;
  // xfs: struct xfs_sb at offset 0, magic "XFSB", sb_uuid at byte 32.
  if (head.size() >= 48 && head.substr(0, 4) == "XFSB") {
    id.type = "xfs";
    id.uuid = format_uuid(head.substr(32, 16));
    return id;
  }
  // ext2/3/4: superblock at 1024, s_magic 0xEF53 at +56 (little-endian), s_uuid at +104.
  constexpr size_t kExtSb = 1024;
  if (head.size() >= kExtSb + 120 && le16(head, kExtSb + 56) == 0xEF53) {
    id.type = "ext4";
    id.uuid = format_uuid(head.substr(kExtSb + 104, 16));
  }
  return id;
}

}  // namespace cowlab::devmapper
