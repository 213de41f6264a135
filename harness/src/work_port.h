// The host's end of a guest's work port (virtio-serial "cowlab.queue", $COWLAB_QUEUE in the
// guest): QEMU listens on a unix socket for the chardev behind the port; the harness connects
// and writes one line per request the command makes.  Internal to harness/.
#pragma once

#include <chrono>
#include <filesystem>
#include <string_view>

#include "cowlab/result.h"

namespace cowlab::harness::detail {

// Whether a $COWLAB_RESULTS line is a request for work: {"event": "next"}.
bool is_work_request(std::string_view record_line);

class WorkPort {
 public:
  explicit WorkPort(std::filesystem::path socket) : socket_(std::move(socket)) {}
  WorkPort(const WorkPort&) = delete;
  WorkPort& operator=(const WorkPort&) = delete;
  ~WorkPort();

  // One connection attempt; false while QEMU is not listening yet.
  bool try_connect();
  // Writes `line` and a newline, connecting first if needed (retrying until `timeout`: QEMU
  // may still be starting).  The line must not contain a newline.
  Result<void> send_line(std::string_view line, std::chrono::milliseconds timeout);

 private:
  std::filesystem::path socket_;
  int fd_ = -1;
};

}  // namespace cowlab::harness::detail
