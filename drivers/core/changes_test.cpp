// Change detection: changes_dirs against exact expected lists (Docker's statDifferent rules,
// the parent-directory Modify insertion, layer.md's changeset example, graphtest's Changes(20)
// and containers/storage's Echo), and changes_overlay / changes_aufs against changes_dirs on the
// merged views: for overlay through real overlay mounts, with the upper written by the kernel
// (copy-up, whiteouts and opaque directories made by overlayfs itself) and by the applier.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <random>

#include "core/tar_test_util.h"
#include "cowlab/archive.h"
#include "cowlab/changes.h"
#include "cowlab/sys.h"

namespace cowlab {
namespace {

using testing::apply_tar;
using testing::make_tar;
using testing::names;
using testing::TarEntry;
using testing::TempRoot;
using testing::write_file;

constexpr ChangeKind kA = ChangeKind::kAdd;
constexpr ChangeKind kC = ChangeKind::kModify;
constexpr ChangeKind kD = ChangeKind::kDelete;
using Changes = std::vector<Change>;

std::string show(const Changes& changes) {
  std::string out;
  for (const auto& c : changes)
    out += std::string(1, change_kind_letter(c.kind)) + " " + c.path + "\n";
  return out;
}

Changes dirs(const std::string& new_dir, const std::string& old_dir) {
  auto r = changes_dirs(new_dir, old_dir);
  EXPECT_TRUE(r.ok()) << r.error().message();
  return r.ok() ? *r : Changes{};
}

#define EXPECT_CHANGES(actual, expected) EXPECT_EQ(show(actual), show(expected))

TEST(ChangesDirs, KindLettersAndOrder) {
  EXPECT_EQ(change_kind_letter(kC), 'C');
  EXPECT_EQ(change_kind_letter(kA), 'A');
  EXPECT_EQ(change_kind_letter(kD), 'D');
  Changes c = {{"/b", kA}, {"/a-b", kD}, {"/a/x", kC}, {"/a", kD}, {"/a", kC}};
  sort_changes(c);
  EXPECT_CHANGES(c, (Changes{{"/a", kC}, {"/a", kD}, {"/a-b", kD}, {"/a/x", kC}, {"/b", kA}}));
}

// Docker's statDifferent: mode, uid, gid, rdev, security.capability, and for non-directories
// mtime (seconds, or nanoseconds when both sides have them) and size.
TEST(ChangesDirs, ModifiedFollowsDockersRules) {
  TempRoot t;
  std::string old_dir = t.dir("old"), new_dir = t.dir("new");
  const std::string cap(
      "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  for (const auto& root : {old_dir, new_dir}) {
    for (const char* f :
         {"same", "mode", "uid", "gid", "size", "mtime", "nsec-both", "nsec-one", "cap", "inode"})
      write_file(root + "/" + f, "data");
    ASSERT_TRUE(sys::mknodat(AT_FDCWD, root + "/rdev", S_IFCHR | 0600, makedev(1, 3)).ok());
    ASSERT_TRUE(sys::mknodat(AT_FDCWD, root + "/blk", S_IFBLK | 0600, makedev(7, 0)).ok());
    ASSERT_TRUE(sys::mkdir(root + "/dir", 0755).ok());
    ASSERT_TRUE(sys::mkdir(root + "/dirmode", 0755).ok());
    ASSERT_TRUE(sys::symlinkat("target", AT_FDCWD, root + "/link").ok());
  }
  ASSERT_TRUE(sys::fchmodat(AT_FDCWD, new_dir + "/mode", 0600).ok());
  ASSERT_TRUE(sys::fchownat(AT_FDCWD, new_dir + "/uid", 5, 0, 0).ok());
  ASSERT_TRUE(sys::fchownat(AT_FDCWD, new_dir + "/gid", 0, 5, 0).ok());
  write_file(new_dir + "/size", "longer data");
  ASSERT_TRUE(sys::unlink(new_dir + "/rdev").ok());
  ASSERT_TRUE(sys::mknodat(AT_FDCWD, new_dir + "/rdev", S_IFCHR | 0600, makedev(1, 5)).ok());
  ASSERT_TRUE(sys::lsetxattr(new_dir + "/cap", "security.capability", cap).ok());
  ASSERT_TRUE(sys::fchmodat(AT_FDCWD, new_dir + "/dirmode", 0700).ok());
  ASSERT_TRUE(sys::unlink(new_dir + "/inode").ok());  // a new inode with the same attributes
  write_file(new_dir + "/inode", "data");
  ASSERT_TRUE(sys::unlink(new_dir + "/link").ok());
  ASSERT_TRUE(sys::symlinkat("elsewhere", AT_FDCWD, new_dir + "/link").ok());  // size differs
  // Times last: writing above moved them.
  for (const auto& root : {old_dir, new_dir})
    for (const char* f :
         {"same", "mode", "uid", "gid", "size", "cap", "inode", "rdev", "blk", "link"})
      testing::set_mtime(root + "/" + f, 1600000000, 0);
  testing::set_mtime(old_dir + "/mtime", 1600000000, 0);
  testing::set_mtime(new_dir + "/mtime", 1600000001, 0);
  testing::set_mtime(old_dir + "/nsec-both", 1600000000, 100);
  testing::set_mtime(new_dir + "/nsec-both", 1600000000, 200);
  testing::set_mtime(old_dir + "/nsec-one", 1600000000, 0);  // as extracted from a tar
  testing::set_mtime(new_dir + "/nsec-one", 1600000000, 123);
  testing::set_mtime(old_dir + "/dir", 1600000000, 0);  // directory mtimes never count
  testing::set_mtime(new_dir + "/dir", 1700000000, 0);
  testing::set_mtime(old_dir + "/blk", 1600000000, 0);  // nor, in Docker, block devices'
  testing::set_mtime(new_dir + "/blk", 1700000000, 0);
  EXPECT_CHANGES(dirs(new_dir, old_dir), (Changes{{"/cap", kC},
                                                  {"/dirmode", kC},
                                                  {"/gid", kC},
                                                  {"/link", kC},
                                                  {"/mode", kC},
                                                  {"/mtime", kC},
                                                  {"/nsec-both", kC},
                                                  {"/rdev", kC},
                                                  {"/size", kC},
                                                  {"/uid", kC}}));
}

TEST(ChangesDirs, AddsDeletesReplacementsAndParentModifies) {
  TempRoot t;
  std::string old_dir = t.dir("old"), new_dir = t.dir("new");
  const auto base = names({"a/", "a/b/", "a/b/keep", "gone/", "gone/deep/", "gone/deep/x", "file",
                           "dir2file/", "dir2file/child", "file2dir", "untouched/", "untouched/x"});
  ASSERT_TRUE(apply_tar(old_dir, make_tar(base)).ok());
  ASSERT_TRUE(apply_tar(new_dir, make_tar(base)).ok());
  ASSERT_TRUE(sys::mkdir_all(new_dir + "/a/b/c/d", 0755).ok());
  write_file(new_dir + "/a/b/c/d/e", "new");
  ASSERT_TRUE(sys::remove_all(new_dir + "/gone").ok());
  ASSERT_TRUE(sys::remove_all(new_dir + "/dir2file").ok());
  write_file(new_dir + "/dir2file", "was a dir");
  ASSERT_TRUE(sys::unlink(new_dir + "/file2dir").ok());
  ASSERT_TRUE(sys::mkdir(new_dir + "/file2dir", 0755).ok());
  write_file(new_dir + "/file2dir/inner", "x");
  EXPECT_CHANGES(dirs(new_dir, old_dir),
                 (Changes{{"/a", kC},
                          {"/a/b", kC},
                          {"/a/b/c", kA},
                          {"/a/b/c/d", kA},
                          {"/a/b/c/d/e", kA},
                          {"/dir2file", kC},  // no Deletes for the old children
                          {"/file2dir", kC},
                          {"/file2dir/inner", kA},
                          {"/gone", kD}}));  // only the top of the subtree
  // Against nothing: every entry is an Add, the root never appears.
  Changes all = dirs(old_dir, "");
  ASSERT_EQ(all.size(), base.size());
  for (const auto& c : all) EXPECT_EQ(c.kind, kA) << c.path;
  EXPECT_EQ(all.front().path, "/a");
  EXPECT_TRUE(dirs(old_dir, old_dir).empty());
}

// layer.md "Determining Changes", with Docker's parent-directory Modify entries.
TEST(ChangesDirs, OciChangesetExample) {
  TempRoot t;
  std::string v1 = t.dir("v1"), s1 = t.dir("s1");
  const auto base =
      names({"etc/", "etc/my-app-config", "bin/", "bin/my-app-binary", "bin/my-app-tools"});
  ASSERT_TRUE(apply_tar(v1, make_tar(base)).ok());
  ASSERT_TRUE(apply_tar(s1, make_tar(base)).ok());
  ASSERT_TRUE(sys::unlink(s1 + "/etc/my-app-config").ok());
  ASSERT_TRUE(sys::mkdir(s1 + "/etc/my-app.d", 0755).ok());
  write_file(s1 + "/etc/my-app.d/default.cfg", "cfg");
  write_file(s1 + "/bin/my-app-tools", "updated", 0755);
  EXPECT_CHANGES(dirs(s1, v1), (Changes{{"/bin", kC},
                                        {"/bin/my-app-tools", kC},
                                        {"/etc", kC},
                                        {"/etc/my-app-config", kD},
                                        {"/etc/my-app.d", kA},
                                        {"/etc/my-app.d/default.cfg", kA}}));
}

// graphtest's addManyFiles / changeManyFiles (testutil_unix.go), with deterministic content.
std::string content(int64_t seed, size_t size = 64) {
  std::mt19937_64 gen(static_cast<uint64_t>(seed));
  std::string out;
  while (out.size() < size) {
    uint64_t v = gen();
    out.append(reinterpret_cast<const char*>(&v), std::min<size_t>(7, size - out.size()));
  }
  return out;
}

void add_many_files(const std::string& root, int count, int64_t seed) {
  for (int i = 0; i < count; i += 100) {
    std::string dir = root + "/directory-" + std::to_string(i);
    ASSERT_TRUE(sys::mkdir_all(dir, 0755).ok());
    for (int j = 0; i + j < count && j < 100; ++j) {
      std::string file = dir + "/file-" + std::to_string(i + j);
      write_file(file, content(seed + i + j), 0755);
      testing::set_mtime(file, 1600000000);
    }
  }
}

Changes change_many_files(const std::string& root, int count, int64_t seed) {
  Changes expected;
  for (int i = 0; i < count; i += 100) {
    std::string dir = "/directory-" + std::to_string(i);
    expected.push_back({dir, kC});
    for (int j = 0; i + j < count && j < 100; ++j) {
      std::string file = dir + "/file-" + std::to_string(i + j);
      switch (j % 3) {
        case 0:  // rewrite: same size, new content and time
          write_file(root + file, content(seed + i + j), 0755);
          expected.push_back({file, kC});
          break;
        case 1: {
          std::string added = dir + "/file-" + std::to_string(seed) + "-" + std::to_string(i + j);
          write_file(root + added, content(seed + i + j), 0755);
          expected.push_back({added, kA});
          break;
        }
        case 2:
          EXPECT_TRUE(sys::unlink(root + file).ok());
          expected.push_back({file, kD});
          break;
      }
    }
  }
  sort_changes(expected);
  return expected;
}

TEST(ChangesDirs, GraphtestChanges20GivesExactly21) {
  TempRoot t;
  std::string base = t.dir("base"), upper = t.dir("upper");
  ASSERT_NO_FATAL_FAILURE(add_many_files(base, 20, 3));
  ASSERT_NO_FATAL_FAILURE(add_many_files(upper, 20, 3));
  Changes expected = change_many_files(upper, 20, 6);
  Changes got = dirs(upper, base);
  EXPECT_EQ(got.size(), 21u);
  EXPECT_CHANGES(got, expected);
}

// containers/storage's DriverTestEcho: subdir1/…/subdir9/file; delete the chain at `depth`,
// then recreate it.
TEST(ChangesDirs, EchoAtEveryDepth) {
  for (int depth = 0; depth < 10; ++depth) {
    SCOPED_TRACE("depth " + std::to_string(depth));
    TempRoot t;
    std::string base = t.dir("base"), second = t.dir("second"), third = t.dir("third");
    std::vector<std::string> paths;
    std::string path;
    for (int i = 0; i < 9; ++i) paths.push_back(path += "/subdir" + std::to_string(i + 1));
    paths.push_back(path + "/file");
    for (const auto& root : {base, second, third}) {
      ASSERT_TRUE(sys::mkdir_all(root + paths[8], 0700).ok());
      write_file(root + paths[9], content(depth, 128), 0600);
      testing::set_mtime(root + paths[9], 1600000000);
    }
    Changes all;
    for (const auto& p : paths) all.push_back({p, kA});
    EXPECT_CHANGES(dirs(base, ""), all);
    ASSERT_TRUE(sys::remove_all(second + paths[depth]).ok());
    Changes expected;
    for (int i = 0; i < depth; ++i) expected.push_back({paths[i], kC});
    expected.push_back({paths[depth], kD});
    EXPECT_CHANGES(dirs(second, base), expected);
    // third = second with the chain recreated below the deleted point.
    ASSERT_TRUE(sys::remove_all(third + paths[depth]).ok());
    ASSERT_TRUE(sys::mkdir_all(third + paths[8], 0700).ok());
    for (int i = depth; i < 9; ++i)
      ASSERT_TRUE(sys::fchmodat(AT_FDCWD, third + paths[i], 0700).ok());
    write_file(third + paths[9], content(depth, 128), 0600);
    expected.clear();
    for (int i = 0; i < depth; ++i) expected.push_back({paths[i], kC});
    for (int i = depth; i < 10; ++i) expected.push_back({paths[i], kA});
    EXPECT_CHANGES(dirs(third, second), expected);
  }
}

TEST(ChangesSize, CountsRegularFilesOnceAndNothingElse) {
  TempRoot t;
  std::string a = t.dir("a");
  write_file(a + "/ten", "0123456789");
  ASSERT_TRUE(sys::linkat(AT_FDCWD, a + "/ten", AT_FDCWD, a + "/ten-link", 0).ok());
  write_file(a + "/seven", "1234567");
  ASSERT_TRUE(sys::symlinkat("a-long-symlink-target", AT_FDCWD, a + "/sym").ok());
  ASSERT_TRUE(sys::mkdir(a + "/dir", 0755).ok());
  auto size = changes_size(a, {{"/ten", kA},
                               {"/ten-link", kA},
                               {"/seven", kC},
                               {"/sym", kA},
                               {"/dir", kC},
                               {"/deleted", kD},
                               {"/vanished", kA}});
  ASSERT_TRUE(size.ok()) << size.error().message();
  EXPECT_EQ(*size, 17);
}

// ---- native changes against the merged views --------------------------------------------------

// Layers in overlay form, nearest first, and the views overlayfs gives of them.
class OverlayLayers {
 public:
  explicit OverlayLayers(TempRoot& t) : t_(t) {}

