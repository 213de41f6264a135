// OCI layer tars: the applier (reading), the exporter (writing), decompression and digests.
//
// libarchive parses and writes the tar format; it never touches the filesystem here.  Every
// entry is created by this file through the sys seam, relative to an O_PATH descriptor of the
// layer root and resolved with openat2(RESOLVE_IN_ROOT), so no name, symlink or ".." in a tar
// or in the tree below can lead outside the root.
#include "cowlab/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "cowlab/changes.h"
#include "cowlab/digest.h"
#include "cowlab/sys.h"

namespace cowlab {

namespace {

constexpr char kWhiteoutPrefix[] = ".wh.";
constexpr char kWhiteoutMetaPrefix[] = ".wh..wh.";
constexpr char kOpaqueMarker[] = ".wh..wh..opq";
constexpr char kPlinkDir[] = ".wh..wh.plnk";

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

std::string base_name(const std::string& p) {
  auto s = p.find_last_of('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}
std::string dir_name(const std::string& p) {
  auto s = p.find_last_of('/');
  return s == std::string::npos ? "" : p.substr(0, s);
}
std::string join_rel(const std::string& a, const std::string& b) { return a.empty() ? b : a + "/" + b; }

// Lexical clean of a tar name: drops ".", "" and a leading "/", resolves "..".  Returns
// false when ".." climbs above the root.
bool clean_name(const std::string& in, std::string& out) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= in.size()) {
    size_t j = in.find('/', i);
    if (j == std::string::npos) j = in.size();
    std::string c = in.substr(i, j - i);
    if (c == "..") {
      if (parts.empty()) return false;
      parts.pop_back();
    } else if (!c.empty() && c != ".") {
      parts.push_back(c);
    }
    i = j + 1;
  }
  out.clear();
  for (const auto& p : parts) out += (out.empty() ? "" : "/") + p;
  return true;
}

std::string opaque_xattr(OverlayXattrNs ns) {
  return ns == OverlayXattrNs::kUser ? "user.overlay.opaque" : "trusted.overlay.opaque";
}

// xattrs that describe a union filesystem's own state: never taken from a tar (they could
// redirect lookups) and never exported.
bool union_xattr(const std::string& name) {
  return starts_with(name, "trusted.overlay.") || starts_with(name, "user.overlay.") ||
         starts_with(name, "trusted.aufs") ;
}

// ---- libarchive <-> Reader/Writer -----------------------------------------------------------
struct ReadCtx {
  Reader* reader;
  std::vector<char> buf = std::vector<char>(1 << 16);
  std::string error;
  bool eof = false;
};

la_ssize_t read_cb(struct archive*, void* ud, const void** buf) {
  auto* c = static_cast<ReadCtx*>(ud);
  if (c->eof) return 0;
  auto r = c->reader->read(c->buf.data(), c->buf.size());
  if (!r.ok()) {
    c->error = r.error().message();
    return -1;
  }
  if (*r == 0) c->eof = true;
  *buf = c->buf.data();
  return static_cast<la_ssize_t>(*r);
}

struct WriteCtx {
  Writer* writer;
  std::string error;
};

la_ssize_t write_cb(struct archive*, void* ud, const void* buf, size_t n) {
  auto* c = static_cast<WriteCtx*>(ud);
  auto r = c->writer->write(buf, n);
  if (!r.ok()) {
    c->error = r.error().message();
    return -1;
  }
  return static_cast<la_ssize_t>(n);
}

std::string ae_error(struct archive* a) {
  const char* s = archive_error_string(a);
  return s ? s : "unknown libarchive error";
}

// ---- decompression --------------------------------------------------------------------------
class DecompressReader final : public Reader {
 public:
  explicit DecompressReader(std::unique_ptr<Reader> in) : in_(std::move(in)) { ctx_.reader = in_.get(); }
  ~DecompressReader() override {
    if (a_) archive_read_free(a_);
  }
  Result<void> open() {
    a_ = archive_read_new();
    archive_read_support_filter_gzip(a_);
    archive_read_support_filter_zstd(a_);
    archive_read_support_format_raw(a_);
    archive_read_support_format_empty(a_);
    if (archive_read_open(a_, &ctx_, nullptr, read_cb, nullptr) != ARCHIVE_OK) return fail();
    struct archive_entry* e;
    int r = archive_read_next_header(a_, &e);
    if (r == ARCHIVE_EOF) {
      done_ = true;
      return {};
    }
    if (r < ARCHIVE_WARN) return fail();
    return {};
  }
  Result<size_t> read(void* buf, size_t len) override {
    if (done_) return size_t{0};
    la_ssize_t n = archive_read_data(a_, buf, len);
    if (n < 0) return fail();
    if (n == 0) done_ = true;
    return static_cast<size_t>(n);
  }
  std::string name() const override { return in_->name(); }

