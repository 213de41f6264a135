// Docker-format metadata records (round trips, Docker-written files, corruption) and the
// 24-bit device id allocator.
#include "devicemapper/metadata.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cowlab/sys.h"

namespace cowlab::devmapper {
namespace {

TEST(DmMetadata, DeviceRecordRoundTrip) {
  DeviceRecord r;
  r.hash = "3f2a";
  r.device_id = 0xabcdef;
  r.size = 10737418240ULL;
  r.transaction_id = 42;
  r.initialized = true;
  r.deleted = true;
  std::string text = to_json(r);
  auto j = nlohmann::json::parse(text);
  // Docker's devInfo field names; the hash is the file name, never a field.
  EXPECT_EQ(j.size(), 5u);
  EXPECT_EQ(j["device_id"], 0xabcdef);
  EXPECT_EQ(j["size"], 10737418240ULL);
  EXPECT_EQ(j["transaction_id"], 42);
  EXPECT_EQ(j["initialized"], true);
  EXPECT_EQ(j["deleted"], true);
  auto back = parse_device_record(text, "3f2a", "metadata/3f2a");
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back->hash, "3f2a");
  EXPECT_EQ(back->device_id, r.device_id);
  EXPECT_EQ(back->size, r.size);
  EXPECT_EQ(back->transaction_id, r.transaction_id);
  EXPECT_TRUE(back->initialized);
  EXPECT_TRUE(back->deleted);
}

TEST(DmMetadata, ReadsWhatDockerWrites) {
  // A base device file as Docker 20.10 writes it (Go's json.Marshal of devInfo).
  auto r = parse_device_record(
      R"({"device_id":1,"size":10737418240,"transaction_id":1,"initialized":true,"deleted":false})",
      "", "metadata/base");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->hash, "");
  EXPECT_EQ(r->device_id, 1u);
  EXPECT_TRUE(r->initialized);
  EXPECT_FALSE(r->deleted);
  // Older Docker versions did not write "deleted"; missing booleans are false.
  auto old = parse_device_record(
      R"({"device_id":7,"size":5,"transaction_id":3,"initialized":false})", "x", "metadata/x");
  ASSERT_TRUE(old.ok()) << old.error().message();
  EXPECT_FALSE(old->deleted);
}

TEST(DmMetadata, SetAndTransactionRecordsRoundTrip) {
  DeviceSetRecord s{17, "0c1e5f7e-93f0-4f0e-8c6c-5b9d2b3c4d5e", "xfs"};
  auto j = nlohmann::json::parse(to_json(s));
  EXPECT_EQ(j["next_device_id"], 17);
  EXPECT_EQ(j["BaseDeviceUUID"], s.base_device_uuid);
  EXPECT_EQ(j["BaseDeviceFilesystem"], "xfs");
  auto s2 = parse_device_set_record(to_json(s), "deviceset-metadata");
  ASSERT_TRUE(s2.ok()) << s2.error().message();
  EXPECT_EQ(s2->next_device_id, 17u);
  EXPECT_EQ(s2->base_device_uuid, s.base_device_uuid);
  EXPECT_EQ(s2->base_device_filesystem, "xfs");

  TransactionRecord t{9, "layer", 5};
  auto tj = nlohmann::json::parse(to_json(t));
  EXPECT_EQ(tj["open_transaction_id"], 9);
  EXPECT_EQ(tj["device_hash"], "layer");
  EXPECT_EQ(tj["device_id"], 5);
  auto t2 = parse_transaction_record(to_json(t), "transaction-metadata");
  ASSERT_TRUE(t2.ok()) << t2.error().message();
  EXPECT_EQ(t2->open_transaction_id, 9u);
  EXPECT_EQ(t2->device_hash, "layer");
  EXPECT_EQ(t2->device_id, 5u);
}

