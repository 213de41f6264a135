// The btrfs driver on a loop-mounted btrfs image: snapshot semantics, nested-subvolume removal
// (moby#9939), qgroups removed with their layer (moby#29325), quota enforcement, options, and
// refusal of a non-btrfs home.  Every test runs on its own image; the fixture unmounts and
// detaches it even when the test fails, and fails the test if a mount or loop device remains.
#include "btrfs/btrfs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <regex>
#include <string>
#include <vector>

#include "conformance/backing_store.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"

namespace cowlab {
namespace {

using testing::BackingStore;

constexpr uint64_t kMiB = 1024 * 1024;

// Writes `bytes` to `path`; returns 0 or the errno of the first failing write/fsync/close.
int write_bytes(const std::string& path, uint64_t bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  std::string chunk(kMiB, '\x5a');
  int err = 0;
  for (uint64_t done = 0; done < bytes && err == 0;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), bytes - done));
    ssize_t w = ::write(fd, chunk.data(), n);
    if (w < 0)
      err = errno;
    else
      done += static_cast<uint64_t>(w);
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

std::string read_text(const std::string& path) {
  auto r = sys::read_file(path);
  return r.ok() ? *r : "<" + r.error().message() + ">";
}

// Initialises a driver into `var` or fails the test.
#define INIT_DRIVER(var, ...)            \
  Driver* var##_ptr = init(__VA_ARGS__); \
  ASSERT_NE(var##_ptr, nullptr);         \
  Driver& var = *var##_ptr

class BtrfsDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = testing::make_backing_store("btrfs-loop");
    ASSERT_TRUE(store.ok()) << store.error().message();
    store_ = std::move(*store);
    auto root = store_->set_up();
    if (!root.ok() && root.error().kind() == ErrorKind::kNotSupported)
      GTEST_SKIP() << "no loop-mounted btrfs on this machine: " << root.error().message();
    ASSERT_TRUE(root.ok()) << root.error().message();
    root_ = *root;
    home_ = root_ + "/btrfs";
  }

  void TearDown() override {
    driver_.reset();
    if (!store_) return;
    std::string base = store_->base_dir();
    auto down = store_->tear_down();
    EXPECT_TRUE(down.ok()) << down.error().message();
    // Nothing of the store may remain: no mount below it, no loop device bound to its image
    // (checked by path: a freed loop device number may be reused by another process at once).
    if (!base.empty()) {
      EXPECT_EQ(testing::mounts_under(base), std::vector<std::string>{});
      EXPECT_EQ(testing::loop_devices_backed_under(base), std::vector<std::string>{});
    }
  }

  // A new driver on the store (replacing the previous one); nullptr after a failed init.
  Driver* init(std::map<std::string, std::string> options = {}) {
    driver_.reset();
    auto d = init_btrfs(DriverConfig{root_, home_, std::move(options)});
    EXPECT_TRUE(d.ok()) << d.error().message();
    if (d.ok()) driver_ = std::move(*d);
    return driver_.get();
  }
  std::string layer_dir(const std::string& id) const { return home_ + "/subvolumes/" + id; }

  std::unique_ptr<BackingStore> store_;
  std::unique_ptr<Driver> driver_;
  std::string root_, home_;
};

TEST(BtrfsInit, RefusesANonBtrfsHomeWithNotSupported) {
  auto store = testing::make_backing_store("tmpdir");
  ASSERT_TRUE(store.ok());
  auto root = (*store)->set_up();
  ASSERT_TRUE(root.ok()) << root.error().message();
  auto fs = sys::statfs(*root);
  ASSERT_TRUE(fs.ok());
  if (static_cast<uint32_t>(fs->f_type) == 0x9123683EU)
    GTEST_SKIP() << "the temp dir " << *root
                 << " is itself on btrfs; set COWLAB_TEST_TMPDIR elsewhere";
  auto d = init_btrfs(DriverConfig{*root, *root + "/btrfs", {}});
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().kind(), ErrorKind::kNotSupported);
  EXPECT_NE(d.error().message().find("backing filesystem is "), std::string::npos)
      << d.error().message();
  EXPECT_NE(d.error().message().find("btrfs driver needs btrfs"), std::string::npos)
      << d.error().message();
  // Nothing was created that would pin the driver on the next selection.
  EXPECT_FALSE(sys::lstat_if_exists(*root + "/btrfs")->has_value());
  EXPECT_TRUE((*store)->tear_down().ok());
}

