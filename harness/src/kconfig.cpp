#include "cowlab/harness/kconfig.h"

#include <archive.h>

#include <sstream>

#include "util.h"

namespace fs = std::filesystem;

namespace cowlab::harness {

std::string_view KernelConfig::value(std::string_view option) const {
  auto it = options.find(std::string(option));
  return it == options.end() ? std::string_view{} : std::string_view(it->second);
}

Result<KernelConfig> parse_kernel_config(std::string_view text, std::string source) {
  KernelConfig c;
  c.source = std::move(source);
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("CONFIG_", 0) != 0) continue;
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string v = line.substr(eq + 1);
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    c.options[line.substr(0, eq)] = v;
  }
  if (c.options.empty()) return Error::invalid("kernel config from " + c.source + ": no CONFIG_ lines");
  return c;
}

namespace {

// Decompresses `data` (any format libarchive knows as a raw stream filter), up to `limit` bytes.
std::string decompress_raw(std::string_view data, size_t limit) {
  std::string out;
  archive* a = archive_read_new();
  archive_read_support_filter_all(a);
  archive_read_support_format_raw(a);
  if (archive_read_open_memory(a, data.data(), data.size()) == ARCHIVE_OK) {
    archive_entry* e = nullptr;
    if (archive_read_next_header(a, &e) == ARCHIVE_OK) {
      char buf[65536];
      for (;;) {
        la_ssize_t n = archive_read_data(a, buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > limit) break;
      }
    }
  }
  archive_read_free(a);
  return out;
}

// The gzip stream between IKCFG_ST and IKCFG_ED, decompressed; "" if not in `blob`.
std::string ikconfig_in(std::string_view blob) {
  auto st = blob.find("IKCFG_ST");
  if (st == std::string_view::npos) return {};
  auto ed = blob.find("IKCFG_ED", st);
  std::string_view gz = blob.substr(st + 8, ed == std::string_view::npos ? std::string_view::npos : ed - st - 8);
  return decompress_raw(gz, 16u << 20);
}

}  // namespace

Result<std::string> extract_ikconfig(const fs::path& kernel_image) {
  std::string img = COWLAB_TRY(detail::read_file(kernel_image));
  if (auto c = ikconfig_in(img); !c.empty()) return c;  // uncompressed vmlinux
  // A bzImage holds the kernel compressed: try every stream start, as extract-ikconfig does.
  struct Magic {
    std::string_view bytes;
  };
  static const Magic kMagics[] = {{std::string_view("\x1f\x8b\x08", 3)},
                                  {std::string_view("\xfd" "7zXZ\x00", 6)},
                                  {std::string_view("\x28\xb5\x2f\xfd", 4)},
                                  {std::string_view("BZh", 3)},
                                  {std::string_view("\x5d\x00\x00\x00", 4)},
                                  {std::string_view("\x02\x21\x4c\x18", 4)}};
  int tried = 0;
  for (const auto& m : kMagics) {
    for (size_t pos = img.find(m.bytes); pos != std::string::npos && tried < 64;
         pos = img.find(m.bytes, pos + 1)) {
      ++tried;
      std::string kernel = decompress_raw(std::string_view(img).substr(pos), 512u << 20);
      if (kernel.size() < 1024) continue;
      if (auto c = ikconfig_in(kernel); !c.empty()) return c;
    }
  }
  return Error::not_found("kernel image " + kernel_image.string() +
                          ": no embedded config (built without CONFIG_IKCONFIG)");
}

Result<KernelConfig> read_kernel_config(const fs::path& image, const fs::path& modules_dir,
                                        const fs::path& explicit_config) {
  std::vector<fs::path> candidates;
  if (!explicit_config.empty()) candidates.push_back(explicit_config);
  fs::path dir = image.parent_path();
  std::string name = image.filename().string();
  candidates.push_back(dir / "config");
  if (auto dash = name.find('-'); dash != std::string::npos) candidates.push_back(dir / ("config" + name.substr(dash)));
  candidates.push_back(dir / ".config");
  candidates.push_back(dir / ".." / ".." / ".." / ".config");  // arch/x86/boot/bzImage
  if (!modules_dir.empty()) {
    candidates.push_back(modules_dir / "build" / ".config");
    candidates.push_back(modules_dir / "config");
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(modules_dir, ec))
      if (e.is_directory()) candidates.push_back(e.path() / "build" / ".config");
  }
  std::error_code ec;
  for (const auto& c : candidates) {
    if (!fs::is_regular_file(c, ec)) continue;
    auto t = detail::read_file(c);
    if (!t.ok()) continue;
    auto parsed = parse_kernel_config(*t, "file " + fs::weakly_canonical(c, ec).string());
    if (parsed.ok()) return parsed;
  }
  auto ik = extract_ikconfig(image);
  if (ik.ok()) return parse_kernel_config(*ik, "embedded in " + image.string() + " (CONFIG_IKCONFIG)");
  return Error::not_found("kernel config for " + image.string() +
                          ": none beside the image or the modules and none embedded (give --kernel-config)");
}

