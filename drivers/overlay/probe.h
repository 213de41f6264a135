// The overlay driver's capability probes (bpftrace style: probed once at init, cached in
// OverlayProbes, reported by status()).  Each probe works in its own subdirectory of a scratch
// dir under the driver home, so it runs on the same filesystem the layers will use, and makes
// its mounts with the same mount path and options as real layer mounts.  Internal.
#pragma once

#include <string>
#include <vector>

#include "cowlab/driver.h"
#include "cowlab/result.h"
#include "overlay/overlay.h"

namespace cowlab::overlay {

// A directory that is removed on destruction, after lazily unmounting anything mounted below
// it, so a failing probe never leaves a mount or a directory behind.
class ScratchDir {
 public:
  // Creates <parent>/<prefix><random hex>.
  static Result<ScratchDir> create(const std::string& parent, const std::string& prefix);
  ScratchDir(ScratchDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  ScratchDir& operator=(ScratchDir&&) = delete;
  ~ScratchDir();
  const std::string& path() const { return path_; }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// Unmounts (MNT_DETACH) every mount at or below `dir`, deepest first.
void unmount_below(const std::string& dir);

struct ProbeMount {
  OverlayMountApi api = OverlayMountApi::kLegacy;
  std::vector<std::string> options;  // the options every layer mount uses
  OverlayXattrNs ns = OverlayXattrNs::kTrusted;
};

// Prefix of overlay's private xattrs: "trusted.overlay." or "user.overlay.".
std::string overlay_xattr(OverlayXattrNs ns, const std::string& name);

// Whether readdir on `dir`'s filesystem fills d_type (Docker's fsutils.SupportsDType; xfs
// formatted with ftype=0 does not, and overlay then misreports whiteouts, moby#27443).
Result<bool> probe_d_type(const std::string& dir);

// Docker 20.10's supportsOverlay: a real mount of lowerdir=lower2:lower1 with an upper, plus a
// write through it.  An error says why overlay cannot run here.
Result<void> probe_test_mount(const std::string& dir, const ProbeMount& how);

// Docker's doesSupportNativeDiff (overlay2/check.go).  Returns "" when a diff of the upper dir
// is a faithful layer diff, otherwise the reason it is not.
Result<std::string> probe_native_diff(const std::string& dir, const ProbeMount& how);

// Mounts one overlay, chmods a lower file through it and looks for the metacopy xattr on the
// copied-up file (moby master's usingMetacopy).
Result<bool> probe_metacopy(const std::string& dir, const ProbeMount& how);

}  // namespace cowlab::overlay
