// The overlay driver: Docker's overlay2 (daemon/graphdriver/overlay2) on the kernel's overlayfs.
//
// On-disk layout under the home (<root>/overlay), exactly Docker's:
//   l/<LID>           symlink -> ../<id>/diff; LID is 26 base32 characters (short lower paths)
//   <id>/link         the layer's LID
//   <id>/lower        "l/<LID>:l/<LID>..." of every ancestor, nearest first (only with a parent)
//   <id>/diff         the layer's own files: the overlay upper dir, whiteouts as 0/0 char devices
//   <id>/work         overlay workdir (only with a parent)
//   <id>/merged       mount point, made by get() and removed by the last put()
//   <id>/committed    written into a parent when a child is created: the parent then mounts
//                     read-only (lowerdir only), never as an upper (moby#39780)
// Permissions: home 0710, l 0700, <id> 0710, diff 0755, work and merged 0700.
//
// Mounting: a layer without a parent is its diff dir (no mount).  Otherwise one of two mount
// paths, chosen once at init by probing the kernel:
//   - kNewApi: fsopen/fsconfig with one "lowerdir+" key per layer, fsmount, move_mount
//     (Linux >= 6.7); up to 500 lower layers (the kernel's OVL_MAX_STACK);
//   - kLegacy: mount(2) with one page of options; when absolute paths do not fit, relative
//     short-link paths from a child process that chdir()s to the home (Docker's approach);
//     up to 128 lower layers (Docker's maxDepth: (26+2)*128 <= pagesize-512).
// create() refuses a layer deeper than the mount path supports, and get() refuses to mount
// one (a store made with the new API and opened on an older kernel):
//   "max depth exceeded: 501 lower layers, this kernel's mount path supports 500 (...)".
//
// Diffs: native (export of the diff dir, changes from the upper dir alone) when `parent` is the
// layer's direct parent and the native-diff probe passed; otherwise Docker's naive diff.
//
// Options: overlay.mountopt (extra overlay mount options, comma-separated), overlay.size
// (default size for read-write layers; needs xfs mounted with pquota).  The same keys with the
// "overlay2." prefix are accepted as aliases.  Anything else is an Invalid error.
//
// status(): Backing Filesystem, Supports d_type, Using metacopy, Native Overlay Diff, userxattr
// (moby master's keys and order), each the result of a probe made at init.  The mount path is
// not a status row, so the key list stays diffable against `docker info`; it is reported by
// overlay_probes() and in every depth error.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cowlab/driver.h"
#include "cowlab/result.h"

namespace cowlab {

Result<std::unique_ptr<Driver>> init_overlay(const DriverConfig& config);

// How overlay mounts are made.
enum class OverlayMountApi {
  kAuto,    // probe: kNewApi when the kernel takes "lowerdir+", else kLegacy
  kNewApi,  // fsopen/fsconfig("lowerdir+")/fsmount/move_mount
  kLegacy,  // mount(2), one page of options, relative short links when needed
};

// What init probed, for reports and scenario requirements.
struct OverlayProbes {
  std::string backing_fs;  // "extfs", "xfs", ...
  bool supports_d_type = false;
  bool native_diff = false;       // doesSupportNativeDiff passed (and not forced off)
  std::string naive_diff_reason;  // why native diff is off ("" when on)
  bool metacopy = false;          // a chmod copy-up left a metacopy xattr
  bool userxattr = false;         // mounts use "userxattr" (user namespace)
  bool index_off = false;  // /sys/module/overlay/parameters/index exists: mounts say index=off
  OverlayMountApi mount_api = OverlayMountApi::kLegacy;
  int max_lower_layers = 0;  // 500 (new API) or 128 (legacy)
  bool quota = false;        // xfs project quota usable for overlay.size / per-layer size
  // The options every layer mount passes besides the layer paths ("index=off", "userxattr",
  // then overlay.mountopt).  The kernel omits options equal to its defaults from mountinfo,
  // so this is where a report can see what was asked for.
  std::vector<std::string> mount_options;
};

// The probes of an overlay driver; nullptr when `driver` is not one.
const OverlayProbes* overlay_probes(const Driver& driver);

// For tests: init with the mount path forced (kLegacy on a new kernel exercises the
// one-page relative-path path).  Forcing kNewApi on a kernel without "lowerdir+" fails init
// with kNotSupported.
Result<std::unique_ptr<Driver>> init_overlay_with_mount_api(const DriverConfig& config,
                                                            OverlayMountApi api);

// "new mount API (fsconfig lowerdir+)" / "mount(2) with one page of options".
const char* overlay_mount_api_name(OverlayMountApi api);

}  // namespace cowlab