const std::vector<KernelRequirement>& kernel_requirements() {
  static const std::vector<KernelRequirement> k = {
      {"CONFIG_BLK_DEV_INITRD", Need::kBoot, "boot initramfs and per-run payload", false},
      {"CONFIG_DEVTMPFS", Need::kBoot, "/dev in the initramfs and the guest", false},
      {"CONFIG_TMPFS", Need::kBoot, "/run, /tmp, /dev/shm", false},
      {"CONFIG_PROC_FS", Need::kBoot, "/proc", false},
      {"CONFIG_SYSFS", Need::kBoot, "finding disks and ports by serial/name", false},
      {"CONFIG_BINFMT_ELF", Need::kBoot, "running busybox and the Debian root", false},
      {"CONFIG_BINFMT_SCRIPT", Need::kBoot, "/init and the agent are scripts", false},
      {"CONFIG_FUTEX", Need::kBoot, "glibc", false},
      {"CONFIG_SERIAL_8250_CONSOLE", Need::kBoot, "console on ttyS0 (log, panics)", false},
      {"CONFIG_VIRTIO_PCI", Need::kBoot, "virtio devices", true},
      {"CONFIG_VIRTIO_BLK", Need::kBoot, "root, modules and scratch disks", true},
      {"CONFIG_VIRTIO_CONSOLE", Need::kBoot, "virtio-serial result channels", true},
      {"CONFIG_EXT4_FS", Need::kBoot, "the ext4 root and modules disks", true},
      {"CONFIG_MAGIC_SYSRQ", Need::kBoot, "power-off (sysrq o) and crash tests (sysrq c)", false},
      {"CONFIG_UNIX98_PTYS", Need::kNice, "vm shell job control (devpts)", false},
      {"CONFIG_ACPI", Need::kNice, "clean power-off (otherwise QMP quit after the command)", false},
      {"CONFIG_MODULES", Need::kNice, "loading modules from the modules disk", false},
      {"CONFIG_BLK_DEV_DM", Need::kStorage, "devicemapper driver", true},
      {"CONFIG_DM_THIN_PROVISIONING", Need::kStorage, "devicemapper driver (thin pool)", true},
      {"CONFIG_DM_FLAKEY", Need::kStorage, "fault tests (dm-flakey)", true},
      {"CONFIG_DM_DELAY", Need::kStorage, "fault tests (dm-delay)", true},
      {"CONFIG_DM_LOG_WRITES", Need::kStorage, "crash-consistency tests (dm-log-writes)", true},
      {"CONFIG_BTRFS_FS", Need::kStorage, "btrfs driver", true},
      {"CONFIG_OVERLAY_FS", Need::kStorage, "overlay driver", true},
      {"CONFIG_XFS_FS", Need::kStorage, "xfs backing filesystems", true},
      {"CONFIG_BLK_DEV_LOOP", Need::kStorage, "loop-backed pools and filesystems", true},
      {"CONFIG_AUFS_FS", Need::kStorage, "aufs driver (patched kernels only)", true},
  };
  return k;
}

std::vector<MissingOption> missing_options(const KernelConfig& c, bool has_modules) {
  std::vector<MissingOption> out;
  for (const auto& r : kernel_requirements()) {
    auto v = c.value(r.option);
    if (v == "y") continue;
    if (v == "m") {
      if (!r.module_ok) out.push_back({&r, "=m but must be built in (=y)"});
      else if (!has_modules) out.push_back({&r, "=m but the profile has no modules directory"});
      continue;
    }
    out.push_back({&r, v.empty() ? "not set" : "=" + std::string(v)});
  }
  return out;
}

}  // namespace cowlab::harness
