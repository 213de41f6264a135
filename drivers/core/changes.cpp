// Change detection with Docker's semantics (moby pkg/archive/changes.go, changes_unix.go).
//
// changes_dirs compares two trees the way Docker's addChanges does: children present on both
// sides are compared with statDifferent and the security.capability xattr; new children are
// Adds together with everything below them; old children missing on the new side are Deletes
// (only the top of a deleted subtree); and a directory that is not itself changed but has
// changes inside is reported as Modified (not the root).  A new non-directory replacing a
// directory hides the old directory's children (no Deletes for them), as in Docker, where the
// old side is only walked below a path that is a directory on the new side.
//
// changes_overlay and changes_aufs produce the same answer as changes_dirs(merged view, view of
// the lowers) while reading only the upper directory and, for the names found there, the
// lower layers: an overlay lookup per name, nearest layer first, stopping at whiteouts, at
// non-directories and after opaque directories (overlayfs.rst "whiteouts and opaque
// directories").  Inside an opaque upper directory the lower children are hidden, so every one
// of them the upper directory does not show is a Delete.
#include <sys/stat.h>

#include <algorithm>
#include <optional>
#include <set>
#include <unordered_set>

#include "core/archive_internal.h"
#include "cowlab/changes.h"
#include "cowlab/sys.h"

namespace cowlab {

char change_kind_letter(ChangeKind kind) {
  switch (kind) {
    case ChangeKind::kModify:
      return 'C';
    case ChangeKind::kAdd:
      return 'A';
    case ChangeKind::kDelete:
      return 'D';
  }
  return '?';
}

void sort_changes(std::vector<Change>& changes) {
  std::sort(changes.begin(), changes.end(), [](const Change& a, const Change& b) {
    if (a.path != b.path) return a.path < b.path;
    return static_cast<int>(a.kind) < static_cast<int>(b.kind);
  });
}

namespace {

using namespace archive_internal;

// Times are equal when the seconds match and the nanoseconds match or either side has none:
// tar headers (and so layers extracted from them) carry whole seconds (sameFsTimeSpec).
bool same_time(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && (a.tv_nsec == b.tv_nsec || a.tv_nsec == 0 || b.tv_nsec == 0);
}

// moby changes_unix.go statDifferent.  Size and mtime are skipped for directories, tested as
// `mode & S_IFDIR == S_IFDIR`; that test also holds for block devices (S_IFBLK = 060000) and
// sockets (S_IFSOCK = 0140000), whose size and mtime Docker therefore ignores too.  Kept as is so
// that the same trees give the same changes as Docker.
bool stat_different(const struct stat& o, const struct stat& n) {
  if (o.st_mode != n.st_mode || o.st_uid != n.st_uid || o.st_gid != n.st_gid ||
      o.st_rdev != n.st_rdev)
    return true;
  if ((o.st_mode & S_IFDIR) != S_IFDIR)
    return !same_time(o.st_mtim, n.st_mtim) || o.st_size != n.st_size;
  return false;
}

Result<std::optional<std::string>> capability(const std::string& path) {
  return sys::lgetxattr(path, kCapabilityXattr);
}

Result<bool> changed(const struct stat& old_st, const std::string& old_path,
                     const struct stat& new_st, const std::string& new_path) {
  if (stat_different(old_st, new_st)) return true;
  auto a = COWLAB_TRY(capability(old_path));
  auto b = COWLAB_TRY(capability(new_path));
  return a.value_or("") != b.value_or("");
}

std::string abs_of(const std::string& root, const std::string& rel) {
  return rel.empty() ? root : root + "/" + rel;
}

Result<std::vector<std::string>> sorted_names(const std::string& dir) {
  auto entries = COWLAB_TRY(sys::read_dir(dir));
  std::vector<std::string> names;
  names.reserve(entries.size());
  for (auto& e : entries) names.push_back(std::move(e.name));
  std::sort(names.begin(), names.end());
  return names;
}

// Inserts Modify(dir) before the changes found inside it (Docker's addChanges tail).
void insert_dir_modify(std::vector<Change>& changes, size_t size_at_entry, const std::string& rel,
                       bool added) {
  if (changes.size() > size_at_entry && !added && !rel.empty())
    changes.insert(changes.begin() + static_cast<std::ptrdiff_t>(size_at_entry),
                   Change{"/" + rel, ChangeKind::kModify});
}

// ---- two full trees -----------------------------------------------------------------------------
class TreeCompare {
 public:
  TreeCompare(const std::string& new_root, const std::string& old_root)
      : new_(new_root), old_(old_root) {}

