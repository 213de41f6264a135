#include "qmp.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

using nlohmann::json;

namespace cowlab::harness::detail {

QmpClient::QmpClient(QmpClient&& o) noexcept : fd_(o.fd_), buf_(std::move(o.buf_)), events_(std::move(o.events_)) { o.fd_ = -1; }
QmpClient& QmpClient::operator=(QmpClient&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
    buf_ = std::move(o.buf_);
    events_ = std::move(o.events_);
  }
  return *this;
}
QmpClient::~QmpClient() {
  if (fd_ >= 0) ::close(fd_);
}

Result<QmpClient> QmpClient::connect(const std::filesystem::path& socket_path,
                                     std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.string().size() >= sizeof addr.sun_path)
    return Error::invalid("qmp " + socket_path.string() + ": socket path too long");
  std::strcpy(addr.sun_path, socket_path.c_str());
  for (;;) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Error::from_errno("socket", socket_path.string(), errno);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      QmpClient c(fd);
      auto greeting = COWLAB_TRY_CTX(c.read_line(deadline), "qmp greeting");
      if (greeting.find("QMP") == std::string::npos)
        return Error::invalid("qmp " + socket_path.string() + ": unexpected greeting");
      COWLAB_TRY_CTX(c.execute("qmp_capabilities"), "qmp capabilities");
      return c;
    }
    int e = errno;
    ::close(fd);
    if (std::chrono::steady_clock::now() > deadline) return Error::from_errno("connect", socket_path.string(), e);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Result<std::string> QmpClient::read_line(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    if (auto nl = buf_.find('\n'); nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Error(ErrorKind::kTimeout, "qmp: no answer in time");
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Error::from_errno("poll", "qmp", errno);
    if (r == 0) continue;
    char tmp[4096];
    ssize_t n = ::read(fd_, tmp, sizeof tmp);
    if (n <= 0) return Error(ErrorKind::kSystem, "qmp: connection closed", n < 0 ? errno : EPIPE);
    buf_.append(tmp, static_cast<size_t>(n));
  }
}

Result<std::string> QmpClient::execute(std::string_view command, std::string_view arguments_json,
                                       std::chrono::milliseconds timeout) {
  std::string msg = "{\"execute\":\"" + std::string(command) + "\"";
  if (!arguments_json.empty()) msg += ",\"arguments\":" + std::string(arguments_json);
  msg += "}\n";
  if (::send(fd_, msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size()))
    return Error::from_errno("send", "qmp " + std::string(command), errno);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto line = COWLAB_TRY(read_line(deadline));
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    if (j.contains("event")) {
      events_.push_back(j["event"].get<std::string>());
      continue;
    }
    if (j.contains("error"))
      return Error(ErrorKind::kSystem, "qmp " + std::string(command) + ": " + j["error"].value("desc", "error"));
    if (j.contains("return")) return j["return"].dump();
  }
}

}  // namespace cowlab::harness::detail
