// Unit tests of the harness's pure parts.  The guest paths are tested end to end in tests/vm.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <sys/stat.h>
#include <unistd.h>

#include "cowlab/harness/guest.h"
#include "cowlab/harness/kconfig.h"
#include "cowlab/harness/profile.h"
#include "cowlab/harness/self_binary.h"
#include "src/cpio.h"
#include "src/guest_logs.h"
#include "src/html_report.h"
#include "src/junit.h"
#include "src/progress.h"
#include "src/kernel_log.h"
#include "src/process.h"

namespace cowlab::harness {
namespace {

TEST(ParseSize, Units) {
  EXPECT_EQ(*parse_size("4G"), 4ull << 30);
  EXPECT_EQ(*parse_size("512M"), 512ull << 20);
  EXPECT_EQ(*parse_size("1T"), 1ull << 40);
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_EQ(*parse_size("2GiB"), 2ull << 30);
}

TEST(ParseSize, RejectsBadInputNamingIt) {
  for (const char* bad : {"", "G", "0", "4X", "-1G", "17T", "1.5G"}) {
    auto r = parse_size(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid);
    EXPECT_NE(r.error().message().find(std::string("'") + bad + "'"), std::string::npos)
        << r.error().message();
  }
}

TEST(ExitCodes, DistinctPerStatus) {
  EXPECT_EQ(exit_code_for(GuestStatus::kPass, 0), 0);
  EXPECT_EQ(exit_code_for(GuestStatus::kFail, 7), 7);
  EXPECT_EQ(exit_code_for(GuestStatus::kTimeout, 0), 124);
  EXPECT_EQ(exit_code_for(GuestStatus::kPanic, 0), 254);
  EXPECT_EQ(exit_code_for(GuestStatus::kHang, 0), 252);
  EXPECT_EQ(exit_code_for(GuestStatus::kSplat, 0), 251);
  EXPECT_EQ(exit_code_for(GuestStatus::kQemuDied, 0), 253);
  EXPECT_EQ(exit_code_for(GuestStatus::kInfraError, 0), 125);
}

TEST(KernelLog, Classifies) {
  using detail::classify_kernel_line;
  using detail::KernelEvent;
  EXPECT_EQ(classify_kernel_line("[   12.3] Kernel panic - not syncing: sysrq triggered crash"),
            KernelEvent::kPanic);
  EXPECT_EQ(classify_kernel_line("[    1.0] WARNING: CPU: 0 PID: 1 at fs/inode.c:123 foo+0x1/0x2"),
            KernelEvent::kSplat);
  EXPECT_EQ(classify_kernel_line("4,512,1234,-;WARNING: CPU: 0 PID: 77 at mm/x.c:1 y"),
            KernelEvent::kSplat);
  EXPECT_EQ(classify_kernel_line("1,5,6,-;BUG: unable to handle page fault for address: 0"),
            KernelEvent::kSplat);
  EXPECT_EQ(classify_kernel_line("3,9,9,-;INFO: task zpool:123 blocked for more than 120 seconds."),
            KernelEvent::kSplat);
  EXPECT_EQ(classify_kernel_line("[ 1.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!"),
            KernelEvent::kSplat);
  EXPECT_EQ(classify_kernel_line("6,1,1,-;zfs: module license 'CDDL' taints kernel."),
            KernelEvent::kNone);
  EXPECT_EQ(classify_kernel_line("[    5.3] sysrq: Power Off"), KernelEvent::kNone);
  EXPECT_EQ(classify_kernel_line(" SUBSYSTEM=virtio"), KernelEvent::kNone);
  EXPECT_EQ(detail::kmsg_message("6,339,5140900,-;hello; world"), "hello; world");
}

TEST(Cpio, NewcEntriesAreAlignedAndTerminated) {
  std::string out;
  {
    detail::CpioWriter w(&out);
    ASSERT_TRUE(w.add_dir("cowlab").ok());
    ASSERT_TRUE(w.add_file("cowlab/a", "hello", 0644).ok());
    ASSERT_TRUE(w.add_symlink("cowlab/l", "a").ok());
    ASSERT_TRUE(w.finish().ok());
  }
  EXPECT_EQ(out.substr(0, 6), "070701");
  EXPECT_EQ(out.size() % 4, 0u);
  EXPECT_NE(out.find("cowlab/a"), std::string::npos);
  EXPECT_NE(out.find("hello"), std::string::npos);
  EXPECT_NE(out.find("TRAILER!!!"), std::string::npos);
  // GNU cpio must list what we wrote.
  char path[] = "/tmp/cowlab-cpio-test-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, out.data(), out.size()), static_cast<ssize_t>(out.size()));
  close(fd);
  std::string listing;
  auto rc = sys::run({"cpio", "-it", "--quiet", "-F", path}, &listing);
  ASSERT_TRUE(rc.ok()) << rc.error().message();
  EXPECT_EQ(*rc, 0);
  unlink(path);
  EXPECT_EQ(listing, "cowlab\ncowlab/a\ncowlab/l\n");
}

TEST(ShellQuote, RoundTripsThroughSh) {
  std::string tricky = "it's a \"test\" $HOME `x` \\ ;";
  std::string out;
  auto rc = sys::run({"sh", "-c", "printf %s " + detail::shell_quote(tricky)}, &out);
  ASSERT_TRUE(rc.ok()) << rc.error().message();
  EXPECT_EQ(out, tricky);
}

TEST(KernelConfig, MissingOptions) {
  auto c = parse_kernel_config(
      "CONFIG_BLK_DEV_INITRD=y\nCONFIG_VIRTIO_BLK=m\nCONFIG_EXT4_FS=y\n# CONFIG_ACPI is not "
      "set\nCONFIG_MAGIC_SYSRQ=m\n",
      "test");
  ASSERT_TRUE(c.ok());
  auto miss = missing_options(*c, /*has_modules=*/false);
  auto find = [&](std::string_view o) -> const MissingOption* {
    for (auto& m : miss)
      if (m.requirement->option == o) return &m;
    return nullptr;
  };
  EXPECT_EQ(find("CONFIG_BLK_DEV_INITRD"), nullptr);
  EXPECT_EQ(find("CONFIG_EXT4_FS"), nullptr);
  ASSERT_NE(find("CONFIG_VIRTIO_BLK"), nullptr);
  EXPECT_NE(find("CONFIG_VIRTIO_BLK")->why.find("no modules"), std::string::npos);
  ASSERT_NE(find("CONFIG_MAGIC_SYSRQ"), nullptr);
  EXPECT_NE(find("CONFIG_MAGIC_SYSRQ")->why.find("built in"), std::string::npos);
  ASSERT_NE(find("CONFIG_ACPI"), nullptr);
  EXPECT_EQ(find("CONFIG_ACPI")->why, "not set");
  auto with_mods = missing_options(*c, true);
  for (auto& m : with_mods) EXPECT_NE(m.requirement->option, "CONFIG_VIRTIO_BLK");
  EXPECT_FALSE(parse_kernel_config("nothing here", "x").ok());
}

TEST(KernelConfig, ExtractsEmbeddedConfigFromCompressedImage) {
  // A fake "vmlinux" holding an ikconfig blob, gzip-compressed after some header bytes, like a
  // bzImage's payload.
  char dir[] = "/tmp/cowlab-ikcfg-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string d = dir;
  auto sh = [](const std::string& script) { return sys::run({"sh", "-c", script}).value_or(-1); };
  ASSERT_EQ(sh("printf 'CONFIG_IKCONFIG=y\\nCONFIG_EXT4_FS=y\\n' | gzip -9 > " + d + "/cfg.gz"), 0);
  ASSERT_EQ(sh("{ head -c 3000 /dev/zero; printf IKCFG_ST; cat " + d +
               "/cfg.gz; printf IKCFG_ED; head -c 5000 /dev/urandom; } > " + d + "/vmlinux"),
            0);
  ASSERT_EQ(sh("{ head -c 20000 /dev/zero; xz -c " + d + "/vmlinux; head -c 100 /dev/zero; } > " +
               d + "/bzImage"),
            0);
  auto cfg = read_kernel_config(d + "/bzImage");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  EXPECT_EQ(cfg->value("CONFIG_EXT4_FS"), "y");
  EXPECT_NE(cfg->source.find("IKCONFIG"), std::string::npos);
  std::filesystem::remove_all(d);
}

// A bring-your-own profile that was never built: the hint must build that same profile (its
// name included), or `vm run --profile aufs --kernel K` would keep failing after following it.
TEST(ProfileImage, NotBuiltByoHintNamesTheProfile) {
  char tmpl[] = "/tmp/cowlab-hint-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  std::ofstream(dir + "/bzImage") << "kernel";
  const char* old = std::getenv("COWLAB_CACHE");
  std::string saved = old ? old : "";
  ::setenv("COWLAB_CACHE", (dir + "/cache").c_str(), 1);
  auto spec = byo_profile(dir + "/bzImage", {}, {}, "aufs");
  ASSERT_TRUE(spec.ok()) << spec.error().message();
  auto img = load_profile_image(*spec);
  if (old)
    ::setenv("COWLAB_CACHE", saved.c_str(), 1);
  else
    ::unsetenv("COWLAB_CACHE");
  ASSERT_FALSE(img.ok());
  EXPECT_NE(img.error().message().find("(run: cowlab vm build --profile aufs --kernel " + dir +
                                       "/bzImage)"),
            std::string::npos)
      << img.error().message();
  std::filesystem::remove_all(dir);
}

// SpawnOptions::output_file is "created/truncated": a second command writing less than the first
// into the same file must not leave the first one's output behind (bisect's git scratch file
// read a clean tree's `git status` as the previous `rev-parse --show-toplevel` output).
TEST(Subprocess, OutputFileIsTruncated) {
  auto dir = std::filesystem::temp_directory_path() / ("cowlab-spawn-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto run = [&](std::vector<std::string> argv) {
    detail::SpawnOptions so;
    so.argv = std::move(argv);
    so.output_file = dir / "out";
    auto p = detail::Subprocess::spawn(so);
    ASSERT_TRUE(p.ok()) << p.error().message();
    while (!p->wait_for(std::chrono::milliseconds(100))) {
    }
    EXPECT_EQ(p->exit_status(), 0);
  };
  auto content = [&] {
    std::ifstream f(dir / "out");
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  run({"echo", "a long first line"});
  EXPECT_EQ(content(), "a long first line\n");
  run({"true"});
  EXPECT_EQ(content(), "");
  run({"echo", "short"});
  EXPECT_EQ(content(), "short\n");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cowlab::harness

namespace cowlab::harness {
namespace {

TEST(MatrixProgress, CountsEverySweepPointAndNeverPassesItsTotal) {
  using nlohmann::json;
  auto t0 = MatrixProgress::Clock::now();
  MatrixProgress p(3, t0);
  json pt = {{"scenario", "copy-up"}, {"driver", "vfs"}, {"status", "pass"}, {"sweep", {{"size", "1MiB"}}}};
  std::string l1 = p.cell_done(pt, "debian-6.1", t0 + std::chrono::seconds(10));
  EXPECT_EQ(l1.rfind("[1/3]", 0), 0u) << l1;
  EXPECT_NE(l1.find("size=1MiB"), std::string::npos);
  EXPECT_NE(l1.find("ETA 20 s"), std::string::npos) << l1;  // 10 s per cell, 2 left
  json fail = {{"scenario", "must-fail"}, {"driver", "vfs"}, {"status", "fail"},
               {"failures", {{{"expectation", "view c1:/g content"}, {"expected", "goodbye"}, {"observed", "hello"}}}}};
  std::string l2 = p.cell_done(fail, "debian-6.1", t0 + std::chrono::seconds(20));
  EXPECT_NE(l2.find("\n      view c1:/g content: expected goodbye, observed hello"), std::string::npos) << l2;
  p.cell_done(pt, "debian-6.1", t0 + std::chrono::seconds(30));
  std::string l4 = p.cell_done(pt, "debian-6.1", t0 + std::chrono::seconds(40));  // one more than planned
  EXPECT_EQ(l4.rfind("[4/4]", 0), 0u) << l4;
  EXPECT_EQ(l4.find("ETA"), std::string::npos);
  EXPECT_EQ(MatrixProgress::eta(0, 5, 1), "");
  EXPECT_EQ(MatrixProgress::eta(1, 5, 60), "ETA 4 min 00 s");
}

TEST(HtmlReport, NiceTicks) {
  auto t = detail::nice_ticks(0, 1.8, 5, false);
  ASSERT_GE(t.size(), 2u);
  EXPECT_DOUBLE_EQ(t.front(), 0);
  EXPECT_GE(t.back(), 1.8);
  EXPECT_DOUBLE_EQ(t[1] - t[0], 0.5);
  auto c = detail::nice_ticks(1, 4, 5, true);  // containers: no 1.8 containers
  EXPECT_EQ(c, (std::vector<double>{1, 2, 3, 4}));
  auto one = detail::nice_ticks(64, 64, 5, true);
  EXPECT_GE(one.size(), 2u);
  for (double v : detail::nice_ticks(1, 64, 5, true)) EXPECT_EQ(v, std::round(v));
  EXPECT_EQ(detail::driver_colour("overlay"), "#1f77b4");
  EXPECT_EQ(detail::driver_colour("nosuch"), "#7f7f7f");
}

TEST(JunitReport, SweepPointsSortByValue) {
  using nlohmann::json;
  std::vector<json> rs;
  for (const char* s : {"64MiB", "1MiB", "16MiB", "512KiB", "x"})
    rs.push_back({{"scenario", "a"}, {"profile", "p"}, {"driver", "vfs"}, {"sweep", {{"size", s}}}});
  detail::sort_results(rs);
  std::vector<std::string> got;
  for (const auto& r : rs) got.push_back(r["sweep"]["size"]);
  EXPECT_EQ(got, (std::vector<std::string>{"512KiB", "1MiB", "16MiB", "64MiB", "x"}));
}

}  // namespace
}  // namespace cowlab::harness

namespace {
std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
}  // namespace

// The pin is per process, so each case runs in a forked child (EXPECT_EXIT) that pins first.
TEST(SelfBinary, ReadsThePinnedFileAfterItIsRebuiltOrDeleted) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("cowlab-self-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::path exe = dir / "cowlab";
  auto child = [&](bool delete_it) {
    { std::ofstream(exe, std::ios::binary | std::ios::trunc) << "the original program"; }
    if (!cowlab::harness::pin_self_binary(exe).ok()) std::_Exit(10);
    // A rebuild as a linker does it: the old file unlinked, a new one written at the same path.
    fs::remove(exe);
    if (!delete_it) std::ofstream(exe, std::ios::binary) << "a rebuilt program";
    auto self = cowlab::harness::self_binary();
    if (!self.ok()) std::_Exit(11);
    if ((*self).path != exe) std::_Exit(12);
    if (slurp((*self).readable) != "the original program") std::_Exit(13);
    std::_Exit(0);
  };
  EXPECT_EXIT(child(false), ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(child(true), ::testing::ExitedWithCode(0), "");
  fs::remove_all(dir);
}

// The real process: what self_binary() reads is this test's own executable.
TEST(SelfBinary, IsThisProcesssExecutable) {
  auto self = cowlab::harness::self_binary();
  ASSERT_TRUE(self.ok()) << self.error().message();
  EXPECT_EQ((*self).path, std::filesystem::read_symlink("/proc/self/exe"));
  struct stat a {}, b {};
  ASSERT_EQ(::stat((*self).readable.c_str(), &a), 0);
  ASSERT_EQ(::stat("/proc/self/exe", &b), 0);
  EXPECT_EQ(a.st_dev, b.st_dev);
  EXPECT_EQ(a.st_ino, b.st_ino);
}

namespace cowlab::harness {
namespace {

// `cowlab vm run` aborted (uncaught std::filesystem::filesystem_error "cannot get file time: No
// such file or directory") when, while it pruned $COWLAB_CACHE/logs/guests, a concurrent vm run
// had just removed one of the logs: the sort called the throwing last_write_time().  A dangling
// symlink is the same case, deterministically.
TEST(GuestLogs, PruningSkipsWhatVanishedAndKeepsTheNewest) {
  char t[] = "/tmp/cowlab-guest-logs-XXXXXX";
  ASSERT_NE(::mkdtemp(t), nullptr);
  const std::filesystem::path dir = t;
  const auto now = std::filesystem::file_time_type::clock::now();
  for (int i = 0; i < 6; ++i) {
    const auto f = dir / ("log-" + std::to_string(i));
    std::ofstream(f) << i;
    std::filesystem::last_write_time(f, now - std::chrono::minutes(10 - i));
  }
  std::filesystem::create_symlink(dir / "gone", dir / "dangling");
  size_t removed = 0;
  EXPECT_NO_THROW(removed = prune_oldest_files(dir, 4));
  EXPECT_EQ(removed, 2u);
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(std::filesystem::exists(dir / ("log-" + std::to_string(i))), i >= 2) << i;
  EXPECT_TRUE(std::filesystem::is_symlink(dir / "dangling"));
  EXPECT_EQ(prune_oldest_files(dir / "absent", 4), 0u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cowlab::harness
