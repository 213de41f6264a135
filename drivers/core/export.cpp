// The exporter: writes a layer tar with libarchive's writer, reproducibly.
//
// Reproducible means the same tree gives the same bytes: entries sorted by path (bytewise, so a
// directory precedes its children), PAX "restricted" (a ustar header, plus an extended header
// only where ustar cannot say it: long names, big ids, xattrs), modification times truncated
// to seconds and no atime, ctime, user or group names (what moby's FileInfoHeader does for
// the same reason), xattrs in name order, and no padding of the last record beyond the two
// zero blocks that end the archive.
//
// Whiteouts go out in OCI form (layer.md): `.wh.<name>` as an empty regular file, 0600, owned
// by 0:0, mtime 0.  An overlay opaque directory additionally emits `<dir>/.wh..wh..opq` with
// the directory's permission bits, owner and mtime (moby archive_linux.go
// overlayWhiteoutConverter.ConvertWrite), but only when the directory exists in a lower layer:
// otherwise there is nothing to hide (containers/storage#141: kernels mark directories created
// in a merged dir opaque, which must not turn into opaque markers).
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "core/archive_internal.h"
#include "cowlab/archive.h"
#include "cowlab/sys.h"

namespace cowlab {

namespace {

using namespace archive_internal;

enum class ItemKind {
  kFile,      // an entry of the tree, written with its content and attributes
  kWhiteout,  // `.wh.<name>`
  kOpaque,    // `<dir>/.wh..wh..opq`, attributes from the directory
};

struct Item {
  std::string name;  // tar path, no leading "/", no trailing "/"
  ItemKind kind = ItemKind::kFile;
  std::string source;  // absolute path on disk (kFile; the directory for kOpaque)
  struct stat st {};
  std::string hardlink;  // kFile: earlier entry of the same inode
};

// Docker skips sockets ("archive/tar: sockets not supported"); a tar cannot hold one.
bool exportable(const struct stat& st) {
  return !S_ISSOCK(st.st_mode);
}

class TarWriter {
 public:
  explicit TarWriter(Writer& out) : out_(out) {}
  ~TarWriter() {
    if (a_) archive_write_free(a_);
  }

  Result<void> open() {
    a_ = archive_write_new();
    if (!a_) return Error(ErrorKind::kSystem, "archive_write_new failed", ENOMEM);
    if (archive_write_set_format_pax_restricted(a_) != ARCHIVE_OK) return failure("set format");
    // Xattrs as SCHILY.xattr.<name> records only: what Go's archive/tar (Docker) reads, and
    // not the same data twice under LIBARCHIVE.xattr.
    if (archive_write_set_format_option(a_, "pax", "xattrheader", "SCHILY") != ARCHIVE_OK)
      return failure("set xattrheader");
    archive_write_set_bytes_in_last_block(a_, 1);
    if (archive_write_open(a_, this, nullptr, &TarWriter::write_cb, nullptr) != ARCHIVE_OK)
      return failure("open");
    return {};
  }

