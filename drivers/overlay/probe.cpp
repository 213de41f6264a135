#include "overlay/probe.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>

#include <algorithm>
#include <cstdio>

#include "cowlab/sys.h"
#include "overlay/mount.h"

namespace cowlab::overlay {

namespace {

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (!sys::random_bytes(raw.data(), raw.size()).ok()) raw.assign(bytes, '\x5a');
  std::string out;
  char buf[3];
  for (unsigned char c : raw) {
    std::snprintf(buf, sizeof buf, "%02x", c);
    out += buf;
  }
  return out;
}

Result<void> make_dirs(const std::string& base, const std::vector<std::string>& names) {
  for (const auto& n : names) COWLAB_TRY(sys::mkdir_all(base + "/" + n, 0755));
  return {};
}

Result<void> write_small_file(const std::string& path, const std::string& content, mode_t mode) {
  auto fd = COWLAB_TRY(sys::open(path, O_WRONLY | O_CREAT | O_TRUNC, mode));
  COWLAB_TRY(sys::write_all(fd.get(), content.data(), content.size()));
  return {};
}

// Unmounts `target` when it goes out of scope.
class MountGuard {
 public:
  explicit MountGuard(std::string target) : target_(std::move(target)) {}
  ~MountGuard() { (void)sys::umount2(target_, MNT_DETACH); }

 private:
  std::string target_;
};

}  // namespace

Result<ScratchDir> ScratchDir::create(const std::string& parent, const std::string& prefix) {
  std::string path = parent + "/" + prefix + random_hex(6);
  COWLAB_TRY(sys::mkdir(path, 0700));
  return ScratchDir(path);
}

ScratchDir::~ScratchDir() {
  if (path_.empty()) return;
  unmount_below(path_);
  (void)sys::remove_all(path_);
}

void unmount_below(const std::string& dir) {
  auto mounts = sys::mountinfo();
  if (!mounts.ok()) return;
  std::vector<std::string> targets;
  for (const auto& m : *mounts)
    if (m.mount_point == dir || m.mount_point.rfind(dir + "/", 0) == 0)
      targets.push_back(m.mount_point);
  // Deepest first, so a mount on top of another goes before it.
  std::sort(targets.begin(), targets.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const auto& t : targets) (void)sys::umount2(t, MNT_DETACH);
}

std::string overlay_xattr(OverlayXattrNs ns, const std::string& name) {
  return (ns == OverlayXattrNs::kUser ? "user.overlay." : "trusted.overlay.") + name;
}

Result<bool> probe_d_type(const std::string& dir) {
  std::string d = dir + "/d_type";
  COWLAB_TRY(sys::mkdir(d, 0700));
  COWLAB_TRY(write_small_file(d + "/file", "", 0600));
  auto entries = COWLAB_TRY(sys::read_dir(d));
  for (const auto& e : entries)
    if (e.name == "file") return e.type != DT_UNKNOWN;
  return Error::corrupt("d_type probe: " + d + "/file is missing from its directory listing");
}

Result<void> probe_test_mount(const std::string& dir, const ProbeMount& how) {
  std::string d = dir + "/test-mount";
  COWLAB_TRY(make_dirs(d, {"lower1", "lower2", "upper", "work", "merged"}));
  COWLAB_TRY(write_small_file(d + "/lower1/file", "lower1", 0644));
  MountSpec spec{d, {"lower2", "lower1"}, "upper", "work", d + "/merged", how.options};
  COWLAB_TRY(mount_overlay(how.api, spec));
  MountGuard guard(spec.target);
  // A mount that succeeds but cannot copy up is no use for layers: write through it.
  COWLAB_TRY(write_small_file(d + "/merged/file", "copied up", 0644));
  auto up = COWLAB_TRY(sys::lstat_if_exists(d + "/upper/file"));
  if (!up)
    return Error::not_supported("test mount " + spec.target +
                                ": a write did not reach the upper dir");
  return {};
}

Result<std::string> probe_native_diff(const std::string& dir, const ProbeMount& how) {
  std::string d = dir + "/native-diff";
  COWLAB_TRY(make_dirs(d, {"l1/d", "l1/d1", "l2/d", "l3", "work", "merged"}));
  const std::string opaque = overlay_xattr(how.ns, "opaque");
  const std::string redirect = overlay_xattr(how.ns, "redirect");
  COWLAB_TRY(sys::lsetxattr(d + "/l2/d", opaque, "y"));
  MountSpec spec{d, {"l2", "l1"}, "l3", "work", d + "/merged", how.options};
  COWLAB_TRY(mount_overlay(how.api, spec));
  MountGuard guard(spec.target);

  // Creating a file in d copies the opaque directory d up from l2 to l3.  Kernels before 4.8
  // copied the opaque xattr along, so an exported diff would hide all of d's lower entries.
  COWLAB_TRY(write_small_file(spec.target + "/d/f", "", 0644));
  auto copied = COWLAB_TRY(sys::lgetxattr(d + "/l3/d", opaque));
  if (copied && *copied == "y")
    return std::string(
        "opaque flag erroneously copied up, consider update to kernel 4.8 or later to fix");

  // Renaming a lower directory: EXDEV means redirect_dir is off and the upper dir stays a
  // plain diff.  If it succeeds, the kernel records the move in a redirect xattr that a tar
  // of the upper dir cannot express (CONFIG_OVERLAY_FS_REDIRECT_DIR, moby#25409).
  auto renamed = sys::rename(spec.target + "/d1", spec.target + "/d2");
  if (!renamed.ok()) {
    if (renamed.error().err() == EXDEV) return std::string();
    return std::move(renamed).error().with_context("native diff probe");
  }
  auto redir = COWLAB_TRY(sys::lgetxattr(d + "/l3/d2", redirect));
  if (redir && !redir->empty())
    return std::string(
        "kernel has CONFIG_OVERLAY_FS_REDIRECT_DIR enabled (directory renames leave " + redirect +
        ")");
  return std::string();
}

Result<bool> probe_metacopy(const std::string& dir, const ProbeMount& how) {
  std::string d = dir + "/metacopy";
  COWLAB_TRY(make_dirs(d, {"lower", "upper", "work", "merged"}));
  COWLAB_TRY(write_small_file(d + "/lower/f", "metacopy probe data", 0644));
  MountSpec spec{d, {"lower"}, "upper", "work", d + "/merged", how.options};
  COWLAB_TRY(mount_overlay(how.api, spec));
  MountGuard guard(spec.target);
  // A metadata-only change: with metacopy the kernel copies up the inode without its data and
  // marks it with the metacopy xattr.
  COWLAB_TRY(sys::fchmodat(sys::kCwd, spec.target + "/f", 0600));
  auto mc = COWLAB_TRY(sys::lgetxattr(d + "/upper/f", overlay_xattr(how.ns, "metacopy")));
  return mc.has_value();
}

}  // namespace cowlab::overlay
