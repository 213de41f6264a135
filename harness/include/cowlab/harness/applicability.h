// Which drivers a kernel profile can run, and the exact reason when it cannot.
//
// A matrix cell whose driver cannot run on its profile is a skip carrying that reason, decided
// on the host before any guest boots; `cowlab vm profiles` lists the same answers.  The facts
// come from what the profile was built with, never from guessing:
//   - zfs: the profile's ZFS module.  A Debian profile whose kernel zfs-dkms does not declare
//     (resolve.sh: its "Recommends: linux-libc-dev (<< X)") has none and records why
//     (ProfileImage::versions["zfs_unsupported"]); a bring-your-own kernel has one only when its
//     modules directory holds zfs.ko.
//   - aufs, overlay, btrfs, devicemapper: the kernel config (CONFIG_AUFS_FS, CONFIG_OVERLAY_FS,
//     CONFIG_BTRFS_FS, CONFIG_BLK_DEV_DM + CONFIG_DM_THIN_PROVISIONING): not set, or =m on a
//     profile without modules, is a reason.  An unknown config decides nothing (the guest will).
//   - vfs: always runnable.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "cowlab/harness/kconfig.h"
#include "cowlab/harness/profile.h"

namespace cowlab::harness {

struct DriverFit {
  std::string driver;
  bool runnable = true;
  std::string reason;  // empty when runnable; otherwise the exact cause, e.g.
                       // "zfs: not supported by zfs-dkms 2.4.4-1 (declares ...; kernel 7.3.4)"
};

// What one profile offers.  `config` is the kernel's config when known (nullptr: unknown);
// `zfs_unsupported` is the profile's recorded reason for having no ZFS module ("" = none
// recorded); `has_modules` says whether the profile boots with a modules disk; `zfs_module` says
// whether a zfs.ko is among those modules.
struct ProfileFacts {
  const KernelConfig* config = nullptr;
  std::string zfs_unsupported;
  bool has_modules = false;
  bool zfs_module = false;
};

DriverFit driver_fit(const ProfileFacts& facts, const std::string& driver);

// The facts of a profile: its config, manifest and modules.  `image` is the built profile
// (nullptr when not built: only the spec's kernel, config and modules are looked at).  The
// config read is stored in `*config_storage`, which must outlive the result.
ProfileFacts profile_facts(const ProfileSpec& spec, const ProfileImage* image,
                           KernelConfig* config_storage);

// One DriverFit per driver, in the order given.
std::vector<DriverFit> driver_fits(const ProfileFacts& facts,
                                   const std::vector<std::string>& drivers);

}  // namespace cowlab::harness
