// Selection rules (Docker's graphdriver.New) against real roots on the host filesystem:
// btrfs refuses a non-btrfs home, overlay and vfs work on ext4.
#include "cowlab/registry.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <set>

#include "core/tar_test_util.h"
#include "cowlab/fs.h"
#include "cowlab/sys.h"

namespace cowlab {
namespace {

using testing::TempRoot;

void make_non_empty(const std::string& dir) {
  ASSERT_TRUE(sys::mkdir_all(dir + "/x", 0700).ok());
}

TEST(Registry, StorageOptsParse) {
  auto ok = parse_storage_opts({"dm.basesize=20G", "Overlay.Size=1G"});
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->at("dm.basesize"), "20G");
  EXPECT_EQ(ok->at("overlay.size"), "1G");  // keys are case-insensitive, as Docker's
  auto bad = parse_storage_opts({"nokey"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind(), ErrorKind::kUsage);  // a command-line mistake: exit 2
  EXPECT_NE(bad.error().message().find("nokey"), std::string::npos);
  EXPECT_FALSE(parse_storage_opts({"=v"}).ok());
}

TEST(Registry, DefaultPriorityIsTheSeedsLinuxList) {
  EXPECT_EQ(default_priority(),
            (std::vector<std::string>{"aufs", "btrfs", "zfs", "devicemapper", "overlay", "vfs"}));
}

TEST(Registry, AutoSelectionSkipsUnusableDriversWithReasons) {
  TempRoot root;
  SelectOptions o;
  o.root = root.path();
  std::vector<DriverProbe> tried;
  auto d = select_driver(o, &tried);
  ASSERT_TRUE(d.ok()) << d.error().message();
  // On this host's ext4: btrfs refuses the backing fs, overlay is the first usable driver.
  EXPECT_EQ((*d)->name(), "overlay");
  bool saw_btrfs = false;
  for (const auto& p : tried) {
    if (p.name == "btrfs") {
      saw_btrfs = true;
      EXPECT_FALSE(p.usable);
      EXPECT_NE(p.reason.find("btrfs"), std::string::npos) << p.reason;
    }
    if (!p.usable) EXPECT_FALSE(p.reason.empty()) << p.name;
  }
  EXPECT_TRUE(saw_btrfs);
  // The failed btrfs probe left no home behind that would pin it next time.
  EXPECT_FALSE(sys::lstat_if_exists(root.path() + "/btrfs")->has_value());
  (void)(*d)->cleanup();
}

TEST(Registry, PriorityIsOverridable) {
  TempRoot root;
  SelectOptions o;
  o.root = root.path();
  o.priority = {"vfs", "overlay"};
  auto d = select_driver(o);
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ((*d)->name(), "vfs");
}

TEST(Registry, NonEmptyHomePinsThatDriverAndItsFailureIsFatal) {
  TempRoot root;
  make_non_empty(root.path() + "/btrfs");
  SelectOptions o;
  o.root = root.path();
  auto d = select_driver(o);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message().find("previously used driver btrfs"), std::string::npos)
      << d.error().message();
}

TEST(Registry, TwoUsedHomesAreAnErrorNamingBoth) {
  TempRoot root;
  make_non_empty(root.path() + "/btrfs");
  make_non_empty(root.path() + "/overlay");
  SelectOptions o;
  o.root = root.path();
  auto d = select_driver(o);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message().find(root.path() + "/btrfs"), std::string::npos)
      << d.error().message();
  EXPECT_NE(d.error().message().find(root.path() + "/overlay"), std::string::npos)
      << d.error().message();
}

TEST(Registry, VfsHomeNeverPins) {
  TempRoot root;
  make_non_empty(root.path() + "/vfs");
  SelectOptions o;
  o.root = root.path();
  auto d = select_driver(o);
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ((*d)->name(), "overlay");
}

TEST(Registry, ExplicitDriverHasNoFallback) {
  TempRoot root;
  SelectOptions o;
  o.root = root.path();
  o.driver = "btrfs";
  auto d = select_driver(o);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().kind(), ErrorKind::kNotSupported);
  o.driver = "nosuchdriver";
  auto u = select_driver(o);
  ASSERT_FALSE(u.ok());
  EXPECT_EQ(u.error().kind(), ErrorKind::kUsage);
  EXPECT_NE(
      u.error().message().find("valid: aufs, btrfs, devicemapper, overlay (or overlay2), vfs, zfs"),
      std::string::npos)
      << u.error().message();
}

