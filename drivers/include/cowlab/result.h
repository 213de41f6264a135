// Errors as values.
//
// Every fallible operation in cowlab returns Result<T>.  An Error carries an errno (0 when the
// failure is not a system error), a kind used for control flow (driver selection skips
// NotSupported drivers, the CLI maps Usage to exit status 2), and a message that names the
// operation, the object and the cause, outermost context first:
//
//   apply-diff layer 3f2a: mknod a/.wh.b: EEXIST (File exists)
//
// Context is added on the way up with Error::with_context / COWLAB_TRY's caller, never by
// re-formatting the leaf.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace cowlab {

enum class ErrorKind {
  kSystem,        // a syscall or library call failed; errno() says why
  kInvalid,       // bad input: malformed tar, bad option, invalid scenario
  kSecurity,      // input tried to escape its root (path traversal, link escapes)
  kNotFound,      // a named object (layer, driver, file) does not exist
  kExists,        // a named object already exists
  kNotSupported,  // the kernel, backing filesystem or build cannot do this
  kBusy,          // the object is in use (mounted, referenced)
  kCorrupt,       // on-disk state or digests do not match
  kUsage,         // command-line misuse (CLI exit status 2)
  kTimeout,       // an operation ran out of time
};

std::string_view error_kind_name(ErrorKind kind);
// `text` with control characters, backslashes and bytes >= 0x7f escaped (\n, \t, \x1b, \\),
// for names from the user or the disk that go into messages and listings.
std::string escape_for_message(std::string_view text);

// "EEXIST" for EEXIST; "E<number>" for unknown values.
std::string_view errno_name(int err);

class Error {
 public:
  Error(ErrorKind kind, std::string message, int err = 0)
      : kind_(kind), err_(err), message_(std::move(message)) {}

  // A failed system call: "<call> <path>: <ENAME> (<strerror>)".  `path` may be empty.
  static Error from_errno(std::string_view call, std::string_view path, int err);
  static Error invalid(std::string message) { return {ErrorKind::kInvalid, std::move(message)}; }
  static Error security(std::string message) { return {ErrorKind::kSecurity, std::move(message)}; }
  static Error not_found(std::string message) { return {ErrorKind::kNotFound, std::move(message), ENOENT}; }
  static Error not_supported(std::string message) {
    return {ErrorKind::kNotSupported, std::move(message), ENOTSUP};
  }
  static Error usage(std::string message) { return {ErrorKind::kUsage, std::move(message)}; }
  static Error corrupt(std::string message) { return {ErrorKind::kCorrupt, std::move(message)}; }

  ErrorKind kind() const { return kind_; }
  // The errno behind this error, 0 if none.
  int err() const { return err_; }
  const std::string& message() const { return message_; }

  // Prepends "<context>: " to the message; returns *this for chaining.
  Error& with_context(std::string_view context) &;
  Error&& with_context(std::string_view context) &&;

 private:
  ErrorKind kind_;
  int err_;
  std::string message_;
};

// Result<T>: either a T or an Error.  Result<void> carries only success or an Error.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}
  template <typename U, typename = std::enable_if_t<std::is_convertible_v<U, T> &&
                                                    !std::is_same_v<std::decay_t<U>, T> &&
                                                    !std::is_same_v<std::decay_t<U>, Error>>>
  Result(U&& value) : v_(std::in_place_index<0>, T(std::forward<U>(value))) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  Error& error() & { return std::get<1>(v_); }
  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

  T value_or(T fallback) const& { return ok() ? value() : std::move(fallback); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  Error& error() & { return error_; }
  const Error& error() const& { return error_; }
  Error&& error() && { return std::move(error_); }

 private:
  Error error_{ErrorKind::kSystem, ""};
  bool ok_ = true;
};

inline Result<void> ok() { return {}; }

}  // namespace cowlab

// Propagate an error, optionally adding context:
//   COWLAB_TRY(expr);                          // Result<void>
//   auto fd = COWLAB_TRY(sys::open(...));      // Result<T>, yields the T (GNU statement expr)
//   COWLAB_TRY_CTX(expr, "apply-diff layer " + id);
#define COWLAB_TRY(expr)                                   \
  ({                                                       \
    auto&& cowlab_try_r_ = (expr);                         \
    if (!cowlab_try_r_.ok()) return std::move(cowlab_try_r_).error(); \
    ::cowlab::detail::take(std::move(cowlab_try_r_));      \
  })
#define COWLAB_TRY_CTX(expr, ctx)                                                  \
  ({                                                                               \
    auto&& cowlab_try_r_ = (expr);                                                 \
    if (!cowlab_try_r_.ok()) return std::move(cowlab_try_r_).error().with_context(ctx); \
    ::cowlab::detail::take(std::move(cowlab_try_r_));                              \
  })

namespace cowlab::detail {
template <typename T>
T take(Result<T>&& r) { return std::move(r).value(); }
inline void take(Result<void>&&) {}
}  // namespace cowlab::detail
