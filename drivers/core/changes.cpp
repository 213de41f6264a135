// Change detection with Docker's semantics (pkg/archive/changes.go, changes_unix.go).
#include "cowlab/changes.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "cowlab/sys.h"

namespace cowlab {

namespace {

const char kCapability[] = "security.capability";

// Docker's sameFsTimeSpec: equal seconds, and equal nanoseconds unless either side has none
// (tar and some filesystems keep only seconds).
bool same_time(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && (a.tv_nsec == b.tv_nsec || a.tv_nsec == 0 || b.tv_nsec == 0);
}

// Docker's statDifferent: mode, uid, gid, rdev; size and mtime only for non-directories
// (moby#9874: directory mtimes are not a good measure of change).
bool stat_different(const struct stat& o, const struct stat& n) {
  if (o.st_mode != n.st_mode || o.st_uid != n.st_uid || o.st_gid != n.st_gid || o.st_rdev != n.st_rdev) return true;
  if (!S_ISDIR(o.st_mode) && (!same_time(o.st_mtim, n.st_mtim) || o.st_size != n.st_size)) return true;
  return false;
}

std::optional<std::string> capability(const std::string& path) {
  auto r = sys::lgetxattr(path, kCapability);
  return r.ok() ? *r : std::nullopt;
}

std::string join(const std::string& parent, const std::string& name) {
  return parent == "/" ? "/" + name : parent + "/" + name;
}

// ---- full-tree comparison (ChangesDirs) ---------------------------------------------------
struct Node {
  struct stat st {};
  std::optional<std::string> cap;
  std::map<std::string, std::unique_ptr<Node>> children;
  bool added = false;
};

Result<void> collect(const std::string& dir, Node& node) {
  auto entries = COWLAB_TRY(sys::read_dir(dir));
  for (const auto& e : entries) {
    auto child = std::make_unique<Node>();
    std::string p = dir + "/" + e.name;
    auto st = sys::lstat(p);
    if (!st.ok()) {
      if (st.error().err() == ENOENT) continue;  // raced with a deletion
      return std::move(st).error().with_context("changes");
    }
    child->st = *st;
    child->cap = capability(p);
    if (S_ISDIR(child->st.st_mode)) COWLAB_TRY(collect(p, *child));
    node.children[e.name] = std::move(child);
  }
  return {};
}

void add_all(const std::string& path, Node& node, std::vector<Change>& out) {
  for (auto& [name, child] : node.children) {
    std::string p = join(path, name);
    out.push_back({p, ChangeKind::kAdd});
    add_all(p, *child, out);
  }
}

// Docker's FileInfo.addChanges.
void add_changes(const std::string& path, Node& info, Node* old, std::vector<Change>& out) {
  size_t at_entry = out.size();
  std::set<std::string> old_names;
  if (old)
    for (auto& [name, c] : old->children) old_names.insert(name);
  for (auto& [name, child] : info.children) {
    std::string p = join(path, name);
    Node* oc = nullptr;
    if (old) {
      auto it = old->children.find(name);
      if (it != old->children.end()) oc = it->second.get();
    }
    if (!oc) {
      out.push_back({p, ChangeKind::kAdd});
      child->added = true;
      add_all(p, *child, out);
      continue;
    }
    if (stat_different(oc->st, child->st) || oc->cap != child->cap) {
      out.push_back({p, ChangeKind::kModify});
      child->added = true;
    }
    old_names.erase(name);
    if (S_ISDIR(child->st.st_mode)) {
      if (S_ISDIR(oc->st.st_mode)) {
        add_changes(p, *child, oc, out);
      } else {
        add_all(p, *child, out);  // a file replaced by a directory: everything below is new
      }
    }
  }
  for (const auto& name : old_names) out.push_back({join(path, name), ChangeKind::kDelete});
  // A directory with changes inside is reported as modified even if it is not, so the
  // directory's metadata is carried in the diff (Docker: "needed to properly save and
  // restore filesystem permissions").
  if (out.size() > at_entry && !info.added && path != "/")
    out.insert(out.begin() + static_cast<long>(at_entry), Change{path, ChangeKind::kModify});
}

// ---- union layers (overlay / aufs upper dirs) ---------------------------------------------
enum class Union { kOverlay, kAufs };

struct UnionView {
  Union kind;
  std::vector<std::string> lowers;  // nearest first
  OverlayXattrNs ns = OverlayXattrNs::kTrusted;