  void add_lower(const std::vector<TarEntry>& layer) {
    std::string dir = t_.dir("lower" + std::to_string(lowers_.size()));
    auto r =
        apply_tar(dir, make_tar(layer), WhiteoutFormat::kOverlay, ApplyMode::kApply, "", lowers_);
    ASSERT_TRUE(r.ok()) << r.error().message();
    lowers_.insert(lowers_.begin(), dir);
  }

  // Mounts upper+lowers read-write; the test then changes files through merged().
  void mount_rw() {
    upper_ = t_.dir("upper");
    work_ = t_.dir("work");
    merged_ = t_.dir("merged");
    auto r = t_.mount_overlay(merged_, lowers_, upper_, work_);
    ASSERT_TRUE(r.ok()) << r.error().message();
  }

  // An upper made by the applier instead of the kernel.
  void apply_upper(const std::vector<TarEntry>& layer) {
    upper_ = t_.dir("upper");
    auto r = apply_tar(upper_, make_tar(layer), WhiteoutFormat::kOverlay, ApplyMode::kApply, "",
                       lowers_);
    ASSERT_TRUE(r.ok()) << r.error().message();
  }

  // changes_overlay(upper) and changes_dirs(merged view, lower view), both sorted.
  std::pair<Changes, Changes> compare() {
    std::string old_view = t_.dir("old-view" + std::to_string(n_));
    std::string new_view = merged_;
    bool mounted_new = false;
    if (merged_.empty()) {
      new_view = t_.dir("new-view" + std::to_string(n_));
      std::vector<std::string> all = lowers_;
      all.insert(all.begin(), upper_);
      auto m = t_.mount_overlay(new_view, all);
      EXPECT_TRUE(m.ok()) << m.error().message();
      mounted_new = true;
    }
    ++n_;
    Changes naive;
    if (lowers_.empty()) {
      naive = dirs(new_view, "");
    } else {
      auto m = t_.mount_overlay(old_view, lowers_);
      EXPECT_TRUE(m.ok()) << m.error().message();
      naive = dirs(new_view, old_view);
      EXPECT_TRUE(t_.unmount(old_view).ok());
    }
    if (mounted_new) EXPECT_TRUE(t_.unmount(new_view).ok());
    auto native = changes_overlay(upper_, lowers_, OverlayXattrNs::kTrusted);
    EXPECT_TRUE(native.ok()) << native.error().message();
    return {native.ok() ? *native : Changes{}, naive};
  }

