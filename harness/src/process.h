// Child processes for the harness (QEMU, the image recipes, git, make): following a child's
// output file and running a tool to completion under a timeout and the stop flag.  Internal to
// harness/.  The children themselves are sys::Subprocess (cowlab/sys_process.h).
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
#include "cowlab/sys_process.h"

namespace cowlab::harness::detail {

// Programs are started by the sys seam's one spawner (cowlab/sys_process.h, Boost.Process).
using sys::ProcessGroup;
using sys::SpawnOptions;
using sys::StdioMode;
using sys::Subprocess;

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
