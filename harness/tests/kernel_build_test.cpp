// Unit tests of `cowlab kernel build`'s pure and local parts: config fragments (parse, merge,
// survival check, unknown options), patch formats and application, source identity, the work
// tree.  Real kernel builds are tested end to end in tests/vm/test_kernel_build.py.
#include <algorithm>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cowlab/harness/kernel_build.h"
#include "cowlab/harness/profile.h"
#include "src/kernel_build_internal.h"
#include "src/process.h"

namespace fs = std::filesystem;

namespace cowlab::harness {
namespace {

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::trunc) << text;
}
std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cowlab-kbuild-test.XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    // Scratch files of the helpers go to the cache: keep it inside the test directory.
    if (const char* old = std::getenv("COWLAB_CACHE")) old_cache_ = old;
    ::setenv("COWLAB_CACHE", (dir_ / "cache").c_str(), 1);
  }
  void TearDown() override {
    if (old_cache_.empty())
      ::unsetenv("COWLAB_CACHE");
    else
      ::setenv("COWLAB_CACHE", old_cache_.c_str(), 1);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
  std::string old_cache_;
};

// ---- fragments --------------------------------------------------------------------------------

TEST(ConfigFragment, ParsesSetAndNotSetWithOrigin) {
  auto r = parse_config_fragment(
      "# a comment\nCONFIG_A=y\n\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\nCONFIG_D=0x10\n",
      "frag.config");
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->size(), 4u);
  EXPECT_EQ((*r)[0].name, "CONFIG_A");
  EXPECT_EQ((*r)[0].value, "y");
  EXPECT_EQ((*r)[0].origin, "frag.config:2");
  EXPECT_EQ((*r)[1].name, "CONFIG_B");
  EXPECT_EQ((*r)[1].value, "n");
  EXPECT_EQ((*r)[2].value, "\"x y\"");
  EXPECT_EQ((*r)[3].value, "0x10");
}

TEST(ConfigFragment, RejectsGarbageNamingFileAndLine) {
  auto r = parse_config_fragment("CONFIG_A=y\nOVERLAY_FS=y\n", "mine.config");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(r.error().message().find("mine.config:2"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("OVERLAY_FS=y"), std::string::npos);
  auto empty = parse_config_fragment("CONFIG_A=\n", "e.config");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().message().find("e.config:1: CONFIG_A has no value"), std::string::npos);
}

TEST(ConfigFragment, MergeReplacesAppendsAndLastWins) {
  const std::string base = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n# comment\n";
  auto f1 = *parse_config_fragment("CONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=y\n", "1");
  auto f2 = *parse_config_fragment("CONFIG_D=m\n", "2");
  f1.insert(f1.end(), f2.begin(), f2.end());
  EXPECT_EQ(merge_config_text(base, f1),
            "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n# comment\nCONFIG_D=m\n");
}

TEST(ConfigFragment, DroppedOptionsNamesEveryOneThatDidNotSurvive) {
  auto req = *parse_config_fragment(
      "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=m\nCONFIG_E=y\n", "f.config");
  // A survived; B vanished (missing dependency); C was forced on; D became y; E is absent.
  const std::string final_config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=y\n";
  auto d = dropped_options(req, final_config);
  ASSERT_EQ(d.size(), 4u);
  EXPECT_EQ(d[0], "CONFIG_B=y (from f.config:2) ended up not set (a dependency is missing)");
  EXPECT_NE(d[1].find("CONFIG_C not set (from f.config:3) ended up as y"), std::string::npos)
      << d[1];
  EXPECT_NE(d[2].find("CONFIG_D=m"), std::string::npos);
  EXPECT_NE(d[3].find("CONFIG_E=y"), std::string::npos);
  // Everything survived: nothing reported.
  EXPECT_TRUE(dropped_options(*parse_config_fragment("CONFIG_A=y\n", "f"), final_config).empty());
  // The last request for an option is the one checked.
  auto twice = *parse_config_fragment("CONFIG_B=y\n# CONFIG_B is not set\n", "g");
  EXPECT_TRUE(dropped_options(twice, final_config).empty());
}

