// The aufs driver on the host, whose kernel has no aufs: init must refuse with the exact
// reason and selection must move on; everything that needs no mount (Docker's layout, create
// and remove, native diff/changes/apply-diff on the diff dirs, aufs metadata never exported,
// status, stale cleanup) runs on a driver made without the kernel probes.  Mounting is covered
// by the guest suites on an aufs kernel (docs/aufs.md).
#include "aufs/aufs.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cowlab/archive.h"
#include "cowlab/registry.h"
#include "cowlab/sys.h"

namespace cowlab {
namespace {

constexpr const char* kNoAufs = "this kernel has no aufs (not in /proc/filesystems and modprobe aufs failed)";

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/var/tmp/cowlab-aufs-test-XXXXXX";
    char* p = ::mkdtemp(tmpl.data());
    if (p) path_ = p;
  }
  ~TempDir() {
    if (!path_.empty()) (void)sys::remove_all(path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool host_has_aufs() {
  auto r = sys::filesystem_supported("aufs");
  return r.ok() && *r;
}

std::string read_text(const std::string& path) {
  auto r = sys::read_file(path);
  return r.ok() ? *r : "<" + r.error().message() + ">";
}

Result<void> write_text(const std::string& path, const std::string& text) {
  return sys::write_file_atomic(path, text, 0644);
}

mode_t mode_of(const std::string& path) {
  auto st = sys::lstat(path);
  return st.ok() ? (st->st_mode & 07777) : 0;
}

bool present(const std::string& path) {
  auto st = sys::lstat_if_exists(path);
  return st.ok() && st->has_value();
}

// Entry names of a tar stream, via tar(1) on a temp file.
std::vector<std::string> tar_names(const std::string& dir, const std::string& tar) {
  std::string file = dir + "/listing.tar";
  EXPECT_TRUE(sys::write_file_atomic(file, tar, 0600).ok());
  std::string out;
  auto rc = sys::run({"tar", "-tf", file}, &out);
  EXPECT_TRUE(rc.ok() && *rc == 0) << out;
  (void)sys::unlink(file);
  std::vector<std::string> names;
  size_t start = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    std::string n = out.substr(start, end - start);
    while (!n.empty() && n.back() == '/') n.pop_back();
    if (n.rfind("./", 0) == 0) n = n.substr(2);
    if (!n.empty()) names.push_back(n);
    start = end + 1;
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(AufsInit, KernelWithoutAufsIsNotSupportedWithTheReason) {
  if (host_has_aufs()) GTEST_SKIP() << "skipped: this kernel has aufs, so the refusal cannot be observed";
  TempDir root;
  ASSERT_FALSE(root.path().empty());
  DriverConfig cfg{root.path(), root.path() + "/aufs", {}};
  auto d = init_aufs(cfg);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().kind(), ErrorKind::kNotSupported);
  EXPECT_EQ(d.error().message(), kNoAufs);
  EXPECT_FALSE(present(cfg.home)) << "a refused init must not leave a home that pins the driver";
}

TEST(AufsInit, UnknownOptionIsInvalidBeforeAnyProbe) {
  TempDir root;
  DriverConfig cfg{root.path(), root.path() + "/aufs", {{"aufs.xino", "/dev/shm/x"}}};
  auto d = init_aufs(cfg);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(d.error().message().find("aufs.xino"), std::string::npos) << d.error().message();
}

TEST(AufsInit, SelectionMovesOnWithTheReason) {
  if (host_has_aufs()) GTEST_SKIP() << "skipped: this kernel has aufs, so selection would pick it";
  TempDir root;
  SelectOptions o;
  o.root = root.path();
  o.priority = {"aufs", "vfs"};
  std::vector<DriverProbe> tried;
  auto d = select_driver(o, &tried);
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ((*d)->name(), "vfs");
  ASSERT_GE(tried.size(), 2u);
  EXPECT_EQ(tried[0].name, "aufs");
  EXPECT_FALSE(tried[0].usable);
  EXPECT_NE(tried[0].reason.find(kNoAufs), std::string::npos) << tried[0].reason;
  EXPECT_FALSE(present(root.path() + "/aufs"));
  (void)(*d)->cleanup();
}

class AufsUnprobed : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(root_.path().empty());
    home_ = root_.path() + "/aufs";
    AufsProbes probes;
    probes.backing_fs = "extfs";
    probes.dirperm1 = true;
    auto d = init_aufs_unprobed_for_tests(DriverConfig{root_.path(), home_, {}}, probes);
    ASSERT_TRUE(d.ok()) << d.error().message();
    driver_ = std::move(*d);
  }

  // base: a, dir/b.   mid (child of base): deletes a (whiteout), adds c, and carries the
  // metadata aufs leaves in a rw branch.
  void make_base_and_mid() {
    ASSERT_TRUE(driver_->create("base", "", {}).ok());
    ASSERT_TRUE(driver_->create("mid", "base", {}).ok());
    std::string base = home_ + "/diff/base", mid = home_ + "/diff/mid";
    ASSERT_TRUE(write_text(base + "/a", "aaa").ok());
    ASSERT_TRUE(sys::mkdir(base + "/dir", 0755).ok());
    ASSERT_TRUE(write_text(base + "/dir/b", "bbbb").ok());
    ASSERT_TRUE(write_text(mid + "/.wh.a", "").ok());
    ASSERT_TRUE(write_text(mid + "/c", "c").ok());
    ASSERT_TRUE(write_text(mid + "/.wh..wh.aufs", "").ok());
    ASSERT_TRUE(sys::mkdir(mid + "/.wh..wh.plnk", 0700).ok());
    ASSERT_TRUE(write_text(mid + "/.wh..wh.plnk/1234.5678", "plink").ok());
    ASSERT_TRUE(sys::mkdir(mid + "/.wh..wh.orph", 0700).ok());
  }

  TempDir root_;
  std::string home_;
  std::unique_ptr<Driver> driver_;
};

TEST_F(AufsUnprobed, DockerLayout) {
  for (const char* sub : {"layers", "diff", "mnt"}) EXPECT_EQ(mode_of(home_ + "/" + sub), 0710u) << sub;
  EXPECT_EQ(mode_of(home_), 0710u);
  ASSERT_TRUE(driver_->create("base", "", {}).ok());
  ASSERT_TRUE(driver_->create("mid", "base", {}).ok());
  ASSERT_TRUE(driver_->create_rw("top", "mid", {}).ok());
  EXPECT_EQ(read_text(home_ + "/layers/base"), "");
  EXPECT_EQ(read_text(home_ + "/layers/mid"), "base\n");
  EXPECT_EQ(read_text(home_ + "/layers/top"), "mid\nbase\n");  // nearest first
  for (const char* id : {"base", "mid", "top"}) {
    EXPECT_EQ(mode_of(home_ + "/diff/" + id), 0755u) << id;
    EXPECT_EQ(mode_of(home_ + "/mnt/" + id), 0755u) << id;
    EXPECT_TRUE(driver_->exists(id));
  }
  // A layer without ancestors is its diff dir: no mount.
  auto path = driver_->get("base", "");
  ASSERT_TRUE(path.ok()) << path.error().message();
  EXPECT_EQ(*path, home_ + "/diff/base");
  EXPECT_TRUE(driver_->put("base").ok());
  EXPECT_EQ(driver_->whiteout_format(), WhiteoutFormat::kAufs);
  EXPECT_FALSE(driver_->supports_quota());
}

TEST_F(AufsUnprobed, CreateRefusals) {
  CreateOpts sized;
  sized.storage_opt["size"] = "10M";
  auto r = driver_->create_rw("x", "", sized);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(r.error().message().find("--storage-opt is not supported for aufs"), std::string::npos);
  EXPECT_FALSE(driver_->exists("x"));

  r = driver_->create("orphan", "nosuchparent", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kNotFound);
  EXPECT_FALSE(driver_->exists("orphan"));
  EXPECT_FALSE(present(home_ + "/diff/orphan"));

  for (const char* bad : {"layer-removing", "a:b", "a,b", "a=b", ".hidden"}) {
    r = driver_->create(bad, "", {});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid) << bad;
  }
  ASSERT_TRUE(driver_->create("dup", "", {}).ok());
  r = driver_->create("dup", "", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kExists);
}

