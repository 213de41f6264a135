// Backing stores on the host: a store on a shared directory gets a filesystem of its own, so
// writes by anyone else cannot change what a scenario measures as space.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

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

void write_mib(const std::string& path, int mib, char c) {
  std::ofstream f(path, std::ios::binary);
  std::string chunk(1 << 20, c);
  for (int i = 0; i < mib; ++i) f << chunk;
}

// Reads the whole file (through whatever mount `path` is on).
void read_all(const std::string& path) {
  auto fd = sys::open(path, O_RDONLY);
  ASSERT_TRUE(fd.ok()) << fd.error().message();
  std::vector<char> buf(1 << 16);
  while (*sys::read(fd->get(), buf.data(), buf.size()) > 0) {
  }
}

// Writes the file back and drops its clean pages: it is then not cached at all.
void evict(const std::string& path) {
  auto fd = sys::open(path, O_RDONLY);
  ASSERT_TRUE(fd.ok()) << fd.error().message();
  ASSERT_EQ(::fdatasync(fd->get()), 0);
  ASSERT_EQ(::posix_fadvise(fd->get(), 0, 0, POSIX_FADV_DONTNEED), 0);
}

uint64_t cached(const std::string& root) {
  auto r = page_cache_bytes(root);
  EXPECT_TRUE(r.ok()) << r.error().message();
  return r.ok() ? *r : 0;
}

constexpr uint64_t kMiB = 1 << 20;

// page_cache measures the store's files: each cached inode once, nothing outside the store.
// Measured as the machine-wide Cached: of /proc/meminfo (before), the 16 MiB written outside
// the store below counted too, and a CI run saw overlay's cache_4 at 100 KiB instead of 0.
TEST_F(BackingTest, PageCacheCountsTheStoresFilesOnce) {
  std::string root = dir_ + "/root";
  ASSERT_TRUE(sys::mkdir_all(root + "/layer", 0700).ok());
  write_mib(root + "/layer/a", 8, 'a');
  ASSERT_EQ(::link((root + "/layer/a").c_str(), (root + "/layer/a-link").c_str()), 0);
  evict(root + "/layer/a");
  uint64_t empty = cached(root);
  EXPECT_LT(empty, kMiB);

  read_all(root + "/layer/a-link");
  uint64_t once = cached(root);
  EXPECT_GE(once - empty, 8 * kMiB - 64 * 1024) << "the file read is counted";
  EXPECT_LE(once - empty, 8 * kMiB) << "a hard link is the same inode: counted once";

  // Someone else's I/O on the machine.
  write_mib(dir_ + "/other-writer.bin", 16, 'o');
  read_all(dir_ + "/other-writer.bin");
  EXPECT_EQ(cached(root), once) << "the page cache of a file outside the store was counted";
}

// A union mount inside the store has no pages of its own: a file read through it caches the
// branch's file, which is counted (once), not the union's view of it as well.
TEST_F(BackingTest, PageCacheCountsAFileReadThroughOverlayOnce) {
  std::string root = dir_ + "/root";
  for (const char* d : {"/lower", "/upper", "/work", "/merged"})
    ASSERT_TRUE(sys::mkdir_all(root + d, 0700).ok());
  write_mib(root + "/lower/lib", 4, 'l');
  evict(root + "/lower/lib");
  std::string opts =
      "lowerdir=" + root + "/lower,upperdir=" + root + "/upper,workdir=" + root + "/work";
  ASSERT_TRUE(sys::mount("overlay", root + "/merged", "overlay", 0, opts).ok());
  uint64_t before = cached(root);
  read_all(root + "/merged/lib");
  uint64_t after = cached(root);
  ASSERT_TRUE(sys::umount2(root + "/merged", 0).ok());
  EXPECT_GE(after - before, 4 * kMiB - 64 * 1024);
  EXPECT_LE(after - before, 4 * kMiB) << "counted through the overlay mount as well";
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