 private:
  Error fail() const {
    std::string why = ctx_.error.empty() ? ae_error(a_) : ctx_.error;
    return Error::invalid("decompress " + in_->name() + ": " + why);
  }
  std::unique_ptr<Reader> in_;
  ReadCtx ctx_;
  struct archive* a_ = nullptr;
  bool done_ = false;
};

// ---- the applier ------------------------------------------------------------------------------
bool may_create_devices() {
  // CAP_MKNOD in the initial user namespace (Docker skips devices in user namespaces).
  auto status = sys::read_file("/proc/self/status");
  if (!status.ok()) return false;
  auto pos = status->find("CapEff:");
  if (pos == std::string::npos) return false;
  unsigned long long caps = std::strtoull(status->c_str() + pos + 7, nullptr, 16);
  if (!(caps & (1ULL << CAP_MKNOD))) return false;
  auto map = sys::read_file("/proc/self/uid_map");
  if (!map.ok()) return true;
  unsigned long a = 1, b = 1, n = 0;
  std::sscanf(map->c_str(), "%lu %lu %lu", &a, &b, &n);
  return a == 0 && b == 0 && n == 4294967295UL;
}

class Applier {
 public:
  Applier(const std::string& root, const ApplyOptions& o) : root_(root), o_(o) {}

  Result<ApplyStats> run(Reader& tar) {
    const bool writing = o_.mode == ApplyMode::kApply;
    if (writing) {
      root_fd_ = COWLAB_TRY(ctx_err(sys::open(root_, O_PATH | O_DIRECTORY), "open layer root " + root_));
      devices_ok_ = may_create_devices();
    }
    ReadCtx rctx;
    rctx.reader = &tar;
    struct archive* a = archive_read_new();
    struct Free {
      struct archive* a;
      ~Free() { archive_read_free(a); }
    } free_archive{a};
    archive_read_support_format_tar(a);
    if (archive_read_open(a, &rctx, nullptr, read_cb, nullptr) != ARCHIVE_OK)
      return invalid("", rctx.error.empty() ? ae_error(a) : rctx.error);
    struct archive_entry* e;
    for (;;) {
      int r = archive_read_next_header(a, &e);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) {
        std::string why = rctx.error.empty() ? ae_error(a) : rctx.error;
        return invalid(stats_.entries ? "after entry \"" + last_name_ + "\"" : "", "malformed tar: " + why);
      }
      ++stats_.entries;
      const char* raw = archive_entry_pathname(e);
      last_name_ = raw ? raw : "";
      COWLAB_TRY(entry(a, e));
    }
    // Drain: the caller's digest must cover every byte, trailing blocks included.
    std::vector<char> buf(1 << 16);
    while (!rctx.eof) {
      auto n = tar.read(buf.data(), buf.size());
      if (!n.ok()) return std::move(n).error().with_context(o_.context);
      if (*n == 0) break;
    }
    if (writing) COWLAB_TRY(finish());
    return stats_;
  }

 private:
  template <typename T>
  Result<T> ctx_err(Result<T> r, const std::string& what) {
    if (!r.ok()) return std::move(r).error().with_context(o_.context.empty() ? what : o_.context + ": " + what);
    return r;
  }
  Error wrap(Error e, const std::string& name) {
    return std::move(e).with_context((o_.context.empty() ? "" : o_.context + ": ") + "entry \"" + name + "\"");
  }
  Error invalid(const std::string& name, const std::string& why) {
    std::string prefix = o_.context.empty() ? "" : o_.context + ": ";
    if (!name.empty()) prefix += (name[0] == 'a' && starts_with(name, "after ") ? name : "entry \"" + name + "\"") + ": ";
    return Error::invalid(prefix + why);
  }
  Error security(const std::string& name, const std::string& why) {
    return Error::security((o_.context.empty() ? "" : o_.context + ": ") + "entry \"" + name + "\": " + why);
  }

  // Every prefix of `p` must not be a symlink or hard link this tar created: writing through
  // them is how "dir/loophole -> ../../victim" + "dir/loophole/newfile" escapes.
  Result<void> check_not_through_links(const std::string& shown, const std::string& p) {
    std::string prefix;
    size_t i = 0;
    while ((i = p.find('/', i)) != std::string::npos) {
      prefix = p.substr(0, i);
      if (links_.count(prefix))
        return security(shown, "path goes through " + links_[prefix] + " \"" + prefix + "\" created by this layer");
      ++i;
    }
    return {};
  }

  void mark_unpacked(const std::string& p) {
    std::string cur = p;
    while (!cur.empty() && unpacked_.insert(cur).second) cur = dir_name(cur);
  }