TEST_F(BtrfsDriverTest, LayoutAndSnapshotSemantics) {
  INIT_DRIVER(d);
  ASSERT_TRUE(d.create("base", "", {}).ok());
  auto base = d.get("base", "");
  ASSERT_TRUE(base.ok()) << base.error().message();
  EXPECT_EQ(*base, layer_dir("base"));
  ASSERT_TRUE(sys::write_file_atomic(*base + "/shared", "from base").ok());

  auto child_created = d.create_rw("child", "base", {});
  ASSERT_TRUE(child_created.ok()) << child_created.error().message();
  auto child = d.get("child", "");
  ASSERT_TRUE(child.ok());
  // Both are subvolumes (the root directory of a subvolume has inode 256).
  for (const auto& dir : {*base, *child}) {
    EXPECT_TRUE(*sys::btrfs_is_subvolume(dir)) << dir;
    EXPECT_EQ(sys::stat(dir)->st_ino, 256u) << dir;
  }
  EXPECT_NE(*sys::btrfs_subvolume_id(*base), *sys::btrfs_subvolume_id(*child));
  EXPECT_EQ(read_text(*child + "/shared"), "from base");

  // Copy-on-write both ways: writes after the snapshot stay in their own layer.
  ASSERT_TRUE(sys::write_file_atomic(*child + "/shared", "from child").ok());
  ASSERT_TRUE(sys::write_file_atomic(*base + "/later", "base only").ok());
  EXPECT_EQ(read_text(*base + "/shared"), "from base");
  EXPECT_EQ(read_text(*child + "/shared"), "from child");
  EXPECT_FALSE(sys::lstat_if_exists(*child + "/later")->has_value());

  EXPECT_TRUE(d.put("child").ok());
  EXPECT_TRUE(d.put("base").ok());
  EXPECT_TRUE(d.exists("base"));
  EXPECT_FALSE(d.exists("nope"));
  // No quota was asked for: no size record.
  EXPECT_FALSE(sys::lstat_if_exists(home_ + "/quotas/child")->has_value());

  EXPECT_TRUE(d.remove("child").ok());
  EXPECT_TRUE(d.remove("base").ok());
  EXPECT_FALSE(d.exists("base"));
  EXPECT_TRUE(sys::read_dir(home_ + "/subvolumes")->empty());
}

TEST_F(BtrfsDriverTest, ErrorsNameTheProblem) {
  INIT_DRIVER(d);
  ASSERT_TRUE(d.create("base", "", {}).ok());
  auto again = d.create("base", "", {});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind(), ErrorKind::kExists);
  auto orphan = d.create("orphan", "missing-parent", {});
  ASSERT_FALSE(orphan.ok());
  EXPECT_EQ(orphan.error().kind(), ErrorKind::kNotFound);
  EXPECT_NE(orphan.error().message().find("missing-parent"), std::string::npos);
  EXPECT_FALSE(d.exists("orphan"));
  auto gone = d.remove("missing");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().kind(), ErrorKind::kNotFound);
  EXPECT_FALSE(d.get("missing", "").ok());
}

