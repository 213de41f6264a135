// The vfs driver: full copies that preserve every kind of entry and its metadata (Docker's
// copy tests: TestCopyDir, TestCopyHardlink, plus owners, devices, xattrs incl.
// security.capability), reflinked data on a loop-mounted btrfs, options and errors.  Each test
// runs on its own backing store; the fixture fails a test that leaves a mount or loop device.
#include "vfs/vfs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "conformance/backing_store.h"
#include "cowlab/fs.h"
#include "cowlab/sys.h"

namespace cowlab {
namespace {

using testing::BackingStore;

void write_text(const std::string& path, const std::string& content, mode_t mode = 0644) {
  auto fd = sys::open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  ASSERT_TRUE(fd.ok()) << fd.error().message();
  ASSERT_TRUE(sys::write_all(fd->get(), content.data(), content.size()).ok());
}

std::string read_text(const std::string& path) {
  auto r = sys::read_file(path);
  return r.ok() ? *r : "<" + r.error().message() + ">";
}

void set_mtime(const std::string& path, time_t sec, long nsec) {
  struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
  ASSERT_TRUE(sys::utimensat(sys::kCwd, path, ts, AT_SYMLINK_NOFOLLOW).ok()) << path;
}

// security.capability, VFS_CAP_REVISION_2 with CAP_NET_BIND_SERVICE (10) permitted+effective.
std::string capability_blob() {
  uint32_t words[5] = {0x02000000u | 0x1u, 1u << 10, 0, 0, 0};
  return std::string(reinterpret_cast<const char*>(words), sizeof words);
}

struct Entry {
  struct stat st;
  std::map<std::string, std::string> xattrs;
  std::string link_target;
  std::string content;
};

// Every entry below `root` (and root itself as ""), by relative path.
void scan(const std::string& root, const std::string& rel, std::map<std::string, Entry>& out) {
  std::string path = rel.empty() ? root : root + "/" + rel;
  auto st = sys::lstat(path);
  ASSERT_TRUE(st.ok()) << st.error().message();
  Entry e{*st, {}, {}, {}};
  auto names = sys::llistxattr(path);
  ASSERT_TRUE(names.ok());
  for (const auto& n : *names) e.xattrs[n] = sys::lgetxattr(path, n)->value_or("");
  if (S_ISLNK(st->st_mode)) e.link_target = *sys::readlink(path);
  if (S_ISREG(st->st_mode)) e.content = read_text(path);
  out[rel] = e;
  if (S_ISDIR(st->st_mode)) {
    auto entries = sys::read_dir(path);
    ASSERT_TRUE(entries.ok());
    for (const auto& c : *entries) scan(root, rel.empty() ? c.name : rel + "/" + c.name, out);
  }
}

class VfsTest : public ::testing::Test {
 protected:
  void set_up_store(const std::string& spec) {
    auto store = testing::make_backing_store(spec);
    ASSERT_TRUE(store.ok()) << store.error().message();
    store_ = std::move(*store);
    auto root = store_->set_up();
    if (!root.ok() && root.error().kind() == ErrorKind::kNotSupported) {
      skip_reason_ = spec + " store unavailable here: " + root.error().message();
      return;
    }
    ASSERT_TRUE(root.ok()) << root.error().message();
    root_ = *root;
  }

  void SetUp() override { set_up_store("tmpdir"); }

  void TearDown() override {
    driver_.reset();
    if (!store_ || root_.empty()) return;
    EXPECT_TRUE(testing::mounts_under(root_ + "/vfs").empty());
    auto down = store_->tear_down();  // fails on any leftover mount or loop device
    EXPECT_TRUE(down.ok()) << down.error().message();
    EXPECT_TRUE(testing::mounts_under(root_).empty());
  }

  Driver* open(std::map<std::string, std::string> options = {}) {
    auto d = init_vfs(DriverConfig{root_, root_ + "/vfs", std::move(options)});
    EXPECT_TRUE(d.ok()) << d.error().message();
    if (!d.ok()) return nullptr;
    driver_ = std::move(*d);
    return driver_.get();
  }