  Result<std::vector<Change>> run() {
    auto root = COWLAB_TRY(sys::lstat(new_));
    // Docker compares against an empty temporary directory when there is no old tree.
    std::optional<struct stat> old_root;
    if (!old_.empty()) old_root = COWLAB_TRY(sys::lstat(old_));
    COWLAB_TRY(walk("", root, old_root ? &*old_root : nullptr, true));
    sort_changes(changes_);
    return std::move(changes_);
  }

 private:
  // `node` exists on the new side; `old` is its counterpart, null if none.
  Result<void> walk(const std::string& rel, const struct stat& node, const struct stat* old,
                    bool added) {
    size_t size_at_entry = changes_.size();
    if (!old && !rel.empty()) {
      changes_.push_back({"/" + rel, ChangeKind::kAdd});
      added = true;
    }
    if (!S_ISDIR(node.st_mode)) return {};
    std::set<std::string> old_names;
    if (old && S_ISDIR(old->st_mode)) {
      auto names = COWLAB_TRY(sorted_names(abs_of(old_, rel)));
      old_names.insert(names.begin(), names.end());
    }
    for (const auto& name : COWLAB_TRY(sorted_names(abs_of(new_, rel)))) {
      std::string child = join_path(rel, name);
      std::string new_path = abs_of(new_, child);
      auto st = COWLAB_TRY(sys::lstat(new_path));
      std::optional<struct stat> old_st;
      bool child_added = false;
      if (auto it = old_names.find(name); it != old_names.end()) {
        std::string old_path = abs_of(old_, child);
        old_st = COWLAB_TRY(sys::lstat(old_path));
        if (COWLAB_TRY(changed(*old_st, old_path, st, new_path))) {
          changes_.push_back({"/" + child, ChangeKind::kModify});
          child_added = true;
        }
        old_names.erase(it);
      }
      COWLAB_TRY(walk(child, st, old_st ? &*old_st : nullptr, child_added));
    }
    for (const auto& name : old_names)
      changes_.push_back({"/" + join_path(rel, name), ChangeKind::kDelete});
    insert_dir_modify(changes_, size_at_entry, rel, added);
    return {};
  }

  const std::string new_;
  const std::string old_;
  std::vector<Change> changes_;
};

// ---- an upper layer against its lowers --------------------------------------------------------
enum class NativeFormat { kOverlay, kAufs };

// A path as the lower layers show it: the top-most layer's entry, and for a directory the
// layers it is merged from, nearest first.
struct LowerEntry {
  struct stat st {};
  std::string path;            // absolute path of the top-most entry
  std::vector<size_t> layers;  // directories only
};

class NativeChanges {
 public:
  NativeChanges(const std::string& upper, const std::vector<std::string>& lowers,
                NativeFormat format, OverlayXattrNs ns)
      : upper_(upper), lowers_(lowers), format_(format), ns_(ns) {}

  Result<std::vector<Change>> run() {
    auto root = COWLAB_TRY(sys::lstat(upper_));
    LowerEntry lower_root;
    // The lower layers' roots are directories: walk() merges a directory's layers only when
    // its lower entry is one, so without this no top-level lower name would be found.
    lower_root.st.st_mode = S_IFDIR;
    for (size_t i = 0; i < lowers_.size(); ++i) {
      lower_root.layers.push_back(i);
      // An aufs branch root marked opaque hides the branches below it; overlayfs ignores the
      // opaque xattr on a layer root, so every overlay lower root is merged.
      if (format_ == NativeFormat::kAufs && COWLAB_TRY(aufs_opaque(lowers_[i]))) break;
    }
    COWLAB_TRY(walk("", root, &lower_root, true, false));
    sort_changes(changes_);
    return std::move(changes_);
  }

