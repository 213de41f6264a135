// ReaderMountPoints on the host (needs root for the mounts; the zfs and devicemapper guest
// tests use it through their drivers).
#include "core/reader_mounts.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "conformance/backing_store.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"

namespace cowlab {
namespace {

class ReaderMounts : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "skipped: mounting needs root";
    char t[] = "/var/tmp/cowlab-reader-mounts-XXXXXX";
    ASSERT_NE(::mkdtemp(t), nullptr);
    root_ = t;
    ASSERT_TRUE(sys::mkdir(root_ + "/mnt", 0700).ok());
  }
  void TearDown() override {
    if (root_.empty()) return;
    for (const auto& m : testing::mounts_under(root_)) (void)sys::umount2(m, MNT_DETACH);
    (void)sys::remove_all(root_);
  }
  std::string root_;
};

TEST_F(ReaderMounts, EachCallMakesADirectoryOfItsOwnThatTheWritersSweepRemoves) {
  ReaderMountPoints points(root_ + "/readers", root_ + "/mnt");
  auto a = points.make("l");
  auto b = points.make("l");
  ASSERT_TRUE(a.ok()) << a.error().message();
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_NE(*a, *b);
  EXPECT_EQ(a->rfind(root_ + "/readers/l." + std::to_string(::getpid()) + ".", 0), 0u) << *a;
  // A killed reader's mount (a tmpfs stands in for the layer), and an empty leftover.
  ASSERT_TRUE(sys::mount("layer", *a, "tmpfs", 0, "size=1m").ok());
  auto swept = sweep_reader_mount_points(root_ + "/readers");
  ASSERT_TRUE(swept.ok()) << swept.error().message();
  EXPECT_EQ(*swept, 2u);
  EXPECT_EQ(testing::mounts_under(root_), std::vector<std::string>{});
  EXPECT_EQ(sys::read_dir(root_ + "/readers")->size(), 0u);
  auto none = sweep_reader_mount_points(root_ + "/absent");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0u);
}

// On a read-only store the reader writes nothing: its mount point is on a tmpfs over the
// hidden directory, in a private mount namespace that nobody else sees.
TEST_F(ReaderMounts, AReaderOfAReadOnlyStoreMountsPrivatelyAndWritesNothing) {
  ASSERT_TRUE(sys::mount(root_, root_, "", MS_BIND, "").ok());
  ASSERT_TRUE(sys::mount("", root_, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "").ok());
  auto child = sys::fork_child([&](int out_fd) -> int {
    auto fail = [&](const std::string& why) {
      (void)!::write(out_fd, why.data(), why.size());
      return 1;
    };
    ReaderMountPoints points(root_ + "/readers", root_ + "/mnt");
    auto a = points.make("l");
    if (!a.ok()) return fail("make: " + a.error().message());
    if (a->rfind(root_ + "/mnt/l.", 0) != 0) return fail("not on the hidden dir: " + *a);
    auto b = points.make("m");
    if (!b.ok()) return fail("make again: " + b.error().message());
    if (auto m = sys::mount("layer", *a, "tmpfs", 0, "size=1m"); !m.ok())
      return fail("mount on it: " + m.error().message());
    return 0;  // ends with its mounts still there: the namespace goes with it
  });
  ASSERT_TRUE(child.ok()) << child.error().message();
  std::string output;
  auto rc = sys::wait_child(*child, 60000, &output);
  ASSERT_TRUE(rc.ok()) << rc.error().message();
  EXPECT_EQ(*rc, std::optional<int>(0)) << output;
  EXPECT_EQ(testing::mounts_under(root_), std::vector<std::string>{root_})
      << "a reader's mount is seen outside its namespace";
  ASSERT_TRUE(sys::umount2(root_, MNT_DETACH).ok());
  EXPECT_FALSE(sys::lstat_if_exists(root_ + "/readers")->has_value());
  EXPECT_EQ(sys::read_dir(root_ + "/mnt")->size(), 0u) << "the reader wrote in the store";
}

}  // namespace
}  // namespace cowlab
