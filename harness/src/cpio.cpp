#include "cpio.h"

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <system_error>

namespace fs = std::filesystem;

namespace cowlab::harness::detail {
namespace {
void hex8(std::string* out, uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08X", v);
  out->append(buf, 8);
}
void pad4(std::string* out) {
  while (out->size() % 4) out->push_back('\0');
}
}  // namespace

void CpioWriter::entry(std::string_view path, uint32_t mode, std::string_view data) {
  // The archive is appended after another one, so alignment is relative to our own start only if
  // that one ends 4-aligned: boot.cpio is written by GNU cpio, whose output is padded to 512.
  out_->append("070701");
  hex8(out_, ino_++);
  hex8(out_, mode);
  hex8(out_, 0);  // uid
  hex8(out_, 0);  // gid
  hex8(out_, 1);  // nlink
  hex8(out_, 0);  // mtime
  hex8(out_, static_cast<uint32_t>(data.size()));
  for (int i = 0; i < 4; ++i) hex8(out_, 0);  // dev major/minor, rdev major/minor
  hex8(out_, static_cast<uint32_t>(path.size() + 1));
  hex8(out_, 0);  // check
  out_->append(path);
  out_->push_back('\0');
  pad4(out_);
  out_->append(data);
  pad4(out_);
}

void CpioWriter::add_dir(std::string_view path, uint32_t mode) { entry(path, S_IFDIR | mode, {}); }
void CpioWriter::add_file(std::string_view path, std::string_view content, uint32_t mode) {
  entry(path, S_IFREG | mode, content);
}
void CpioWriter::add_symlink(std::string_view path, std::string_view target) {
  entry(path, S_IFLNK | 0777, target);
}

Result<void> CpioWriter::add_host_path(std::string_view path, const fs::path& host) {
  std::error_code ec;
  auto st = fs::symlink_status(host, ec);
  if (ec) return Error::from_errno("stat", host.string(), ec.value());
  if (fs::is_symlink(st)) {
    add_symlink(path, fs::read_symlink(host, ec).string());
    return ok();
  }
  if (fs::is_directory(st)) {
    add_dir(path, static_cast<uint32_t>(st.permissions()) & 07777);
    for (const auto& e : fs::directory_iterator(host, ec)) {
      COWLAB_TRY(add_host_path(std::string(path) + "/" + e.path().filename().string(), e.path()));
    }
    if (ec) return Error::from_errno("readdir", host.string(), ec.value());
    return ok();
  }
  if (!fs::is_regular_file(st))
    return Error::invalid("payload " + host.string() + ": not a regular file, directory or symlink");
  std::ifstream in(host, std::ios::binary);
  if (!in) return Error::from_errno("open", host.string(), errno);
  std::ostringstream ss;
  ss << in.rdbuf();
  add_file(path, ss.str(), static_cast<uint32_t>(st.permissions()) & 07777);
  return ok();
}

void CpioWriter::finish() { entry("TRAILER!!!", 0, {}); }

}  // namespace cowlab::harness::detail