  std::string opaque_attr() const {
    return ns == OverlayXattrNs::kUser ? "user.overlay.opaque" : "trusted.overlay.opaque";
  }
  bool is_opaque(const std::string& dir) const {
    if (kind == Union::kAufs) return sys::lstat_if_exists(dir + "/.wh..wh..opq").value_or(std::nullopt).has_value();
    auto v = sys::lgetxattr(dir, opaque_attr());
    return v.ok() && v->has_value() && **v == "y";
  }
  // Whether `name` in `dir` (whose entry stat is `st`, if known) is a whiteout.
  bool is_whiteout(const std::string& dir, const std::string& name, const struct stat* st) const {
    if (kind == Union::kOverlay) return st && S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
    return sys::lstat_if_exists(dir + "/.wh." + name).value_or(std::nullopt).has_value();
  }
  static bool is_meta(const std::string& name) { return name.rfind(".wh.", 0) == 0; }

  // The lower entry visible at relative path `rel` ("a/b"), honouring whiteouts and opaque
  // directories of the lowers themselves.
  std::optional<std::string> lookup(const std::string& rel) const {
    std::vector<std::string> parts;
    for (size_t i = 0; i <= rel.size();) {
      size_t j = rel.find('/', i);
      if (j == std::string::npos) j = rel.size();
      if (j > i) parts.push_back(rel.substr(i, j - i));
      i = j + 1;
    }
    for (const auto& layer : lowers) {
      std::string cur = layer;
      bool stop_after = false, missing = false;
      for (size_t k = 0; k < parts.size(); ++k) {
        auto st = sys::lstat_if_exists(cur + "/" + parts[k]).value_or(std::nullopt);
        if (is_whiteout(cur, parts[k], st ? &*st : nullptr)) return std::nullopt;
        if (!st) {
          missing = true;
          break;
        }
        if (k + 1 < parts.size()) {
          if (!S_ISDIR(st->st_mode)) return std::nullopt;  // a file shadows the path below
          cur += "/" + parts[k];
          if (is_opaque(cur)) stop_after = true;
        } else {
          return cur + "/" + parts[k];
        }
      }
      if (stop_after || (missing && false)) return std::nullopt;
    }
    return std::nullopt;
  }

  // Names visible in the lower directory at `rel`.
  std::set<std::string> lower_children(const std::string& rel) const {
    std::set<std::string> names, hidden;
    for (const auto& layer : lowers) {
      std::string dir = rel.empty() ? layer : layer + "/" + rel;
      auto st = sys::lstat_if_exists(dir).value_or(std::nullopt);
      if (!st) {
        // the dir may be hidden by a whiteout of this layer at a shallower level; lookup()
        // decides visibility of the dir itself, here we only gather names of visible layers.
        if (!rel.empty() && !lookup_in_layer_chain_visible(rel, layer)) break;
        continue;
      }
      if (!S_ISDIR(st->st_mode)) break;
      auto entries = sys::read_dir(dir);
      if (!entries.ok()) break;
      for (const auto& e : *entries) {
        if (kind == Union::kAufs && is_meta(e.name)) {
          if (e.name.rfind(".wh..wh.", 0) != 0) hidden.insert(e.name.substr(4));
          continue;
        }
        auto est = sys::lstat_if_exists(dir + "/" + e.name).value_or(std::nullopt);
        if (kind == Union::kOverlay && est && is_whiteout(dir, e.name, &*est)) {
          hidden.insert(e.name);
          continue;
        }
        if (!hidden.count(e.name)) names.insert(e.name);
      }
      if (is_opaque(dir)) break;
    }
    return names;
  }

