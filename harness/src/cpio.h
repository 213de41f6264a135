// Writing "newc" cpio archives with libarchive: the per-run payload appended to a guest's boot
// initramfs (the kernel unpacks concatenated archives in order).  Internal to harness/.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "cowlab/result.h"

struct archive;

namespace cowlab::harness::detail {

class CpioWriter {
 public:
  // Appends the archive to *out as entries are added.
  explicit CpioWriter(std::string* out);
  ~CpioWriter();
  CpioWriter(const CpioWriter&) = delete;
  CpioWriter& operator=(const CpioWriter&) = delete;

  // Paths are relative ("cowlab/agent.sh"); parents must have been added first.
  Result<void> add_dir(std::string_view path, uint32_t mode = 0755);
  Result<void> add_file(std::string_view path, std::string_view content, uint32_t mode = 0644);
  Result<void> add_symlink(std::string_view path, std::string_view target);
  // Adds a host file, or a directory recursively (regular files, dirs, symlinks), under `path`.
  Result<void> add_host_path(std::string_view path, const std::filesystem::path& host);
  // Writes the trailer; the writer must not be used afterwards.
  Result<void> finish();

 private:
  Result<void> entry(std::string_view path, uint32_t mode, std::string_view data, std::string_view link = {});
  std::string* out_;
  struct archive* a_;
  int64_t ino_ = 1;
};

}  // namespace cowlab::harness::detail