TEST_F(AufsUnprobed, StatusAndMetadata) {
  ASSERT_TRUE(driver_->create("one", "", {}).ok());
  ASSERT_TRUE(driver_->create("two", "one", {}).ok());
  KeyValues want = {{"Root Dir", home_}, {"Backing Filesystem", "extfs"}, {"Dirs", "2"}, {"Dirperm1 Supported", "true"}};
  EXPECT_EQ(driver_->status(), want);
  auto md = driver_->metadata("two");
  ASSERT_TRUE(md.ok());
  EXPECT_TRUE(md->empty());
  EXPECT_EQ(driver_->metadata("nope").error().kind(), ErrorKind::kNotFound);
}

TEST_F(AufsUnprobed, NativeChangesAndDiffNeverExportAufsMetadata) {
  make_base_and_mid();
  auto ch = driver_->changes("mid", "base");
  ASSERT_TRUE(ch.ok()) << ch.error().message();
  std::vector<Change> want = {{"/a", ChangeKind::kDelete}, {"/c", ChangeKind::kAdd}};
  EXPECT_EQ(*ch, want);

  StringWriter out;
  auto d = driver_->diff("mid", "base", out);
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ(tar_names(root_.path(), out.data()), (std::vector<std::string>{".wh.a", "c"}));

  auto size = driver_->diff_size("mid", "base");
  ASSERT_TRUE(size.ok()) << size.error().message();
  EXPECT_EQ(*size, 1);

  // The base layer against nothing: everything, as Adds.
  StringWriter base_out;
  ASSERT_TRUE(driver_->diff("base", "", base_out).ok());
  EXPECT_EQ(tar_names(root_.path(), base_out.data()), (std::vector<std::string>{"a", "dir", "dir/b"}));
}