  std::unique_ptr<BackingStore> store_;
  std::string root_;
  std::string skip_reason_;
  std::unique_ptr<Driver> driver_;
};

TEST_F(VfsTest, LayoutAndEmptyLayer) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->create("empty", "", {}).ok());
  EXPECT_TRUE(d->exists("empty"));
  auto p = d->get("empty", "");
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(*p, root_ + "/vfs/dir/empty");
  auto st = sys::lstat(*p);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->st_mode & 07777, 0755u);
  EXPECT_EQ(st->st_uid, 0u);
  EXPECT_EQ(st->st_gid, 0u);
  EXPECT_TRUE(sys::read_dir(*p)->empty());
  EXPECT_EQ(sys::lstat(root_ + "/vfs")->st_mode & 07777, 0700u);
  EXPECT_TRUE(d->put("empty").ok());
  EXPECT_TRUE(d->remove("empty").ok());
  EXPECT_FALSE(d->exists("empty"));
  // Only dir/ remains: the reflink probe cleaned up after itself.
  auto home = sys::read_dir(root_ + "/vfs");
  ASSERT_TRUE(home.ok());
  ASSERT_EQ(home->size(), 1u);
  EXPECT_EQ(home->front().name, "dir");
}

TEST_F(VfsTest, CopyPreservesEveryEntryKindAndItsMetadata) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->create_rw("base", "", {}).ok());
  std::string b = *d->get("base", "");
  // A directory with sticky bit and foreign owner, files with setuid, xattrs and a
  // capability, hard links (inside a dir and across dirs), a symlink with its own owner,
  // devices, a fifo and a socket node.
  ASSERT_TRUE(sys::mkdir(b + "/d", 0700).ok());
  write_text(b + "/d/f", "payload");
  ASSERT_TRUE(sys::fchownat(sys::kCwd, b + "/d/f", 3, 4, 0).ok());
  ASSERT_TRUE(sys::fchmodat(sys::kCwd, b + "/d/f", 04751).ok());
  ASSERT_TRUE(sys::lsetxattr(b + "/d/f", "user.note", "hello").ok());
  ASSERT_TRUE(sys::lsetxattr(b + "/d/f", "security.capability", capability_blob()).ok());
  ASSERT_TRUE(sys::linkat(sys::kCwd, b + "/d/f", sys::kCwd, b + "/d/f-link", 0).ok());
  ASSERT_TRUE(sys::linkat(sys::kCwd, b + "/d/f", sys::kCwd, b + "/f-link-top", 0).ok());
  write_text(b + "/h1", "pair");
  ASSERT_TRUE(sys::linkat(sys::kCwd, b + "/h1", sys::kCwd, b + "/h2", 0).ok());
  ASSERT_TRUE(sys::symlinkat("d/f", sys::kCwd, b + "/s").ok());
  ASSERT_TRUE(sys::fchownat(sys::kCwd, b + "/s", 5, 6, AT_SYMLINK_NOFOLLOW).ok());
  ASSERT_TRUE(sys::mknodat(sys::kCwd, b + "/p", S_IFIFO | 0640, 0).ok());
  ASSERT_TRUE(sys::mknodat(sys::kCwd, b + "/c", S_IFCHR | 0620, makedev(1, 3)).ok());
  ASSERT_TRUE(sys::mknodat(sys::kCwd, b + "/blk", S_IFBLK | 0600, makedev(7, 200)).ok());
  ASSERT_TRUE(sys::mknodat(sys::kCwd, b + "/sock", S_IFSOCK | 0755, 0).ok());
  ASSERT_TRUE(sys::lsetxattr(b + "/d", "trusted.cowlab", "dir-xattr").ok());
  ASSERT_TRUE(sys::fchownat(sys::kCwd, b + "/d", 1, 2, 0).ok());
  ASSERT_TRUE(sys::fchmodat(sys::kCwd, b + "/d", 01705).ok());
  for (const char* e : {"/d/f", "/h1", "/s", "/p", "/c", "/blk", "/sock"})
    set_mtime(b + e, 1600000000, 123456789);
  set_mtime(b + "/d", 1500000000, 987654321);  // after its children: must survive the copy
  ASSERT_TRUE(d->put("base").ok());

  ASSERT_TRUE(d->create("snap", "base", {}).ok());
  std::string s = *d->get("snap", "");
  std::map<std::string, Entry> src, dst;
  scan(b, "", src);
  scan(s, "", dst);
  ASSERT_EQ(src.size(), 12u);  // root d d/f d/f-link f-link-top h1 h2 s p c blk sock
  ASSERT_EQ(dst.size(), src.size());
  for (const auto& [rel, e] : src) {
    SCOPED_TRACE("entry /" + rel);
    ASSERT_TRUE(dst.count(rel));
    const Entry& c = dst.at(rel);
    EXPECT_EQ(c.st.st_mode, e.st.st_mode);
    EXPECT_EQ(c.st.st_uid, e.st.st_uid);
    EXPECT_EQ(c.st.st_gid, e.st.st_gid);
    EXPECT_EQ(c.st.st_rdev, e.st.st_rdev);
    EXPECT_EQ(c.st.st_nlink, e.st.st_nlink);
    if (!S_ISDIR(e.st.st_mode)) EXPECT_EQ(c.st.st_size, e.st.st_size);
    EXPECT_EQ(c.st.st_mtim.tv_sec, e.st.st_mtim.tv_sec);
    EXPECT_EQ(c.st.st_mtim.tv_nsec, e.st.st_mtim.tv_nsec);
    EXPECT_EQ(c.xattrs, e.xattrs);
    EXPECT_EQ(c.link_target, e.link_target);
    EXPECT_EQ(c.content, e.content);
    EXPECT_NE(c.st.st_ino, e.st.st_ino) << "a copy, not the same inode";
  }
  // Spot checks of what chown would have cleared and of the hard-link groups.
  EXPECT_EQ(dst.at("d/f").st.st_mode & 07777, 04751u);
  EXPECT_EQ(dst.at("d/f").xattrs.at("security.capability"), capability_blob());
  EXPECT_EQ(dst.at("d").st.st_mode & 07777, 01705u);
  EXPECT_EQ(dst.at("d/f").st.st_ino, dst.at("d/f-link").st.st_ino);
  EXPECT_EQ(dst.at("d/f").st.st_ino, dst.at("f-link-top").st.st_ino);
  EXPECT_EQ(dst.at("h1").st.st_ino, dst.at("h2").st.st_ino);
  EXPECT_NE(dst.at("h1").st.st_ino, dst.at("d/f").st.st_ino);
  EXPECT_EQ(dst.at("d/f").st.st_nlink, 3u);

  // The copy is independent of its parent.
  write_text(s + "/h1", "changed in snap");
  EXPECT_EQ(read_text(b + "/h1"), "pair");
  EXPECT_EQ(read_text(s + "/h2"), "changed in snap");
  ASSERT_TRUE(d->put("snap").ok());
}