TEST_F(BtrfsDriverTest, RemoveDeletesNestedSubvolumes) {
  // moby#9939: `btrfs subvolume create /test` inside a container made its removal fail with
  // "directory not empty"; nested subvolumes must go first, deepest first.
  INIT_DRIVER(d);
  ASSERT_TRUE(d.create("base", "", {}).ok());
  ASSERT_TRUE(d.create_rw("container", "base", {}).ok());
  std::string dir = *d.get("container", "");
  ASSERT_TRUE(sys::btrfs_create_subvolume(dir + "/nested").ok());
  ASSERT_TRUE(sys::mkdir(dir + "/nested/deeper", 0755).ok());
  ASSERT_TRUE(sys::btrfs_create_subvolume(dir + "/nested/deeper/inner").ok());
  ASSERT_TRUE(sys::write_file_atomic(dir + "/nested/deeper/inner/data", "x").ok());
  auto nested = sys::btrfs_nested_subvolumes(dir);
  ASSERT_TRUE(nested.ok()) << nested.error().message();
  ASSERT_EQ(nested->size(), 2u);
  EXPECT_EQ((*nested)[0].path, "nested/deeper/inner");  // post-order: deepest first
  ASSERT_TRUE(d.put("container").ok());

  auto removed = d.remove("container");
  ASSERT_TRUE(removed.ok()) << removed.error().message();
  EXPECT_FALSE(d.exists("container"));
  // No subvolume of the filesystem is left but the base layer.
  auto all = sys::btrfs_nested_subvolumes(root_);
  ASSERT_TRUE(all.ok()) << all.error().message();
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].path, "btrfs/subvolumes/base");
}

TEST_F(BtrfsDriverTest, QgroupsAreRemovedWithTheLayer) {
  // moby#29325: qgroups leaked with every removed layer.  The layer's and its nested
  // subvolumes' qgroups must be gone when remove() returns.
  INIT_DRIVER(d);
  ASSERT_TRUE(d.create("base", "", {}).ok());
  CreateOpts opts;
  opts.storage_opt["size"] = "50M";
  auto made = d.create_rw("sized", "base", opts);
  ASSERT_TRUE(made.ok()) << made.error().message();
  EXPECT_TRUE(*sys::btrfs_quota_enabled(root_));
  EXPECT_EQ(read_text(home_ + "/quotas/sized"), std::to_string(50 * kMiB));
  std::string dir = *d.get("sized", "");
  uint64_t id = *sys::btrfs_subvolume_id(dir);
  ASSERT_TRUE(sys::btrfs_create_subvolume(dir + "/nested").ok());
  uint64_t nested_id = *sys::btrfs_subvolume_id(dir + "/nested");
  ASSERT_TRUE(*sys::btrfs_qgroup_exists(root_, id));
  ASSERT_TRUE(*sys::btrfs_qgroup_exists(root_, nested_id));
  uint64_t base_id = *sys::btrfs_subvolume_id(layer_dir("base"));
  ASSERT_TRUE(d.put("sized").ok());

  auto removed = d.remove("sized");
  ASSERT_TRUE(removed.ok()) << removed.error().message();
  EXPECT_FALSE(*sys::btrfs_qgroup_exists(root_, id)) << "qgroup 0/" << id << " leaked";
  EXPECT_FALSE(*sys::btrfs_qgroup_exists(root_, nested_id))
      << "qgroup 0/" << nested_id << " leaked";
  EXPECT_FALSE(sys::lstat_if_exists(home_ + "/quotas/sized")->has_value());

  // A layer made without a size on a quota-enabled filesystem also has a qgroup (the kernel
  // makes one per subvolume); it goes too.
  ASSERT_TRUE(*sys::btrfs_qgroup_exists(root_, base_id));
  ASSERT_TRUE(d.remove("base").ok());
  EXPECT_FALSE(*sys::btrfs_qgroup_exists(root_, base_id)) << "qgroup 0/" << base_id << " leaked";
}

