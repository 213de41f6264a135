// Programs: the one place cowlab starts another program (sys_process.h).  Boost.Process, as
// the design names it; nothing else in the tree includes it (tests/lint/one_way.py).
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/process/args.hpp>
#include <boost/process/child.hpp>
#include <boost/process/env.hpp>
#include <boost/process/environment.hpp>
#include <boost/process/extend.hpp>
#include <boost/process/io.hpp>
#include <boost/process/pipe.hpp>
#include <boost/process/search_path.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "cowlab/diag.h"
#include "cowlab/sys_process.h"

namespace bp = boost::process;
namespace fs = std::filesystem;

namespace cowlab::sys {
namespace {

// Runs in the child between fork and exec.
struct ChildSetup : bp::extend::handler {
  ProcessGroup group;
  explicit ChildSetup(ProcessGroup g) : group(g) {}
  template <class Executor>
  void on_exec_setup(Executor&) const {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (group == ProcessGroup::kOwn) ::setpgid(0, 0);
    // Boost.Process blocks nothing, but the harness may have handlers installed (and SIGPIPE
    // ignored, which exec keeps): restore defaults.
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
  }
};

// argv[0] as execve wants it: looked up in PATH unless it names a path.
Result<std::string> executable(const std::string& verb, const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0].empty()) return Error::invalid(verb + ": empty command");
  if (argv[0].find('/') != std::string::npos) return argv[0];
  std::string exe = bp::search_path(argv[0]).string();
  if (exe.empty())
    return Error(ErrorKind::kNotFound, verb + " " + argv[0] + ": not found in PATH", ENOENT);
  return exe;
}

// "cowlab: run: mkfs.ext4 -q -F /x" at -v: every program cowlab starts, as it starts it.
void say_started(const std::string& verb, const std::vector<std::string>& argv) {
  std::string line = "cowlab: " + verb + ":";
  for (const auto& a : argv) line += " " + a;
  diag::debug(line);
}

// The processes of group `pgid` that are still running: every /proc/PID/stat whose fifth field
// (after the parenthesised command name, which may itself hold blanks and parentheses) is
// `pgid`, zombies left out.  An orphan's zombie is reaped by init, and an init that never reaps
// (some container inits do not) must not make a dead group look alive.
std::vector<pid_t> live_group_members(pid_t pgid) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;  // exited meanwhile
    auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    long ppid = 0, pgrp = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %ld %ld", &state, &ppid, &pgrp) != 3) continue;
    if (pgrp == pgid && state != 'Z' && state != 'X') out.push_back(std::stoi(name));
  }
  return out;
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

Result<int> run(const std::vector<std::string>& argv, std::string* out) {
  auto exe = COWLAB_TRY(executable("run", argv));
  std::vector<std::string> args(argv.begin() + 1, argv.end());
  say_started("run", argv);
  bp::ipstream output;
  std::error_code ec;
  bp::child child;
  const ChildSetup setup(ProcessGroup::kInherit);
  try {
    // clang-format would read Boost.Process's redirections as template brackets.
    // clang-format off
    child = bp::child(exe, bp::args(args), bp::std_in < bp::null,
                      (bp::std_out & bp::std_err) > output, setup, ec);
    // clang-format on
  } catch (const std::exception& e) {
    return Error(ErrorKind::kSystem, "run " + argv[0] + ": " + e.what());
  }
  if (ec) return Error(ErrorKind::kSystem, "run " + argv[0] + ": " + ec.message(), ec.value());
  std::string captured((std::istreambuf_iterator<char>(output)), std::istreambuf_iterator<char>());
  // Reaped here rather than by child.wait(): Boost.Process 1.74 folds a signal death into
  // exit_code() ambiguously; the raw status keeps 128+signal distinct.
  int status = 0;
  while (::waitpid(child.id(), &status, 0) < 0) {
    if (errno != EINTR) return Error::from_errno("waitpid", "run " + argv[0], errno);
  }
  child.detach();
  if (out) *out = std::move(captured);
  return decode_status(status);
}

struct Subprocess::Impl {
  bp::child child;
  std::optional<int> status;
  ProcessGroup group = ProcessGroup::kOwn;
  // Set once the group has been seen empty after the child was reaped: its id may then be
  // reused by an unrelated group, which must never be signalled.
  bool group_gone = false;

