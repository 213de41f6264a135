// Byte streams used to move layer tars between the store, drivers and the CLI.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "cowlab/result.h"

namespace cowlab {

// A source of bytes.  read() returns 0 only at end of stream.
class Reader {
 public:
  virtual ~Reader() = default;
  virtual Result<size_t> read(void* buf, size_t len) = 0;
  // A name for error messages ("layer.tar", "-", "diff of layer 3f2a").
  virtual std::string name() const = 0;
};

// A sink of bytes.
class Writer {
 public:
  virtual ~Writer() = default;
  virtual Result<void> write(const void* buf, size_t len) = 0;
  virtual std::string name() const = 0;
};

// Reader over a file descriptor it does not own (or owns, if `owned`).
class FdReader final : public Reader {
 public:
  FdReader(int fd, std::string name, bool owned = false)
      : fd_(fd), name_(std::move(name)), owned_(owned) {}
  ~FdReader() override;
  Result<size_t> read(void* buf, size_t len) override;
  std::string name() const override { return name_; }

 private:
  int fd_;
  std::string name_;
  bool owned_;
};

class FdWriter final : public Writer {
 public:
  FdWriter(int fd, std::string name, bool owned = false)
      : fd_(fd), name_(std::move(name)), owned_(owned) {}
  ~FdWriter() override;
  Result<void> write(const void* buf, size_t len) override;
  std::string name() const override { return name_; }

 private:
  int fd_;
  std::string name_;
  bool owned_;
};

// In-memory streams (tests, small diffs).
class StringReader final : public Reader {
 public:
  explicit StringReader(std::string data, std::string name = "memory")
      : data_(std::move(data)), name_(std::move(name)) {}
  Result<size_t> read(void* buf, size_t len) override;
  std::string name() const override { return name_; }

 private:
  std::string data_;
  size_t pos_ = 0;
  std::string name_;
};

class StringWriter final : public Writer {
 public:
  Result<void> write(const void* buf, size_t len) override {
    data_.append(static_cast<const char*>(buf), len);
    return {};
  }
  std::string name() const override { return "memory"; }
  const std::string& data() const { return data_; }
  std::string take() { return std::move(data_); }

 private:
  std::string data_;
};

// A Reader that forwards to a caller-owned one, for APIs that take ownership of their input
// (decompress()) while the caller keeps the stream (to digest or drain it afterwards).
class BorrowedReader final : public Reader {
 public:
  explicit BorrowedReader(Reader& r) : r_(r) {}
  Result<size_t> read(void* buf, size_t len) override { return r_.read(buf, len); }
  std::string name() const override { return r_.name(); }

 private:
  Reader& r_;
};

// Opens FILE for reading; "-" is stdin.
Result<std::unique_ptr<Reader>> open_reader(const std::string& path);

}  // namespace cowlab
