// Backing stores on the host: a store on a shared directory gets a filesystem of its own, so
// writes by anyone else cannot change what a scenario measures as space.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "cowlab/sys.h"
#include "scenario/internal.h"

namespace cowlab::scenario {
namespace {

uint64_t used_bytes(const std::string& path) {
  struct statvfs s {};
  EXPECT_EQ(::statvfs(path.c_str(), &s), 0) << path;
  return static_cast<uint64_t>(s.f_blocks - s.f_bfree) * s.f_frsize;
}

class BackingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/cowlab-backing-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)sys::remove_all(dir_); }
  std::string dir_;
};

TEST_F(BackingTest, SharedDirectoryGetsAFilesystemOfItsOwn) {
  for (const char* driver : {"vfs", "overlay"}) {
    auto b = make_backing(driver, dir_);
    ASSERT_TRUE(b.ok()) << b.error().message();
    ASSERT_TRUE(sys::mkdir_all(b->root, 0700).ok());
    EXPECT_NE(sys::stat(b->root)->st_dev, sys::stat(dir_)->st_dev) << driver;
    // Another writer on the shared filesystem: 32 MiB next to the store.
    uint64_t before = used_bytes(b->root);
    {
      std::ofstream f(dir_ + "/other-writer.bin", std::ios::binary);
      std::string mib(1 << 20, 'x');
      for (int i = 0; i < 32; ++i) f << mib;
    }
    ::sync();
    EXPECT_EQ(used_bytes(b->root), before)
        << driver << ": space of the store moved with someone else's write";
    ::unlink((dir_ + "/other-writer.bin").c_str());
    std::string device = b->loop_device;
    EXPECT_FALSE(device.empty());
    ASSERT_TRUE(teardown_backing(*b).ok());
    EXPECT_FALSE(sys::lstat_if_exists(b->work).value_or(std::nullopt).has_value());
    auto loops = sys::loop_devices();
    ASSERT_TRUE(loops.ok());
    for (const auto& l : *loops)
      EXPECT_NE(l.backing_file.rfind(dir_, 0), 0u) << "loop left behind: " << l.device;
  }
}

TEST_F(BackingTest, AFilesystemGivenWholeIsUsedAsIs) {
  // A tmpfs mounted at the work dir stands for a guest's scratch disk.
  ASSERT_TRUE(sys::mount("tmpfs", dir_, "tmpfs", 0, "size=64m").ok());
  auto b = make_backing("vfs", dir_);
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_TRUE(b->loop_device.empty());
  EXPECT_EQ(b->root.rfind(dir_ + "/", 0), 0u);
  ASSERT_TRUE(sys::mkdir_all(b->root, 0700).ok());
  EXPECT_EQ(sys::stat(b->root)->st_dev, sys::stat(dir_)->st_dev);
  ASSERT_TRUE(teardown_backing(*b).ok());
  ASSERT_TRUE(sys::umount2(dir_, 0).ok());
}

}  // namespace
}  // namespace cowlab::scenario
