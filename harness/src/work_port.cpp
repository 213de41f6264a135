#include "work_port.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

namespace cowlab::harness::detail {

bool is_work_request(std::string_view record_line) {
  // Cheap test first: every result line goes through here.
  if (record_line.find("\"next\"") == std::string_view::npos) return false;
  auto j = nlohmann::json::parse(record_line, nullptr, false);
  return j.is_object() && j.contains("event") && j["event"] == "next";
}

WorkPort::~WorkPort() {
  if (fd_ >= 0) ::close(fd_);
}

bool WorkPort::try_connect() {
  if (fd_ >= 0) return true;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_.string().size() >= sizeof addr.sun_path) return false;
  std::strcpy(addr.sun_path, socket_.c_str());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return false;
  }
  fd_ = fd;
  return true;
}

Result<void> WorkPort::send_line(std::string_view line, std::chrono::milliseconds timeout) {
  if (socket_.string().size() >= sizeof(sockaddr_un{}.sun_path))
    return Error::invalid("work port " + socket_.string() + ": socket path too long");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!try_connect()) {
    if (std::chrono::steady_clock::now() > deadline)
      return Error::from_errno("connect", "work port " + socket_.string(), ECONNREFUSED);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::string data(line);
  data += '\n';
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::from_errno("send", "work port " + socket_.string(), errno);
    done += static_cast<size_t>(n);
  }
  return {};
}

}  // namespace cowlab::harness::detail
