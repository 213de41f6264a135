// Child processes for the harness: QEMU and the image recipes.  Internal to harness/.
//
// A thin wrapper over Boost.Process (confined to process.cpp).  Every child is killed when the
// harness dies (PR_SET_PDEATHSIG) and is always reaped; a Subprocess that goes out of scope kills
// its child.  Output goes to a file, never to a pipe, so a stalled reader can never block a child
// and the file doubles as the log.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::harness::detail {

enum class StdioMode { kFile, kInherit, kNull };
enum class ProcessGroup { kOwn, kInherit };  // kOwn: terminal Ctrl-C does not reach the child

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH
  std::vector<std::pair<std::string, std::string>> env;  // added to / overriding the harness's
  StdioMode stdin_mode = StdioMode::kNull;
  StdioMode output_mode = StdioMode::kFile;  // stdout and stderr together
  std::filesystem::path output_file;         // for kFile (created/truncated)
  ProcessGroup group = ProcessGroup::kOwn;
};

class Subprocess {
 public:
  static Result<Subprocess> spawn(const SpawnOptions& options);
  Subprocess(Subprocess&&) noexcept;
  Subprocess& operator=(Subprocess&&) noexcept;
  ~Subprocess();  // kills and reaps a child still running

  pid_t pid() const;
  // Non-blocking: true while the child runs.  Once false, exit_status() is set.
  bool running();
  // Exit code, or 128 + signal number when killed by a signal.
  std::optional<int> exit_status() const;
  // Waits up to `timeout` for the child to exit; true if it did.
  bool wait_for(std::chrono::milliseconds timeout);
  // SIGTERM, then SIGKILL after `grace`; always reaps.
  void terminate(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));
  void kill();

 private:
  struct Impl;
  explicit Subprocess(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Reads a growing file incrementally (the output of a child or a QEMU chardev).
class FileTail {
 public:
  explicit FileTail(std::filesystem::path path) : path_(std::move(path)) {}
  // New bytes since the last call ("" when none or the file does not exist yet).
  std::string read_new();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  friend struct FileTailCloser;

 public:
  FileTail(const FileTail&) = delete;
  FileTail& operator=(const FileTail&) = delete;
  FileTail(FileTail&& o) noexcept : path_(std::move(o.path_)), fd_(o.fd_) { o.fd_ = -1; }
  ~FileTail();
};

// Splits a byte stream into lines; complete lines are passed to the callback.
class LineSplitter {
 public:
  void feed(std::string_view bytes, const std::function<void(std::string_view)>& on_line);
  // The unterminated remainder, if any (flushed at end of stream).
  void flush(const std::function<void(std::string_view)>& on_line);

 private:
  std::string pending_;
};

struct ToolRun {
  int exit_status = 0;
  std::string output_tail;  // last lines of output, for error messages
};

// Runs a tool to completion with its output in `log`, passing each output line to `on_line`.
// Fails (kTimeout) after `timeout`, or (kSystem, EINTR) when stop_requested(); the child is
// killed in both cases.  A non-zero exit is not an error here: check exit_status.
Result<ToolRun> run_tool(const SpawnOptions& options, std::chrono::seconds timeout,
                         const std::function<void(std::string_view)>& on_line = {});

// Quotes a string for a POSIX shell.
std::string shell_quote(std::string_view s);

}  // namespace cowlab::harness::detail