TEST(DmMetadata, CorruptionNamesTheFile) {
  struct Case {
    const char* text;
    const char* why;
  } cases[] = {
      {"", "not a JSON object"},
      {"[1,2]", "not a JSON object"},
      {R"({"size":1})", "no \"device_id\""},
      {R"({"device_id":"1"})", "not a non-negative integer"},
      {R"({"device_id":-1})", "not a non-negative integer"},
      {R"({"device_id":16777216})", "24-bit"},
      {R"({"device_id":1,"initialized":"yes"})", "not a boolean"},
  };
  for (const auto& c : cases) {
    auto r = parse_device_record(c.text, "h", "/store/metadata/h");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.error().kind(), ErrorKind::kCorrupt) << c.text;
    EXPECT_NE(r.error().message().find("/store/metadata/h"), std::string::npos)
        << r.error().message();
    EXPECT_NE(r.error().message().find(c.why), std::string::npos) << r.error().message();
  }
  auto s = parse_device_set_record(R"({"BaseDeviceUUID":3})", "deviceset-metadata");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("not a string"), std::string::npos);
}

TEST(DmMetadata, FileNames) {
  EXPECT_EQ(metadata_file_name(""), "base");
  EXPECT_EQ(metadata_file_name("abc"), "abc");
  EXPECT_TRUE(is_device_file_name("base"));
  EXPECT_TRUE(is_device_file_name("3f2a"));
  EXPECT_FALSE(is_device_file_name("deviceset-metadata"));
  EXPECT_FALSE(is_device_file_name("transaction-metadata"));
  // sys::write_file_atomic's temp files are not device records.
  EXPECT_FALSE(is_device_file_name(sys::atomic_write_temp_path("/x/deviceset-metadata").substr(3)));
  EXPECT_FALSE(is_device_file_name(sys::atomic_write_temp_path("/x/3f2a").substr(3)));
  EXPECT_FALSE(is_device_file_name("3f2a.tmp-1234-5678"));
}

TEST(DmDeviceIdMap, AllocatesAfterNextAndSkipsUsed) {
  DeviceIdMap ids;
  uint32_t next = 0;
  EXPECT_EQ(*ids.allocate(next), 1u) << "Docker's first id is next_device_id + 1";
  EXPECT_EQ(next, 1u);
  ids.mark_used(2);
  ids.mark_used(3);
  EXPECT_EQ(*ids.allocate(next), 4u);
  EXPECT_EQ(ids.used_count(), 4u);
  ids.mark_free(2);
  EXPECT_TRUE(ids.is_free(2));
  // A freed id is not reused before the allocator wraps around.
  EXPECT_EQ(*ids.allocate(next), 5u);
}

TEST(DmDeviceIdMap, WrapsAt24Bits) {
  DeviceIdMap ids;
  uint32_t next = kMaxDeviceId - 1;
  EXPECT_EQ(*ids.allocate(next), kMaxDeviceId);
  EXPECT_EQ(*ids.allocate(next), 0u) << "ids wrap to 0 after 0xffffff";
  EXPECT_EQ(*ids.allocate(next), 1u);
}

TEST(DmDeviceIdMap, ExhaustionIsAnError) {
  DeviceIdMap ids;
  for (uint32_t id = 0; id <= kMaxDeviceId; ++id) ids.mark_used(id);
  EXPECT_EQ(ids.used_count(), static_cast<size_t>(kMaxDeviceId) + 1);
  uint32_t next = 5;
  auto r = ids.allocate(next);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().err(), ENOSPC);
  ids.mark_free(4);
  EXPECT_EQ(*ids.allocate(next), 4u) << "the search wraps all the way round";
}

TEST(DmDeviceIdMap, MarkingIsIdempotent) {
  DeviceIdMap ids;
  ids.mark_used(9);
  ids.mark_used(9);
  EXPECT_EQ(ids.used_count(), 1u);
  ids.mark_free(9);
  ids.mark_free(9);
  EXPECT_EQ(ids.used_count(), 0u);
}

}  // namespace
}  // namespace cowlab::devmapper