 private:
  Result<void> walk(const std::string& rel, const struct stat& dir_st, const LowerEntry* lower,
                    bool added, bool hides) {
    size_t size_at_entry = changes_.size();
    std::string dir_abs = abs_of(upper_, rel);
    hides = hides || COWLAB_TRY(upper_opaque(rel, dir_abs));
    std::vector<size_t> no_layers;
    const std::vector<size_t>& layers =
        lower && S_ISDIR(lower->st.st_mode) ? lower->layers : no_layers;

    std::unordered_set<std::string> shown;  // names the upper dir shows (not whiteouts)
    std::vector<std::string> whiteouts;
    for (const auto& name : COWLAB_TRY(sorted_names(dir_abs))) {
      if (format_ == NativeFormat::kAufs && starts_with(name, kWhiteoutPrefix)) {
        if (!starts_with(name, kWhiteoutMetaPrefix))
          whiteouts.push_back(name.substr(kWhiteoutPrefix.size()));
        continue;  // .wh..wh.* is aufs metadata
      }
      std::string child = join_path(rel, name);
      std::string child_abs = dir_abs + "/" + name;
      auto st = COWLAB_TRY(sys::lstat(child_abs));
      if (format_ == NativeFormat::kOverlay && is_overlay_whiteout(st)) {
        whiteouts.push_back(name);
        continue;
      }
      shown.insert(name);
      auto old = COWLAB_TRY(lookup(layers, rel, name));
      bool child_added = false;
      if (!old) {
        changes_.push_back({"/" + child, ChangeKind::kAdd});
        child_added = true;
      } else if (COWLAB_TRY(changed(old->st, old->path, st, child_abs))) {
        changes_.push_back({"/" + child, ChangeKind::kModify});
        child_added = true;
      }
      if (S_ISDIR(st.st_mode))
        COWLAB_TRY(walk(child, st, old ? &*old : nullptr, child_added, hides));
    }
    if (hides) {
      // Nothing of the lower directory shows through: whatever the upper does not show is gone.
      if (!layers.empty())
        for (const auto& name : COWLAB_TRY(lower_names(layers, rel)))
          if (!shown.count(name))
            changes_.push_back({"/" + join_path(rel, name), ChangeKind::kDelete});
    } else {
      for (const auto& name : whiteouts) {
        if (shown.count(name)) continue;
        if (COWLAB_TRY(lookup(layers, rel, name)))
          changes_.push_back({"/" + join_path(rel, name), ChangeKind::kDelete});
      }
    }
    insert_dir_modify(changes_, size_at_entry, rel, added);
    (void)dir_st;
    return {};
  }

  // The lower layers' view of `dir/name`, given the layers `dir` is merged from.
  Result<std::optional<LowerEntry>> lookup(const std::vector<size_t>& layers,
                                           const std::string& dir, const std::string& name) {
    std::optional<LowerEntry> found;
    std::string rel = join_path(dir, name);
    for (size_t idx : layers) {
      const std::string& layer = lowers_[idx];
      if (format_ == NativeFormat::kAufs) {
        auto wh =
            COWLAB_TRY(exists(abs_of(layer, join_path(dir, std::string(kWhiteoutPrefix) + name))));
        if (wh) break;
      }
      std::string path = abs_of(layer, rel);
      auto st = COWLAB_TRY(lstat_quiet(path));
      if (!st) continue;
      if (format_ == NativeFormat::kOverlay && is_overlay_whiteout(*st)) break;
      if (!found) {
        found = LowerEntry{*st, path, {}};
        if (!S_ISDIR(st->st_mode)) break;
      } else if (!S_ISDIR(st->st_mode)) {
        break;  // a non-directory below a directory ends the merge
      }
      found->layers.push_back(idx);
      if (COWLAB_TRY(lower_opaque(path))) break;
    }
    return found;
  }