TEST_F(VfsTest, OptionsAndErrors) {
  auto size = init_vfs(DriverConfig{root_, root_ + "/vfs", {{"vfs.size", "10G"}}});
  ASSERT_FALSE(size.ok());
  EXPECT_EQ(size.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(size.error().message().find("vfs.size"), std::string::npos);
  auto unknown = init_vfs(DriverConfig{root_, root_ + "/vfs", {{"vfs.bogus", "1"}}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message().find("vfs.bogus"), std::string::npos);
  EXPECT_FALSE(sys::lstat_if_exists(root_ + "/vfs")->has_value());

  Driver* d = open();
  ASSERT_NE(d, nullptr);
  auto ro_opt = d->create("a", "", CreateOpts{"", {{"size", "1G"}}});
  ASSERT_FALSE(ro_opt.ok());
  EXPECT_EQ(ro_opt.error().kind(), ErrorKind::kInvalid);
  auto rw_size = d->create_rw("a", "", CreateOpts{"", {{"size", "1G"}}});
  ASSERT_FALSE(rw_size.ok());
  EXPECT_EQ(rw_size.error().kind(), ErrorKind::kInvalid);
  EXPECT_FALSE(d->exists("a"));
  EXPECT_FALSE(d->supports_quota());
  auto missing_parent = d->create("a", "nope", {});
  ASSERT_FALSE(missing_parent.ok());
  EXPECT_EQ(missing_parent.error().kind(), ErrorKind::kNotFound);
  EXPECT_FALSE(d->exists("a"));
  EXPECT_EQ(d->get("nope", "").error().kind(), ErrorKind::kNotFound);
  EXPECT_EQ(d->remove("nope").error().kind(), ErrorKind::kNotFound);
  ASSERT_TRUE(d->create("a", "", {}).ok());
  EXPECT_EQ(d->create("a", "", {}).error().kind(), ErrorKind::kExists);

  auto st = d->status();
  ASSERT_EQ(st.size(), 2u);
  EXPECT_EQ(st[0].first, "Backing Filesystem");
  EXPECT_EQ(st[0].second, *backing_fs_name(root_));
  EXPECT_EQ(st[1].first, "Reflink");
}

// Flags of every extent of `path` (FS_IOC_FIEMAP, synced first).
std::vector<uint32_t> extent_flags(const std::string& path) {
  auto fd = sys::open(path, O_RDONLY);
  EXPECT_TRUE(fd.ok());
  if (!fd.ok()) return {};
  constexpr unsigned kMax = 64;
  std::vector<char> buf(sizeof(struct fiemap) + kMax * sizeof(struct fiemap_extent), 0);
  auto* fm = reinterpret_cast<struct fiemap*>(buf.data());
  fm->fm_length = FIEMAP_MAX_OFFSET;
  fm->fm_flags = FIEMAP_FLAG_SYNC;
  fm->fm_extent_count = kMax;
  auto r = sys::ioctl(fd->get(), FS_IOC_FIEMAP, fm, "FS_IOC_FIEMAP " + path);
  EXPECT_TRUE(r.ok()) << r.error().message();
  std::vector<uint32_t> flags;
  for (unsigned i = 0; r.ok() && i < fm->fm_mapped_extents; ++i)
    flags.push_back(fm->fm_extents[i].fe_flags);
  return flags;
}

class VfsBtrfsTest : public VfsTest {
 protected:
  void SetUp() override { set_up_store("btrfs-loop"); }
};

TEST_F(VfsBtrfsTest, CopiesShareExtentsByReflink) {
  if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->status(), (KeyValues{{"Backing Filesystem", "btrfs"}, {"Reflink", "true"}}));
  ASSERT_TRUE(d->create("base", "", {}).ok());
  std::string b = *d->get("base", "");
  std::string data(8 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 2654435761u) >> 13);
  write_text(b + "/big", data);
  ASSERT_TRUE(d->create("snap", "base", {}).ok());
  std::string s = *d->get("snap", "");
  EXPECT_EQ(read_text(s + "/big"), data);
  auto flags = extent_flags(s + "/big");
  ASSERT_FALSE(flags.empty());
  for (uint32_t f : flags)
    EXPECT_TRUE(f & FIEMAP_EXTENT_SHARED) << "extent flags 0x" << std::hex << f;
  // Writing into the copy unshares only what it touches; the parent keeps its data.
  write_text(s + "/big", "overwritten");
  EXPECT_EQ(read_text(b + "/big"), data);
}

