#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/tar_test_util.h"
#include "cowlab/sys.h"
#include "cowlab/sys_text.h"
#include "cowlab/sys_process.h"

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

// The line splitter that command-output parsers share (zfs list/get, tar -t, /proc/locks).
TEST(SysSplitLines, KeepsEmptyLinesAndAnUnterminatedLast) {
  using V = std::vector<std::string>;
  EXPECT_EQ(sys::split_lines(""), V{});
  EXPECT_EQ(sys::split_lines("\n"), V{""});
  EXPECT_EQ(sys::split_lines("a\n\nb"), (V{"a", "", "b"}));
  EXPECT_EQ(sys::split_lines("a\tb\nc\n"), (V{"a\tb", "c"}));
}

// The one spawner (Boost.Process): exit status, combined output, 128+signal, and errors that
// name the command and the cause instead of a bare 127.
TEST(SysRun, ReturnsStatusAndCombinedOutput) {
  std::string out;
  auto rc = sys::run({"sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"}, &out);
  ASSERT_TRUE(rc.ok()) << rc.error().message();
  EXPECT_EQ(*rc, 3);
  EXPECT_NE(out.find("to-stdout\n"), std::string::npos) << out;
  EXPECT_NE(out.find("to-stderr\n"), std::string::npos) << out;
}

TEST(SysRun, KilledBySignalIs128PlusSignal) {
  auto rc = sys::run({"sh", "-c", "kill -9 $$"});
  ASSERT_TRUE(rc.ok()) << rc.error().message();
  EXPECT_EQ(*rc, 128 + 9);
}

TEST(SysRun, MissingProgramIsAnErrorNamingIt) {
  std::string out;
  auto rc = sys::run({"cowlab-no-such-tool", "--version"}, &out);
  ASSERT_FALSE(rc.ok()) << "exit " << *rc << ": " << out;
  EXPECT_EQ(rc.error().kind(), ErrorKind::kNotFound);
  EXPECT_EQ(rc.error().message(), "run cowlab-no-such-tool: not found in PATH");
}

TEST(SysRun, UnexecutablePathIsAnErrorNamingItAndTheCause) {
  std::string out;
  auto rc = sys::run({"/nonexistent/cowlab-tool"}, &out);
  ASSERT_FALSE(rc.ok()) << "exit " << *rc << ": " << out;
  EXPECT_NE(rc.error().message().find("run /nonexistent/cowlab-tool: "), std::string::npos)
      << rc.error().message();
  EXPECT_NE(rc.error().message().find("No such file or directory"), std::string::npos)
      << rc.error().message();
}

TEST(SysSubprocess, MissingProgramIsAnErrorNamingIt) {
  sys::SpawnOptions so;
  so.argv = {"cowlab-no-such-tool"};
  so.output_mode = sys::StdioMode::kNull;
  auto p = sys::Subprocess::spawn(so);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().message(), "spawn cowlab-no-such-tool: not found in PATH");
}