  // Names the lower layers show in `dir`.
  Result<std::vector<std::string>> lower_names(const std::vector<size_t>& layers,
                                               const std::string& dir) {
    std::unordered_set<std::string> seen;
    std::vector<std::string> visible;
    for (size_t idx : layers) {
      std::string abs = abs_of(lowers_[idx], dir);
      auto names = COWLAB_TRY(sorted_names(abs));
      if (format_ == NativeFormat::kAufs) {
        // A whiteout hides the name in this layer and below, whatever readdir's order.
        for (const auto& name : names)
          if (starts_with(name, kWhiteoutPrefix) && !starts_with(name, kWhiteoutMetaPrefix))
            seen.insert(name.substr(kWhiteoutPrefix.size()));
      }
      for (const auto& name : names) {
        if (format_ == NativeFormat::kAufs && starts_with(name, kWhiteoutPrefix)) continue;
        if (!seen.insert(name).second) continue;
        if (format_ == NativeFormat::kOverlay) {
          auto st = COWLAB_TRY(sys::lstat(abs + "/" + name));
          if (is_overlay_whiteout(st)) continue;
        }
        visible.push_back(name);
      }
    }
    return visible;
  }

  Result<bool> upper_opaque(const std::string& rel, const std::string& abs) {
    if (format_ == NativeFormat::kAufs) return aufs_opaque(abs);
    if (rel.empty()) return false;  // overlayfs ignores it on the layer root
    return lower_opaque(abs);
  }

  Result<bool> lower_opaque(const std::string& abs) {
    if (format_ == NativeFormat::kAufs) return aufs_opaque(abs);
    auto v = COWLAB_TRY(sys::lgetxattr(abs, overlay_opaque_xattr(ns_)));
    return v && *v == "y";
  }

  static Result<bool> aufs_opaque(const std::string& dir) {
    return exists(dir + "/" + std::string(kOpaqueMarker));
  }

  static Result<bool> exists(const std::string& path) {
    auto st = COWLAB_TRY(lstat_quiet(path));
    return st.has_value();
  }

  // lstat, with "not there" (ENOENT, or ENOTDIR for a path below a non-directory) as nullopt.
  static Result<std::optional<struct stat>> lstat_quiet(const std::string& path) {
    auto st = sys::lstat(path);
    if (st.ok()) return std::optional<struct stat>(*st);
    if (st.error().err() == ENOENT || st.error().err() == ENOTDIR)
      return std::optional<struct stat>();
    return std::move(st).error();
  }

  const std::string& upper_;
  const std::vector<std::string>& lowers_;
  NativeFormat format_;
  OverlayXattrNs ns_;
  std::vector<Change> changes_;
};

}  // namespace

Result<std::vector<Change>> changes_dirs(const std::string& new_dir, const std::string& old_dir) {
  TreeCompare compare(new_dir, old_dir);
  auto r = compare.run();
  if (!r.ok()) return std::move(r).error().with_context("changes of " + new_dir);
  return r;
}

Result<std::vector<Change>> changes_overlay(const std::string& upper,
                                            const std::vector<std::string>& lowers,
                                            OverlayXattrNs ns) {
  NativeChanges native(upper, lowers, NativeFormat::kOverlay, ns);
  auto r = native.run();
  if (!r.ok()) return std::move(r).error().with_context("changes of " + upper);
  return r;
}

Result<std::vector<Change>> changes_aufs(const std::string& upper,
                                         const std::vector<std::string>& lowers) {
  NativeChanges native(upper, lowers, NativeFormat::kAufs, OverlayXattrNs::kTrusted);
  auto r = native.run();
  if (!r.ok()) return std::move(r).error().with_context("changes of " + upper);
  return r;
}

// Sizes of regular files only: diff-size must equal what apply-diff reports for the diff's
// tar, the sum of its header sizes, and symlinks and devices have size 0 in a tar header
// (Docker's ChangesSize also counts symlink lengths; graphtest's DiffApply compares the two).
Result<int64_t> changes_size(const std::string& dir, const std::vector<Change>& changes) {
  int64_t size = 0;
  std::set<std::pair<dev_t, ino_t>> seen;
  for (const auto& c : changes) {
    if (c.kind == ChangeKind::kDelete) continue;
    auto st = sys::lstat_if_exists(dir + c.path);
    if (!st.ok()) return std::move(st).error().with_context("diff size of " + dir);
    if (!st->has_value() || !S_ISREG((*st)->st_mode)) continue;  // gone meanwhile, or not a file
    const struct stat& s = **st;
    if (s.st_nlink > 1 && !seen.insert({s.st_dev, s.st_ino}).second) continue;
    size += s.st_size;
  }
  return size;
}

}  // namespace cowlab