TEST_F(BtrfsDriverTest, SizeIsEnforcedWithEdquot) {
  INIT_DRIVER(d);
  ASSERT_TRUE(d.create("base", "", {}).ok());
  CreateOpts opts;
  opts.storage_opt["size"] = "50M";
  ASSERT_TRUE(d.create_rw("limited", "base", opts).ok());
  std::string dir = *d.get("limited", "");
  EXPECT_EQ(write_bytes(dir + "/small", 25 * kMiB), 0);
  EXPECT_EQ(write_bytes(dir + "/bigfile", 50 * kMiB), EDQUOT);
  ASSERT_TRUE(d.put("limited").ok());
  // Another layer without a size is not limited by it.
  ASSERT_TRUE(d.create_rw("free", "base", {}).ok());
  EXPECT_EQ(write_bytes(*d.get("free", "") + "/bigfile", 60 * kMiB), 0);
  ASSERT_TRUE(d.put("free").ok());
}

TEST_F(BtrfsDriverTest, GetReappliesTheLimit) {
  // With quota turned off (Docker's cleanup does that) the limit is gone; get() turns quota
  // back on and re-applies the size recorded in quotas/<id>.
  INIT_DRIVER(d);
  ASSERT_TRUE(d.create("base", "", {}).ok());
  CreateOpts opts;
  opts.storage_opt["size"] = "30M";
  ASSERT_TRUE(d.create_rw("limited", "base", opts).ok());
  ASSERT_TRUE(sys::btrfs_quota_ctl(root_, sys::BtrfsQuotaCmd::kDisable).ok());
  ASSERT_FALSE(*sys::btrfs_quota_enabled(root_));

  INIT_DRIVER(fresh);  // a new process would start like this
  auto dir = fresh.get("limited", "");
  ASSERT_TRUE(dir.ok()) << dir.error().message();
  EXPECT_TRUE(*sys::btrfs_quota_enabled(root_));
  EXPECT_EQ(write_bytes(*dir + "/bigfile", 40 * kMiB), EDQUOT);
  ASSERT_TRUE(fresh.put("limited").ok());
}

TEST_F(BtrfsDriverTest, SizeAndOptionValidation) {
  {
    INIT_DRIVER(d);
    ASSERT_TRUE(d.create("base", "", {}).ok());
    CreateOpts zero;
    zero.storage_opt["size"] = "0";
    auto r = d.create_rw("zero", "base", zero);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid);
    EXPECT_NE(r.error().message().find("invalid storage size"), std::string::npos)
        << r.error().message();
    EXPECT_FALSE(d.exists("zero"));
    CreateOpts unknown;
    unknown.storage_opt["inodes"] = "100";
    auto u = d.create_rw("unknown", "base", unknown);
    ASSERT_FALSE(u.ok());
    EXPECT_NE(u.error().message().find("unknown option inodes"), std::string::npos)
        << u.error().message();
    EXPECT_FALSE(d.exists("unknown"));
    EXPECT_FALSE(*sys::btrfs_quota_enabled(root_)) << "no size was accepted, quota must stay off";
  }
  for (const auto& [key, value, expect] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"btrfs.frobnicate", "1", "unknown option btrfs.frobnicate"},
           {"btrfs.mountopt", "nodatacow", "does not support mount options"},
           {"btrfs.min_space", "lots", "invalid size"},
       }) {
    auto r = init_btrfs(DriverConfig{root_, home_, {{key, value}}});
    ASSERT_FALSE(r.ok()) << key;
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid) << key;
    EXPECT_NE(r.error().message().find(expect), std::string::npos) << r.error().message();
  }
  auto small_default =
      init_btrfs(DriverConfig{root_, home_, {{"btrfs.min_space", "100M"}, {"btrfs.size", "50M"}}});
  ASSERT_FALSE(small_default.ok());
  EXPECT_NE(small_default.error().message().find("cannot be less than"), std::string::npos);

  // btrfs.min_space turns quota on at init and refuses smaller layers.
  INIT_DRIVER(d, {{"btrfs.min_space", "100M"}});
  EXPECT_TRUE(*sys::btrfs_quota_enabled(root_));
  CreateOpts small;
  small.storage_opt["size"] = "50M";
  auto r = d.create_rw("small", "base", small);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("cannot be less than"), std::string::npos)
      << r.error().message();
  EXPECT_FALSE(d.exists("small"));
  CreateOpts enough;
  enough.storage_opt["size"] = "100M";
  EXPECT_TRUE(d.create_rw("enough", "base", enough).ok());
}