  Result<void> write(const Item& item) {
    struct archive_entry* e = archive_entry_new();
    if (!e) return Error(ErrorKind::kSystem, "archive_entry_new failed", ENOMEM);
    struct Free {
      struct archive_entry* e;
      ~Free() { archive_entry_free(e); }
    } free_entry{e};
    sys::Fd data;
    switch (item.kind) {
      case ItemKind::kWhiteout:
        archive_entry_set_pathname(e, item.name.c_str());
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0600);
        archive_entry_set_size(e, 0);
        archive_entry_set_mtime(e, 0, 0);
        break;
      case ItemKind::kOpaque:
        archive_entry_set_pathname(e, item.name.c_str());
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, item.st.st_mode & 0777);
        archive_entry_set_uid(e, item.st.st_uid);
        archive_entry_set_gid(e, item.st.st_gid);
        archive_entry_set_size(e, 0);
        archive_entry_set_mtime(e, item.st.st_mtim.tv_sec, 0);
        break;
      case ItemKind::kFile:
        COWLAB_TRY(describe(item, e, data));
        break;
    }
    int r = archive_write_header(a_, e);
    // ARCHIVE_WARN: e.g. a name that is not UTF-8, written as hdrcharset=BINARY.
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) return failure("write header of " + item.name);
    if (data.valid()) COWLAB_TRY(copy_data(data.get(), item));
    int f = archive_write_finish_entry(a_);
    if (f != ARCHIVE_OK && f != ARCHIVE_WARN) return failure("finish " + item.name);
    return {};
  }

  Result<void> close() {
    if (archive_write_close(a_) != ARCHIVE_OK) return failure("close");
    return {};
  }

 private:
  Result<void> describe(const Item& item, struct archive_entry* e, sys::Fd& data) {
    const struct stat& st = item.st;
    std::string name = item.name;
    if (S_ISDIR(st.st_mode)) name += '/';
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_perm(e, st.st_mode & 07777);
    archive_entry_set_uid(e, st.st_uid);
    archive_entry_set_gid(e, st.st_gid);
    archive_entry_set_mtime(e, st.st_mtim.tv_sec, 0);
    if (!item.hardlink.empty()) {
      archive_entry_set_filetype(e, st.st_mode & S_IFMT);
      archive_entry_set_hardlink(e, item.hardlink.c_str());
      archive_entry_set_size(e, 0);
      return {};  // the inode's attributes and content went with the first name
    }
    archive_entry_set_filetype(e, st.st_mode & S_IFMT);
    if (S_ISREG(st.st_mode)) {
      archive_entry_set_size(e, st.st_size);
      if (st.st_size > 0) data = COWLAB_TRY(sys::open(item.source, O_RDONLY | O_NOFOLLOW));
    } else {
      archive_entry_set_size(e, 0);
    }
    if (S_ISLNK(st.st_mode)) {
      auto target = COWLAB_TRY(sys::readlink(item.source));
      archive_entry_set_symlink(e, target.c_str());
    }
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      archive_entry_set_rdevmajor(e, major(st.st_rdev));
      archive_entry_set_rdevminor(e, minor(st.st_rdev));
    }
    auto names = COWLAB_TRY(sys::llistxattr(item.source));
    std::sort(names.begin(), names.end());
    for (const auto& xname : names) {
      if (is_overlay_xattr(xname)) continue;
      auto value = COWLAB_TRY(sys::lgetxattr(item.source, xname));
      if (!value) continue;  // removed meanwhile
      archive_entry_xattr_add_entry(e, xname.c_str(), value->data(), value->size());
    }
    return {};
  }

  // Writes exactly the size in the header: libarchive pads a file that shrank and cuts one
  // that grew, so the archive stays well-formed either way.
  Result<void> copy_data(int fd, const Item& item) {
    std::vector<char> buf(1 << 20);
    int64_t left = item.st.st_size;
    while (left > 0) {
      size_t n = COWLAB_TRY(
          sys::read(fd, buf.data(), static_cast<size_t>(std::min<int64_t>(left, buf.size()))));
      if (n == 0) break;
      if (archive_write_data(a_, buf.data(), n) < 0) return failure("write data of " + item.name);
      left -= static_cast<int64_t>(n);
    }
    return {};
  }

  static la_ssize_t write_cb(struct archive* a, void* self_ptr, const void* buf, size_t len) {
    auto* self = static_cast<TarWriter*>(self_ptr);
    auto r = self->out_.write(buf, len);
    if (!r.ok()) {
      self->out_error_ = std::move(r).error();
      archive_set_error(a, EIO, "write error");
      return -1;
    }
    return static_cast<la_ssize_t>(len);
  }

  Error failure(const std::string& what) {
    if (out_error_) return *out_error_;
    const char* msg = archive_error_string(a_);
    return Error(ErrorKind::kSystem,
                 "write tar " + out_.name() + ": " + what + ": " + (msg ? msg : "libarchive error"),
                 archive_errno(a_));
  }

  Writer& out_;
  archive_internal::Utf8Ctype utf8_;  // names are converted as each header is written
  struct archive* a_ = nullptr;
  std::optional<Error> out_error_;
};

// Sorts, links every later name of a multiply-linked inode to its first name, writes.
Result<void> write_items(std::vector<Item>& items, Writer& out) {
  std::sort(items.begin(), items.end(),
            [](const Item& a, const Item& b) { return a.name < b.name; });
  std::map<std::pair<dev_t, ino_t>, std::string> first_name;
  for (auto& item : items) {
    if (item.kind != ItemKind::kFile || S_ISDIR(item.st.st_mode) || item.st.st_nlink < 2) continue;
    auto [it, inserted] =
        first_name.emplace(std::make_pair(item.st.st_dev, item.st.st_ino), item.name);
    if (!inserted) item.hardlink = it->second;
  }
  TarWriter tar(out);
  COWLAB_TRY(tar.open());
  for (const auto& item : items) COWLAB_TRY(tar.write(item));
  return tar.close();
}

Item whiteout_item(std::string_view parent, std::string_view name) {
  Item w;
  w.name = join_path(parent, std::string(kWhiteoutPrefix) + std::string(name));
  w.kind = ItemKind::kWhiteout;
  return w;
}