  void unmount() {
    if (!merged_.empty()) EXPECT_TRUE(t_.unmount(merged_).ok());
    merged_.clear();
  }

  const std::string& merged() const { return merged_; }
  const std::vector<std::string>& lowers() const { return lowers_; }

 private:
  TempRoot& t_;
  std::vector<std::string> lowers_;
  std::string upper_, work_, merged_;
  int n_ = 0;
};

TEST(ChangesOverlay, KernelMadeUpperAgreesWithTheMergedView) {
  TempRoot t;
  OverlayLayers s(t);
  ASSERT_NO_FATAL_FAILURE(s.add_lower({{"etc", 'd'},
                                       {"etc/a", 'f', "a"},
                                       {"etc/b", 'f', "b"},
                                       {"etc/mode", 'f', "m"},
                                       {"etc/owner", 'f', "o"},
                                       {"etc/time", 'f', "t"},
                                       {"etc/cap", 'f', "c"},
                                       {"opt/x/y", 'f', "y"},
                                       {"opt/x/z", 'f', "z"},
                                       {"rm/deep/file"},
                                       {"f2d", 'f', "file"},
                                       {"d2f/child"},
                                       {"shadowed/in-l0"},
                                       {"whited", 'f', "w"},
                                       {"renamed", 'f', "r"},
                                       {"keep/untouched"},
                                       {"fifo", 'p'},
                                       {"lnk", 'l', "", 0, "etc/a"}}));
  ASSERT_NO_FATAL_FAILURE(s.add_lower({{"shadowed", 'd'},
                                       {"shadowed/.wh..wh..opq"},
                                       {"shadowed/in-l1", 'f', "1"},
                                       {".wh.whited"},
                                       {"etc/l1", 'f', "l1"}}));
  ASSERT_NO_FATAL_FAILURE(s.mount_rw());
  const std::string m = s.merged();
  const std::string cap(
      "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  write_file(m + "/etc/a", "changed content");
  ASSERT_TRUE(sys::fchmodat(AT_FDCWD, m + "/etc/mode", 0600).ok());
  ASSERT_TRUE(sys::fchownat(AT_FDCWD, m + "/etc/owner", 9, 9, 0).ok());
  testing::set_mtime(m + "/etc/time", 1234567890);
  ASSERT_TRUE(sys::lsetxattr(m + "/etc/cap", "security.capability", cap).ok());
  ASSERT_TRUE(sys::unlink(m + "/etc/b").ok());
  ASSERT_TRUE(sys::unlink(m + "/etc/l1").ok());
  ASSERT_TRUE(sys::remove_all(m + "/opt/x").ok());
  ASSERT_TRUE(sys::mkdir(m + "/opt/x", 0755).ok());  // overlayfs makes it opaque
  write_file(m + "/opt/x/new", "new");
  ASSERT_TRUE(sys::remove_all(m + "/rm").ok());
  ASSERT_TRUE(sys::unlink(m + "/f2d").ok());
  ASSERT_TRUE(sys::mkdir(m + "/f2d", 0755).ok());
  write_file(m + "/f2d/inside", "i");
  ASSERT_TRUE(sys::remove_all(m + "/d2f").ok());
  write_file(m + "/d2f", "now a file");
  write_file(m + "/shadowed/added", "s");
  write_file(m + "/whited", "back");  // deleted by L1, recreated
  ASSERT_TRUE(sys::rename(m + "/renamed", m + "/renamed-to").ok());
  ASSERT_TRUE(sys::mkdir_all(m + "/new/deep/er", 0755).ok());
  write_file(m + "/new/deep/er/file", "deep");
  ASSERT_TRUE(
      sys::linkat(AT_FDCWD, m + "/new/deep/er/file", AT_FDCWD, m + "/new/hardlink", 0).ok());
  ASSERT_TRUE(sys::symlinkat("/etc/a", AT_FDCWD, m + "/new/symlink").ok());
  ASSERT_TRUE(sys::mknodat(AT_FDCWD, m + "/new/fifo", S_IFIFO | 0644, 0).ok());
  ASSERT_TRUE(sys::unlink(m + "/fifo").ok());
  ASSERT_TRUE(sys::unlink(m + "/lnk").ok());
  ASSERT_TRUE(sys::symlinkat("etc/mode", AT_FDCWD, m + "/lnk").ok());
  auto [native, naive] = s.compare();
  EXPECT_CHANGES(native, naive);
  EXPECT_CHANGES(native, (Changes{{"/d2f", kC},
                                  {"/etc", kC},
                                  {"/etc/a", kC},
                                  {"/etc/b", kD},
                                  {"/etc/cap", kC},
                                  {"/etc/l1", kD},
                                  {"/etc/mode", kC},
                                  {"/etc/owner", kC},
                                  {"/etc/time", kC},
                                  {"/f2d", kC},
                                  {"/f2d/inside", kA},
                                  {"/fifo", kD},
                                  {"/lnk", kC},
                                  {"/new", kA},
                                  {"/new/deep", kA},
                                  {"/new/deep/er", kA},
                                  {"/new/deep/er/file", kA},
                                  {"/new/fifo", kA},
                                  {"/new/hardlink", kA},
                                  {"/new/symlink", kA},
                                  {"/opt", kC},
                                  {"/opt/x", kC},
                                  {"/opt/x/new", kA},
                                  {"/opt/x/y", kD},
                                  {"/opt/x/z", kD},
                                  {"/renamed", kD},
                                  {"/renamed-to", kA},
                                  {"/rm", kD},
                                  {"/shadowed", kC},
                                  {"/shadowed/added", kA},
                                  {"/whited", kA}}));
  s.unmount();
}

TEST(ChangesOverlay, GraphtestChanges20AndEchoThroughOverlay) {
  {
    TempRoot t;
    OverlayLayers s(t);
    std::string base = t.dir("base-src");
    ASSERT_NO_FATAL_FAILURE(add_many_files(base, 20, 3));
    StringWriter w;
    ASSERT_TRUE(export_tree(base, {}, w).ok());
    std::vector<TarEntry> none;
    ASSERT_NO_FATAL_FAILURE(s.add_lower(none));
    ASSERT_TRUE(apply_tar(s.lowers()[0], w.data(), WhiteoutFormat::kOverlay).ok());
    ASSERT_NO_FATAL_FAILURE(s.mount_rw());
    Changes expected = change_many_files(s.merged(), 20, 6);
    auto [native, naive] = s.compare();
    EXPECT_EQ(native.size(), 21u);
    EXPECT_CHANGES(native, expected);
    EXPECT_CHANGES(naive, expected);
    s.unmount();
  }
  for (int depth : {0, 4, 9}) {
    SCOPED_TRACE("echo depth " + std::to_string(depth));
    TempRoot t;
    OverlayLayers s(t);
    std::string chain;
    std::vector<std::string> paths;
    for (int i = 0; i < 9; ++i) paths.push_back(chain += "/subdir" + std::to_string(i + 1));
    paths.push_back(chain + "/file");
    ASSERT_NO_FATAL_FAILURE(s.add_lower({{paths[9].substr(1), 'f', content(depth, 128), 0600}}));
    ASSERT_NO_FATAL_FAILURE(s.mount_rw());
    ASSERT_TRUE(sys::remove_all(s.merged() + paths[depth]).ok());
    Changes expected;
    for (int i = 0; i < depth; ++i) expected.push_back({paths[i], kC});
    expected.push_back({paths[depth], kD});
    auto [native, naive] = s.compare();
    EXPECT_CHANGES(native, expected);
    EXPECT_CHANGES(naive, expected);
    s.unmount();
  }
}

// Docker's TestApplyLayerWhiteouts layers, each the upper of the ones before: the applier's
// overlay form of every layer gives the same changes natively as through the mounts.
TEST(ChangesOverlay, ApplierMadeUppersAgreeWithTheMergedViews) {
  const std::vector<std::vector<TarEntry>> layers = {
      names({".baz", "bar/", "bar/bax", "bar/bay/", "baz", "foo/", "foo/.abc", "foo/.bcd/",
             "foo/.bcd/a", "foo/cde/", "foo/cde/def", "foo/cde/efg", "foo/fgh", "foobar"}),
      names({".bay", ".wh.baz", "foo/", "foo/.bce", "foo/.wh..wh..opq", "foo/cde/", "foo/cde/efg"}),
      names({".bay", ".wh..baz", ".wh.foobar", "foo/", "foo/.abc", "foo/.wh.cde", "bar/"}),
      names({".abc", ".wh..wh..opq", "foobar"}),
      names({"x/", "x/.wh..wh..opq", "bar/.wh.bax", "bar/bay/.wh.nothing", ".wh.gone-already"}),
  };
  for (size_t top = 0; top < layers.size(); ++top) {
    SCOPED_TRACE("upper is layer " + std::to_string(top));
    TempRoot t;
    OverlayLayers s(t);
    for (size_t i = 0; i < top; ++i) ASSERT_NO_FATAL_FAILURE(s.add_lower(layers[i]));
    ASSERT_NO_FATAL_FAILURE(s.apply_upper(layers[top]));
    auto [native, naive] = s.compare();
    EXPECT_CHANGES(native, naive);
    EXPECT_FALSE(native.empty());
  }
}

// aufs cannot be mounted here; its native changes must equal the tree comparison of the same
// layers applied in place.
TEST(ChangesAufs, AgreesWithDeleteInPlaceTrees) {
  const std::vector<std::vector<TarEntry>> layers = {
      names({"a/", "a/x", "a/y", "b/", "b/deep/", "b/deep/z", "c", "d/", "d/keep"}),
      names({".wh.c", "a/.wh.x", "b/", "b/.wh..wh..opq", "b/fresh", "d/new", "e/", "e/f"}),
      names({".wh.b", "a/x", "d/.wh..wh..opq", "d/keep", ".wh..wh..opq", "a/", "d/", "g"}),
  };
  TempRoot t;
  std::vector<std::string> aufs;  // nearest first
  std::string tree = t.dir("tree"), before = t.dir("before");
  for (size_t i = 0; i < layers.size(); ++i) {
    SCOPED_TRACE("layer " + std::to_string(i));
    std::string dir = t.dir("aufs" + std::to_string(i));
    ASSERT_TRUE(apply_tar(dir, make_tar(layers[i]), WhiteoutFormat::kAufs).ok());
    ASSERT_TRUE(apply_tar(tree, make_tar(layers[i])).ok());
    auto native = changes_aufs(dir, aufs);
    ASSERT_TRUE(native.ok()) << native.error().message();
    EXPECT_CHANGES(*native, dirs(tree, i == 0 ? "" : before));
    aufs.insert(aufs.begin(), dir);
    ASSERT_TRUE(sys::remove_all(before).ok());
    ASSERT_TRUE(sys::mkdir(before, 0755).ok());
    StringWriter w;
    ASSERT_TRUE(export_tree(tree, {}, w).ok());
    ASSERT_TRUE(apply_tar(before, w.data()).ok());
  }
}

}  // namespace
}  // namespace cowlab