// A layer's sparse file stays sparse in the copy (issue 13: a 1 GiB sparse file cost 1 GiB at
// every container create on vfs): data copied by segments (SEEK_DATA/SEEK_HOLE) or reflinked.
TEST_F(VfsTest, CopyKeepsHolesOfSparseFiles) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->create("base", "", {}).ok());
  std::string f = *d->get("base", "") + "/sparse";
  {
    auto fd = sys::open(f, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_TRUE(fd.ok());
    ASSERT_TRUE(sys::pwrite_all(fd->get(), "head", 4, 0).ok());
    ASSERT_TRUE(sys::pwrite_all(fd->get(), "middle", 6, 16 << 20).ok());
    ASSERT_TRUE(sys::ftruncate(fd->get(), 64 << 20).ok());
  }
  ASSERT_TRUE(d->create("snap", "base", {}).ok());
  std::string g = *d->get("snap", "") + "/sparse";
  auto st = sys::lstat(g);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->st_size, 64 << 20);
  EXPECT_LE(st->st_blocks * 512, 1 << 20) << "the holes were copied as data";
  auto content = sys::read_file(g);
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(content->substr(0, 4), "head");
  EXPECT_EQ(content->substr(16 << 20, 6), "middle");
  EXPECT_EQ(*content, *sys::read_file(f));
}

TEST_F(VfsTest, NoReflinkOnExt4CopiesData) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  auto fs = backing_fs_name(root_);
  ASSERT_TRUE(fs.ok());
  if (*fs != "extfs")
    GTEST_SKIP() << "tmpdir store is on " << *fs << ", not ext4: nothing to check";
  EXPECT_EQ(d->status()[1], (std::pair<std::string, std::string>{"Reflink", "false"}));
  ASSERT_TRUE(d->create("base", "", {}).ok());
  write_text(*d->get("base", "") + "/f", std::string(1 << 20, 'x'));
  ASSERT_TRUE(d->create("snap", "base", {}).ok());
  std::string s = *d->get("snap", "");
  EXPECT_EQ(read_text(s + "/f"), std::string(1 << 20, 'x'));
  for (uint32_t f : extent_flags(s + "/f")) EXPECT_FALSE(f & FIEMAP_EXTENT_SHARED);
}

}  // namespace
}  // namespace cowlab