  // An O_PATH fd of directory `rel` (created with 0755 parents when missing), resolved inside
  // the root.
  Result<sys::Fd> dir_fd(const std::string& rel) {
    if (rel.empty()) return sys::openat(root_fd_.get(), ".", O_PATH | O_DIRECTORY);
    auto fd = sys::openat2(root_fd_.get(), rel, O_PATH | O_DIRECTORY, 0, sys::kResolveInRoot | sys::kResolveNoMagiclinks);
    if (fd.ok()) return fd;
    if (fd.error().err() != ENOENT) return std::move(fd).error();
    // Create the missing components one by one (implied directories are 0755, as Docker's
    // ImpliedDirectoryMode).
    COWLAB_TRY(dir_fd(dir_name(rel)));
    auto parent = COWLAB_TRY(dir_fd(dir_name(rel)));
    auto mk = sys::mkdirat(parent.get(), base_name(rel), 0755);
    if (!mk.ok() && mk.error().err() != EEXIST) return std::move(mk).error();
    mark_unpacked(rel);
    return sys::openat2(root_fd_.get(), rel, O_PATH | O_DIRECTORY, 0, sys::kResolveInRoot | sys::kResolveNoMagiclinks);
  }

  std::string proc_path(int dirfd, const std::string& base) {
    return "/proc/self/fd/" + std::to_string(dirfd) + "/" + base;
  }

  Result<void> remove_existing(int dirfd, const std::string& base, bool keep_dir) {
    auto st = COWLAB_TRY(sys::fstatat_if_exists(dirfd, base, AT_SYMLINK_NOFOLLOW));
    if (!st) return {};
    if (keep_dir && S_ISDIR(st->st_mode)) return {};
    if (S_ISDIR(st->st_mode)) return sys::remove_all_at(dirfd, base);
    return sys::unlinkat(dirfd, base, 0);
  }

  Result<void> whiteout(const std::string& shown, const std::string& dir, const std::string& target,
                        struct archive_entry* e) {
    std::string victim = join_rel(dir, target);
    // A whiteout never hides entries of its own layer (layer.md).
    if (unpacked_.count(victim) && !implied_only(victim)) return {};
    whiteouts_.insert(victim);
    if (o_.mode != ApplyMode::kApply) return {};
    if (o_.format == WhiteoutFormat::kAufs) return plain_file(shown, join_rel(dir, kWhiteoutPrefix + target), e);
    auto dfd = dir_fd(dir);
    if (!dfd.ok()) {
      // "rm -rf /foo/bar" layers carry both /.wh.foo and /foo/.wh.bar: the parent is gone
      // (or is now a whiteout device), which is fine (containers/storage tolerates ENOTDIR).
      int err = dfd.error().err();
      if (err == ENOTDIR || err == ENOENT || err == EEXIST) return {};
      return wrap(std::move(dfd).error(), shown);
    }
    if (o_.format == WhiteoutFormat::kDeleteInPlace) {
      auto r = sys::remove_all_at(dfd->get(), target);
      if (!r.ok() && r.error().err() != ENOENT && r.error().err() != ENOTDIR) return wrap(std::move(r).error(), shown);
      return {};
    }
    // overlay: a 0/0 character device owned like the header says.
    auto rm = remove_existing(dfd->get(), target, false);
    if (!rm.ok()) return wrap(std::move(rm).error(), shown);
    auto mk = sys::mknodat(dfd->get(), target, S_IFCHR | 0, makedev(0, 0));
    if (!mk.ok()) return wrap(std::move(mk).error(), shown);
    auto ch = sys::fchownat(dfd->get(), target, archive_entry_uid(e), archive_entry_gid(e), AT_SYMLINK_NOFOLLOW);
    if (!ch.ok()) return wrap(std::move(ch).error(), shown);
    return {};
  }

  bool implied_only(const std::string& p) const { return !explicit_.count(p); }

  Result<void> opaque(const std::string& shown, const std::string& dir, struct archive_entry* e) {
    opaques_.insert(dir);
    if (o_.mode != ApplyMode::kApply) return {};
    if (o_.format == WhiteoutFormat::kAufs) return plain_file(shown, join_rel(dir, kOpaqueMarker), e);
    auto dfd = dir_fd(dir);
    if (!dfd.ok()) return wrap(std::move(dfd).error(), shown);
    if (o_.format == WhiteoutFormat::kOverlay) {
      auto r = sys::lsetxattr(proc_path(dfd->get(), ""), opaque_xattr(o_.overlay_ns), "y");
      if (!r.ok()) return wrap(std::move(r).error(), shown);
      return {};
    }
    // Delete in place: every child not unpacked from this tar goes, recursively, so the
    // opaque marker applies "first" whatever its position (containers/storage's approach).
    return wrap_void(delete_not_unpacked(dfd->get(), dir), shown);
  }

  Result<void> wrap_void(Result<void> r, const std::string& shown) {
    if (!r.ok()) return wrap(std::move(r).error(), shown);
    return {};
  }