class TreeWalker {
 public:
  TreeWalker(const std::string& dir, const ExportOptions& opt) : dir_(dir), opt_(opt) {}

  Result<std::vector<Item>> walk() {
    auto st = COWLAB_TRY(sys::lstat(dir_));
    if (!S_ISDIR(st.st_mode)) return Error::from_errno("export", dir_, ENOTDIR);
    COWLAB_TRY(walk_dir("", dir_, st));
    return std::move(items_);
  }

 private:
  Result<void> walk_dir(const std::string& rel, const std::string& abs, const struct stat& dir_st) {
    auto entries = COWLAB_TRY(sys::read_dir(abs));
    for (const auto& ent : entries) {
      const std::string& name = ent.name;
      std::string child_rel = join_path(rel, name);
      std::string child_abs = abs + "/" + name;
      if (opt_.format == WhiteoutFormat::kAufs && starts_with(name, kWhiteoutPrefix)) {
        // aufs metadata (.wh..wh.plnk, .wh..wh.aufs, .wh..wh.orph) never leaves the branch;
        // the opaque marker does, where it hides something.
        if (name == kOpaqueMarker) {
          if (exists_below(rel)) items_.push_back(opaque_item(rel, abs, dir_st));
        } else if (!starts_with(name, kWhiteoutMetaPrefix)) {
          items_.push_back(whiteout_item(rel, name.substr(kWhiteoutPrefix.size())));
        }
        continue;
      }
      auto st = COWLAB_TRY(sys::lstat(child_abs));
      if (!exportable(st)) continue;
      if (opt_.format == WhiteoutFormat::kOverlay && is_overlay_whiteout(st)) {
        items_.push_back(whiteout_item(rel, name));
        continue;
      }
      Item item;
      item.name = child_rel;
      item.source = child_abs;
      item.st = st;
      items_.push_back(std::move(item));
      if (!S_ISDIR(st.st_mode)) continue;
      if (opt_.format == WhiteoutFormat::kOverlay) {
        auto opaque = COWLAB_TRY(sys::lgetxattr(child_abs, overlay_opaque_xattr(opt_.overlay_ns)));
        if (opaque && *opaque == "y" && exists_below(child_rel))
          items_.push_back(opaque_item(child_rel, child_abs, st));
      }
      COWLAB_TRY(walk_dir(child_rel, child_abs, st));
    }
    return {};
  }

  Item opaque_item(const std::string& dir_rel, const std::string& dir_abs,
                   const struct stat& dir_st) const {
    Item o;
    o.name = join_path(dir_rel, kOpaqueMarker);
    o.kind = ItemKind::kOpaque;
    o.source = dir_abs;
    o.st = dir_st;
    return o;
  }

  // Whether `rel` exists in one of the lower layers (moby checks the same with os.Stat).
  bool exists_below(const std::string& rel) const {
    for (const auto& lower : opt_.lower_dirs) {
      auto st = sys::lstat_if_exists(rel.empty() ? lower : lower + "/" + rel);
      if (st.ok() && st->has_value()) return true;
    }
    return false;
  }

  const std::string& dir_;
  const ExportOptions& opt_;
  std::vector<Item> items_;
};

}  // namespace

Result<void> export_tree(const std::string& dir, const ExportOptions& options, Writer& out) {
  TreeWalker walker(dir, options);
  auto items = walker.walk();
  if (!items.ok()) return std::move(items).error().with_context("export " + dir);
  auto r = write_items(*items, out);
  if (!r.ok()) return std::move(r).error().with_context("export " + dir);
  return {};
}

Result<void> export_changes(const std::string& dir, const std::vector<Change>& changes,
                            Writer& out) {
  std::vector<Item> items;
  items.reserve(changes.size());
  for (const auto& c : changes) {
    std::string rel = c.path;
    while (!rel.empty() && rel.front() == '/') rel.erase(0, 1);
    if (rel.empty()) continue;  // the root carries no entry
    if (c.kind == ChangeKind::kDelete) {
      items.push_back(whiteout_item(parent_of(rel), base_of(rel)));
      continue;
    }
    Item item;
    item.name = rel;
    item.source = dir + "/" + rel;
    auto st = sys::lstat(item.source);
    if (!st.ok()) return std::move(st).error().with_context("export changes of " + dir);
    if (!exportable(*st)) continue;
    item.st = *st;
    items.push_back(std::move(item));
  }
  auto r = write_items(items, out);
  if (!r.ok()) return std::move(r).error().with_context("export changes of " + dir);
  return {};
}

}  // namespace cowlab