  // Whether anything the child started (or the child itself) still runs.
  bool tree_alive(bool child_running) {
    if (group != ProcessGroup::kOwn) return child_running;
    if (group_gone) return false;
    if (child_running) return true;
    if (!live_group_members(child.id()).empty()) return true;
    group_gone = true;
    return false;
  }
  // `sig` to the child's process group (kOwn: the child and every descendant that stayed in
  // it), or to the child alone when it shares ours.
  void signal_tree(int sig, bool child_running) {
    if (group == ProcessGroup::kOwn) {
      if (tree_alive(child_running)) ::kill(-child.id(), sig);
    } else if (child_running) {
      ::kill(child.id(), sig);
    }
  }
};

Subprocess::Subprocess(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Subprocess::Subprocess(Subprocess&&) noexcept = default;
Subprocess& Subprocess::operator=(Subprocess&&) noexcept = default;
Subprocess::~Subprocess() {
  if (impl_) kill();
}

Result<Subprocess> Subprocess::spawn(const SpawnOptions& o) {
  auto exe = COWLAB_TRY(executable("spawn", o.argv));
  std::vector<std::string> args(o.argv.begin() + 1, o.argv.end());
  bp::environment env = boost::this_process::environment();
  for (const auto& [k, v] : o.env) env[k] = v;
  if (o.output_mode == StdioMode::kFile) {
    // Boost.Process opens the file O_WRONLY|O_CREAT without O_TRUNC: a shorter output would
    // leave the previous command's tail behind it.  The contract is "created/truncated".
    int fd = ::open(o.output_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return Error::from_errno("open", o.output_file.string(), errno);
    ::close(fd);
  }
  say_started("spawn", o.argv);
  auto impl = std::make_unique<Impl>();
  impl->group = o.group;
  std::error_code ec;
  const ChildSetup setup(o.group);
  try {
    // Boost.Process wants each redirection as a distinct type, hence the explicit cases.
    auto launch = [&](auto&& in_redirect) {
      switch (o.output_mode) {
        case StdioMode::kFile:
          return bp::child(exe, bp::args(args), env, in_redirect,
                           (bp::std_out & bp::std_err) > o.output_file.string(), setup, ec);
        case StdioMode::kNull:
          return bp::child(exe, bp::args(args), env, in_redirect,
                           (bp::std_out & bp::std_err) > bp::null, setup, ec);
        case StdioMode::kInherit:
        default:
          return bp::child(exe, bp::args(args), env, in_redirect, setup, ec);
      }
    };
    if (o.stdin_mode == StdioMode::kInherit)
      impl->child = launch(bp::std_in < stdin);
    else
      impl->child = launch(bp::std_in < bp::null);
  } catch (const std::exception& e) {
    return Error(ErrorKind::kSystem, "spawn " + o.argv[0] + ": " + e.what());
  }
  if (ec) return Error(ErrorKind::kSystem, "spawn " + o.argv[0] + ": " + ec.message(), ec.value());
  return Subprocess(std::move(impl));
}

pid_t Subprocess::pid() const {
  return impl_ ? impl_->child.id() : -1;
}

bool Subprocess::running() {
  if (!impl_ || impl_->status) return false;
  int st = 0;
  pid_t r = ::waitpid(impl_->child.id(), &st, WNOHANG);
  if (r == 0) return true;
  if (r == impl_->child.id()) {
    impl_->status = decode_status(st);
  } else {
    impl_->status = -1;  // already reaped elsewhere (cannot happen) or error
  }
  impl_->child.detach();  // reaped by us; keep Boost.Process from waiting again
  return false;
}

std::optional<int> Subprocess::exit_status() const {
  return impl_ ? impl_->status : std::nullopt;
}

bool Subprocess::wait_for(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

void Subprocess::terminate(std::chrono::milliseconds grace) {
  if (!impl_) return;
  impl_->signal_tree(SIGTERM, running());
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (impl_->tree_alive(running())) {
    if (std::chrono::steady_clock::now() >= deadline) return kill();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Subprocess::kill() {
  if (!impl_) return;
  // Repeated until nothing is left: a process that had just been forked when a SIGKILL went
  // out was not among those it reached.  The child itself is always waited for (and reaped);
  // a descendant that stays after SIGKILL (stuck in an uninterruptible sleep) is reported
  // after 10 s rather than hanging the caller.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (bool child = running(); impl_->tree_alive(child); child = running()) {
    impl_->signal_tree(SIGKILL, child);
    if (!child && std::chrono::steady_clock::now() >= give_up) {
      std::string pids;
      for (pid_t p : live_group_members(impl_->child.id())) pids += " " + std::to_string(p);
      diag::warn("cowlab: spawn: process group " + std::to_string(impl_->child.id()) +
                 " still has processes 10 s after SIGKILL:" + pids);
      impl_->group_gone = true;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace cowlab::sys
