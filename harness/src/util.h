// Small shared helpers of the harness.  Internal to harness/.
#pragma once

#include <chrono>
#include <functional>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>

#include "cowlab/result.h"

namespace cowlab::harness::detail {

std::string sha256_hex(std::string_view data);
Result<std::string> sha256_file(const std::filesystem::path& path);
Result<std::string> read_file(const std::filesystem::path& path);
// KEY=value lines ('#' comments and blank lines ignored).
std::map<std::string, std::string> parse_key_values(std::string_view text);
std::string format_duration(std::chrono::steady_clock::duration d);  // "3m05s", "12.3s"
double seconds_since(std::chrono::steady_clock::time_point t);

// An exclusive flock on `path`, polled so that stop_requested() interrupts the wait.
class FileLock {
 public:
  static Result<FileLock> acquire(const std::filesystem::path& path,
                                  const std::function<void()>& on_wait = {});
  // Non-blocking: an error (kBusy) when held elsewhere.
  static Result<FileLock> try_acquire(const std::filesystem::path& path);
  FileLock(FileLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  FileLock& operator=(FileLock&& o) noexcept;
  ~FileLock();

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace cowlab::harness::detail
