// Byte streams over file descriptors and memory.
#include "cowlab/io.h"

#include <fcntl.h>

#include <algorithm>
#include <cstring>

#include "cowlab/sys.h"

namespace cowlab {

FdReader::~FdReader() {
  if (owned_ && fd_ >= 0) sys::Fd close_it(fd_);
}

Result<size_t> FdReader::read(void* buf, size_t len) {
  auto n = sys::read(fd_, buf, len);
  if (!n.ok()) return std::move(n).error().with_context("read " + name_);
  return n;
}

FdWriter::~FdWriter() {
  if (owned_ && fd_ >= 0) sys::Fd close_it(fd_);
}

Result<void> FdWriter::write(const void* buf, size_t len) {
  auto r = sys::write_all(fd_, buf, len);
  if (!r.ok()) return std::move(r).error().with_context("write " + name_);
  return {};
}

Result<size_t> StringReader::read(void* buf, size_t len) {
  size_t n = std::min(len, data_.size() - pos_);
  if (n > 0) std::memcpy(buf, data_.data() + pos_, n);
  pos_ += n;
  return n;
}

Result<std::unique_ptr<Reader>> open_reader(const std::string& path) {
  if (path == "-") return std::unique_ptr<Reader>(std::make_unique<FdReader>(0, "stdin"));
  auto fd = COWLAB_TRY(sys::open(path, O_RDONLY));
  return std::unique_ptr<Reader>(std::make_unique<FdReader>(fd.release(), path, /*owned=*/true));
}

}  // namespace cowlab