TEST_F(TempDir, KconfigSymbolsAndUnknownOptions) {
  write(dir_ / "Kconfig", "config FOO\n\tbool \"foo\"\nsource \"fs/Kconfig\"\n");
  write(dir_ / "fs" / "Kconfig", "menuconfig BAR\n  tristate\nconfig  BAZ \n# config NOTME\n");
  write(dir_ / "fs" / "Kconfig.debug", "config QUX\n");
  write(dir_ / "o-123" / "Kconfig", "config INBUILDDIR\n");
  auto syms = kconfig_symbols(dir_);
  ASSERT_TRUE(syms.ok()) << syms.error().message();
  EXPECT_EQ(*syms,
            (std::vector<std::string>{"CONFIG_BAR", "CONFIG_BAZ", "CONFIG_FOO", "CONFIG_QUX"}));
  auto req =
      *parse_config_fragment("CONFIG_FOO=y\nCONFIG_NOPE=y\n# CONFIG_QUX is not set\n", "x.config");
  auto unknown = sort_out_unknown_options(req, *syms);
  ASSERT_EQ(unknown.refused.size(), 1u);
  EXPECT_EQ(unknown.refused[0], "x.config:2: CONFIG_NOPE is not a Kconfig symbol of this tree");
  EXPECT_TRUE(unknown.skipped.empty());
  EXPECT_EQ(req.size(), 2u);

  // cowlab's own fragments serve every series: an option a series lacks (CONFIG_EMBEDDED is gone
  // from 6.12) is left out, not refused, and not checked afterwards as "dropped".
  auto own = *parse_config_fragment("# CONFIG_EMBEDDED is not set\nCONFIG_FOO=y\n",
                                    "harness.config", FragmentOwner::kCowlab);
  auto sorted = sort_out_unknown_options(own, *syms);
  EXPECT_TRUE(sorted.refused.empty());
  ASSERT_EQ(sorted.skipped.size(), 1u);
  EXPECT_EQ(sorted.skipped[0],
            "harness.config:1: CONFIG_EMBEDDED is not a Kconfig symbol of this tree");
  ASSERT_EQ(own.size(), 1u);
  EXPECT_EQ(own[0].name, "CONFIG_FOO");
}

// Every option of cowlab's own fragments must be known to each series it builds, or be a
// "not set" request that is satisfied by its absence: checked against the trees in the cache.
TEST(ConfigFragment, CowlabFragmentsBuildEverySeriesInTheCache) {
  auto frags = default_config_fragments();
  ASSERT_TRUE(frags.ok()) << frags.error().message();
  const char* home = std::getenv("HOME");
  const std::filesystem::path src =
      std::filesystem::path(home ? home : "/root") / ".cache/cowlab/kernel/src";
  std::error_code ec;
  int trees = 0;
  for (const auto& e : std::filesystem::directory_iterator(src, ec)) {
    // kernel_source.cpp unpacks linux-source-X into <cache>/kernel/src/<package>/linux.
    const auto tree = e.path() / "linux";
    if (!std::filesystem::is_regular_file(tree / "init" / "Kconfig")) continue;
    ++trees;
    auto syms = kconfig_symbols(tree);
    ASSERT_TRUE(syms.ok()) << syms.error().message();
    for (const auto& f : *frags) {
      auto req = *parse_config_fragment(slurp(f), f.filename().string(), FragmentOwner::kCowlab);
      auto sorted = sort_out_unknown_options(req, *syms);
      EXPECT_TRUE(sorted.refused.empty());
      for (const auto& s : sorted.skipped)
        EXPECT_NE(s.find("CONFIG_EMBEDDED"), std::string::npos)
            << e.path().filename()
            << ": cowlab's fragment asks for an option this series lacks: " << s;
    }
  }
  if (trees == 0) GTEST_SKIP() << "no unpacked kernel tree in " << src << " (cowlab kernel source)";
}

