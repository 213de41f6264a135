// dm.* option parsing: every key with good and bad values, Docker's defaults, unknown keys.
#include "devicemapper/options.h"

#include <gtest/gtest.h>

namespace cowlab::devmapper {
namespace {

Result<DmOptions> parse1(const std::string& key, const std::string& value) {
  return parse_options({{key, value}});
}

// A bad value must be kInvalid and name both key and value.
void expect_bad(const std::string& key, const std::string& value) {
  auto r = parse1(key, value);
  ASSERT_FALSE(r.ok()) << key << "=" << value << " was accepted";
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid) << r.error().message();
  EXPECT_NE(r.error().message().find(key), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("\"" + value + "\""), std::string::npos)
      << r.error().message();
}

TEST(DmOptions, DockerDefaults) {
  auto r = parse_options({});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->base_size, 10ULL << 30);
  EXPECT_FALSE(r->base_size_given);
  EXPECT_EQ(r->loop_data_size, 100ULL << 30);
  EXPECT_EQ(r->loop_metadata_size, 2ULL << 30);
  EXPECT_FALSE(r->filesystem.has_value());
  EXPECT_TRUE(r->mkfs_args.empty());
  EXPECT_EQ(r->mount_options, "");
  EXPECT_EQ(r->thin_pool_device, "");
  EXPECT_EQ(r->block_sectors, 128u);  // 64 KiB
  EXPECT_EQ(r->min_free_space_percent, 10u);
  EXPECT_EQ(r->deferred_removal, Setting::kAuto);
  EXPECT_EQ(r->deferred_deletion, Setting::kAuto);
  EXPECT_EQ(r->blkdiscard, Setting::kAuto);
  EXPECT_TRUE(r->discard_enabled()) << "discards default on in loop-lvm mode";
}

TEST(DmOptions, BaseSize) {
  auto r = parse1("dm.basesize", "20G");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->base_size, 20ULL << 30);
  EXPECT_TRUE(r->base_size_given);
  EXPECT_EQ(parse1("dm.basesize", "512M")->base_size, 512ULL << 20);
  expect_bad("dm.basesize", "0");
  expect_bad("dm.basesize", "big");
  expect_bad("dm.basesize", "10Q");
  expect_bad("dm.basesize", "");
}

TEST(DmOptions, LoopSizes) {
  EXPECT_EQ(parse1("dm.loopdatasize", "300M")->loop_data_size, 300ULL << 20);
  EXPECT_EQ(parse1("dm.loopmetadatasize", "200M")->loop_metadata_size, 200ULL << 20);
  expect_bad("dm.loopdatasize", "0");
  expect_bad("dm.loopdatasize", "-1G");
  expect_bad("dm.loopmetadatasize", "lots");
}

TEST(DmOptions, Filesystem) {
  EXPECT_EQ(*parse1("dm.fs", "ext4")->filesystem, BaseFilesystem::kExt4);
  EXPECT_EQ(*parse1("dm.fs", "xfs")->filesystem, BaseFilesystem::kXfs);
  expect_bad("dm.fs", "btrfs");
  expect_bad("dm.fs", "ext3");
  expect_bad("dm.fs", "EXT4");
  expect_bad("dm.fs", "");
}

TEST(DmOptions, MkfsArgsAndMountOptions) {
  auto r = parse1("dm.mkfsarg", "-O ^has_journal  -m 0");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->mkfs_args, (std::vector<std::string>{"-O", "^has_journal", "-m", "0"}));
  expect_bad("dm.mkfsarg", "   ");
  EXPECT_EQ(parse1("dm.mountopt", "nodiscard,noatime")->mount_options, "nodiscard,noatime");
  expect_bad("dm.mountopt", "");
}

TEST(DmOptions, ThinPoolDevice) {
  auto r = parse1("dm.thinpooldev", "/dev/mapper/vg-thinpool");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->thin_pool_device, "vg-thinpool") << "the /dev/mapper/ prefix is stripped";
  EXPECT_EQ(parse1("dm.thinpooldev", "mypool")->thin_pool_device, "mypool");
  EXPECT_FALSE(r->discard_enabled()) << "discards default off with a real pool (Docker)";
  expect_bad("dm.thinpooldev", "/dev/sdb");
  expect_bad("dm.thinpooldev", "");
  expect_bad("dm.thinpooldev", "/dev/mapper/");
}