TEST(Registry, Overlay2IsDockersNameForOverlay) {
  ASSERT_NE(find_driver("overlay2"), nullptr);
  EXPECT_STREQ(find_driver("overlay2")->name, "overlay");
  auto l = parse_driver_list("vfs, overlay2,overlay");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(*l, (std::vector<std::string>{"vfs", "overlay"}));
  auto bad = parse_driver_list("vfs,ovrlay");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind(), ErrorKind::kUsage);
  EXPECT_NE(bad.error().message().find("\"ovrlay\""), std::string::npos);
  EXPECT_EQ(parse_driver_list("all")->size(), driver_table().size());
  EXPECT_FALSE(parse_driver_list(",").ok());
}

TEST(Registry, OptionWithUnknownPrefixIsRefused) {
  TempRoot root;
  SelectOptions o;
  o.root = root.path();
  o.options = {{"bogus.key", "1"}};
  auto d = select_driver(o);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message().find("bogus.key"), std::string::npos);
}

TEST(Registry, ProbeAllReportsEveryDriverAndLeavesNoHomes) {
  TempRoot root;
  SelectOptions o;
  o.root = root.path();
  auto probes = probe_drivers(o);
  std::set<std::string> names;
  for (const auto& p : probes) {
    names.insert(p.name);
    if (!p.usable) EXPECT_FALSE(p.reason.empty()) << p.name;
  }
  for (const char* n : {"aufs", "btrfs", "zfs", "devicemapper", "overlay", "vfs"})
    EXPECT_TRUE(names.count(n)) << n;
  auto left = sys::read_dir(root.path());
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty());
}

// With a probe directory, a driver without a home is tried there: the probe makes nothing in
// the store's root, so it cannot make (and then remove) a home that a concurrent probe or
// reader finds and uses.  Watched with inotify: before, the probe created <root>/overlay,
// <root>/vfs, ... in the root and removed them again.
TEST(Registry, ProbeWithAProbeDirMakesNoHomeInTheRoot) {
  TempRoot root;
  const std::string private_dir = root.path() + "/tmp/probe-1-test";
  ASSERT_TRUE(sys::mkdir_all(private_dir, 0700).ok());
  int in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(in, 0);
  ASSERT_GE(::inotify_add_watch(in, root.path().c_str(), IN_CREATE | IN_MOVED_TO), 0);
  SelectOptions o;
  o.root = root.path();
  o.access = DriverAccess::kShared;
  o.probe_dir = private_dir;
  auto probes = probe_drivers(o);
  std::vector<std::string> made;
  alignas(inotify_event) char buf[4096];
  for (ssize_t n; (n = ::read(in, buf, sizeof buf)) > 0;)
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      if (ev->len > 0) made.push_back(ev->name);
      p += sizeof(inotify_event) + ev->len;
    }
  ::close(in);
  EXPECT_TRUE(made.empty()) << "the probe made in the root: " << ::testing::PrintToString(made);
  std::set<std::string> usable;
  for (const auto& p : probes)
    if (p.usable) usable.insert(p.name);
  EXPECT_TRUE(usable.count("vfs") && usable.count("overlay"));  // ext4 host
  auto left = sys::read_dir(private_dir);                       // the probe's homes go again
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty());
}

TEST(Fs, BackingFsNamesAndSizes) {
  EXPECT_EQ(fs_name_for_magic(kMagicBtrfs), "btrfs");
  EXPECT_EQ(fs_name_for_magic(kMagicExt), "extfs");
  EXPECT_EQ(fs_name_for_magic(kMagicOverlay), "overlayfs");
  EXPECT_EQ(fs_name_for_magic(0x12345678), "<unknown 0x12345678>");
  auto n = backing_fs_name("/proc/self/nonexistent/deeper");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, "proc");
  EXPECT_EQ(*parse_size("10G"), 10ULL << 30);
  EXPECT_EQ(*parse_size("512m"), 512ULL << 20);
  EXPECT_EQ(*parse_size("1.5k"), 1536ULL);
  EXPECT_EQ(*parse_size("4096"), 4096ULL);
  EXPECT_FALSE(parse_size("").ok());
  EXPECT_FALSE(parse_size("G").ok());
  EXPECT_FALSE(parse_size("12Q").ok());
  EXPECT_EQ(human_size(10737418240ULL), "10.74 GB");
}

}  // namespace
}  // namespace cowlab

namespace cowlab {
namespace {
// Issue 11 item 8: an option of another driver was silently ignored.
TEST(Registry, OptionOfAnotherDriverIsRefusedNamingBoth) {
  TempRoot root;
  SelectOptions o;
  o.root = root.path();
  o.driver = "vfs";
  o.options = {{"dm.basesize", "10G"}};
  auto d = select_driver(o);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message().find("dm.basesize"), std::string::npos) << d.error().message();
  EXPECT_NE(d.error().message().find("vfs"), std::string::npos) << d.error().message();
}
}  // namespace
}  // namespace cowlab