// Whether `pid` still runs: a zombie does not (an orphan's zombie waits for init, and some
// container inits never reap).
bool process_runs(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return false;
  auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

// The pids a script wrote to `file`, one a line, once there are `n` of them (5 s at most).
std::vector<pid_t> wait_for_pids(const std::string& file, size_t n) {
  std::vector<pid_t> pids;
  for (int i = 0; i < 250 && pids.size() < n; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    pids.clear();
    std::ifstream in(file);
    for (std::string l; std::getline(in, l);)
      if (!l.empty()) pids.push_back(std::stoi(l));
  }
  return pids;
}

class SysSubprocessTree : public ::testing::Test {
 protected:
  void TearDown() override {
    for (pid_t p : started_)
      if (process_runs(p)) ::kill(p, SIGKILL);
  }
  Result<sys::Subprocess> spawn(const std::string& script) {
    sys::SpawnOptions so;
    so.argv = {"sh", "-c", script};
    so.output_file = root_.path() + "/out";
    return sys::Subprocess::spawn(so);
  }
  testing::TempRoot root_;
  const std::string pids_ = root_.path() + "/pids";
  std::vector<pid_t> started_;  // killed in TearDown if a test fails with them running
};

// terminate() stops what the child started, not only the child: before, it signalled the
// shell alone, and the shell's children and grandchildren ran on, orphaned (as the ZFS
// recipe's mmdebstrap did after `cowlab vm build` was stopped).  One grandchild ignores
// SIGTERM, so the SIGKILL after the grace period is needed too.
TEST_F(SysSubprocessTree, TerminateStopsEveryDescendant) {
  const std::string f = "'" + pids_ + "'";
  auto p = spawn("sleep 300 & echo $! >> " + f + "\n" + "( sleep 300 & echo $! >> " + f +
                 "; wait ) & echo $! >> " + f + "\n" +
                 "( trap '' TERM; exec sleep 300 ) & echo $! >> " + f + "\n" + "wait");
  ASSERT_TRUE(p.ok()) << p.error().message();
  started_ = wait_for_pids(pids_, 4);
  ASSERT_EQ(started_.size(), 4u);
  for (pid_t pid : started_) ASSERT_TRUE(process_runs(pid)) << pid;
  p->terminate(std::chrono::milliseconds(300));
  EXPECT_FALSE(p->running());
  EXPECT_FALSE(process_runs(p->pid()));
  for (pid_t pid : started_)
    EXPECT_FALSE(process_runs(pid)) << "descendant " << pid << " still runs";
}

// A child that exited on its own but left a background process in its group: terminate()
// (and so the destructor's kill) stops that process too.
TEST_F(SysSubprocessTree, TerminateAfterExitStopsWhatTheChildLeft) {
  auto p = spawn("sleep 300 & echo $! >> '" + pids_ + "'; exit 0");
  ASSERT_TRUE(p.ok()) << p.error().message();
  ASSERT_TRUE(p->wait_for(std::chrono::seconds(5)));
  EXPECT_EQ(p->exit_status(), 0);
  started_ = wait_for_pids(pids_, 1);
  ASSERT_EQ(started_.size(), 1u);
  ASSERT_TRUE(process_runs(started_[0]));
  p->terminate(std::chrono::milliseconds(300));
  EXPECT_FALSE(process_runs(started_[0]));
}

TEST(SysForkChild, ImmediateExitReportsStatusAndOutput) {
  auto child = sys::fork_child(
      [](int out_fd) -> int {
        (void)!::write(out_fd, "ok", 2);
        return 7;
      },
      sys::ChildExit::kImmediate);
  ASSERT_TRUE(child.ok()) << child.error().message();
  std::string out;
  auto status = sys::wait_child(*child, -1, &out);
  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_EQ(*status, 7);
  EXPECT_EQ(out, "ok");
}

TEST(SysForkChild, StopKillsAndReapsTheChildLikeATimeout) {
  // The child ignores SIGINT and SIGTERM, as a worker that inherited cowlab's stop handlers
  // does: only the kill of its process group ends it.
  auto child = sys::fork_child(
      [](int out_fd) -> int {
        ::signal(SIGINT, SIG_IGN);
        ::signal(SIGTERM, SIG_IGN);
        (void)!::write(out_fd, "up", 2);
        for (;;) ::pause();
      },
      sys::ChildExit::kImmediate);
  ASSERT_TRUE(child.ok()) << child.error().message();
  const pid_t pid = child->pid;
  int polls = 0;
  std::string out;
  auto status = sys::wait_child(*child, 60000, &out, [&] { return ++polls > 3; });
  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_FALSE(status->has_value()) << "a stopped wait is no exit status";
  EXPECT_GT(polls, 3);
  EXPECT_EQ(out.substr(0, 2), "up");
  // Reaped: the pid no longer names our child.
  EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

}  // namespace
}  // namespace cowlab
