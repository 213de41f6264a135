// The cached package resolution (resolution.h) with a stand-in resolve.sh that counts its runs:
// before the cache every build_profile() (every `cowlab matrix` start) ran resolve.sh again.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cowlab/harness/profile.h"
#include "cowlab/sys.h"
#include "src/resolution.h"
#include "src/util.h"

namespace cowlab::harness {
namespace {

namespace fs = std::filesystem;

class Resolution : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cowlab-resolution-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    const char* old = std::getenv("COWLAB_CACHE");
    if (old) old_cache_ = old;
    had_cache_ = old != nullptr;
    ::setenv("COWLAB_CACHE", (dir_ / "cache").c_str(), 1);
    fs::create_directories(dir_ / "images" / "packages");
    write("images/lib.sh", "# lib\n");
    write("images/packages/base.txt", "busybox\n");
    write("recipe.conf", "KERNEL_REALM=bookworm\n");
    // Counts its runs; prints the recipe's realm; OFFLINE=1 warns like lib.sh's papt_update.
    write("images/resolve.sh",
          "echo run >> \"" + (dir_ / "runs").string() +
              "\"\n"
              "[ -n \"$FAIL\" ] && { echo 'resolve.sh: no such package' >&2; exit 1; }\n"
              "[ -n \"$OFFLINE\" ] && echo 'vm-images: apt update failed (see x/update.log); using "
              "the "
              "package lists from the last update' >&2\n"
              "sed -n 's/^KERNEL_REALM=/KERNEL_REALM=/p' \"$1\"\n"
              "echo KERNEL_PKG=linux-image-6.1.0-40-cloud-amd64=6.1.153-1\n");
  }
  void TearDown() override {
    if (had_cache_)
      ::setenv("COWLAB_CACHE", old_cache_.c_str(), 1);
    else
      ::unsetenv("COWLAB_CACHE");
    ::unsetenv("OFFLINE");
    ::unsetenv("FAIL");
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void write(const std::string& rel, const std::string& text) { std::ofstream(dir_ / rel) << text; }
  int runs() {
    std::ifstream in(dir_ / "runs");
    int n = 0;
    for (std::string l; std::getline(in, l);) ++n;
    return n;
  }
  Result<detail::Resolution> resolve(ResolveMode mode = ResolveMode::kCached) {
    said_.clear();
    detail::ResolveRequest rq{
        dir_ / "images", dir_ / "recipe.conf", "/bin/sh", "test", mode, [this](std::string_view l) {
          said_.emplace_back(l);
        }};
    return detail::resolve_packages(rq);
  }
  bool said(const std::string& part) const {
    for (const auto& l : said_)
      if (l.find(part) != std::string::npos) return true;
    return false;
  }

  fs::path dir_;
  std::string old_cache_;
  bool had_cache_ = false;
  std::vector<std::string> said_;
};

TEST_F(Resolution, SecondUseComesFromTheCacheWithoutRunningResolveSh) {
  auto first = resolve();
  ASSERT_TRUE(first.ok()) << first.error().message();
  EXPECT_FALSE(first->from_cache);
  EXPECT_EQ(first->values["KERNEL_REALM"], "bookworm");
  EXPECT_EQ(runs(), 1);
  auto second = resolve();
  ASSERT_TRUE(second.ok()) << second.error().message();
  EXPECT_TRUE(second->from_cache);
  EXPECT_EQ(second->values, first->values);
  EXPECT_EQ(second->resolved_at, first->resolved_at);
  EXPECT_EQ(runs(), 1);
  EXPECT_TRUE(said("(cached; --refresh resolves again)"));
}

TEST_F(Resolution, RefreshAndChangedInputsResolveAgain) {
  ASSERT_TRUE(resolve().ok());
  ASSERT_TRUE(resolve(ResolveMode::kRefresh).ok());
  EXPECT_EQ(runs(), 2);
  write("recipe.conf", "KERNEL_REALM=trixie\n");
  auto r = resolve();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->from_cache);
  EXPECT_EQ(r->values["KERNEL_REALM"], "trixie");
  EXPECT_EQ(runs(), 3);
  write("images/lib.sh", "# lib, changed\n");
  ASSERT_TRUE(resolve().ok());
  EXPECT_EQ(runs(), 4);
  ASSERT_TRUE(resolve().ok());
  EXPECT_EQ(runs(), 4);
}

TEST_F(Resolution, OfflineIsShownOnTheTerminalAndRemembered) {
  ::setenv("OFFLINE", "1", 1);
  auto r = resolve();
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->offline_warning.find("apt update failed"), std::string::npos);
  EXPECT_TRUE(said("[test] offline: vm-images: apt update failed"));
  EXPECT_EQ(r->values.count("vm-images: apt update failed (see x/update.log); using the package "
                            "lists from the last update"),
            0u);
  ::unsetenv("OFFLINE");
  auto again = resolve();
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->from_cache);
  EXPECT_TRUE(said("could not be refreshed then (offline)"));
}

TEST_F(Resolution, AFailureNamesTheLogAndCachesNothing) {
  ::setenv("FAIL", "1", 1);
  auto r = resolve();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("resolve profile test: resolve.sh failed (exit 1"),
            std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("no such package"), std::string::npos);
  ::unsetenv("FAIL");
  auto ok = resolve();
  ASSERT_TRUE(ok.ok());
  EXPECT_FALSE(ok->from_cache);
  EXPECT_EQ(runs(), 2);
}

// A build starts by removing what killed builds left in $COWLAB_CACHE/tmp, after detaching the
// mounts below it.  mountinfo escapes a space as \040: the hand-written parser this replaced
// read "a\040b", detached nothing, and remove_all then emptied the mounted filesystem and failed
// on its mount point.  (The fake resolve.sh fails, so the build stops right after the cleanup.)
TEST_F(Resolution, BuildCleanupDetachesMountsWithSpacesInTheirNames) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  ::setenv("FAIL", "1", 1);
  ::setenv("COWLAB_VM_IMAGES", (dir_ / "images").c_str(), 1);
  const fs::path left = dir_ / "cache" / "tmp" / "root-killed" / "chroot" / "a b";
  fs::create_directories(left);
  ASSERT_EQ(::mount("tmpfs", left.c_str(), "tmpfs", 0, "size=1m"), 0) << std::strerror(errno);
  std::ofstream(left / "inside") << "x";
  ProfileSpec spec;
  spec.name = "test";
  spec.recipe = dir_ / "recipe.conf";
  auto r = build_profile(spec, BuildOptions{});
  ::unsetenv("COWLAB_VM_IMAGES");
  bool still_mounted = false;
  if (auto mi = sys::mountinfo(); mi.ok())
    for (const auto& m : *mi)
      if (m.mount_point == left.string()) still_mounted = true;
  if (still_mounted) ::umount2(left.c_str(), MNT_DETACH);
  ASSERT_FALSE(r.ok());  // resolve.sh failed after the cleanup
  EXPECT_FALSE(still_mounted);
  EXPECT_FALSE(fs::exists(dir_ / "cache" / "tmp" / "root-killed"));
}

}  // namespace
}  // namespace cowlab::harness
