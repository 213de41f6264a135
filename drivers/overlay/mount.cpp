#include "overlay/mount.h"

#include <fcntl.h>

#include <memory>

#include "cowlab/sys.h"

namespace cowlab::overlay {

namespace {

// fsconfig(2) copies string values with strndup_user(value, 256): a longer path is EINVAL
// (fs/fsopen.c).  Longer paths go through /proc/self/fd/<base fd>, which the kernel resolves
// at fsconfig time because 6.7+ overlay looks up "lowerdir+" layers immediately.
constexpr size_t kFsconfigMaxString = 255;

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

Result<void> mount_new_api(const MountSpec& spec) {
  const std::string ctx = "mount overlay on " + spec.target + " (new mount API)";
  bool too_long = false;
  auto all_paths = spec.lowers;
  if (!spec.upper.empty()) {
    all_paths.push_back(spec.upper);
    all_paths.push_back(spec.work);
  }
  for (const auto& p : all_paths)
    if (spec.base.size() + 1 + p.size() > kFsconfigMaxString) too_long = true;
  sys::Fd base_fd;
  std::string prefix = spec.base + "/";
  if (too_long) {
    base_fd = COWLAB_TRY_CTX(sys::open(spec.base, O_PATH | O_DIRECTORY), ctx);
    prefix = "/proc/self/fd/" + std::to_string(base_fd.get()) + "/";
  }
  auto fs = COWLAB_TRY_CTX(sys::fsopen("overlay", 0), ctx);
  COWLAB_TRY_CTX(sys::fsconfig_string(fs.get(), "source", "overlay"), ctx);
  for (const auto& opt : spec.options) {
    auto eq = opt.find('=');
    if (eq == std::string::npos)
      COWLAB_TRY_CTX(sys::fsconfig_flag(fs.get(), opt), ctx);
    else
      COWLAB_TRY_CTX(sys::fsconfig_string(fs.get(), opt.substr(0, eq), opt.substr(eq + 1)), ctx);
  }
  // One key per layer, nearest first: no ':' escaping and no page limit (kernel commit
  // 24e16e385f22, Linux 6.7).  Mixing with a legacy "lowerdir" key is refused by the kernel.
  for (const auto& l : spec.lowers)
    COWLAB_TRY_CTX(sys::fsconfig_string(fs.get(), "lowerdir+", prefix + l), ctx);
  if (!spec.upper.empty()) {
    COWLAB_TRY_CTX(sys::fsconfig_string(fs.get(), "upperdir", prefix + spec.upper), ctx);
    COWLAB_TRY_CTX(sys::fsconfig_string(fs.get(), "workdir", prefix + spec.work), ctx);
  }
  COWLAB_TRY_CTX(sys::fsconfig_create(fs.get()), ctx);
  auto mnt = COWLAB_TRY_CTX(sys::fsmount(fs.get(), 0, 0), ctx);
  COWLAB_TRY_CTX(sys::move_mount_to(mnt.get(), spec.target), ctx);
  return {};
}

bool needs_escape(const std::string& path) {
  return path.find_first_of(",:\\") != std::string::npos;
}

std::string legacy_data(const MountSpec& spec, const std::string& prefix) {
  std::vector<std::string> lowers;
  lowers.reserve(spec.lowers.size());
  for (const auto& l : spec.lowers) lowers.push_back(prefix + l);
  std::string data = join(spec.options, ",");
  if (!data.empty()) data += ",";
  data += "lowerdir=" + join(lowers, ":");
  if (!spec.upper.empty())
    data += ",upperdir=" + prefix + spec.upper + ",workdir=" + prefix + spec.work;
  return data;
}

Result<void> mount_legacy(const MountSpec& spec) {
  // mount(2) copies at most one page of data (copy_mount_options) and silently drops the
  // rest, which once made aufs lose branches without an error (moby#9151): stay within
  // pagesize-1 bytes plus the terminating NUL (Docker: overlay2/overlay.go).
  const size_t page_limit = static_cast<size_t>(sys::page_size()) - 1;
  if (!needs_escape(spec.base)) {
    std::string abs = legacy_data(spec, spec.base + "/");
    if (abs.size() <= page_limit) return sys::mount("overlay", spec.target, "overlay", 0, abs);
  }
  std::string rel = legacy_data(spec, "");
  if (rel.size() > page_limit)
    return Error::not_supported("mount overlay on " + spec.target + ": mount data is " +
                                std::to_string(rel.size()) +
                                " bytes even with relative short-link paths; " +
                                "mount(2) takes at most " + std::to_string(page_limit));
  // Relative paths resolve against the home; a child process changes directory so this
  // process's cwd (shared by all threads) never moves (Docker's docker-mountfrom).
  return sys::mount_in_dir(spec.base, "overlay", spec.target, "overlay", 0, rel);
}

}  // namespace

Result<void> mount_overlay(OverlayMountApi api, const MountSpec& spec) {
  if (spec.upper.empty() && spec.lowers.size() < 2)
    return Error::invalid("mount overlay on " + spec.target +
                          ": a read-only overlay needs at least two lower layers");
  switch (api) {
    case OverlayMountApi::kNewApi:
      return mount_new_api(spec);
    case OverlayMountApi::kLegacy:
      return mount_legacy(spec);
    case OverlayMountApi::kAuto:
      break;
  }
  return Error::invalid("mount overlay on " + spec.target + ": no mount path chosen");
}

Result<bool> probe_lowerdir_append(const std::string& dir) {
  const std::string ctx = "probe new mount API";
  auto fs = sys::fsopen("overlay", 0);
  if (!fs.ok()) {
    if (fs.error().err() == ENOSYS) return false;
    return std::move(fs).error().with_context(ctx);
  }
  // Two sibling lowers under `dir` (one directory twice, or a directory and its ancestor, is
  // refused as overlapping layers with ELOOP).
  struct Rmdir {
    std::string p;
    ~Rmdir() { (void)sys::rmdir(p); }
  };
  std::vector<std::unique_ptr<Rmdir>> made;
  std::vector<sys::Fd> fds;
  for (const char* name : {"/.lowerdir-probe-a", "/.lowerdir-probe-b"}) {
    std::string lower = dir + name;
    auto mk = sys::mkdir(lower, 0700);
    if (!mk.ok() && mk.error().err() != EEXIST) return std::move(mk).error().with_context(ctx);
    made.push_back(std::make_unique<Rmdir>());
    made.back()->p = lower;
    // A path too long for fsconfig would read as "no lowerdir+" (EINVAL): go through an fd.
    std::string path = lower;
    if (path.size() > kFsconfigMaxString) {
      fds.push_back(COWLAB_TRY_CTX(sys::open(lower, O_PATH | O_DIRECTORY), ctx));
      path = "/proc/self/fd/" + std::to_string(fds.back().get());
    }
    auto r = sys::fsconfig_string(fs->get(), "lowerdir+", path);
    if (!r.ok()) {
      if (r.error().err() == EINVAL) return false;
      return std::move(r).error().with_context(ctx);
    }
  }
  // Before Linux 6.5 overlay has no fs_context of its own: the kernel's legacy adapter takes
  // any key at fsconfig time and only the create fails (6.1 says EINVAL there).  So the
  // probe creates a read-only superblock from the two lowers for real.
  auto created = sys::fsconfig_create(fs->get());
  if (!created.ok()) {
    if (created.error().err() == EINVAL) return false;
    return std::move(created).error().with_context(ctx);
  }
  return true;
}

Result<std::vector<std::string>> parse_mount_options(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string opt = text.substr(start, comma - start);
    start = comma + 1;
    if (opt.empty()) continue;
    std::string key = opt.substr(0, opt.find('='));
    if (key == "lowerdir" || key == "upperdir" || key == "workdir" || key == "lowerdir+" ||
        key == "datadir+")
      return Error::invalid("overlay.mountopt: \"" + key +
                            "\" is set by the driver for each layer");
    out.push_back(opt);
  }
  return out;
}

}  // namespace cowlab::overlay
