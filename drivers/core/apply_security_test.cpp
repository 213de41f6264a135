// The applier's security contract (archive.h) against Docker's breakout corpus
// (pkg/archive/utils_test.go testBreakout with the cases of archive_test.go
// TestUntarInvalidFilenames, TestUntarHardlinkToSymlink, TestUntarInvalidHardlink and
// TestUntarInvalidSymlink, diff_test.go's ApplyLayer variants, chrootarchive's ..gitme case)
// plus writes through links this tar created and symlinks already in the tree.
//
// Every case runs in both modes (kApply into a fresh root, kValidateOnly with no root, as the
// layer store validates), next to a victim directory outside the root that must stay
// byte-for-byte identical: the same names, modes, owners, times and content.  A refusal must
// be a kSecurity error that names the offending entry.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <functional>

#include "core/tar_test_util.h"
#include "cowlab/archive.h"
#include "cowlab/sys.h"

namespace cowlab {
namespace {

using testing::apply_tar;
using testing::make_tar;
using testing::snapshot;
using testing::TarEntry;
using testing::TempRoot;
using testing::tree_names;

enum class Outcome { kRefused, kAccepted };

struct BreakoutCase {
  std::string name;
  std::vector<TarEntry> entries;
  Outcome outcome;
  std::string offending;  // kRefused: the entry the error must name
  std::string reason;     // kRefused: a phrase the error must contain
  // kAccepted: checked against the root afterwards.
  std::function<void(const std::string& root)> check = nullptr;
};

TarEntry file(std::string name) {
  return {std::move(name), 'f', ""};
}
TarEntry sym(std::string name, std::string target) {
  return {std::move(name), 'l', "", 0, std::move(target)};
}
TarEntry hard(std::string name, std::string target) {
  return {std::move(name), 'h', "", 0, std::move(target)};
}
TarEntry dir(std::string name) {
  return {std::move(name), 'd'};
}

std::vector<BreakoutCase> corpus() {
  const std::string climbs = "climbs out of the root";
  const std::string through = "created by this layer";
  std::vector<BreakoutCase> c = {
      // TestUntarInvalidFilenames
      {"dotdot name", {file("../victim/dotdot")}, Outcome::kRefused, "../victim/dotdot", climbs},
      {"slash-dotdot name",
       {file("/../victim/slash-dotdot")},
       Outcome::kRefused,
       "/../victim/slash-dotdot",
       climbs},
      {"deep dotdot name",
       {file("a/b/../../../victim/x")},
       Outcome::kRefused,
       "a/b/../../../victim/x",
       climbs},
      // TestUntarInvalidHardlink
      {"hardlink dotdot", {hard("dotdot", "../victim/hello")}, Outcome::kRefused, "dotdot", climbs},
      {"hardlink slash-dotdot",
       {hard("slash-dotdot", "/../victim/hello")},
       Outcome::kRefused,
       "slash-dotdot",
       climbs},
      {"hardlink to victim dir, then write through it",
       {hard("loophole-victim", "../victim"), file("loophole-victim/file")},
       Outcome::kRefused,
       "loophole-victim",
       climbs},
      {"hardlink to victim dir, then symlink through it",
       {hard("loophole-victim", "../victim"), sym("symlink", "loophole-victim/hello")},
       Outcome::kRefused,
       "loophole-victim",
       climbs},
      {"hardlink to victim dir, then hardlink through it",
       {hard("loophole-victim", "../victim"), hard("hardlink", "loophole-victim/hello")},
       Outcome::kRefused,
       "loophole-victim",
       climbs},
      {"hardlink to victim dir, then replace it",
       {hard("loophole-victim", "../victim"), file("loophole-victim")},
       Outcome::kRefused,
       "loophole-victim",
       climbs},
      // TestUntarInvalidSymlink
      {"symlink dotdot", {sym("dotdot", "../victim/hello")}, Outcome::kRefused, "dotdot", climbs},
      {"symlink to victim dir, then write through it",
       {sym("loophole-victim", "../victim"), file("loophole-victim/file")},
       Outcome::kRefused,
       "loophole-victim",
       climbs},
      {"symlink to victim dir, then symlink through it",
       {sym("loophole-victim", "../victim"), sym("symlink", "loophole-victim/hello")},
       Outcome::kRefused,
       "loophole-victim",
       climbs},
      {"symlink to victim dir, then hardlink through it",
       {sym("loophole-victim", "../victim"), hard("hardlink", "loophole-victim/hello")},
       Outcome::kRefused,
       "loophole-victim",
       climbs},
      {"symlink to victim dir, then replace it",
       {sym("loophole-victim", "../victim"), file("loophole-victim")},
       Outcome::kRefused,
       "loophole-victim",
       climbs},
      {"symlink dir/loophole, then dir/loophole/newdir/newfile",
       {dir("dir"), sym("dir/loophole", "../../victim"), file("dir/loophole/newdir/newfile")},
       Outcome::kRefused,
       "dir/loophole",
       climbs},
      // An absolute target is resolved against the container's root when used, so the link
      // itself is harmless (Docker's testBreakout accepts "no error" as long as nothing leaks).
      {"symlink slash-dotdot",
       {sym("slash-dotdot", "/../victim/hello")},
       Outcome::kAccepted,
       "",
       "",
       [](const std::string& root) {
         EXPECT_EQ(*sys::readlink(root + "/slash-dotdot"), "/../victim/hello");
       }},
      // Writes through links that are legal themselves but created by this very tar.
      {"write through an absolute symlink of this layer",
       {sym("loophole", "/"), file("loophole/planted")},
       Outcome::kRefused,
       "loophole/planted",
       through},
      {"write through a relative symlink of this layer",
       {dir("dir"), sym("dir/up", ".."), file("dir/up/planted")},
       Outcome::kRefused,
       "dir/up/planted",
       through},
      {"hardlink target through a symlink of this layer",
       {file("real"), sym("alias", "/"), hard("h", "alias/real")},
       Outcome::kRefused,
       "h",
       through},
      {"write through a hard link to a symlink of this layer",
       {sym("s", "/"), hard("h", "s"), file("h/planted")},
       Outcome::kRefused,
       "h/planted",
       "hard link \"h\""},
      {"whiteout through a symlink of this layer",
       {file("keep"), sym("l", "/"), file("l/.wh.keep")},
       Outcome::kRefused,
       "l/.wh.keep",
       through},
      {"opaque marker through a symlink of this layer",
       {dir("d"), file("d/keep"), sym("l", "/d"), file("l/.wh..wh..opq")},
       Outcome::kRefused,
       "l/.wh..wh..opq",
       through},
      {"whiteout of dotdot",
       {file("d/.wh...")},
       Outcome::kRefused,
       "d/.wh...",
       "climbs out of its directory"},
      // TestUntarHardlinkToSymlink: a hard link to a symlink links the symlink itself.
      {"hardlink to symlink",
       {sym("symlink1", "regfile"), hard("symlink2", "symlink1"), file("regfile")},
       Outcome::kAccepted,
       "",
       "",
       [](const std::string& root) {
         auto s1 = sys::lstat(root + "/symlink1");
         auto s2 = sys::lstat(root + "/symlink2");
         ASSERT_TRUE(s1.ok() && s2.ok());
         EXPECT_TRUE(S_ISLNK(s2->st_mode));
         EXPECT_EQ(s1->st_ino, s2->st_ino);
       }},
      // chrootarchive TestChrootApplyDotDotFile.
      {"..gitme",
       {file("..gitme"), file("a/..b"), dir("...")},
       Outcome::kAccepted,
       "",
       "",
       [](const std::string& root) {
         EXPECT_EQ(tree_names(root), (std::set<std::string>{"..gitme", "a/", "a/..b", ".../"}));
       }},
      // A link that is replaced by a real directory no longer counts as a link.
      {"symlink replaced by a directory",
       {sym("d", "/"), dir("d"), file("d/inside")},
       Outcome::kAccepted,
       "",
       "",
       [](const std::string& root) {
         EXPECT_EQ(tree_names(root), (std::set<std::string>{"d/", "d/inside"}));
       }},
  };
  return c;
}

class ArchiveSecurity : public ::testing::Test {
 protected:
  void SetUp() override {
    victim_ = t_.dir("victim");
    auto now = std::chrono::system_clock::now().time_since_epoch().count();
    hello_ = "hello from the victim, " + std::to_string(now);
    testing::write_file(victim_ + "/hello", hello_, 0644);
    before_ = snapshot(t_.path() + "/victim");
  }