// aufs's kbuild patch sources fs/aufs/Kconfig inside fs/Kconfig's `if MISC_FILESYSTEMS`; with
// that off, CONFIG_AUFS_FS is dropped and the cause is the enclosing if of the source line.
TEST_F(TempDir, UnmetGuardsFollowSourceLinesAndDependsOn) {
  write(dir_ / "Kconfig", "config BLOCK\n\tbool\nsource \"fs/Kconfig\"\n");
  write(dir_ / "fs" / "Kconfig",
        "menuconfig MISC_FILESYSTEMS\n\tbool \"misc\"\n\nif MISC_FILESYSTEMS\n"
        "source \"fs/squash/Kconfig\"\nendif # MISC_FILESYSTEMS\n"
        "if BLOCK\nsource \"fs/aufs/Kconfig\"\nendif\n");
  write(dir_ / "fs" / "squash" / "Kconfig", "config SQUASH\n\ttristate \"s\"\n");
  write(dir_ / "fs" / "aufs" / "Kconfig",
        "config AUFS_FS\n\ttristate \"aufs\"\n\tdepends on XATTRS && BLOCK\n\thelp\n\t  x\n"
        "if AUFS_FS\nconfig AUFS_X\n\tbool\nendif\n");
  const std::string cfg = "CONFIG_BLOCK=y\n# CONFIG_MISC_FILESYSTEMS is not set\n";
  EXPECT_EQ(kconfig_unmet_guards(dir_, "CONFIG_SQUASH", cfg),
            (std::vector<std::string>{
                "fs/Kconfig:4 `if MISC_FILESYSTEMS` (CONFIG_MISC_FILESYSTEMS not set)"}));
  // Its own depends on: only the unset symbol is named; the satisfied `if BLOCK` is not listed.
  EXPECT_EQ(kconfig_unmet_guards(dir_, "CONFIG_AUFS_FS", cfg),
            (std::vector<std::string>{
                "fs/aufs/Kconfig:3 `depends on XATTRS && BLOCK` (CONFIG_XATTRS not set)"}));
  // Nested: AUFS_X sits inside `if AUFS_FS`, which is off.
  auto nested = kconfig_unmet_guards(dir_, "CONFIG_AUFS_X", cfg);
  ASSERT_FALSE(nested.empty());
  EXPECT_EQ(nested[0], "fs/aufs/Kconfig:6 `if AUFS_FS` (CONFIG_AUFS_FS not set)");
  EXPECT_TRUE(kconfig_unmet_guards(dir_, "CONFIG_NOT_DECLARED", cfg).empty());
}

TEST(ConfigFragment, CowlabFragmentsParse) {
  auto frags = default_config_fragments();
  ASSERT_TRUE(frags.ok()) << frags.error().message();
  for (const auto& f : *frags) {
    auto r = parse_config_fragment(slurp(f), f.filename().string());
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_GT(r->size(), 10u) << f;
  }
}

// ---- patches ----------------------------------------------------------------------------------

TEST(PatchFormat, MailAndUnified) {
  EXPECT_EQ(
      detect_patch_format("From 0123456789abcdef0123456789abcdef01234567 Mon Sep 17 00:00:00 2001\n"
                          "From: A <a@b>\nSubject: [PATCH] x\n\n---\n diff --git a/f b/f\n"),
      PatchFormat::kMail);
  EXPECT_EQ(detect_patch_format(
                "From: A <a@b>\nDate: x\nSubject: [PATCH] y\n\ntext\n---\ndiff --git a/f b/f\n"),
            PatchFormat::kMail);
  EXPECT_EQ(detect_patch_format(
                "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-From: x\n+Subject: y\n"),
            PatchFormat::kUnified);
  EXPECT_EQ(detect_patch_format("--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n"), PatchFormat::kUnified);
  // A "From " line that is not a commit id is not an mbox header.
  EXPECT_EQ(detect_patch_format("From here on\n--- a/f\n+++ b/f\n"), PatchFormat::kUnified);
}

TEST(PatchFormat, FirstFailingHunk) {
  EXPECT_EQ(detail::first_failing_hunk(
                "checking file fs/a.c\nHunk #1 succeeded at 3.\nchecking file fs/b.c\n"
                "Hunk #2 FAILED at 120.\n1 out of 2 hunks FAILED\n"),
            "fs/b.c: Hunk #2 FAILED at 120.");
  EXPECT_EQ(detail::first_failing_hunk("Checking patch fs/x.c...\nerror: patch failed: fs/x.c:42\n"
                                       "error: fs/x.c: patch does not apply\n"),
            "patch failed: fs/x.c:42");
}

const char* kGoodPatch =
    "--- a/dir/f.c\n+++ b/dir/f.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n";
const char* kBadPatch =
    "--- a/dir/f.c\n+++ b/dir/f.c\n@@ -1,3 +1,3 @@\n one\n-zwei\n+ZWEI\n three\n";

TEST_F(TempDir, PatchAppliesOrNamesTheFailingHunkWithoutPartialChanges) {
  write(dir_ / "t" / "dir" / "f.c", "one\ntwo\nthree\n");
  write(dir_ / "bad.patch", kBadPatch);
  write(dir_ / "good.patch", kGoodPatch);
  auto patches = detail::read_patches({dir_ / "bad.patch", dir_ / "good.patch"});
  ASSERT_TRUE(patches.ok()) << patches.error().message();
  auto bad = detail::apply_patch(dir_ / "t", (*patches)[0]);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(bad.error().message().find("bad.patch: does not apply: dir/f.c: Hunk #1 FAILED at 1"),
            std::string::npos)
      << bad.error().message();
  EXPECT_EQ(slurp(dir_ / "t" / "dir" / "f.c"), "one\ntwo\nthree\n");
  EXPECT_FALSE(fs::exists(dir_ / "t" / "dir" / "f.c.rej"));
  ASSERT_TRUE(detail::apply_patch(dir_ / "t", (*patches)[1]).ok());
  EXPECT_EQ(slurp(dir_ / "t" / "dir" / "f.c"), "one\nTWO\nthree\n");
}