TEST(DmOptions, BlockSize) {
  EXPECT_EQ(parse1("dm.blocksize", "64K")->block_sectors, 128u);
  EXPECT_EQ(parse1("dm.blocksize", "512K")->block_sectors, 1024u);
  EXPECT_EQ(parse1("dm.blocksize", "1G")->block_sectors, 2097152u);
  expect_bad("dm.blocksize", "32K");   // below the kernel's minimum
  expect_bad("dm.blocksize", "100K");  // not a multiple of 64 KiB
  expect_bad("dm.blocksize", "2G");    // above the maximum
  expect_bad("dm.blocksize", "0");
  expect_bad("dm.blocksize", "x");
}

TEST(DmOptions, MinFreeSpace) {
  EXPECT_EQ(parse1("dm.min_free_space", "0%")->min_free_space_percent, 0u);
  EXPECT_EQ(parse1("dm.min_free_space", "25%")->min_free_space_percent, 25u);
  EXPECT_EQ(parse1("dm.min_free_space", "99%")->min_free_space_percent, 99u);
  expect_bad("dm.min_free_space", "10");    // Docker: requires a % suffix
  expect_bad("dm.min_free_space", "100%");  // must stay below 100
  expect_bad("dm.min_free_space", "150%");
  expect_bad("dm.min_free_space", "-5%");
  expect_bad("dm.min_free_space", "%");
  expect_bad("dm.min_free_space", "2.5%");
}

TEST(DmOptions, Booleans) {
  for (const char* key : {"dm.use_deferred_removal", "dm.use_deferred_deletion", "dm.blkdiscard"}) {
    for (const char* t : {"1", "t", "T", "true", "TRUE", "True"}) {
      auto r = parse1(key, t);
      ASSERT_TRUE(r.ok()) << key << "=" << t << ": " << r.error().message();
    }
    for (const char* f : {"0", "f", "F", "false", "FALSE", "False"}) {
      auto r = parse1(key, f);
      ASSERT_TRUE(r.ok()) << key << "=" << f << ": " << r.error().message();
    }
    expect_bad(key, "yes");
    expect_bad(key, "on");
    expect_bad(key, "");
  }
  EXPECT_EQ(parse1("dm.use_deferred_removal", "true")->deferred_removal, Setting::kEnabled);
  EXPECT_EQ(parse1("dm.use_deferred_removal", "0")->deferred_removal, Setting::kDisabled);
  EXPECT_EQ(parse1("dm.use_deferred_deletion", "t")->deferred_deletion, Setting::kEnabled);
  EXPECT_FALSE(parse1("dm.blkdiscard", "false")->discard_enabled());
  auto pool_discard = parse_options({{"dm.thinpooldev", "p"}, {"dm.blkdiscard", "true"}});
  ASSERT_TRUE(pool_discard.ok());
  EXPECT_TRUE(pool_discard->discard_enabled()) << "an explicit setting wins over the default";
}

TEST(DmOptions, DeferredDeletionNeedsDeferredRemoval) {
  auto r =
      parse_options({{"dm.use_deferred_deletion", "true"}, {"dm.use_deferred_removal", "false"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(r.error().message().find("dm.use_deferred_removal"), std::string::npos);
  EXPECT_TRUE(
      parse_options({{"dm.use_deferred_deletion", "true"}, {"dm.use_deferred_removal", "true"}})
          .ok());
}

TEST(DmOptions, UnknownAndDockerOnlyKeys) {
  auto unknown = parse1("dm.basesise", "10G");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(unknown.error().message().find("dm.basesise"), std::string::npos);
  EXPECT_NE(unknown.error().message().find("unknown option"), std::string::npos);

  auto docker_only = parse1("dm.directlvm_device", "/dev/xvdf");
  ASSERT_FALSE(docker_only.ok());
  EXPECT_EQ(docker_only.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(docker_only.error().message().find("does not implement"), std::string::npos);
  expect_bad("dm.datadev", "/dev/sdb1");
  expect_bad("dm.override_udev_sync_check", "true");
}

TEST(DmOptions, KeysAreCaseInsensitive) {
  auto r = parse1("DM.BaseSize", "1G");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->base_size, 1ULL << 30);
}

TEST(DmOptions, JoinMountOptions) {
  EXPECT_EQ(join_mount_options("", ""), "");
  EXPECT_EQ(join_mount_options("nouuid", ""), "nouuid");
  EXPECT_EQ(join_mount_options("", "noatime"), "noatime");
  EXPECT_EQ(join_mount_options("nouuid", "noatime"), "nouuid,noatime");
}

}  // namespace
}  // namespace cowlab::devmapper