  // Whether lower layers below `layer` could still contribute to `rel` (no whiteout or
  // non-directory of `rel`'s ancestors in `layer`).
  bool lookup_in_layer_chain_visible(const std::string& rel, const std::string& layer) const {
    std::string cur = layer;
    size_t i = 0;
    while (i < rel.size()) {
      size_t j = rel.find('/', i);
      if (j == std::string::npos) j = rel.size();
      std::string part = rel.substr(i, j - i);
      auto st = sys::lstat_if_exists(cur + "/" + part).value_or(std::nullopt);
      if (is_whiteout(cur, part, st ? &*st : nullptr)) return false;
      if (!st) return true;
      if (!S_ISDIR(st->st_mode)) return false;
      cur += "/" + part;
      if (j < rel.size() && is_opaque(cur)) return false;
      i = j + 1;
    }
    return true;
  }
};

Result<void> walk_upper(const UnionView& v, const std::string& upper, const std::string& rel, const std::string& path,
                        bool parent_added, std::vector<Change>& out) {
  std::string dir = rel.empty() ? upper : upper + "/" + rel;
  auto entries = COWLAB_TRY(sys::read_dir(dir));
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::set<std::string> present;
  for (const auto& e : entries) {
    std::string name = e.name;
    if (v.kind == Union::kAufs && UnionView::is_meta(name)) {
      if (name.rfind(".wh..wh.", 0) == 0) continue;  // aufs metadata and the opaque marker
      std::string target = name.substr(4);
      std::string trel = rel.empty() ? target : rel + "/" + target;
      if (!parent_added && v.lookup(trel)) out.push_back({join(path, target), ChangeKind::kDelete});
      present.insert(target);
      continue;
    }
    std::string erel = rel.empty() ? name : rel + "/" + name;
    std::string epath = join(path, name);
    auto st = sys::lstat(upper + "/" + erel);
    if (!st.ok()) {
      if (st.error().err() == ENOENT) continue;
      return std::move(st).error().with_context("changes");
    }
    present.insert(name);
    if (v.kind == Union::kOverlay && v.is_whiteout(dir, name, &*st)) {
      if (!parent_added && v.lookup(erel)) out.push_back({epath, ChangeKind::kDelete});
      continue;
    }
    std::optional<std::string> lower = parent_added ? std::nullopt : v.lookup(erel);
    bool added = false;
    size_t at_entry = out.size();
    if (!lower) {
      out.push_back({epath, ChangeKind::kAdd});
      added = true;
    } else {
      auto lst = COWLAB_TRY(sys::lstat(*lower));
      if (stat_different(lst, *st) || capability(*lower) != capability(upper + "/" + erel)) {
        out.push_back({epath, ChangeKind::kModify});
        added = true;
      }
    }
    if (S_ISDIR(st->st_mode)) {
      bool lower_is_dir = false;
      if (lower) {
        auto lst = sys::lstat(*lower);
        lower_is_dir = lst.ok() && S_ISDIR(lst->st_mode);
      }
      bool below_hidden = !lower || !lower_is_dir;
      COWLAB_TRY(walk_upper(v, upper, erel, epath, below_hidden, out));
      if (lower && lower_is_dir && v.is_opaque(upper + "/" + erel)) {
        // Everything of the lower directory that the opaque directory does not re-create is
        // deleted.
        auto upper_entries = COWLAB_TRY(sys::read_dir(upper + "/" + erel));
        std::set<std::string> mine;
        for (const auto& ue : upper_entries) {
          if (v.kind == Union::kAufs && UnionView::is_meta(ue.name)) continue;
          mine.insert(ue.name);
        }
        for (const auto& n : v.lower_children(erel))
          if (!mine.count(n)) out.push_back({join(epath, n), ChangeKind::kDelete});
      }
      if (out.size() > at_entry && !added)
        out.insert(out.begin() + static_cast<long>(at_entry), Change{epath, ChangeKind::kModify});
    }
  }
  return {};
}

}  // namespace

void sort_changes(std::vector<Change>& changes) {
  std::stable_sort(changes.begin(), changes.end(), [](const Change& a, const Change& b) {
    return a.path != b.path ? a.path < b.path : static_cast<int>(a.kind) < static_cast<int>(b.kind);
  });
}

Result<std::vector<Change>> changes_dirs(const std::string& new_dir, const std::string& old_dir) {
  Node new_root, old_root;
  COWLAB_TRY_CTX(collect(new_dir, new_root), "changes of " + new_dir);
  std::vector<Change> out;
  if (old_dir.empty()) {
    add_all("/", new_root, out);
  } else {
    COWLAB_TRY_CTX(collect(old_dir, old_root), "changes against " + old_dir);
    add_changes("/", new_root, &old_root, out);
  }
  sort_changes(out);
  return out;
}

Result<std::vector<Change>> changes_overlay(const std::string& upper, const std::vector<std::string>& lowers,
                                            OverlayXattrNs ns) {
  UnionView v{Union::kOverlay, lowers, ns};
  std::vector<Change> out;
  COWLAB_TRY_CTX(walk_upper(v, upper, "", "/", lowers.empty(), out), "changes of " + upper);
  sort_changes(out);
  return out;
}

Result<std::vector<Change>> changes_aufs(const std::string& upper, const std::vector<std::string>& lowers) {
  UnionView v{Union::kAufs, lowers, OverlayXattrNs::kTrusted};
  std::vector<Change> out;
  COWLAB_TRY_CTX(walk_upper(v, upper, "", "/", lowers.empty(), out), "changes of " + upper);
  sort_changes(out);
  return out;
}

Result<int64_t> changes_size(const std::string& dir, const std::vector<Change>& changes) {
  int64_t size = 0;
  std::set<std::pair<dev_t, ino_t>> seen;
  for (const auto& c : changes) {
    if (c.kind == ChangeKind::kDelete) continue;
    auto st = sys::lstat_if_exists(dir + c.path);
    if (!st.ok()) return std::move(st).error().with_context("diff size");
    if (!*st || S_ISDIR((*st)->st_mode)) continue;
    if ((*st)->st_nlink > 1 && !seen.insert({(*st)->st_dev, (*st)->st_ino}).second) continue;
    size += (*st)->st_size;
  }
  return size;
}

}  // namespace cowlab
