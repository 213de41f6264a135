#include "cowlab/harness/applicability.h"

#include <system_error>

namespace fs = std::filesystem;

namespace cowlab::harness {
namespace {

// The config options a driver's kernel facility needs (all of them), from the drivers' own
// start-up checks: overlay mounts "overlay", btrfs needs the filesystem, devicemapper builds
// thin pools (dm-thin-pool), aufs mounts "aufs".
struct Facility {
  std::string_view driver;
  std::vector<std::string_view> options;
  std::string_view what;
};

const std::vector<Facility>& facilities() {
  static const std::vector<Facility> f = {
      {"aufs", {"CONFIG_AUFS_FS"}, "no aufs in this kernel"},
      {"overlay", {"CONFIG_OVERLAY_FS"}, "no overlayfs in this kernel"},
      {"btrfs", {"CONFIG_BTRFS_FS"}, "no btrfs in this kernel"},
      {"devicemapper",
       {"CONFIG_BLK_DEV_DM", "CONFIG_DM_THIN_PROVISIONING"},
       "no device-mapper thin provisioning in this kernel"},
  };
  return f;
}

bool holds_zfs_module(const fs::path& dir) {
  std::error_code ec;
  if (dir.empty() || !fs::is_directory(dir, ec)) return false;
  for (auto it =
           fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    const std::string name = it->path().filename().string();
    if (name == "zfs.ko" || name.rfind("zfs.ko.", 0) == 0) return true;
  }
  return false;
}

}  // namespace

DriverFit driver_fit(const ProfileFacts& facts, const std::string& driver) {
  DriverFit fit{driver, true, ""};
  if (driver == "vfs") return fit;
  if (driver == "zfs") {
    if (!facts.zfs_unsupported.empty()) {
      fit.runnable = false;
      fit.reason = "zfs: " + facts.zfs_unsupported;
    } else if (!facts.zfs_module) {
      fit.runnable = false;
      fit.reason =
          "zfs: no ZFS module for this kernel (a bring-your-own kernel needs zfs.ko in its modules "
          "directory)";
    }
    return fit;
  }
  if (facts.config == nullptr) return fit;  // unknown config: the guest decides
  for (const auto& f : facilities()) {
    if (f.driver != driver) continue;
    for (auto opt : f.options) {
      auto v = facts.config->value(opt);
      if (v.empty()) {
        fit.runnable = false;
        fit.reason = std::string(driver) + ": " + std::string(f.what) + " (" + std::string(opt) +
                     " is not set in " + facts.config->source + ")";
        return fit;
      }
      if (v == "m" && !facts.has_modules) {
        fit.runnable = false;
        fit.reason = std::string(driver) + ": " + std::string(f.what) + " (" + std::string(opt) +
                     "=m but the profile has no modules)";
        return fit;
      }
    }
  }
  return fit;
}

std::vector<DriverFit> driver_fits(const ProfileFacts& facts,
                                   const std::vector<std::string>& drivers) {
  std::vector<DriverFit> out;
  for (const auto& d : drivers) out.push_back(driver_fit(facts, d));
  return out;
}

ProfileFacts profile_facts(const ProfileSpec& spec, const ProfileImage* image,
                           KernelConfig* config_storage) {
  ProfileFacts f;
  const fs::path kernel = image ? image->kernel : spec.kernel;
  const fs::path config =
      image && !image->kernel_config.empty() ? image->kernel_config : spec.kernel_config;
  if (!kernel.empty() || !config.empty()) {
    auto cfg = read_kernel_config(kernel, spec.modules, config);
    if (cfg.ok() && config_storage) {
      *config_storage = std::move(*cfg);
      f.config = config_storage;
    }
  }
  f.has_modules = image ? !image->modules_disk.empty() : !spec.modules.empty();
  if (image) {
    if (auto it = image->versions.find("zfs_unsupported"); it != image->versions.end())
      f.zfs_unsupported = it->second;
  }
  if (spec.kind != ProfileKind::kBringYourOwn) {
    // A Debian or source-built profile records its module (or why it has none) when built;
    // before that, unknown.
    if (image) {
      auto it = image->versions.find("zfs_module");
      f.zfs_module = it != image->versions.end() && !it->second.empty();
    } else {
      f.zfs_module = true;
    }
  } else {
    f.zfs_module = holds_zfs_module(spec.modules);
  }
  return f;
}

}  // namespace cowlab::harness
