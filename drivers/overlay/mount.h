// Making overlay mounts: the two mount paths of overlay.h behind one function.  Internal to
// the overlay driver (and its probes).
#pragma once

#include <string>
#include <vector>

#include "cowlab/result.h"
#include "overlay/overlay.h"

namespace cowlab::overlay {

// One overlay mount.  Layer paths are relative to `base` (the driver home, or a probe dir), so
// each mount path can pick absolute or relative forms as its limits require.
struct MountSpec {
  std::string base;                  // absolute directory the layer paths are relative to
  std::vector<std::string> lowers;   // nearest first, e.g. "l/<LID>" or "<id>/diff"
  std::string upper;                 // "" = read-only mount of the lowers only
  std::string work;                  // required with upper
  std::string target;                // absolute mount point
  std::vector<std::string> options;  // "index=off", "userxattr", user mount options
};

// Mounts `spec` with the given path (kNewApi or kLegacy; kAuto is an error).  Errors name the
// target, the failing call and the kernel's own log lines where the new API provides them.
Result<void> mount_overlay(OverlayMountApi api, const MountSpec& spec);

// Whether fsconfig(2) accepts "lowerdir+" for overlay (Linux >= 6.7): fsopen("overlay") and
// one "lowerdir+" of `dir`, nothing mounted.  False on ENOSYS (no new mount API) and EINVAL
// (unknown key); other errors are returned.
Result<bool> probe_lowerdir_append(const std::string& dir);

// Largest number of lower layers each path can mount: OVL_MAX_STACK for the new API, Docker's
// maxDepth for mount(2) (26-char short links + "l/" + ":" = 29 bytes each, 128 of them fit in
// a page with room for upperdir/workdir of a 128-byte layer id).
constexpr int kMaxLowersNewApi = 500;
constexpr int kMaxLowersLegacy = 128;

// Splits "a=b,c" mount options; refuses the layer keys the driver sets itself.
Result<std::vector<std::string>> parse_mount_options(const std::string& text);

}  // namespace cowlab::overlay