TEST_F(TempDir, ReadPatchesRefusesWhatIsNoPatch) {
  write(dir_ / "notes.txt", "just words\n");
  auto r = detail::read_patches({dir_ / "notes.txt"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("notes.txt: not a patch"), std::string::npos);
  auto missing = detail::read_patches({dir_ / "nope.patch"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind(), ErrorKind::kNotFound);
}

// ---- source identity and the work tree ----------------------------------------------------------

TEST_F(TempDir, DirectoryIdentityFollowsContentAndMtime) {
  write(dir_ / "src" / "a.c", "a\n");
  write(dir_ / "src" / "sub" / "b.c", "b\n");
  auto id1 = source_identity(dir_ / "src");
  ASSERT_TRUE(id1.ok()) << id1.error().message();
  EXPECT_EQ(id1->rfind("dir:", 0), 0u);
  EXPECT_EQ(*source_identity(dir_ / "src"), *id1);
  // A touched file (same content, new mtime) must rebuild: make would recompile it too.
  auto t = fs::last_write_time(dir_ / "src" / "sub" / "b.c");
  fs::last_write_time(dir_ / "src" / "sub" / "b.c", t + std::chrono::seconds(5));
  auto id2 = *source_identity(dir_ / "src");
  EXPECT_NE(id2, *id1);
  write(dir_ / "src" / "c.c", "c\n");
  EXPECT_NE(*source_identity(dir_ / "src"), id2);
}

TEST_F(TempDir, GitIdentityIsCommitPlusChanges) {
  const fs::path g = dir_ / "git";
  write(g / "a.c", "a\n");
  auto sh = [&](const std::string& cmd) {
    return sys::run({"sh", "-c", "cd " + detail::shell_quote(g.string()) + " && " + cmd})
        .value_or(-1);
  };
  ASSERT_EQ(sh("git init -q . && git -c user.email=t@t -c user.name=t add -A && "
               "git -c user.email=t@t -c user.name=t commit -qm init"),
            0);
  auto clean = *source_identity(g);
  ASSERT_EQ(clean.rfind("git:", 0), 0u) << clean;
  EXPECT_EQ(clean.find("dirty"), std::string::npos);
  // Touching a tracked file changes nothing a git identity covers.
  auto t = fs::last_write_time(g / "a.c");
  fs::last_write_time(g / "a.c", t + std::chrono::seconds(5));
  EXPECT_EQ(*source_identity(g), clean);
  write(g / "a.c", "changed\n");
  auto dirty = *source_identity(g);
  EXPECT_EQ(dirty.rfind(clean + "+dirty:", 0), 0u) << dirty;
  write(g / "a.c", "a\n");
  write(g / "new.c", "untracked\n");
  auto untracked = *source_identity(g);
  EXPECT_NE(untracked, dirty);
  EXPECT_NE(untracked, clean);
  write(g / "new.c", "untracked, edited\n");
  EXPECT_NE(*source_identity(g), untracked);
}

TEST_F(TempDir, WorkTreeIsAHardLinkCopyThatPatchesNeverWriteThrough) {
  const fs::path src = dir_ / "src", work = dir_ / "work";
  write(src / "dir" / "f.c", "one\ntwo\nthree\n");
  write(src / "dir" / "g.c", "g\n");
  write(src / ".git" / "HEAD", "ref\n");
  write(dir_ / "good.patch", kGoodPatch);
  KernelSource s;
  s.spec = src.string();
  s.tree = src;
  s.identity = *source_identity(src);
  auto patches = *detail::read_patches({dir_ / "good.patch"});
  auto quiet = [](std::string_view) {};
  auto r = detail::sync_work_tree(s, patches, work, quiet);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(*r);
  EXPECT_EQ(slurp(work / "dir" / "f.c"), "one\nTWO\nthree\n");
  EXPECT_EQ(slurp(src / "dir" / "f.c"), "one\ntwo\nthree\n");  // the source is untouched
  EXPECT_FALSE(fs::exists(work / ".git"));
  EXPECT_EQ(fs::hard_link_count(work / "dir" / "g.c"), 2u);  // unpatched files: links, same mtime
  // The same inputs again: nothing to do.  A build directory survives a refresh.
  EXPECT_FALSE(*detail::sync_work_tree(s, patches, work, quiet));
  write(work / "o-abc" / "vmlinux", "x");
  s.identity = "changed";
  EXPECT_TRUE(*detail::sync_work_tree(s, {}, work, quiet));
  EXPECT_EQ(slurp(work / "dir" / "f.c"), "one\ntwo\nthree\n");
  EXPECT_TRUE(fs::exists(work / "o-abc" / "vmlinux"));
}

TEST_F(TempDir, SourceSpecErrors) {
  auto bad_series = resolve_kernel_source("debian:six");
  ASSERT_FALSE(bad_series.ok());
  EXPECT_EQ(bad_series.error().kind(), ErrorKind::kUsage);
  auto missing = resolve_kernel_source((dir_ / "nothing").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind(), ErrorKind::kNotFound);
  write(dir_ / "notkernel" / "README", "x");
  auto notkernel = resolve_kernel_source((dir_ / "notkernel").string());
  ASSERT_FALSE(notkernel.ok());
  EXPECT_NE(notkernel.error().message().find("not a kernel tree"), std::string::npos);
  write(dir_ / "k" / "Makefile", "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 7\n");
  write(dir_ / "k" / "Kconfig", "config X\n");
  fs::create_directories(dir_ / "k" / "arch" / "x86");
  auto k = resolve_kernel_source((dir_ / "k").string());
  ASSERT_TRUE(k.ok()) << k.error().message();
  EXPECT_EQ(k->kernel_version, "6.1.7");
  write(dir_ / "k" / ".config", "CONFIG_X=y\n");
  auto configured = resolve_kernel_source((dir_ / "k").string());
  ASSERT_FALSE(configured.ok());
  EXPECT_NE(configured.error().message().find("make mrproper"), std::string::npos);
}

TEST_F(TempDir, SourceBuiltProfileIsFoundByItsManifest) {
  write(dir_ / "bzImage", "kernel");
  fs::create_directories(dir_ / "modules" / "6.1.0");
  write(dir_ / "record.json", "{}");
  write(dir_ / "cache" / "profiles" / "src-test.json",
        "{\"kind\": \"source\", \"description\": \"Linux 6.1.0 built from debian:6.1\", "
        "\"byo_kernel\": \"" +
            (dir_ / "bzImage").string() + "\", \"byo_modules\": \"" +
            (dir_ / "modules" / "6.1.0").string() +
            "\", \"byo_config\": \"\", \"source_record\": \"" + (dir_ / "record.json").string() +
            "\"}");
  auto p = find_profile("src-test");
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(p->kind, ProfileKind::kSourceBuilt);
  EXPECT_EQ(p->kernel, dir_ / "bzImage");
  EXPECT_EQ(p->build_record, dir_ / "record.json");
  EXPECT_EQ(p->description, "Linux 6.1.0 built from debian:6.1");
  EXPECT_EQ(profile_kind_name(p->kind), "source");
  auto names = source_built_profiles();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, std::vector<std::string>{"src-test"});
  // `vm profiles` lists stored profiles of both kinds (it listed only the Debian ones): a
  // bring-your-own manifest beside it, and no Debian manifest.
  write(dir_ / "cache" / "profiles" / "mine.json",
        "{\"kind\": \"byo\", \"byo_kernel\": \"" + (dir_ / "bzImage").string() +
            "\", \"byo_modules\": \"\", \"byo_config\": \"\"}");
  write(dir_ / "cache" / "profiles" / "debian-6.1.json", "{\"kind\": \"debian\"}");
  auto stored = stored_profiles();
  ASSERT_TRUE(stored.ok()) << stored.error().message();
  std::vector<std::string> listed;
  for (const auto& sp : *stored) listed.push_back(sp.name + ":" + std::string(profile_kind_name(sp.kind)));
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(listed, (std::vector<std::string>{"mine:byo", "src-test:source"}));
  // A kernel that is gone makes the profile unusable, with the cause named.
  fs::remove(dir_ / "bzImage");
  auto gone = find_profile("src-test");
  ASSERT_FALSE(gone.ok());
  EXPECT_NE(gone.error().message().find("bzImage"), std::string::npos) << gone.error().message();
}

}  // namespace
}  // namespace cowlab::harness
