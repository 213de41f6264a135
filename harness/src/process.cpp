#include "process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/process/args.hpp>
#include <boost/process/child.hpp>
#include <boost/process/env.hpp>
#include <boost/process/environment.hpp>
#include <boost/process/extend.hpp>
#include <boost/process/io.hpp>
#include <boost/process/search_path.hpp>
#include <deque>
#include <thread>

#include "cowlab/harness/stop.h"

namespace bp = boost::process;
namespace fs = std::filesystem;

namespace cowlab::harness {
namespace {
std::atomic<bool> g_stop{false};
std::atomic<int> g_stop_signal{0};
}  // namespace
void request_stop() {
  g_stop.store(true);
}
void request_stop_by_signal(int signo) {
  g_stop_signal.store(signo);
  g_stop.store(true);
}
bool stop_requested() {
  return g_stop.load();
}
int stop_signal() {
  return g_stop_signal.load();
}
void install_stop_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = request_stop_by_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}
}  // namespace cowlab::harness

namespace cowlab::harness::detail {
namespace {

// Runs in the child between fork and exec.
struct ChildSetup : bp::extend::handler {
  ProcessGroup group;
  explicit ChildSetup(ProcessGroup g) : group(g) {}
  template <class Executor>
  void on_exec_setup(Executor&) const {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (group == ProcessGroup::kOwn) ::setpgid(0, 0);
    // Boost.Process blocks nothing, but the harness may have handlers installed: restore defaults.
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
  }
};

}  // namespace

struct Subprocess::Impl {
  bp::child child;
  std::optional<int> status;
};

Subprocess::Subprocess(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Subprocess::Subprocess(Subprocess&&) noexcept = default;
Subprocess& Subprocess::operator=(Subprocess&&) noexcept = default;
Subprocess::~Subprocess() {
  if (impl_) kill();
}

Result<Subprocess> Subprocess::spawn(const SpawnOptions& o) {
  if (o.argv.empty()) return Error::invalid("spawn: empty command");
  fs::path exe = o.argv[0];
  if (exe.is_relative() && o.argv[0].find('/') == std::string::npos) {
    exe = bp::search_path(o.argv[0]).string();
    if (exe.empty())
      return Error(ErrorKind::kNotFound,
                   "spawn " + o.argv[0] + ": not found in PATH (install it: make deps)", ENOENT);
  }
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
  auto impl = std::make_unique<Impl>();
  std::error_code ec;
  const ChildSetup setup(o.group);
  try {
    // Boost.Process wants each redirection as a distinct type, hence the explicit cases.
    auto launch = [&](auto&& in_redirect) {
      switch (o.output_mode) {
        case StdioMode::kFile:
          return bp::child(exe.string(), bp::args(args), env, in_redirect,
                           (bp::std_out & bp::std_err) > o.output_file.string(), setup, ec);
        case StdioMode::kNull:
          return bp::child(exe.string(), bp::args(args), env, in_redirect,
                           (bp::std_out & bp::std_err) > bp::null, setup, ec);
        case StdioMode::kInherit:
        default:
          return bp::child(exe.string(), bp::args(args), env, in_redirect, setup, ec);
      }
    };
    if (o.stdin_mode == StdioMode::kInherit)
      impl->child = launch(bp::std_in < stdin);
    else
      impl->child = launch(bp::std_in < bp::null);
  } catch (const std::exception& e) {
    return Error(ErrorKind::kSystem, "spawn " + exe.string() + ": " + e.what());
  }
  if (ec)
    return Error(ErrorKind::kSystem, "spawn " + exe.string() + ": " + ec.message(), ec.value());
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
    impl_->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
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
  if (!running()) return;
  ::kill(impl_->child.id(), SIGTERM);
  if (!wait_for(grace)) kill();
}

void Subprocess::kill() {
  if (!impl_ || !running()) return;
  ::kill(impl_->child.id(), SIGKILL);
  while (running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

FileTail::~FileTail() {
  if (fd_ >= 0) ::close(fd_);
}

std::string FileTail::read_new() {
  if (fd_ < 0) {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return {};
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

void LineSplitter::feed(std::string_view bytes,
                        const std::function<void(std::string_view)>& on_line) {
  pending_.append(bytes);
  size_t start = 0;
  for (size_t nl; (nl = pending_.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::string_view line(pending_.data() + start, nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    on_line(line);
  }
  pending_.erase(0, start);
}

void LineSplitter::flush(const std::function<void(std::string_view)>& on_line) {
  if (!pending_.empty()) on_line(pending_);
  pending_.clear();
}

Result<ToolRun> run_tool(const SpawnOptions& options, std::chrono::seconds timeout,
                         const std::function<void(std::string_view)>& on_line) {
  SpawnOptions o = options;
  o.output_mode = StdioMode::kFile;
  if (o.output_file.empty()) return Error::invalid("run_tool: no output file");
  auto child = COWLAB_TRY(Subprocess::spawn(o));
  FileTail tail(o.output_file);
  LineSplitter split;
  std::deque<std::string> last;
  auto line_cb = [&](std::string_view l) {
    last.emplace_back(l);
    if (last.size() > 40) last.pop_front();
    if (on_line) on_line(l);
  };
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    bool alive = child.running();
    split.feed(tail.read_new(), line_cb);
    if (!alive) break;
    if (stop_requested()) {
      child.terminate();
      return Error(ErrorKind::kSystem, o.argv[0] + ": interrupted", EINTR);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      child.terminate();
      return Error(ErrorKind::kTimeout,
                   o.argv[0] + ": timed out after " + std::to_string(timeout.count()) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  split.feed(tail.read_new(), line_cb);
  split.flush(line_cb);
  ToolRun r;
  r.exit_status = child.exit_status().value_or(-1);
  for (auto& l : last) r.output_tail += l + "\n";
  return r;
}

std::string shell_quote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

}  // namespace cowlab::harness::detail
