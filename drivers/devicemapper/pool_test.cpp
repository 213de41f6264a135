// Pure parsers: thin-pool status and table lines, ext4/xfs superblocks, major:minor.
#include "devicemapper/pool.h"

#include <gtest/gtest.h>

#include "devicemapper/backends.h"

namespace cowlab::devmapper {
namespace {

TEST(DmPoolStatus, ParsesTheKernelsLine) {
  // dm-thin's status line (thin-provisioning.rst) as a 6.1 kernel prints it.
  auto s =
      parse_pool_status("3 160/524288 1012/1638400 - rw discard_passdown queue_if_no_space - 1024");
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->transaction_id, 3u);
  EXPECT_EQ(s->metadata_used_blocks, 160u);
  EXPECT_EQ(s->metadata_total_blocks, 524288u);
  EXPECT_EQ(s->data_used_blocks, 1012u);
  EXPECT_EQ(s->data_total_blocks, 1638400u);
  EXPECT_EQ(s->mode, "rw");
  // Older kernels print fewer fields.
  auto old = parse_pool_status("0 9/4096 0/16384 - rw");
  ASSERT_TRUE(old.ok()) << old.error().message();
  EXPECT_EQ(old->data_total_blocks, 16384u);
}

TEST(DmPoolStatus, FailedOrMalformedPools) {
  for (const char* line : {"Fail", "Error", "", "x 1/2 3/4", "1 12 3/4", "1 1/2 3/x", "1 1/2"}) {
    auto s = parse_pool_status(line);
    ASSERT_FALSE(s.ok()) << "\"" << line << "\" parsed";
    EXPECT_EQ(s.error().kind(), ErrorKind::kCorrupt);
  }
  EXPECT_NE(parse_pool_status("Fail").error().message().find("failed"), std::string::npos);
}

TEST(DmPoolStatus, TableBlockSize) {
  auto b = parse_pool_table_block_sectors("7:1 7:0 128 32768 1 skip_block_zeroing");
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_EQ(*b, 128u);
  EXPECT_FALSE(parse_pool_table_block_sectors("7:1 7:0").ok());
  EXPECT_FALSE(parse_pool_table_block_sectors("7:1 7:0 0 1").ok());
}

TEST(DmMajorMinor, Parses) {
  auto mm = parse_major_minor("253:12");
  ASSERT_TRUE(mm.has_value());
  EXPECT_EQ(mm->first, 253u);
  EXPECT_EQ(mm->second, 12u);
  EXPECT_FALSE(parse_major_minor("/dev/loop0").has_value());
  EXPECT_FALSE(parse_major_minor("7:1x").has_value());
}

std::string image(size_t size) {
  return std::string(size, '\0');
}

TEST(DmSuperblock, Ext4) {
  std::string head = image(4096);
  head[1024 + 56] = '\x53';  // s_magic 0xEF53, little-endian
  head[1024 + 57] = '\xef';
  const unsigned char uuid[16] = {0x0c, 0x1e, 0x5f, 0x7e, 0x93, 0xf0, 0x4f, 0x0e,
                                  0x8c, 0x6c, 0x5b, 0x9d, 0x2b, 0x3c, 0x4d, 0x5e};
  for (int i = 0; i < 16; ++i) head[1024 + 104 + i] = static_cast<char>(uuid[i]);
  FsIdentity id = parse_superblock(head);
  EXPECT_EQ(id.type, "ext4");
  EXPECT_EQ(id.uuid, "0c1e5f7e-93f0-4f0e-8c6c-5b9d2b3c4d5e");
}

TEST(DmSuperblock, Xfs) {
  std::string head = image(4096);
  head.replace(0, 4, "XFSB");
  for (int i = 0; i < 16; ++i) head[32 + i] = static_cast<char>(0xa0 + i);
  FsIdentity id = parse_superblock(head);
  EXPECT_EQ(id.type, "xfs");
  EXPECT_EQ(id.uuid, "a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf");
}

TEST(DmSuperblock, NothingRecognisable) {
  EXPECT_EQ(parse_superblock(image(65536)).type, "");
  EXPECT_EQ(parse_superblock("").type, "");
  std::string short_ext = image(1024 + 60);
  short_ext[1024 + 56] = '\x53';
  short_ext[1024 + 57] = '\xef';
  EXPECT_EQ(parse_superblock(short_ext).type, "") << "a truncated superblock is not trusted";
}

}  // namespace
}  // namespace cowlab::devmapper
