// A minimal QMP (QEMU Machine Protocol) client over a unix socket.  Internal to harness/.
//
// connect() reads the greeting and negotiates capabilities; execute() sends one command and
// returns its "return" member as JSON text, skipping asynchronous events (kept in events()).
// Every call is bounded by a timeout: QEMU that stops answering is an error, never a hang.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::harness::detail {

class QmpClient {
 public:
  static Result<QmpClient> connect(const std::filesystem::path& socket,
                                   std::chrono::milliseconds timeout);
  QmpClient(QmpClient&& o) noexcept;
  QmpClient& operator=(QmpClient&& o) noexcept;
  ~QmpClient();

  // `arguments_json` is a JSON object text or empty.
  Result<std::string> execute(std::string_view command, std::string_view arguments_json = {},
                              std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  // Event names seen so far ("SHUTDOWN", "GUEST_PANICKED", ...).
  const std::vector<std::string>& events() const { return events_; }

 private:
  explicit QmpClient(int fd) : fd_(fd) {}
  Result<std::string> read_line(std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
  std::string buf_;
  std::vector<std::string> events_;
};

}  // namespace cowlab::harness::detail
