// Kernel configuration: where it comes from and what the harness needs of it.
//
// read_kernel_config() looks, in order, for: an explicit config file; `config` beside the image
// in the cache; config-RELEASE / config / .config next to the kernel image, and the build tree's
// .config for arch/x86/boot/bzImage; RELEASE/build/.config or RELEASE/config under the modules
// directory; finally the config embedded in the image itself (CONFIG_IKCONFIG): the image is
// scanned for compressed streams (gzip, xz, zstd, lzma, bzip2, lz4), each is decompressed and
// searched for the IKCFG_ST marker, as scripts/extract-ikconfig does.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::harness {

struct KernelConfig {
  std::map<std::string, std::string> options;  // "CONFIG_EXT4_FS" -> "y" / "m" / value
  std::string source;                           // where it was read, for reports
  // "y", "m", or "" when not set.
  std::string_view value(std::string_view option) const;
};

Result<KernelConfig> parse_kernel_config(std::string_view text, std::string source);
// The .config text embedded in a kernel image (bzImage or vmlinux); kNotFound if none.
Result<std::string> extract_ikconfig(const std::filesystem::path& kernel_image);
Result<KernelConfig> read_kernel_config(const std::filesystem::path& kernel_image,
                                        const std::filesystem::path& modules_dir = {},
                                        const std::filesystem::path& explicit_config = {});

enum class Need {
  kBoot,     // the harness cannot boot or talk to the guest without it
  kStorage,  // a driver or fault test needs it (=y, or =m with a modules directory)
  kNice,     // degrades gracefully without it (e.g. ACPI power-off: QMP quit is used instead)
};

struct KernelRequirement {
  std::string_view option;
  Need need;
  std::string_view purpose;
  bool module_ok;  // =m is acceptable (the initramfs or the root loads it)
};

// The options the harness looks for; documented in docs/vm.md.
const std::vector<KernelRequirement>& kernel_requirements();

struct MissingOption {
  const KernelRequirement* requirement;
  std::string why;  // "not set", "=m but the profile has no modules"
};
std::vector<MissingOption> missing_options(const KernelConfig& config, bool has_modules);

}  // namespace cowlab::harness
