#include "cpio.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <system_error>

namespace fs = std::filesystem;

namespace cowlab::harness::detail {

namespace {
la_ssize_t append(struct archive*, void* client, const void* buf, size_t n) {
  static_cast<std::string*>(client)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}
}  // namespace

CpioWriter::CpioWriter(std::string* out) : out_(out), a_(archive_write_new()) {
  archive_write_set_format_cpio_newc(a_);
  // Unblocked, no padding after the trailer: the archive is appended to another in memory.
  archive_write_set_bytes_per_block(a_, 0);
  archive_write_set_bytes_in_last_block(a_, 1);
  archive_write_open(a_, out_, nullptr, append, nullptr);
}

CpioWriter::~CpioWriter() { archive_write_free(a_); }

Result<void> CpioWriter::entry(std::string_view path, uint32_t mode, std::string_view data, std::string_view link) {
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, std::string(path).c_str());
  archive_entry_set_mode(e, mode);
  archive_entry_set_nlink(e, 1);
  archive_entry_set_ino64(e, ino_++);
  archive_entry_set_mtime(e, 0, 0);
  if (!link.empty()) archive_entry_set_symlink(e, std::string(link).c_str());
  archive_entry_set_size(e, S_ISREG(mode) ? static_cast<la_int64_t>(data.size()) : 0);
  int rc = archive_write_header(a_, e);
  archive_entry_free(e);
  if (rc != ARCHIVE_OK)
    return Error(ErrorKind::kSystem, "cpio " + std::string(path) + ": " + archive_error_string(a_), archive_errno(a_));
  if (S_ISREG(mode) && !data.empty() &&
      archive_write_data(a_, data.data(), data.size()) != static_cast<la_ssize_t>(data.size()))
    return Error(ErrorKind::kSystem, "cpio " + std::string(path) + ": " + archive_error_string(a_), archive_errno(a_));
  return ok();
}

Result<void> CpioWriter::add_dir(std::string_view path, uint32_t mode) { return entry(path, S_IFDIR | mode, {}); }
Result<void> CpioWriter::add_file(std::string_view path, std::string_view content, uint32_t mode) {
  return entry(path, S_IFREG | mode, content);
}
Result<void> CpioWriter::add_symlink(std::string_view path, std::string_view target) {
  return entry(path, S_IFLNK | 0777, {}, target);
}

Result<void> CpioWriter::add_host_path(std::string_view path, const fs::path& host) {
  std::error_code ec;
  auto st = fs::symlink_status(host, ec);
  if (ec) return Error::from_errno("stat", host.string(), ec.value());
  if (fs::is_symlink(st)) return add_symlink(path, fs::read_symlink(host, ec).string());
  if (fs::is_directory(st)) {
    COWLAB_TRY(add_dir(path, static_cast<uint32_t>(st.permissions()) & 07777));
    for (const auto& e : fs::directory_iterator(host, ec))
      COWLAB_TRY(add_host_path(std::string(path) + "/" + e.path().filename().string(), e.path()));
    if (ec) return Error::from_errno("readdir", host.string(), ec.value());
    return ok();
  }
  if (!fs::is_regular_file(st))
    return Error::invalid("payload " + host.string() + ": not a regular file, directory or symlink");
  std::ifstream in(host, std::ios::binary);
  if (!in) return Error::from_errno("open", host.string(), errno);
  std::ostringstream ss;
  ss << in.rdbuf();
  return add_file(path, ss.str(), static_cast<uint32_t>(st.permissions()) & 07777);
}

Result<void> CpioWriter::finish() {
  if (archive_write_close(a_) != ARCHIVE_OK)
    return Error(ErrorKind::kSystem, std::string("cpio trailer: ") + archive_error_string(a_), archive_errno(a_));
  return ok();
}

}  // namespace cowlab::harness::detail