  Result<void> delete_not_unpacked(int dfd, const std::string& rel) {
    auto entries = COWLAB_TRY(sys::read_dir(dfd));
    for (const auto& en : entries) {
      std::string child = join_rel(rel, en.name);
      if (!unpacked_.count(child)) {
        COWLAB_TRY(sys::remove_all_at(dfd, en.name));
        continue;
      }
      auto st = COWLAB_TRY(sys::fstatat(dfd, en.name, AT_SYMLINK_NOFOLLOW));
      if (S_ISDIR(st.st_mode)) {
        auto cfd = COWLAB_TRY(sys::openat(dfd, en.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
        COWLAB_TRY(delete_not_unpacked(cfd.get(), child));
      }
    }
    return {};
  }

  // Writes an empty regular file (aufs markers) with the header's metadata.
  Result<void> plain_file(const std::string& shown, const std::string& rel, struct archive_entry* e) {
    auto dfd = dir_fd(dir_name(rel));
    if (!dfd.ok()) return wrap(std::move(dfd).error(), shown);
    std::string base = base_name(rel);
    auto rm = remove_existing(dfd->get(), base, false);
    if (!rm.ok()) return wrap(std::move(rm).error(), shown);
    auto fd = sys::openat(dfd->get(), base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    if (!fd.ok()) return wrap(std::move(fd).error(), shown);
    (void)sys::fchown(fd->get(), archive_entry_uid(e), archive_entry_gid(e));
    (void)sys::fchmod(fd->get(), archive_entry_perm(e));
    return {};
  }

  Result<void> entry(struct archive* a, struct archive_entry* e) {
    const std::string shown = last_name_;
    std::string p;
    if (!clean_name(shown, p) || (!shown.empty() && shown[0] == '/' && shown.find("..") != std::string::npos))
      return security(shown, "name escapes the layer root");
    std::string base = base_name(p), dir = dir_name(p);
    mode_t type = archive_entry_filetype(e);
    const char* hl = archive_entry_hardlink(e);

    // Whiteouts and aufs metadata (layer.md; Docker pkg/archive/diff.go).
    if (starts_with(base, kWhiteoutPrefix)) {
      COWLAB_TRY(check_not_through_links(shown, p));
      if (base == kOpaqueMarker) return opaque(shown, dir, e);
      if (starts_with(base, kWhiteoutMetaPrefix)) {
        // aufs metadata: only hard-link targets under .wh..wh.plnk matter.
        return {};
      }
      if (base == kWhiteoutPrefix) return invalid(shown, "a whiteout must name something (\".wh.\" alone)");
      return whiteout(shown, dir, base.substr(4), e);
    }
    if (starts_with(p, std::string(kPlinkDir) + "/")) return plink(shown, p, a, e);
    if (p.empty()) {
      // The root itself ("./"): only directory metadata applies.
      if (type != AE_IFDIR) return invalid(shown, "the layer root must be a directory");
    }
    COWLAB_TRY(check_not_through_links(shown, p));

    // Link targets.
    std::string target;
    if (hl) {
      if (!clean_name(hl, target) || target.empty()) return security(shown, std::string("hard link target \"") + hl + "\" escapes the layer root");
      if (!starts_with(target, std::string(kPlinkDir) + "/")) COWLAB_TRY(check_not_through_links(shown, target));
    } else if (type == AE_IFLNK) {
      const char* t = archive_entry_symlink(e);
      std::string tgt = t ? t : "";
      std::string resolved;
      if (!tgt.empty() && tgt[0] != '/' && !clean_name(join_rel(dir, tgt), resolved))
        return security(shown, "symlink target \"" + tgt + "\" escapes the layer root");
      target = tgt;
    } else if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFIFO && type != AE_IFCHR && type != AE_IFBLK) {
      return invalid(shown, "unsupported entry type 0" + std::to_string(type >> 12));
    }

    if (hl) links_[p] = "hard link";
    else if (type == AE_IFLNK) links_[p] = "symlink";
    explicit_.insert(p);
    mark_unpacked(p);
    if (type == AE_IFREG && !hl) stats_.size += archive_entry_size(e);
    if (o_.mode != ApplyMode::kApply) return drain_data(a, shown);
    return wrap_void(create(a, e, shown, p, dir, base, type, hl ? target : "", hl != nullptr, target), shown);
  }

  Result<void> drain_data(struct archive* a, const std::string& shown) {
    const void* buf;
    size_t size;
    la_int64_t off;
    for (;;) {
      int r = archive_read_data_block(a, &buf, &size, &off);
      if (r == ARCHIVE_EOF) return {};
      if (r < ARCHIVE_WARN) return invalid(shown, "malformed tar: " + ae_error(a));
    }
  }

  Result<void> plink(const std::string& shown, const std::string& p, struct archive* a, struct archive_entry* e) {
    plinks_.insert(p);
    if (o_.mode != ApplyMode::kApply || archive_entry_filetype(e) != AE_IFREG) return drain_data(a, shown);
    if (o_.scratch_dir.empty()) return invalid(shown, "aufs hard-link target but no scratch directory to keep it");
    if (!scratch_fd_.valid()) {
      COWLAB_TRY(wrap_void(sys::mkdir_all(o_.scratch_dir, 0700), shown));
      auto fd = sys::open(o_.scratch_dir, O_PATH | O_DIRECTORY);
      if (!fd.ok()) return wrap(std::move(fd).error(), shown);
      scratch_fd_ = std::move(*fd);
    }
    std::string flat = p.substr(std::strlen(kPlinkDir) + 1);
    for (auto& c : flat)
      if (c == '/') c = '_';
    auto fd = sys::openat(scratch_fd_.get(), flat, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
    if (!fd.ok()) return wrap(std::move(fd).error(), shown);
    COWLAB_TRY(copy_data(a, fd->get(), shown));
    (void)sys::fchown(fd->get(), archive_entry_uid(e), archive_entry_gid(e));
    (void)sys::fchmod(fd->get(), archive_entry_perm(e));
    plink_files_[p] = flat;
    return {};
  }

  Result<void> copy_data(struct archive* a, int fd, const std::string& shown) {
    const void* buf;
    size_t size;
    la_int64_t off;
    for (;;) {
      int r = archive_read_data_block(a, &buf, &size, &off);
      if (r == ARCHIVE_EOF) return {};
      if (r < ARCHIVE_WARN) return invalid(shown, "malformed tar: " + ae_error(a));
      size_t done = 0;
      while (done < size) {
        ssize_t n = ::pwrite(fd, static_cast<const char*>(buf) + done, size - done, off + static_cast<off_t>(done));
        if (n < 0) {
          if (errno == EINTR) continue;
          return Error::from_errno("write", shown, errno);
        }
        done += static_cast<size_t>(n);
      }
    }
  }

  Result<void> create(struct archive* a, struct archive_entry* e, const std::string& shown, const std::string& p,
                      const std::string& dir, const std::string& base, mode_t type, const std::string& hl_target,
                      bool is_hardlink, const std::string& symlink_target) {
    if (p.empty()) {
      // Root directory metadata.
      dir_times_[""] = {archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
      COWLAB_TRY(sys::fchownat(root_fd_.get(), "", archive_entry_uid(e), archive_entry_gid(e), AT_EMPTY_PATH));
      COWLAB_TRY(sys::fchmodat(AT_FDCWD, proc_path(root_fd_.get(), ""), archive_entry_perm(e)));
      return {};
    }
    auto dfd = COWLAB_TRY(dir_fd(dir));
    int d = dfd.get();
    // Existing path: a directory over a directory merges; everything else is replaced.
    COWLAB_TRY(remove_existing(d, base, type == AE_IFDIR && !is_hardlink));
    if (is_hardlink) {
      if (starts_with(hl_target, std::string(kPlinkDir) + "/")) {
        auto it = plink_files_.find(hl_target);
        if (it == plink_files_.end()) return Error::invalid("invalid aufs hard link: target \"" + hl_target + "\" not in this layer");
        return sys::linkat(scratch_fd_.get(), it->second, d, base, 0);
      }
      auto tdir = sys::openat2(root_fd_.get(), dir_name(hl_target).empty() ? "." : dir_name(hl_target),
                               O_PATH | O_DIRECTORY, 0, sys::kResolveInRoot | sys::kResolveNoMagiclinks);
      if (!tdir.ok()) return std::move(tdir).error().with_context("hard link target \"" + hl_target + "\"");
      auto r = sys::linkat(tdir->get(), base_name(hl_target), d, base, 0);
      if (!r.ok()) return std::move(r).error().with_context("hard link target \"" + hl_target + "\"");
      return {};
    }
    switch (type) {
      case AE_IFREG: {
        auto fd = COWLAB_TRY(sys::openat(d, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600));
        COWLAB_TRY(copy_data(a, fd.get(), shown));
        int64_t size = archive_entry_size(e);
        auto st = COWLAB_TRY(sys::fstat(fd.get()));
        if (st.st_size < size) COWLAB_TRY(sys::ftruncate(fd.get(), size));  // sparse tail
        break;
      }
      case AE_IFDIR: {
        auto st = COWLAB_TRY(sys::fstatat_if_exists(d, base, AT_SYMLINK_NOFOLLOW));
        if (!st) COWLAB_TRY(sys::mkdirat(d, base, 0700));
        // overlay: a directory that replaces a whiteout of this same layer must hide what lies
        // below, as the kernel does for rmdir + mkdir.
        if (o_.format == WhiteoutFormat::kOverlay && whiteouts_.count(p))
          COWLAB_TRY(sys::lsetxattr(proc_path(d, base), opaque_xattr(o_.overlay_ns), "y"));
        break;
      }
      case AE_IFLNK:
        COWLAB_TRY(sys::symlinkat(symlink_target, d, base));
        break;
      case AE_IFIFO:
        COWLAB_TRY(sys::mknodat(d, base, S_IFIFO | 0600, 0));
        break;
      case AE_IFCHR:
      case AE_IFBLK:
        if (!devices_ok_) {
          ++stats_.skipped_devices;
          return {};
        }
        COWLAB_TRY(sys::mknodat(d, base, (type == AE_IFCHR ? S_IFCHR : S_IFBLK) | 0600, archive_entry_rdev(e)));
        break;
    }
    // Ownership, then mode (chown clears setuid/setgid), then xattrs, then times.
    COWLAB_TRY(sys::fchownat(d, base, archive_entry_uid(e), archive_entry_gid(e), AT_SYMLINK_NOFOLLOW));
    if (type != AE_IFLNK) COWLAB_TRY(sys::fchmodat(d, base, archive_entry_perm(e)));
    const char* xname;
    const void* xval;
    size_t xsize;
    archive_entry_xattr_reset(e);
    while (archive_entry_xattr_next(e, &xname, &xval, &xsize) == ARCHIVE_OK) {
      std::string name = xname;
      if (union_xattr(name)) {
        ++stats_.skipped_xattrs;
        continue;
      }
      auto r = sys::lsetxattr(proc_path(d, base), name, std::string_view(static_cast<const char*>(xval), xsize));
      if (!r.ok()) {
        // Docker: ENOTSUP and EPERM on xattrs are warnings (filesystems without them,
        // user.* on symlinks).
        if (r.error().err() == ENOTSUP || r.error().err() == EPERM) {
          ++stats_.skipped_xattrs;
          continue;
        }
        return std::move(r).error();
      }
    }
    struct timespec times[2];
    times[1].tv_sec = archive_entry_mtime(e);
    times[1].tv_nsec = archive_entry_mtime_nsec(e);
    times[0] = times[1];
    if (archive_entry_atime_is_set(e) && archive_entry_atime(e) >= times[1].tv_sec) {
      times[0].tv_sec = archive_entry_atime(e);
      times[0].tv_nsec = archive_entry_atime_nsec(e);
    }
    if (type == AE_IFDIR) {
      dir_times_[p] = {times[1].tv_sec, times[1].tv_nsec};
    } else {
      COWLAB_TRY(sys::utimensat(d, base, times, AT_SYMLINK_NOFOLLOW));
    }
    return {};
  }

  // Directory mtimes last, deepest first, so creating children does not disturb them.
  Result<void> finish() {
    std::vector<std::string> dirs;
    for (const auto& [p, t] : dir_times_) dirs.push_back(p);
    std::sort(dirs.begin(), dirs.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    for (const auto& p : dirs) {
      auto fd = p.empty() ? sys::openat(root_fd_.get(), ".", O_PATH | O_DIRECTORY)
                          : sys::openat2(root_fd_.get(), p, O_PATH | O_DIRECTORY | O_NOFOLLOW, 0,
                                         sys::kResolveInRoot | sys::kResolveNoMagiclinks);
      if (!fd.ok()) continue;  // removed by a later whiteout of this layer
      struct timespec times[2];
      times[0].tv_sec = times[1].tv_sec = dir_times_[p].first;
      times[0].tv_nsec = times[1].tv_nsec = dir_times_[p].second;
      COWLAB_TRY(ctx_err(sys::utimensat(fd->get(), "", times, AT_EMPTY_PATH), "set times of \"" + p + "\""));
    }
    if (scratch_fd_.valid()) {
      scratch_fd_.reset();
      (void)sys::remove_all(o_.scratch_dir);
    }
    return {};
  }

  std::string root_;
  ApplyOptions o_;
  sys::Fd root_fd_, scratch_fd_;
  bool devices_ok_ = false;
  ApplyStats stats_;
  std::string last_name_;
  std::set<std::string> unpacked_, explicit_, whiteouts_, opaques_, plinks_;
  std::map<std::string, std::string> links_;        // path -> "symlink" / "hard link"
  std::map<std::string, std::string> plink_files_;  // tar path -> file in scratch dir
  std::map<std::string, std::pair<time_t, long>> dir_times_;
};

// ---- the exporter ---------------------------------------------------------------------------
class Exporter {
 public:
  explicit Exporter(Writer& out) : out_(out) {
    wctx_.writer = &out;
    a_ = archive_write_new();
    archive_write_set_format_pax_restricted(a_);
    archive_write_set_bytes_per_block(a_, 10240);
  }
  ~Exporter() { archive_write_free(a_); }

  Result<void> open() {
    if (archive_write_open(a_, &wctx_, nullptr, write_cb, nullptr) != ARCHIVE_OK) return fail("open");
    return {};
  }
  Result<void> close() {
    if (archive_write_close(a_) != ARCHIVE_OK) return fail("close");
    return {};
  }

  // Writes `rel` (no leading '/') from `abs` on disk.  `st` is its lstat.
  Result<void> file(const std::string& rel, const std::string& abs, const struct stat& st) {
    struct archive_entry* e = archive_entry_new();
    struct Free {
      struct archive_entry* e;
      ~Free() { archive_entry_free(e); }
    } free_entry{e};
    archive_entry_set_pathname(e, rel.c_str());
    archive_entry_set_uid(e, st.st_uid);
    archive_entry_set_gid(e, st.st_gid);
    archive_entry_set_perm(e, st.st_mode & 07777);
    archive_entry_set_mtime(e, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    bool link = false;
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      auto key = std::make_pair(st.st_dev, st.st_ino);
      auto it = inodes_.find(key);
      if (it != inodes_.end()) {
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_hardlink(e, it->second.c_str());
        archive_entry_set_size(e, 0);
        link = true;
      } else {
        inodes_[key] = rel;
      }
    }
    if (!link) {
      if (S_ISREG(st.st_mode)) {
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_size(e, st.st_size);
      } else if (S_ISDIR(st.st_mode)) {
        archive_entry_set_filetype(e, AE_IFDIR);
      } else if (S_ISLNK(st.st_mode)) {
        archive_entry_set_filetype(e, AE_IFLNK);
        auto t = COWLAB_TRY(sys::readlink(abs));
        archive_entry_set_symlink(e, t.c_str());
      } else if (S_ISFIFO(st.st_mode)) {
        archive_entry_set_filetype(e, AE_IFIFO);
      } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
        archive_entry_set_filetype(e, S_ISCHR(st.st_mode) ? AE_IFCHR : AE_IFBLK);
        archive_entry_set_rdev(e, st.st_rdev);
      } else {
        return {};  // sockets have no place in a layer
      }
      auto names = COWLAB_TRY(sys::llistxattr(abs));
      std::sort(names.begin(), names.end());
      for (const auto& n : names) {
        if (union_xattr(n)) continue;
        auto v = COWLAB_TRY(sys::lgetxattr(abs, n));
        if (v) archive_entry_xattr_add_entry(e, n.c_str(), v->data(), v->size());
      }
    }
    if (archive_write_header(a_, e) < ARCHIVE_WARN) return fail("header " + rel);
    if (!link && S_ISREG(st.st_mode) && st.st_size > 0) {
      auto fd = COWLAB_TRY(sys::open(abs, O_RDONLY | O_NOFOLLOW));
      std::vector<char> buf(1 << 20);
      int64_t left = st.st_size;
      while (left > 0) {
        size_t n = COWLAB_TRY(sys::read(fd.get(), buf.data(), std::min<int64_t>(left, buf.size())));
        if (n == 0) return Error::corrupt("export " + rel + ": file shrank while being read");
        if (archive_write_data(a_, buf.data(), n) < 0) return fail("data " + rel);
        left -= static_cast<int64_t>(n);
      }
    }
    return {};
  }

  // An empty regular file: whiteouts (reproducible: 0600, root, mtime 0) and opaque markers
  // (the directory's metadata, as Docker writes them).
  Result<void> marker(const std::string& rel, mode_t perm, uid_t uid, gid_t gid, time_t mtime) {
    struct archive_entry* e = archive_entry_new();
    struct Free {
      struct archive_entry* e;
      ~Free() { archive_entry_free(e); }
    } free_entry{e};
    archive_entry_set_pathname(e, rel.c_str());
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, perm);
    archive_entry_set_uid(e, uid);
    archive_entry_set_gid(e, gid);
    archive_entry_set_mtime(e, mtime, 0);
    archive_entry_set_size(e, 0);
    if (archive_write_header(a_, e) < ARCHIVE_WARN) return fail("header " + rel);
    return {};
  }

 private:
  Error fail(const std::string& what) {
    std::string why = wctx_.error.empty() ? ae_error(a_) : wctx_.error;
    return Error::invalid("write layer tar: " + what + ": " + why);
  }
  Writer& out_;
  WriteCtx wctx_;
  struct archive* a_;
  std::map<std::pair<dev_t, ino_t>, std::string> inodes_;
};

bool exists_as_dir_below(const std::vector<std::string>& lowers, const std::string& rel) {
  for (const auto& l : lowers) {
    auto st = sys::lstat_if_exists(l + "/" + rel).value_or(std::nullopt);
    if (st) return S_ISDIR(st->st_mode);
  }
  return false;
}

struct TreeEntry {
  std::string rel;
  enum Kind { kFile, kWhiteout, kOpaque } kind;
  struct stat st;
};

// Lists a tree, converting the driver's whiteouts to OCI names, sorted by name.
Result<void> list_tree(const std::string& root, const std::string& rel, const ExportOptions& o,
                       std::vector<TreeEntry>& out) {
  std::string dir = rel.empty() ? root : root + "/" + rel;
  auto entries = COWLAB_TRY(sys::read_dir(dir));
  for (const auto& en : entries) {
    std::string crel = join_rel(rel, en.name);
    auto st = COWLAB_TRY(sys::lstat(root + "/" + crel));
    if (o.format == WhiteoutFormat::kAufs && starts_with(en.name, kWhiteoutMetaPrefix)) {
      // aufs's own metadata (.wh..wh.aufs, .wh..wh.orph/, .wh..wh.plnk/) never leaves the
      // branch; the opaque marker does.
      if (en.name == kOpaqueMarker) out.push_back({crel, TreeEntry::kFile, st});
      continue;
    }
    if (o.format == WhiteoutFormat::kOverlay && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
      out.push_back({join_rel(rel, std::string(kWhiteoutPrefix) + en.name), TreeEntry::kWhiteout, st});
      continue;
    }
    out.push_back({crel, TreeEntry::kFile, st});
    if (S_ISDIR(st.st_mode)) {
      if (o.format == WhiteoutFormat::kOverlay) {
        auto v = sys::lgetxattr(root + "/" + crel, opaque_xattr(o.overlay_ns));
        // Only an opaque directory that hides something is worth a marker (containers/storage:
        // the kernel marks every new directory of a merged dir opaque since Linux 4.10).
        if (v.ok() && v->has_value() && **v == "y" && exists_as_dir_below(o.lower_dirs, crel))
          out.push_back({join_rel(crel, kOpaqueMarker), TreeEntry::kOpaque, st});
      }
      COWLAB_TRY(list_tree(root, crel, o, out));
    }
  }
  return {};
}

}  // namespace

// ---- public ---------------------------------------------------------------------------------
Result<ApplyStats> apply_layer(const std::string& root, Reader& tar, const ApplyOptions& options) {
  Applier applier(root, options);
  return applier.run(tar);
}

Result<std::unique_ptr<Reader>> decompress(std::unique_ptr<Reader> in) {
  auto r = std::make_unique<DecompressReader>(std::move(in));
  COWLAB_TRY(r->open());
  return std::unique_ptr<Reader>(std::move(r));
}

struct DigestReader::Hash {
  Sha256 h;
};

DigestReader::DigestReader(Reader& inner) : inner_(inner), hash_(std::make_unique<Hash>()) {}
DigestReader::~DigestReader() = default;

Result<size_t> DigestReader::read(void* buf, size_t len) {
  auto n = inner_.read(buf, len);
  if (n.ok() && *n > 0) {
    hash_->h.update(buf, *n);
    bytes_ += *n;
  }
  return n;
}

std::string DigestReader::name() const { return inner_.name(); }

Result<std::string> DigestReader::drain_and_digest() {
  std::vector<char> buf(1 << 16);
  for (;;) {
    size_t n = COWLAB_TRY(read(buf.data(), buf.size()));
    if (n == 0) break;
  }
  return hash_->h.finish();
}

Result<void> export_tree(const std::string& dir, const ExportOptions& options, Writer& out) {
  std::vector<TreeEntry> entries;
  COWLAB_TRY_CTX(list_tree(dir, "", options, entries), "export " + dir);
  std::sort(entries.begin(), entries.end(), [](const TreeEntry& a, const TreeEntry& b) { return a.rel < b.rel; });
  Exporter ex(out);
  COWLAB_TRY(ex.open());
  for (const auto& e : entries) {
    switch (e.kind) {
      case TreeEntry::kFile:
        COWLAB_TRY_CTX(ex.file(e.rel, dir + "/" + e.rel, e.st), "export " + dir);
        break;
      case TreeEntry::kWhiteout:
        COWLAB_TRY(ex.marker(e.rel, 0600, 0, 0, 0));
        break;
      case TreeEntry::kOpaque:
        COWLAB_TRY(ex.marker(e.rel, e.st.st_mode & 07777, e.st.st_uid, e.st.st_gid, e.st.st_mtim.tv_sec));
        break;
    }
  }
  return ex.close();
}

Result<void> export_changes(const std::string& dir, const std::vector<Change>& changes, Writer& out) {
  std::vector<Change> sorted = changes;
  // Whiteouts are named after the deleted entry's base name in its parent (moby#23863 was
  // about getting exactly this wrong).
  struct Item {
    std::string name;
    bool whiteout;
  };
  std::vector<Item> items;
  for (const auto& c : sorted) {
    std::string rel = c.path.substr(c.path[0] == '/' ? 1 : 0);
    if (rel.empty()) continue;
    if (c.kind == ChangeKind::kDelete)
      items.push_back({join_rel(dir_name(rel), std::string(kWhiteoutPrefix) + base_name(rel)), true});
    else
      items.push_back({rel, false});
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.name < b.name; });
  Exporter ex(out);
  COWLAB_TRY(ex.open());
  for (const auto& it : items) {
    if (it.whiteout) {
      COWLAB_TRY(ex.marker(it.name, 0600, 0, 0, 0));
      continue;
    }
    auto st = sys::lstat(dir + "/" + it.name);
    if (!st.ok()) return std::move(st).error().with_context("export changes of " + dir);
    COWLAB_TRY_CTX(ex.file(it.name, dir + "/" + it.name, *st), "export changes of " + dir);
  }
  return ex.close();
}

}  // namespace cowlab
