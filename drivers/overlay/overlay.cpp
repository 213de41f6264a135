// The overlay driver (contract in overlay.h).  Follows Docker's overlay2
// (daemon/graphdriver/overlay2/overlay.go) rule for rule; each rule cites its reason.
#include "overlay/overlay.h"

#include <fcntl.h>
#include <sys/mount.h>

#include <algorithm>
#include <optional>
#include <set>

#include "core/naive_diff.h"
#include "core/refcount.h"
#include "cowlab/archive.h"
#include "cowlab/changes.h"
#include "cowlab/fs.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "overlay/mount.h"
#include "overlay/probe.h"
#include "overlay/quota.h"

namespace cowlab {

namespace {

constexpr const char* kLinkDir = "l";
constexpr const char* kDiffDir = "diff";
constexpr const char* kWorkDir = "work";
constexpr const char* kMergedDir = "merged";
constexpr const char* kLowerFile = "lower";
constexpr const char* kLinkFile = "link";
constexpr const char* kCommittedFile = "committed";
constexpr const char* kProbePrefix = ".probe-";
constexpr const char* kProbeCacheFile = "probes";  // see "probe cache" below
constexpr size_t kLinkIdLength = 26;

// Docker's generateID: 16 random bytes, base32 (RFC 4648 alphabet), first 26 characters.
// 26 characters keep (26 + len("l/:")) * 128 within a page minus room for the rest.
Result<std::string> generate_link_id() {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  unsigned char raw[16];
  COWLAB_TRY(sys::random_bytes(raw, sizeof raw));
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  for (unsigned char c : raw) {
    buffer = (buffer << 8) | c;
    bits += 8;
    while (bits >= 5) {
      out += kAlphabet[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += kAlphabet[(buffer << (5 - bits)) & 31];
  out.resize(kLinkIdLength);
  return out;
}

bool valid_link_id(const std::string& lid) {
  if (lid.size() != kLinkIdLength) return false;
  for (char c : lid)
    if (!((c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7'))) return false;
  return true;
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(sep, start);
    if (end == std::string::npos) end = text.size();
    if (end > start) out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string join(const std::vector<std::string>& parts, char sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

Result<void> write_plain_file(const std::string& path, const std::string& content, mode_t mode) {
  auto fd = COWLAB_TRY(sys::open(path, O_WRONLY | O_CREAT | O_TRUNC, mode));
  COWLAB_TRY(sys::write_all(fd.get(), content.data(), content.size()));
  return {};
}

// Backing filesystems overlay2 refused before 20.10 replaced the list with a test mount
// (v19.03 overlay2/overlay.go).  We keep both: the list gives a clear reason up front.
std::optional<std::string> refused_backing_fs(long magic) {
  switch (magic & 0xffffffffL) {
    case kMagicOverlay:
      return "an overlay mount cannot hold overlay upper and work dirs (nested overlay)";
    case kMagicAufs:
      return "aufs cannot serve as an overlay upper filesystem";
    case kMagicEcryptfs:
      return "ecryptfs does not support the whiteouts and xattrs overlay needs";
    case kMagicNfs:
      return "nfs cannot serve as an overlay upper filesystem (no whiteouts, no trusted xattrs)";
    case kMagicZfs:
      return "zfs lacks the features an overlay upper needs (whiteouts, RENAME_WHITEOUT)";
    default:
      return std::nullopt;
  }
}

// Layer ids are chosen by the caller; these would collide with the home's own entries or
// escape it.
Result<void> check_id(const std::string& op, const std::string& id) {
  if (id.empty() || id == "." || id == ".." || id.find('/') != std::string::npos || id[0] == '.')
    return Error::invalid(op + ": invalid layer id \"" + id + "\"");
  if (id == kLinkDir || id == kProbeCacheFile || id == "backingFsBlockDev")
    return Error::invalid(op + ": layer id \"" + id + "\" is reserved by the overlay layout");
  return {};
}

class OverlayDriver final : public NaiveDiffDriver {
 public:
  OverlayDriver(std::string home, OverlayProbes probes, std::vector<std::string> mount_options,
                OverlayXattrNs ns, std::optional<uint64_t> default_size,
                std::unique_ptr<overlay::ProjectQuota> quota)
      : home_(std::move(home)),
        probes_(std::move(probes)),
        mount_options_(std::move(mount_options)),
        ns_(ns),
        default_size_(default_size),
        quota_(std::move(quota)) {}

  ~OverlayDriver() override = default;

  const OverlayProbes& probes() const { return probes_; }

  std::string name() const override { return "overlay"; }
  std::string home() const override { return home_; }

  Result<void> create(const std::string& id, const std::string& parent,
                      const CreateOpts& opts) override {
    const std::string ctx = "create layer " + id;
    for (const auto& [k, v] : opts.storage_opt) {
      // Docker: "--storage-opt size is only supported for ReadWrite Layers".
      if (k == "size")
        return Error::invalid(ctx +
                              ": storage option size is only supported for read-write layers");
      return Error::invalid(ctx + ": unknown storage option \"" + k + "\"");
    }
    return create_layer(ctx, id, parent, std::nullopt);
  }

  Result<void> create_rw(const std::string& id, const std::string& parent,
                         const CreateOpts& opts) override {
    const std::string ctx = "create read-write layer " + id;
    std::optional<uint64_t> size = default_size_;
    for (const auto& [k, v] : opts.storage_opt) {
      if (k != "size") return Error::invalid(ctx + ": unknown storage option \"" + k + "\"");
      size = COWLAB_TRY_CTX(parse_size(v), ctx);
    }
    if (size && !probes_.quota)
      return Error::invalid(ctx +
                            ": storage option size is supported only for overlay over xfs with the "
                            "'pquota' mount option (backing filesystem is " +
                            probes_.backing_fs + ")");
    return create_layer(ctx, id, parent, size);
  }

  Result<void> remove(const std::string& id) override {
    const std::string ctx = "remove layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    std::string dir = layer_dir(id);
    auto st = COWLAB_TRY_CTX(sys::lstat_if_exists(dir), ctx);
    if (!st) return Error::not_found(ctx + ": no such layer");
    // A mounted layer is unmounted first: remove_all never crosses a mount point.
    std::string merged = dir + "/" + kMergedDir;
    if (COWLAB_TRY_CTX(sys::is_mountpoint(merged), ctx)) {
      COWLAB_TRY_CTX(sys::umount2(merged, MNT_DETACH), ctx);
    }
    while (refs_.count(merged) > 0) refs_.decrement(merged);
    mounted_.erase(merged);
    // The short link goes first (Docker's Remove), so a half-removed layer is never reachable
    // through l/.
    auto link = sys::read_file(dir + "/" + kLinkFile);
    if (link.ok() && valid_link_id(*link)) {
      auto r = sys::unlink(home_ + "/" + kLinkDir + "/" + *link);
      if (!r.ok() && r.error().err() != ENOENT) return std::move(r).error().with_context(ctx);
    } else {
      // A half-made layer: create makes l/<lid> before it writes the link file naming it, and
      // a power cut in between would leave the short link dangling for good.
      COWLAB_TRY_CTX(remove_links_to(id), ctx);
    }
    COWLAB_TRY_CTX(sys::remove_all(dir), ctx);
    return {};
  }

  Result<std::string> get(const std::string& id, const std::string& mount_label) override {
    (void)mount_label;  // SELinux labels are not used by cowlab
    const std::string ctx = "get layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    std::string dir = layer_dir(id);
    auto st = COWLAB_TRY_CTX(sys::lstat_if_exists(dir), ctx);
    if (!st) return Error::not_found(ctx + ": no such layer");
    auto lower_text = COWLAB_TRY_CTX(read_optional(dir + "/" + kLowerFile), ctx);
    // A layer without a parent is its diff dir: nothing to merge, no mount (Docker's Get).
    if (!lower_text) return dir + "/" + kDiffDir;

    std::string merged = dir + "/" + kMergedDir;
    if (refs_.increment(merged) > 1) return merged;
    auto mounted = mount_layer(id, *lower_text, merged);
    if (!mounted.ok()) {
      refs_.decrement(merged);
      (void)sys::rmdir(merged);
      return std::move(mounted).error().with_context(ctx);
    }
    mounted_.insert(merged);
    return merged;
  }

  // Whether get() mounts layer `id` on merged/ (it has a parent: its lower file); a missing
  // layer is kNotFound, errors name `ctx`.
  Result<bool> mounts_merged(const std::string& id, const std::string& ctx) {
    COWLAB_TRY(check_id(ctx, id));
    std::string dir = layer_dir(id);
    auto st = COWLAB_TRY_CTX(sys::lstat_if_exists(dir), ctx);
    if (!st) return Error::not_found(ctx + ": no such layer");
    auto lower = COWLAB_TRY_CTX(sys::lstat_if_exists(dir + "/" + kLowerFile), ctx);
    return lower.has_value();
  }

  Result<void> put(const std::string& id) override {
    const std::string ctx = "put layer " + id;
    if (!COWLAB_TRY(mounts_merged(id, ctx))) return {};  // get() did not mount
    std::string merged = layer_dir(id) + "/" + kMergedDir;
    if (refs_.decrement(merged) > 0) return {};
    return unmount_merged(merged, ctx);
  }

  // merged/ for a layer with a parent (its lower file), nothing for a base layer (get()).
  Result<std::string> mount_dir(const std::string& id) override {
    const std::string ctx = "mount dir of layer " + id;
    if (!COWLAB_TRY(mounts_merged(id, ctx))) return std::string();
    return layer_dir(id) + "/" + kMergedDir;
  }

  bool exists(const std::string& id) override {
    if (!check_id("exists", id).ok()) return false;
    auto st = sys::lstat_if_exists(layer_dir(id));
    return st.ok() && st->has_value() && S_ISDIR((*st)->st_mode);
  }
  // Every directory of the home but its own (l/, the .tmp scratch dir).
  Result<std::vector<std::string>> list() override {
    auto dirs = COWLAB_TRY_CTX(subdirectories(home_), "overlay: list layers");
    std::erase_if(dirs, [](const std::string& d) { return !check_id("list", d).ok(); });
    return dirs;
  }

  KeyValues status() override {
    auto b = [](bool v) { return std::string(v ? "true" : "false"); };
    // moby master's order (daemon/graphdriver/overlay2/overlay.go Status).
    return {
        {"Backing Filesystem", probes_.backing_fs}, {"Supports d_type", b(probes_.supports_d_type)},
        {"Using metacopy", b(probes_.metacopy)},    {"Native Overlay Diff", b(probes_.native_diff)},
        {"userxattr", b(probes_.userxattr)},
    };
  }

  Result<KeyValues> metadata(const std::string& id) override {
    const std::string ctx = "metadata of layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    std::string dir = layer_dir(id);
    auto st = COWLAB_TRY_CTX(sys::lstat_if_exists(dir), ctx);
    if (!st) return Error::not_found(ctx + ": no such layer");
    KeyValues kv = {
        {"WorkDir", dir + "/" + kWorkDir},
        {"MergedDir", dir + "/" + kMergedDir},
        {"UpperDir", dir + "/" + kDiffDir},
    };
    auto lowers = COWLAB_TRY_CTX(lower_dirs(id), ctx);
    if (!lowers.empty()) kv.emplace_back("LowerDir", join(lowers, ':'));
    return kv;
  }

  Result<void> cleanup() override {
    // Only mounts this process made: other processes' references (a `cowlab mount` that
    // exited) are theirs to release.
    Result<void> first_error;
    for (const auto& merged : std::set<std::string>(mounted_)) {
      while (refs_.count(merged) > 0) refs_.decrement(merged);
      auto r = unmount_merged(merged, "cleanup");
      if (!r.ok() && first_error.ok()) first_error = std::move(r).error();
    }
    mounted_.clear();
    return first_error;
  }

  Result<void> diff(const std::string& id, const std::string& parent, Writer& out) override {
    if (!use_native_diff(id, parent)) return NaiveDiffDriver::diff(id, parent, out);
    const std::string ctx = "diff layer " + id;
    ExportOptions eo;
    eo.format = WhiteoutFormat::kOverlay;
    eo.overlay_ns = ns_;
    eo.lower_dirs = COWLAB_TRY_CTX(lower_dirs(id), ctx);
    return export_tree(layer_dir(id) + "/" + kDiffDir, eo, out);
  }

  Result<std::vector<Change>> changes(const std::string& id, const std::string& parent) override {
    if (!use_native_diff(id, parent)) return NaiveDiffDriver::changes(id, parent);
    const std::string ctx = "changes of layer " + id;
    // Only the upper dir is walked; lowers are consulted for the names it mentions, so the
    // cost follows the size of the change, not of the image.
    auto lowers = COWLAB_TRY_CTX(lower_dirs(id), ctx);
    auto r = changes_overlay(layer_dir(id) + "/" + kDiffDir, lowers, ns_);
    if (!r.ok()) return std::move(r).error().with_context(ctx);
    return r;
  }

  Result<int64_t> apply_diff(const std::string& id, const std::string& parent,
                             Reader& tar) override {
    if (!use_native_diff(id, parent)) return NaiveDiffDriver::apply_diff(id, parent, tar);
    ApplyOptions ao;
    ao.format = WhiteoutFormat::kOverlay;
    ao.overlay_ns = ns_;
    ao.scratch_dir = scratch_dir();
    ao.context = "apply-diff layer " + id;
    // Overlayfs ignores an opaque xattr on a layer's root dir, so the applier needs the
    // lowers to turn a root-level opaque marker into whiteouts.
    ao.lower_dirs = COWLAB_TRY_CTX(lower_dirs(id), ao.context);
    auto stats = COWLAB_TRY(apply_layer(layer_dir(id) + "/" + kDiffDir, tar, ao));
    return stats.size;
  }

  Result<int64_t> diff_size(const std::string& id, const std::string& parent) override {
    if (!use_native_diff(id, parent)) return NaiveDiffDriver::diff_size(id, parent);
    const std::string ctx = "diff-size of layer " + id;
    auto lowers = COWLAB_TRY_CTX(lower_dirs(id), ctx);
    std::string upper = layer_dir(id) + "/" + kDiffDir;
    auto ch = COWLAB_TRY_CTX(changes_overlay(upper, lowers, ns_), ctx);
    auto size = changes_size(upper, ch);
    if (!size.ok()) return std::move(size).error().with_context(ctx);
    return size;
  }

  WhiteoutFormat whiteout_format() const override { return WhiteoutFormat::kOverlay; }
  bool supports_quota() const override { return probes_.quota; }

 protected:
  // Starts with '.', so it can never be a layer id.
  std::string scratch_dir() const override { return home_ + "/.tmp"; }

 private:
  std::string layer_dir(const std::string& id) const { return home_ + "/" + id; }

  static Result<std::optional<std::string>> read_optional(const std::string& path) {
    auto st = COWLAB_TRY(sys::lstat_if_exists(path));
    if (!st) return std::optional<std::string>();
    auto text = COWLAB_TRY(sys::read_file(path));
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    return std::optional<std::string>(std::move(text));
  }

  // The "l/<LID>" entries of a layer's lower file, nearest first; validated.
  Result<std::vector<std::string>> lower_links(const std::string& id) {
    auto text = COWLAB_TRY(read_optional(layer_dir(id) + "/" + kLowerFile));
    if (!text) return std::vector<std::string>();
    auto links = split(*text, ':');
    for (const auto& l : links)
      if (l.rfind("l/", 0) != 0 || !valid_link_id(l.substr(2)))
        return Error::corrupt("layer " + id + ": lower file entry \"" + l +
                              "\" is not l/<26-char link id>");
    return links;
  }

  // Absolute diff dirs of the lower layers, nearest first, resolved through the short links
  // (Docker's getLowerDirs).
  Result<std::vector<std::string>> lower_dirs(const std::string& id) {
    auto links = COWLAB_TRY(lower_links(id));
    std::vector<std::string> out;
    out.reserve(links.size());
    for (const auto& l : links) {
      auto target = COWLAB_TRY(sys::readlink(home_ + "/" + l));
      // Always "../<id>/diff", relative to l/.
      if (target.rfind("../", 0) != 0 || target.find("/../") != std::string::npos)
        return Error::corrupt("layer " + id + ": short link " + l + " points at \"" + target +
                              "\"");
      out.push_back(home_ + "/" + target.substr(3));
    }
    return out;
  }

  // Docker's isParent: `parent` is the layer `id` was created on (the dir of its first lower).
  bool is_direct_parent(const std::string& id, const std::string& parent) {
    auto lowers = lower_dirs(id);
    if (!lowers.ok()) return false;
    if (parent.empty()) return lowers->empty();
    if (lowers->empty()) return false;
    return lowers->front() == layer_dir(parent) + "/" + kDiffDir;
  }

  bool use_native_diff(const std::string& id, const std::string& parent) {
    return probes_.native_diff && is_direct_parent(id, parent);
  }

  std::string depth_error(size_t lowers) const {
    return "max depth exceeded: " + std::to_string(lowers) +
           " lower layers, this kernel's mount path supports " +
           std::to_string(probes_.max_lower_layers) + " (" +
           overlay_mount_api_name(probes_.mount_api) + ")";
  }

  Result<void> create_layer(const std::string& ctx, const std::string& id,
                            const std::string& parent, std::optional<uint64_t> size) {
    COWLAB_TRY(check_id(ctx, id));
    std::string lower;
    if (!parent.empty()) {
      COWLAB_TRY(check_id(ctx, parent));
      if (!exists(parent))
        return Error::not_found(ctx + ": parent layer " + parent + " does not exist");
      auto parent_link = COWLAB_TRY_CTX(sys::read_file(layer_dir(parent) + "/" + kLinkFile), ctx);
      if (!valid_link_id(parent_link))
        return Error::corrupt(ctx + ": parent layer " + parent + " has an invalid link file");
      auto parent_lowers = COWLAB_TRY_CTX(lower_links(parent), ctx);
      std::vector<std::string> lowers = {std::string(kLinkDir) + "/" + parent_link};
      lowers.insert(lowers.end(), parent_lowers.begin(), parent_lowers.end());
      // Refused here rather than at mount time, as Docker's getLower does: a layer that could
      // never be mounted must not be created.
      if (lowers.size() > static_cast<size_t>(probes_.max_lower_layers))
        return Error::not_supported(ctx + ": " + depth_error(lowers.size()));
      lower = join(lowers, ':');
    }

    std::string dir = layer_dir(id);
    auto made = sys::mkdir(dir, 0710);
    if (!made.ok()) {
      if (made.error().err() == EEXIST)
        return Error(ErrorKind::kExists, ctx + ": layer exists", EEXIST);
      return std::move(made).error().with_context(ctx);
    }
    std::string lid;
    auto r = populate_layer(dir, id, parent, lower, size, &lid);
    if (!r.ok()) {
      // No half-made layer: neither the directory nor its short link survive.
      if (!lid.empty()) (void)sys::unlink(home_ + "/" + kLinkDir + "/" + lid);
      (void)sys::remove_all(dir);
      return std::move(r).error().with_context(ctx);
    }
    return {};
  }

  // Removes every short link in l/ that points to the layer's diff dir.
  Result<void> remove_links_to(const std::string& id) {
    const std::string links = home_ + "/" + kLinkDir;
    const std::string target = "../" + id + "/" + kDiffDir;
    auto entries = sys::read_dir(links);
    if (!entries.ok()) {
      if (entries.error().err() == ENOENT) return {};
      return std::move(entries).error();
    }
    for (const auto& e : *entries) {
      auto t = sys::readlink(links + "/" + e.name);
      if (!t.ok() || *t != target) continue;
      auto r = sys::unlink(links + "/" + e.name);
      if (!r.ok() && r.error().err() != ENOENT) return r;
    }
    return {};
  }

  Result<void> populate_layer(const std::string& dir, const std::string& id,
                              const std::string& parent, const std::string& lower,
                              std::optional<uint64_t> size, std::string* lid_out) {
    COWLAB_TRY(sys::fchmodat(sys::kCwd, dir, 0710));  // umask-proof
    // The limit goes on the layer dir before anything is made in it, so diff and work inherit
    // its project (Docker's CreateReadWrite).
    if (size) COWLAB_TRY(quota_->set(dir, *size));
    COWLAB_TRY(sys::mkdir(dir + "/" + kDiffDir, 0755));
    COWLAB_TRY(sys::fchmodat(sys::kCwd, dir + "/" + kDiffDir, 0755));
    std::string lid = COWLAB_TRY(generate_link_id());
    COWLAB_TRY(
        sys::symlinkat("../" + id + "/" + kDiffDir, sys::kCwd, home_ + "/" + kLinkDir + "/" + lid));
    *lid_out = lid;
    COWLAB_TRY(write_plain_file(dir + "/" + kLinkFile, lid, 0644));
    if (parent.empty()) return {};
    COWLAB_TRY(write_plain_file(dir + "/" + kLowerFile, lower, 0644));
    COWLAB_TRY(sys::mkdir(dir + "/" + kWorkDir, 0700));
    // From now on the parent is a lower layer of this one and must never again be mounted
    // with itself as upper dir: "lowerdir is in-use as upperdir/workdir" (moby#39780).
    COWLAB_TRY(write_plain_file(layer_dir(parent) + "/" + kCommittedFile, "", 0600));
    return {};
  }

  Result<void> mount_layer(const std::string& id, const std::string& lower_text,
                           const std::string& merged) {
    auto lowers = split(lower_text, ':');
    for (const auto& l : lowers)
      if (l.rfind("l/", 0) != 0 || !valid_link_id(l.substr(2)))
        return Error::corrupt("lower file entry \"" + l + "\" is not l/<26-char link id>");
    if (lowers.size() > static_cast<size_t>(probes_.max_lower_layers))
      return Error::not_supported(depth_error(lowers.size()));
    auto committed = COWLAB_TRY(sys::lstat_if_exists(layer_dir(id) + "/" + kCommittedFile));

    overlay::MountSpec spec;
    spec.base = home_;
    spec.target = merged;
    spec.options = mount_options_;
    if (committed) {
      // A parent of another layer mounts read-only: its own diff becomes the top lower and
      // there is no upper (moby#39780).
      spec.lowers.push_back(id + "/" + kDiffDir);
      spec.lowers.insert(spec.lowers.end(), lowers.begin(), lowers.end());
    } else {
      spec.lowers = lowers;
      spec.upper = id + "/" + kDiffDir;
      spec.work = id + "/" + kWorkDir;
    }
    auto made = sys::mkdir(merged, 0700);
    if (!made.ok() && made.error().err() != EEXIST) return std::move(made).error();
    return overlay::mount_overlay(probes_.mount_api, spec);
  }

  Result<void> unmount_merged(const std::string& merged, const std::string& ctx) {
    mounted_.erase(merged);
    // MNT_DETACH, then rmdir: removing the mount point also drops copies of the mount that
    // leaked into other mount namespaces (moby#34672, fixed in moby#34948).
    auto u = sys::umount2(merged, MNT_DETACH);
    if (!u.ok() && u.error().err() != EINVAL && u.error().err() != ENOENT)
      return std::move(u).error().with_context(ctx);
    auto r = sys::rmdir(merged);
    if (!r.ok() && r.error().err() != ENOENT) return std::move(r).error().with_context(ctx);
    return {};
  }

  std::string home_;
  OverlayProbes probes_;
  std::vector<std::string> mount_options_;
  OverlayXattrNs ns_;
  std::optional<uint64_t> default_size_;
  std::unique_ptr<overlay::ProjectQuota> quota_;  // null without xfs project quota
  RefCounter refs_{path_is_mounted};
  std::set<std::string> mounted_;  // merged dirs this process mounted and has not unmounted
};

struct ParsedOptions {
  std::optional<uint64_t> size;
  std::vector<std::string> mount_options;
};

Result<ParsedOptions> parse_options(const std::map<std::string, std::string>& options) {
  ParsedOptions out;
  for (const auto& [key, value] : options) {
    std::string k = key;
    if (k.rfind("overlay2.", 0) == 0) k = "overlay." + k.substr(9);  // Docker's prefix
    if (k == "overlay.size") {
      out.size = COWLAB_TRY_CTX(parse_size(value), "overlay: option " + key);
    } else if (k == "overlay.mountopt") {
      out.mount_options = COWLAB_TRY(overlay::parse_mount_options(value));
    } else {
      return Error::invalid("overlay: unknown option \"" + key + "\"");
    }
  }
  return out;
}

// Loads the overlay filesystem (module or built-in), as Docker's init does with modprobe.
Result<void> require_overlay_fs() {
  if (COWLAB_TRY(sys::filesystem_supported("overlay"))) return {};
  std::string out;
  auto rc = sys::run({"modprobe", "overlay"}, &out);
  if (COWLAB_TRY(sys::filesystem_supported("overlay"))) return {};
  std::string why =
      rc.ok() ? "modprobe overlay exited " + std::to_string(*rc) : rc.error().message();
  while (!out.empty() && out.back() == '\n') out.pop_back();
  if (!out.empty()) why += ": " + out;
  return Error::not_supported("this kernel has no overlay (not in /proc/filesystems; " + why + ")");
}

// Removes the probe dirs (<home>/.probe-*) that a killed init left behind: they would make the
// home look in use.  Only an init under DriverAccess::kExclusive may call it: then no other
// process uses the store, so every probe dir is stale.  Under kShared other readers run beside
// this one, each probing in a .probe-<random> dir of its own when its cached results are stale
// (after a reboot, a kernel or module parameter change), and a reader that removed the dirs it
// found would unmount and delete another reader's probe while it runs (that reader's init then
// fails: ENOENT, or "test mount failed").  Readers remove only their own (ScratchDir) and leave
// a killed reader's dir to the next writer.
void remove_stale_probe_dirs(const std::string& home) {
  auto entries = sys::read_dir(home);
  if (!entries.ok()) return;
  for (const auto& e : *entries) {
    if (e.name.rfind(kProbePrefix, 0) != 0) continue;
    overlay::unmount_below(home + "/" + e.name);
    (void)sys::remove_all(home + "/" + e.name);
  }
}

// ---- probe cache
// --------------------------------------------------------------------------------- The probes
// mount overlays for real (five mounts, ~10 ms); a daemon pays that once, but every `cowlab`
// command is a process of its own, so the results are kept in <home>/probes, valid only for the
// same boot, kernel, backing device, overlay module parameters (metacopy and redirect_dir can be
// changed at run time through /sys/module/overlay/parameters) and the same requested mount path and
// options. Anything else — or no boot_id to key on — probes again.
struct CachedProbes {
  bool supports_d_type = false;
  bool append_api = false;
  std::string naive_diff_reason;
  bool metacopy = false;
};

std::string probe_fingerprint(const std::string& home, OverlayMountApi api,
                              const std::vector<std::string>& mount_options, OverlayXattrNs ns) {
  auto boot = sys::read_file("/proc/sys/kernel/random/boot_id");
  auto st = sys::lstat(home);
  if (!boot.ok() || boot->empty() || !st.ok()) return "";
  std::string fp = "boot " + *boot;
  if (!fp.empty() && fp.back() == '\n') fp.pop_back();
  fp += "|kernel " + sys::kernel_version().release + "|dev " + std::to_string(st->st_dev);
  fp += "|api " + std::to_string(static_cast<int>(api)) + "|ns " +
        std::to_string(static_cast<int>(ns));
  for (const auto& o : mount_options) fp += "|opt " + o;
  const std::string params = "/sys/module/overlay/parameters";
  if (auto entries = sys::read_dir(params); entries.ok()) {
    std::vector<std::string> names;
    for (const auto& e : *entries) names.push_back(e.name);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
      auto v = sys::read_file(params + "/" + n);
      fp += "|" + n + "=" + (v.ok() ? *v : "?");
      while (!fp.empty() && fp.back() == '\n') fp.pop_back();
    }
  }
  for (auto& c : fp)
    if (c == '\n') c = ' ';
  return fp;
}

// File format: line 1 the fingerprint, then "key value" lines.
// kAny takes results probed under another fingerprint too (see the read-only store in init).
enum class CacheMatch { kFingerprint, kAny };
std::optional<CachedProbes> load_probe_cache(const std::string& home, const std::string& fp,
                                             CacheMatch match = CacheMatch::kFingerprint) {
  if (fp.empty() && match == CacheMatch::kFingerprint) return std::nullopt;
  auto text = sys::read_file(home + "/" + kProbeCacheFile);
  if (!text.ok()) return std::nullopt;
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < text->size()) {
    size_t nl = text->find('\n', pos);
    if (nl == std::string::npos) nl = text->size();
    lines.push_back(text->substr(pos, nl - pos));
    pos = nl + 1;
  }
  if (lines.size() != 5 || (match == CacheMatch::kFingerprint && lines[0] != fp))
    return std::nullopt;
  CachedProbes c;
  auto flag = [&](const std::string& line, const std::string& key, bool& out) {
    if (line == key + " 1")
      out = true;
    else if (line == key + " 0")
      out = false;
    else
      return false;
    return true;
  };
  if (!flag(lines[1], "d_type", c.supports_d_type) || !flag(lines[2], "append_api", c.append_api) ||
      !flag(lines[3], "metacopy", c.metacopy) || lines[4].rfind("naive_diff_reason ", 0) != 0)
    return std::nullopt;
  c.naive_diff_reason = lines[4].substr(std::string("naive_diff_reason ").size());
  return c;
}

void save_probe_cache(const std::string& home, const std::string& fp, const CachedProbes& c) {
  if (fp.empty()) return;
  std::string reason = c.naive_diff_reason;
  for (auto& ch : reason)
    if (ch == '\n') ch = ' ';
  std::string text = fp + "\nd_type " + (c.supports_d_type ? "1" : "0") + "\nappend_api " +
                     (c.append_api ? "1" : "0") + "\nmetacopy " + (c.metacopy ? "1" : "0") +
                     "\nnaive_diff_reason " + reason;
  // Best effort: without the cache the next command simply probes again.
  (void)sys::write_file_atomic(home + "/" + kProbeCacheFile, text, 0600);
}

Result<std::unique_ptr<Driver>> init(const DriverConfig& config, OverlayMountApi api) {
  const std::string& home = config.home;
  auto opts = COWLAB_TRY(parse_options(config.options));
  COWLAB_TRY(require_overlay_fs());

  OverlayProbes probes;
  long magic = COWLAB_TRY(backing_fs_magic(home));
  probes.backing_fs = fs_name_for_magic(magic);
  if (auto why = refused_backing_fs(magic))
    return Error::not_supported("overlay is not supported over " + probes.backing_fs + ": " + *why);

  bool fresh = !COWLAB_TRY(sys::lstat_if_exists(home)).has_value();
  bool initialised = !fresh && COWLAB_TRY(sys::lstat_if_exists(home + "/" + kLinkDir)).has_value();
  // A home made only for a failed init must not stay: a non-empty home pins the driver
  // during selection (Docker's prior-driver scan).
  struct FreshHomeGuard {
    std::string path;
    bool armed;
    ~FreshHomeGuard() {
      if (armed) (void)sys::remove_all(path);
    }
  } guard{home, fresh};

  COWLAB_TRY(sys::mkdir_all(home, 0710));
  // umask-proof, but only when needed: readers open a read-only store too (EROFS).
  if ((COWLAB_TRY(sys::lstat(home)).st_mode & 07777) != 0710)
    COWLAB_TRY(sys::fchmodat(sys::kCwd, home, 0710));
  auto made = sys::mkdir(home + "/" + kLinkDir, 0700);
  if (!made.ok() && made.error().err() != EEXIST)
    return std::move(made).error().with_context("overlay init");
  if (config.access == DriverAccess::kExclusive) remove_stale_probe_dirs(home);

  bool initial_ns = COWLAB_TRY_CTX(sys::in_initial_user_namespace(), "overlay init");
  OverlayXattrNs ns = OverlayXattrNs::kTrusted;
  if (!initial_ns) {
    // trusted.* xattrs need CAP_SYS_ADMIN in the initial namespace; 5.11 added userxattr so
    // overlay can keep its metadata in user.overlay.* instead.
    if (!sys::kernel_version().at_least(5, 11))
      return Error::not_supported(
          "overlay in a user namespace needs Linux 5.11 or later (userxattr)");
    ns = OverlayXattrNs::kUser;
    probes.userxattr = true;
  }

  // index=off whenever the kernel knows the option: with the index on, a copy of a mount
  // leaked into another namespace keeps the upper dir "in use" and later mounts fail with
  // EBUSY (moby#34672, fixed by moby#34948).
  probes.index_off =
      COWLAB_TRY(sys::lstat_if_exists("/sys/module/overlay/parameters/index")).has_value();
  std::vector<std::string> mount_options;
  if (probes.index_off) mount_options.push_back("index=off");
  if (probes.userxattr) mount_options.push_back("userxattr");
  mount_options.insert(mount_options.end(), opts.mount_options.begin(), opts.mount_options.end());

  const std::string fingerprint = probe_fingerprint(home, api, mount_options, ns);
  std::optional<CachedProbes> cached;
  if (initialised) cached = load_probe_cache(home, fingerprint);
  bool probed = !cached;
  std::optional<overlay::ScratchDir> scratch_dir;
  if (!cached) {
    auto made_scratch = overlay::ScratchDir::create(home, kProbePrefix);
    if (made_scratch.ok()) {
      scratch_dir.emplace(std::move(*made_scratch));
    } else if (made_scratch.error().err() == EROFS && config.access == DriverAccess::kShared &&
               initialised) {
      // A read-only store cannot be probed (every probe writes in the home), and nothing can
      // change it: its readers use the results the last writer probed and cached there, whatever
      // boot or kernel that was.  Without any, they fail naming why.
      cached = load_probe_cache(home, fingerprint, CacheMatch::kAny);
      if (!cached)
        return Error::not_supported("overlay init: " + home +
                                    " is read-only and holds no probe results (" +
                                    made_scratch.error().message() + ")");
      probed = false;
    } else {
      return std::move(made_scratch).error().with_context("overlay init");
    }
  }
  if (!cached) {
    auto& scratch = *scratch_dir;
    CachedProbes fresh_probes;
    fresh_probes.supports_d_type =
        COWLAB_TRY_CTX(overlay::probe_d_type(scratch.path()), "overlay init");
    // Without d_type overlay cannot tell whiteouts from files reliably; Docker refuses a fresh
    // home and only warns for an existing one (moby#27443).
    if (!fresh_probes.supports_d_type && !initialised)
      return Error::not_supported("overlay is not supported over " + probes.backing_fs +
                                  " without d_type support at " + home +
                                  " (xfs must be formatted with ftype=1)");
    fresh_probes.append_api =
        COWLAB_TRY_CTX(overlay::probe_lowerdir_append(scratch.path()), "overlay init");
    OverlayMountApi probe_api = api;
    if (probe_api == OverlayMountApi::kAuto)
      probe_api = fresh_probes.append_api ? OverlayMountApi::kNewApi : OverlayMountApi::kLegacy;
    if (probe_api == OverlayMountApi::kNewApi && !fresh_probes.append_api)
      return Error::not_supported(
          "overlay: this kernel's fsconfig does not take \"lowerdir+\" (needs Linux 6.7)");
    overlay::ProbeMount how{probe_api, mount_options, ns};
    if (auto r = overlay::probe_test_mount(scratch.path(), how); !r.ok())
      return Error::not_supported("overlay is not supported over " + probes.backing_fs +
                                  ": test mount failed: " + r.error().message());
    fresh_probes.naive_diff_reason =
        COWLAB_TRY_CTX(overlay::probe_native_diff(scratch.path(), how), "overlay init");
    fresh_probes.metacopy =
        COWLAB_TRY_CTX(overlay::probe_metacopy(scratch.path(), how), "overlay init");
    cached = fresh_probes;
    scratch_dir.reset();
  }
  probes.supports_d_type = cached->supports_d_type;
  if (api == OverlayMountApi::kAuto)
    api = cached->append_api ? OverlayMountApi::kNewApi : OverlayMountApi::kLegacy;
  probes.mount_api = api;
  probes.max_lower_layers =
      api == OverlayMountApi::kNewApi ? overlay::kMaxLowersNewApi : overlay::kMaxLowersLegacy;
  probes.mount_options = mount_options;
  probes.native_diff = cached->naive_diff_reason.empty();
  probes.naive_diff_reason = cached->naive_diff_reason;
  probes.metacopy = cached->metacopy;

  // Project quota is probed on xfs only (Docker's quota.NewControl); elsewhere, and on xfs
  // without pquota, sizes are refused rather than silently ignored.
  std::unique_ptr<overlay::ProjectQuota> quota;
  std::string no_quota = "backing filesystem is " + probes.backing_fs;
  if ((magic & 0xffffffffL) == kMagicXfs) {
    auto q = overlay::ProjectQuota::open(home);
    if (q.ok())
      quota = std::move(*q);
    else
      no_quota = q.error().message();
  }
  probes.quota = quota != nullptr;
  if (opts.size && !quota)
    return Error::invalid(
        "overlay: option overlay.size is supported only for overlay over xfs with the 'pquota' "
        "mount option (" +
        no_quota + ")");

  guard.armed = false;
  if (probed) save_probe_cache(home, fingerprint, *cached);
  return std::unique_ptr<Driver>(std::make_unique<OverlayDriver>(
      home, std::move(probes), std::move(mount_options), ns, opts.size, std::move(quota)));
}

}  // namespace

Result<std::unique_ptr<Driver>> init_overlay(const DriverConfig& config) {
  return init(config, OverlayMountApi::kAuto);
}

Result<std::unique_ptr<Driver>> init_overlay_with_mount_api(const DriverConfig& config,
                                                            OverlayMountApi api) {
  return init(config, api);
}

const OverlayProbes* overlay_probes(const Driver& driver) {
  auto* d = dynamic_cast<const OverlayDriver*>(&driver);
  return d ? &d->probes() : nullptr;
}

const char* overlay_mount_api_name(OverlayMountApi api) {
  switch (api) {
    case OverlayMountApi::kNewApi:
      return "new mount API: fsconfig lowerdir+, kernel limit OVL_MAX_STACK";
    case OverlayMountApi::kLegacy:
      return "mount(2) with one page of options and short links";
    case OverlayMountApi::kAuto:
      break;
  }
  return "not chosen";
}

}  // namespace cowlab