TEST_F(BtrfsDriverTest, DefaultSizeAppliesToReadWriteLayersOnly) {
  INIT_DRIVER(d, {{"btrfs.size", "40M"}});
  ASSERT_TRUE(d.create("image", "", {}).ok());
  ASSERT_TRUE(d.create_rw("container", "image", {}).ok());
  EXPECT_FALSE(sys::lstat_if_exists(home_ + "/quotas/image")->has_value());
  EXPECT_EQ(read_text(home_ + "/quotas/container"), std::to_string(40 * kMiB));
  EXPECT_EQ(write_bytes(*d.get("container", "") + "/bigfile", 45 * kMiB), EDQUOT);
  ASSERT_TRUE(d.put("container").ok());
}

TEST_F(BtrfsDriverTest, StatusReportsBuildAndLibraryVersions) {
  INIT_DRIVER(d);
  KeyValues s = d.status();
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].first, "Build Version");
  EXPECT_EQ(s[1].first, "Library Version");
  std::string tools;
  auto rc = sys::run({"btrfs", "--version"}, &tools);
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(tools.substr(0, tools.find('\n')), s[0].second);
  EXPECT_TRUE(std::regex_match(s[0].second, std::regex("btrfs-progs v[0-9][0-9.]*.*")))
      << s[0].second;
  EXPECT_TRUE(std::regex_match(s[1].second, std::regex("[0-9]+\\.[0-9]+\\.[0-9]+"))) << s[1].second;
  EXPECT_EQ(d.name(), "btrfs");
  EXPECT_EQ(d.home(), home_);
  EXPECT_TRUE(d.supports_quota());
  EXPECT_EQ(d.whiteout_format(), WhiteoutFormat::kDeleteInPlace);
  ASSERT_TRUE(d.create("l", "", {}).ok());
  auto md = d.metadata("l");
  ASSERT_TRUE(md.ok());
  EXPECT_TRUE(md->empty());
  EXPECT_FALSE(d.metadata("missing").ok());
  EXPECT_TRUE(d.cleanup().ok());
}

TEST(BtrfsLoopStore, TearDownLeavesNoMountAndNoLoopDevice) {
  // The fixture itself: after tear_down the image is unmounted and its loop device unbound, and
  // a mount left below the root is detached and reported.
  auto store = testing::make_backing_store("btrfs-loop");
  ASSERT_TRUE(store.ok());
  auto root = (*store)->set_up();
  if (!root.ok() && root.error().kind() == ErrorKind::kNotSupported)
    GTEST_SKIP() << "no loop-mounted btrfs on this machine: " << root.error().message();
  ASSERT_TRUE(root.ok()) << root.error().message();
  std::string device = (*store)->loop_device();
  std::string base = (*store)->base_dir();
  ASSERT_FALSE(device.empty());
  EXPECT_EQ(testing::loop_devices_backed_under(base), std::vector<std::string>{device});
  EXPECT_EQ(testing::mounts_under(*root), std::vector<std::string>{*root});
  ASSERT_TRUE(sys::mkdir(*root + "/leak", 0755).ok());
  ASSERT_TRUE(sys::mount("tmpfs", *root + "/leak", "tmpfs", 0, "size=1m").ok());

  auto down = (*store)->tear_down();
  ASSERT_FALSE(down.ok()) << "a leaked mount must be reported";
  EXPECT_NE(down.error().message().find(*root + "/leak"), std::string::npos)
      << down.error().message();
  EXPECT_TRUE(testing::mounts_under(*root).empty());
  EXPECT_EQ(testing::loop_devices_backed_under(base), std::vector<std::string>{});
  EXPECT_FALSE(sys::lstat_if_exists(base)->has_value());
}

}  // namespace
}  // namespace cowlab
