// Writing "newc" cpio archives: the per-run payload appended to a guest's boot initramfs (the
// kernel unpacks concatenated archives in order).  Internal to harness/.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "cowlab/result.h"

namespace cowlab::harness::detail {

class CpioWriter {
 public:
  explicit CpioWriter(std::string* out) : out_(out) {}
  // Paths are relative ("cowlab/agent.sh"); parents must have been added first.
  void add_dir(std::string_view path, uint32_t mode = 0755);
  void add_file(std::string_view path, std::string_view content, uint32_t mode = 0644);
  void add_symlink(std::string_view path, std::string_view target);
  // Adds a host file, or a directory recursively (regular files, dirs, symlinks), under `path`.
  Result<void> add_host_path(std::string_view path, const std::filesystem::path& host);
  // Writes the TRAILER!!! entry; the writer must not be used afterwards.
  void finish();

 private:
  void entry(std::string_view path, uint32_t mode, std::string_view data);
  std::string* out_;
  uint32_t ino_ = 1;
};

}  // namespace cowlab::harness::detail
