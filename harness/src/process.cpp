#include "process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <thread>

#include "cowlab/harness/stop.h"

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
