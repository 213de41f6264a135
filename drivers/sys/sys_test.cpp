#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "cowlab/sys.h"

namespace cowlab {
namespace {

// A mountinfo with what the old hand parser got wrong or never saw: optional fields, a mount
// point and a source with escaped blanks, superblock options.
TEST(SysMountinfo, ParsesWithLibmount) {
  char path[] = "/tmp/cowlab-mountinfo-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream f(path);
    f << "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
         "99 22 254:1 /sub /mnt/with\\040space rw,relatime shared:40 master:1 - ext4 "
         "/dev/my\\040disk rw,errors=remount-ro\n"
         "100 22 0:55 / /var/lib/cowlab/overlay/x/merged rw - overlay overlay "
         "rw,lowerdir=/a:/b,upperdir=/u,workdir=/w\n";
  }
  auto mi = sys::mountinfo(path);
  unlink(path);
  ASSERT_TRUE(mi.ok()) << mi.error().message();
  ASSERT_EQ(mi->size(), 3u);
  const auto& m = (*mi)[1];
  EXPECT_EQ(m.mount_point, "/mnt/with space");
  EXPECT_EQ(m.source, "/dev/my disk");
  EXPECT_EQ(m.fstype, "ext4");
  EXPECT_EQ(m.options, "rw,relatime");
  EXPECT_EQ(m.super_options, "rw,errors=remount-ro");
  EXPECT_EQ(m.major, 254u);
  EXPECT_EQ(m.minor, 1u);
  EXPECT_EQ((*mi)[2].super_options, "rw,lowerdir=/a:/b,upperdir=/u,workdir=/w");
}

TEST(SysMountinfo, MissingFileNamesIt) {
  auto mi = sys::mountinfo("/nonexistent/mountinfo");
  ASSERT_FALSE(mi.ok());
  EXPECT_NE(mi.error().message().find("/nonexistent/mountinfo"), std::string::npos);
}

TEST(SysMountinfo, ThisProcessSeesItsRoot) {
  auto mi = sys::mountinfo();
  ASSERT_TRUE(mi.ok()) << mi.error().message();
  bool root = false;
  for (const auto& m : *mi) root |= m.mount_point == "/";
  EXPECT_TRUE(root);
}

}  // namespace
}  // namespace cowlab