  // The victim is byte-for-byte what it was, and none of its bytes leaked into `root`.
  void expect_victim_intact(const std::string& root) {
    EXPECT_EQ(snapshot(victim_), before_) << "the victim directory changed";
    auto content = sys::read_file(victim_ + "/hello");
    ASSERT_TRUE(content.ok());
    EXPECT_EQ(*content, hello_);
    if (root.empty()) return;
    for (const auto& name : tree_names(root)) {
      if (name.back() == '/') continue;
      auto st = sys::lstat(root + "/" + name);
      if (!st.ok() || !S_ISREG(st->st_mode)) continue;
      auto bytes = sys::read_file(root + "/" + name);
      EXPECT_FALSE(bytes.ok() && *bytes == hello_) << name << " holds the victim's bytes";
    }
  }

  TempRoot t_;
  std::string victim_;
  std::string hello_;
  std::vector<std::string> before_;
};

TEST_F(ArchiveSecurity, DockersBreakoutCorpusInBothModes) {
  int n = 0;
  for (const auto& c : corpus()) {
    for (auto mode : {ApplyMode::kApply, ApplyMode::kValidateOnly}) {
      SCOPED_TRACE(c.name + (mode == ApplyMode::kApply ? " (apply)" : " (validate)"));
      // The root sits beside the victim, as Docker's dest does: "../victim" is the victim.
      std::string root = mode == ApplyMode::kApply ? t_.dir("dest" + std::to_string(n++)) : "";
      auto r = apply_tar(root, make_tar(c.entries), WhiteoutFormat::kDeleteInPlace, mode);
      if (c.outcome == Outcome::kRefused) {
        ASSERT_FALSE(r.ok()) << "not refused";
        EXPECT_EQ(r.error().kind(), ErrorKind::kSecurity) << r.error().message();
        EXPECT_NE(r.error().message().find("entry \"" + c.offending + "\""), std::string::npos)
            << r.error().message();
        EXPECT_NE(r.error().message().find(c.reason), std::string::npos) << r.error().message();
        EXPECT_EQ(r.error().message().rfind("apply-diff layer test: ", 0), 0u)
            << r.error().message();
      } else {
        ASSERT_TRUE(r.ok()) << r.error().message();
        if (mode == ApplyMode::kApply && c.check) c.check(root);
      }
      expect_victim_intact(root);
    }
  }
}

TEST_F(ArchiveSecurity, RefusedEntriesLeaveNothingOfThemselves) {
  // Checks run before an entry touches the filesystem: the refused entry creates nothing,
  // and the entries before it stay inside the root.
  std::string root = t_.dir("dest");
  auto r =
      apply_tar(root, make_tar({file("before"), dir("dir"), sym("dir/loophole", "../../victim"),
                                file("dir/loophole/newfile")}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kSecurity);
  EXPECT_EQ(tree_names(root), (std::set<std::string>{"before", "dir/"}));
  expect_victim_intact(root);
}

TEST_F(ArchiveSecurity, SymlinksAlreadyInTheTreeResolveInsideTheRoot) {
  // A parent layer copied by vfs may hold any symlink; openat2(RESOLVE_IN_ROOT) keeps every
  // path inside the root (chrootarchive TestUntarWithMaliciousSymlinks).
  std::string root = t_.dir("dest");
  ASSERT_TRUE(sys::symlinkat(victim_, AT_FDCWD, root + "/abs-escape").ok());
  ASSERT_TRUE(sys::symlinkat("../victim", AT_FDCWD, root + "/rel-escape").ok());
  ASSERT_TRUE(sys::symlinkat("../../../../../../..", AT_FDCWD, root + "/to-slash").ok());
  ASSERT_TRUE(sys::mkdir(root + "/inside", 0755).ok());
  ASSERT_TRUE(sys::symlinkat("/inside", AT_FDCWD, root + "/abs-inside").ok());
  for (const auto& entries : std::vector<std::vector<TarEntry>>{
           {file("abs-escape/planted")},
           {file("rel-escape/planted")},
           {file("to-slash" + victim_ + "/planted")},
           {hard("stolen", "abs-escape/hello")},
           {hard("stolen", "to-slash" + victim_ + "/hello")},
           {file("abs-escape/.wh.hello")},
           {file("rel-escape/.wh..wh..opq")},
       }) {
    SCOPED_TRACE(entries.front().name);
    (void)apply_tar(root, make_tar(entries));  // may fail (ENOENT inside the root); must not leak
    expect_victim_intact(root);
  }
  // A symlink that stays inside is followed as the tree says.
  ASSERT_TRUE(apply_tar(root, make_tar({file("abs-inside/through")})).ok());
  EXPECT_TRUE(sys::lstat(root + "/inside/through").ok());
  expect_victim_intact(root);
}

TEST_F(ArchiveSecurity, OverlayAndAufsFormatsRefuseTheSame) {
  for (auto format : {WhiteoutFormat::kOverlay, WhiteoutFormat::kAufs}) {
    std::string root = t_.dir("dest" + std::to_string(static_cast<int>(format)));
    for (const auto& entries : std::vector<std::vector<TarEntry>>{
             {file("../victim/x")},
             {sym("l", "../victim"), file("l/.wh.hello")},
             {sym("l", "/"), file("l/.wh..wh..opq")},
             {hard("h", "../victim/hello")},
         }) {
      auto r = apply_tar(root, make_tar(entries), format);
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.error().kind(), ErrorKind::kSecurity) << r.error().message();
      expect_victim_intact(root);
    }
  }
}

}  // namespace
}  // namespace cowlab
