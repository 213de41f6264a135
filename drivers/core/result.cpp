#include "cowlab/result.h"

#include <cstring>
#include <string>

namespace cowlab {

std::string_view error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kSystem: return "system";
    case ErrorKind::kInvalid: return "invalid";
    case ErrorKind::kSecurity: return "security";
    case ErrorKind::kNotFound: return "not-found";
    case ErrorKind::kExists: return "exists";
    case ErrorKind::kNotSupported: return "not-supported";
    case ErrorKind::kBusy: return "busy";
    case ErrorKind::kCorrupt: return "corrupt";
    case ErrorKind::kUsage: return "usage";
    case ErrorKind::kTimeout: return "timeout";
  }
  return "unknown";
}

std::string_view errno_name(int err) {
  // strerrorname_np exists in glibc >= 2.32 (bookworm has 2.36).
  const char* n = ::strerrorname_np(err);
  if (n) return n;
  static thread_local std::string buf;
  buf = "E" + std::to_string(err);
  return buf;
}

Error Error::from_errno(std::string_view call, std::string_view path, int err) {
  std::string msg(call);
  if (!path.empty()) {
    msg += ' ';
    msg += path;
  }
  msg += ": ";
  msg += errno_name(err);
  msg += " (";
  msg += ::strerror(err);
  msg += ')';
  ErrorKind kind = ErrorKind::kSystem;
  if (err == ENOENT) kind = ErrorKind::kNotFound;
  if (err == EEXIST) kind = ErrorKind::kExists;
  if (err == EBUSY) kind = ErrorKind::kBusy;
  if (err == ETIMEDOUT) kind = ErrorKind::kTimeout;
  return Error(kind, std::move(msg), err);
}

Error& Error::with_context(std::string_view context) & {
  if (!context.empty()) message_ = std::string(context) + ": " + message_;
  return *this;
}

Error&& Error::with_context(std::string_view context) && {
  with_context(context);
  return std::move(*this);
}

std::string escape_for_message(std::string_view text) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : text) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20 || c >= 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace cowlab