TEST_F(AufsUnprobed, NativeApplyDiffKeepsAufsWhiteouts) {
  make_base_and_mid();
  StringWriter out;
  ASSERT_TRUE(driver_->diff("mid", "base", out).ok());
  ASSERT_TRUE(driver_->create("copy", "base", {}).ok());
  StringReader in(out.data());
  auto applied = driver_->apply_diff("copy", "base", in);
  ASSERT_TRUE(applied.ok()) << applied.error().message();
  EXPECT_EQ(*applied, 1);  // one byte of file content ("c")
  EXPECT_TRUE(present(home_ + "/diff/copy/.wh.a"));  // native aufs whiteout, a plain file
  EXPECT_EQ(read_text(home_ + "/diff/copy/c"), "c");
  EXPECT_FALSE(present(home_ + "/.tmp")) << "the scratch dir must not outlive the apply";
  auto ch = driver_->changes("copy", "base");
  ASSERT_TRUE(ch.ok());
  EXPECT_EQ(*ch, (std::vector<Change>{{"/a", ChangeKind::kDelete}, {"/c", ChangeKind::kAdd}}));
}

TEST_F(AufsUnprobed, RemoveLeavesNothing) {
  make_base_and_mid();
  ASSERT_TRUE(driver_->remove("mid").ok());
  EXPECT_FALSE(driver_->exists("mid"));
  for (const char* p : {"/layers/mid", "/diff/mid", "/mnt/mid", "/diff/mid-removing", "/mnt/mid-removing"})
    EXPECT_FALSE(present(home_ + p)) << p;
  auto again = driver_->remove("mid");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(driver_->exists("base"));
}

TEST_F(AufsUnprobed, InitDeletesStaleRemovingDirs) {
  ASSERT_TRUE(driver_->create("keep", "", {}).ok());
  ASSERT_TRUE(sys::mkdir(home_ + "/diff/gone-removing", 0755).ok());
  ASSERT_TRUE(write_text(home_ + "/diff/gone-removing/f", "x").ok());
  ASSERT_TRUE(sys::mkdir(home_ + "/mnt/gone-removing", 0755).ok());
  driver_.reset();
  AufsProbes probes;
  auto d = init_aufs_unprobed_for_tests(DriverConfig{root_.path(), home_, {}}, probes);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(present(home_ + "/diff/gone-removing"));
  EXPECT_FALSE(present(home_ + "/mnt/gone-removing"));
  EXPECT_TRUE((*d)->exists("keep"));
}

// Without an aufs kernel the union mount fails; the failure must not leave a reference behind
// (a second get must try again, not hand out an unmounted directory).
TEST_F(AufsUnprobed, FailedMountLeavesNoReference) {
  if (host_has_aufs()) GTEST_SKIP() << "skipped: this kernel has aufs, so the mount would succeed";
  make_base_and_mid();
  for (int i = 0; i < 2; ++i) {
    auto g = driver_->get("mid", "");
    ASSERT_FALSE(g.ok()) << "mount of aufs cannot succeed on a kernel without aufs";
    EXPECT_NE(g.error().message().find("mount"), std::string::npos) << g.error().message();
  }
  EXPECT_TRUE(driver_->put("mid").ok());
}

}  // namespace
}  // namespace cowlab
