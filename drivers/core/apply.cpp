// The layer applier: reads an OCI layer tar with libarchive and creates every entry itself,
// through the sys seam, relative to an fd of the root opened once.  libarchive's own extractor
// (archive_write_disk) never runs: it would see whiteouts as files and resolve paths with
// plain open(2).
//
// Rules and where they come from:
//   - image-spec layer.md: "Changeset over existing files" (dir over dir merges attributes,
//     anything else is removed and recreated), "Whiteouts" (a whiteout only hides lower
//     layers; the opaque marker applies first wherever it stands), `.wh.` alone is invalid.
//   - moby pkg/archive (archive.go createTarFile, diff.go UnpackLayer, archive_linux.go
//     overlayWhiteoutConverter): implied parents 0755, chown before chmod, xattr ENOTSUP/EPERM
//     only counted, dir mtimes last, atime never before mtime, PAX global headers ignored,
//     unknown type flags refused, `.wh..wh.plnk` hard-link targets, overlay whiteouts as 0/0
//     character devices chowned to the header's owner.
//   - containers/storage pkg/archive: the one-pass opaque algorithm (delete every child not
//     unpacked earlier from the same tar) and ENOTDIR tolerance for whiteouts below a path
//     this layer already deleted.
//
// Safety: every path is resolved with openat2(RESOLVE_IN_ROOT) from the root fd, final
// components are never followed (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW, linkat without
// AT_SYMLINK_FOLLOW), and the checks of archive.h's security contract run on the tar alone,
// before the entry touches the filesystem.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <unordered_set>
#include <vector>

#include "core/archive_internal.h"
#include "cowlab/archive.h"
#include "cowlab/sys.h"

namespace cowlab {

namespace archive_internal {

std::optional<std::string> clean_path(std::string_view name) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i <= name.size()) {
    size_t j = name.find('/', i);
    if (j == std::string_view::npos) j = name.size();
    std::string_view part = name.substr(i, j - i);
    if (part.empty() || part == ".") {
      // skip
    } else if (part == "..") {
      if (parts.empty()) return std::nullopt;
      parts.pop_back();
    } else {
      parts.push_back(part);
    }
    i = j + 1;
  }
  std::string out;
  for (auto p : parts) {
    if (!out.empty()) out += '/';
    out.append(p);
  }
  return out;
}

}  // namespace archive_internal

namespace {

using namespace archive_internal;

constexpr uint64_t kInRoot = sys::kResolveInRoot | sys::kResolveNoMagiclinks;
constexpr int kCapMknod = 27;  // linux/capability.h CAP_MKNOD

std::string quoted(std::string_view s) {
  return "\"" + std::string(s) + "\"";
}

// A system error re-labelled with the path as the tar names it ("mknodat a/.wh.b: EEXIST"):
// the sys wrappers only saw a name relative to a directory fd.
Error at(const Error& e, std::string_view call, std::string_view rel) {
  if (e.kind() != ErrorKind::kSystem || e.err() == 0) return e;
  return Error::from_errno(call, rel.empty() ? "." : rel, e.err());
}

#define APPLY_TRY(expr, call, rel)                                      \
  ({                                                                    \
    auto&& apply_try_r_ = (expr);                                       \
    if (!apply_try_r_.ok()) return at(apply_try_r_.error(), call, rel); \
    ::cowlab::detail::take(std::move(apply_try_r_));                    \
  })

// ---- the tar stream ---------------------------------------------------------------------------

// libarchive over a Reader.  It keeps the last few chunks it handed to libarchive so the raw
// header block of the entry just read can be inspected: libarchive maps unknown type flags to
// regular files (POSIX says to), while Docker refuses them, so the applier checks the type
// flag byte itself.
class TarInput {
 public:
  explicit TarInput(Reader& in) : in_(in) {}
  ~TarInput() {
    if (a_) archive_read_free(a_);
  }

  Result<void> open() {
    a_ = archive_read_new();
    if (!a_) return Error(ErrorKind::kSystem, "archive_read_new failed", ENOMEM);
    // pax, GNU and ustar are all "tar" to libarchive; "empty" lets a zero-byte stream reach
    // next(), which refuses it with a clear message.  No other format is accepted.
    archive_read_support_format_tar(a_);
    archive_read_support_format_empty(a_);
    if (archive_read_open(a_, this, nullptr, &TarInput::read_cb, nullptr) != ARCHIVE_OK)
      return failure("open");
    return {};
  }

  // The next entry, or nullptr at the end of the archive.
  Result<struct archive_entry*> next() {
    struct archive_entry* entry = nullptr;
    // Skip what is left of the previous entry first, so the bytes consumed from here on are
    // exactly what follows it: at the end, that must include the end-of-archive marker.
    if (started_ && archive_read_data_skip(a_) != ARCHIVE_OK) return failure("skip entry data");
    int64_t before = archive_filter_bytes(a_, 0);
    int r = archive_read_next_header(a_, &entry);
    if (r == ARCHIVE_EOF) {
      // POSIX: an archive ends with two zero blocks.  libarchive also returns EOF when the
      // stream just stops at a block boundary ("some writers omit it"), which is what a
      // truncated download or a cut pipe looks like: GNU tar and Go's archive/tar
      // (io.ErrUnexpectedEOF) refuse it, and so does cowlab.  A zero-byte input is no archive.
      int64_t after = archive_filter_bytes(a_, 0);
      if (!started_ && after == 0)
        return Error::invalid("read tar " + in_.name() + ": empty input (0 bytes): not a tar archive");
      if (after - before < 512)
        return Error::invalid("read tar " + in_.name() + ": the archive ends at byte " + std::to_string(after) +
                              " without its end-of-archive marker (two zero blocks): truncated?");
      return static_cast<struct archive_entry*>(nullptr);
    }
    started_ = true;
    // ARCHIVE_WARN: libarchive read the entry but dropped something, e.g. a malformed pax
    // record (a length that does not match, no '=') — the entry's name, size or metadata may
    // then be wrong, so it is refused like GNU tar and Go refuse it.  ARCHIVE_RETRY (a
    // damaged header, numerically above WARN) is refused too: libarchive would go on hunting
    // for the next plausible header.
    if (r == ARCHIVE_WARN) return failure("read header");
    if (r != ARCHIVE_OK) return failure("read header");
    return entry;
  }

  struct archive* handle() {
    return a_;
  }
  std::string name() const { return in_.name(); }
  bool started_ = false;  // an entry header has been read

  // The type flag of the header block that ends where the entry's data starts.
  std::optional<char> header_typeflag() const {
    int64_t consumed = archive_filter_bytes(a_, 0);
    if (consumed < 512) return std::nullopt;
    uint64_t pos = static_cast<uint64_t>(consumed) - 512 + 156;
    for (const auto& c : window_)
      if (pos >= c.offset && pos < c.offset + c.size) return c.data[pos - c.offset];
    return std::nullopt;
  }

  // Reads the stream to its end (zero blocks after the end-of-archive marker, record padding),
  // so a digest of the stream taken by the caller covers every byte.
  Result<void> drain() {
    std::vector<char> buf(1 << 16);
    for (;;) {
      size_t n = COWLAB_TRY(in_.read(buf.data(), buf.size()));
      if (n == 0) return {};
    }
  }

  Error failure(std::string_view what) {
    if (input_error_) return *input_error_;
    const char* msg = archive_error_string(a_);
    return Error::invalid("read tar " + in_.name() + ": " + std::string(what) + ": " +
                          (msg ? msg : "malformed archive"));
  }

 private:
  struct Chunk {
    std::vector<char> data;
    uint64_t offset = 0;
    size_t size = 0;
  };
  static constexpr size_t kChunkSize = 256 << 10;
  static constexpr size_t kWindow = 8;  // chunks kept; libarchive never holds more than one

  static la_ssize_t read_cb(struct archive* a, void* self_ptr, const void** out) {
    auto* self = static_cast<TarInput*>(self_ptr);
    Chunk chunk;
    if (self->window_.size() >= kWindow) {
      chunk = std::move(self->window_.front());  // recycle the oldest buffer
      self->window_.pop_front();
    } else {
      chunk.data.resize(kChunkSize);
    }
    auto n = self->in_.read(chunk.data.data(), chunk.data.size());
    if (!n.ok()) {
      self->input_error_ = std::move(n).error();
      archive_set_error(a, EIO, "read error");
      return -1;
    }
    chunk.offset = self->delivered_;
    chunk.size = *n;
    self->delivered_ += *n;
    self->window_.push_back(std::move(chunk));
    *out = self->window_.back().data.data();
    return static_cast<la_ssize_t>(*n);
  }

  Reader& in_;
  archive_internal::Utf8Ctype utf8_;  // before a_: names are converted from the first header on
  struct archive* a_ = nullptr;
  std::deque<Chunk> window_;
  uint64_t delivered_ = 0;
  std::optional<Error> input_error_;
};

// ---- the applier ------------------------------------------------------------------------------

enum class Kind { kRegular, kDirectory, kSymlink, kHardlink, kCharDevice, kBlockDevice, kFifo };
enum class LinkKind { kSymlink, kHardlink };
// How missing or odd components of a parent path are handled.
enum class ParentMode {
  kCreate,    // entries: create missing dirs; an overlay whiteout in the way becomes an opaque dir
  kExisting,  // whiteouts and opaque markers: create missing dirs, but a non-dir is ENOTDIR
};

struct DirTimes {
  std::string path;
  struct timespec times[2];
};

class Applier {
 public:
  Applier(const std::string& root, const ApplyOptions& opt) : root_(root), opt_(opt) {}

  ~Applier() { (void)remove_scratch(); }

  Result<ApplyStats> run(Reader& tar) {
    validate_ = opt_.mode == ApplyMode::kValidateOnly;
    if (!validate_) {
      root_fd_ = COWLAB_TRY(sys::open(root_, O_RDONLY | O_DIRECTORY));
      // A scratch dir inside the root (btrfs, zfs: hard links cannot leave the layer) must
      // survive opaque markers at the root; it is removed at the end anyway.
      std::string root = root_;
      while (root.size() > 1 && root.back() == '/') root.pop_back();
      if (!opt_.scratch_dir.empty() && starts_with(opt_.scratch_dir, root + "/"))
        scratch_rel_ = clean_path(opt_.scratch_dir.substr(root.size() + 1)).value_or("");
    }
    TarInput input(tar);
    COWLAB_TRY(input.open());
    input_ = &input;
    for (;;) {
      struct archive_entry* e = COWLAB_TRY(input.next());
      if (!e) break;
      COWLAB_TRY(handle(e));
    }
    COWLAB_TRY(input.drain());
    if (!validate_) COWLAB_TRY(set_dir_times());
    COWLAB_TRY(remove_scratch());
    return stats_;
  }

 private:
  // ---- per entry --------------------------------------------------------------------------
  Result<void> handle(struct archive_entry* e) {
    stats_.entries++;
    if (archive_entry_size_is_set(e)) stats_.size += archive_entry_size(e);
    const char* raw_name = archive_entry_pathname(e);
    if (!raw_name || !*raw_name)
      return Error::invalid("read tar " + input_->name() + ": entry " +
                            std::to_string(stats_.entries) + " has an empty name");
    std::string raw(raw_name);
    auto cleaned = clean_path(raw);
    if (!cleaned) return Error::security("entry " + quoted(raw) + ": path climbs out of the root");
    const std::string& path = *cleaned;
    Kind kind = COWLAB_TRY(kind_of(e, raw));

    if (path.empty()) {
      // "./": the root itself.  Docker skips it; its attributes belong to the driver.
      if (kind == Kind::kDirectory) return {};
      return Error::invalid("entry " + quoted(raw) + ": only a directory can name the root");
    }
    std::string_view base = base_of(path);
    // A view into `path` itself: path.substr() would make a temporary std::string that is
    // gone by the next line (fuzz_apply: stack-use-after-scope, heap-use-after-free for long
    // names).
    std::string_view first = std::string_view(path).substr(0, path.find('/'));
    if (starts_with(first, kWhiteoutMetaPrefix) && path != kOpaqueMarker) {
      // aufs metadata at the layer root (moby whiteouts.go WhiteoutMetaPrefix): only regular
      // files under .wh..wh.plnk matter, as hard-link targets; the rest is never applied.
      if (first == kPlnkDir && path.size() > first.size() && kind == Kind::kRegular)
        return plnk_file(e, raw, std::string(base));
      return {};
    }
    if (base == kOpaqueMarker) return opaque(raw, path, std::string(parent_of(path)), e);
    if (starts_with(base, kWhiteoutMetaPrefix)) return {};  // nested aufs metadata: ignored
    if (starts_with(base, kWhiteoutPrefix)) {
      std::string_view target = base.substr(kWhiteoutPrefix.size());
      if (target.empty())
        return Error::invalid("entry " + quoted(raw) + ": whiteout without a name");
      if (target == ".") return Error::invalid("entry " + quoted(raw) + ": whiteout of \".\"");
      if (target == "..")
        return Error::security("entry " + quoted(raw) +
                               ": whiteout of \"..\" climbs out of its directory");
      return whiteout(raw, path, std::string(parent_of(path)), std::string(target), e);
    }
    return entry(e, raw, path, kind);
  }

  Result<Kind> kind_of(struct archive_entry* e, const std::string& raw) {
    if (archive_entry_hardlink(e)) return Kind::kHardlink;
    switch (archive_entry_filetype(e)) {
      case AE_IFREG: {
        // libarchive reports unknown type flags as regular files; check the header's own flag.
        // Sparse entries carry extra header blocks, and only GNU 'S' or pax make them.
        if (archive_entry_sparse_count(e) == 0) {
          auto flag = input_->header_typeflag();
          if (!flag)
            return Error::invalid("entry " + quoted(raw) + ": cannot locate its tar header");
          if (*flag != '0' && *flag != '\0' && *flag != '7')
            return Error::invalid("entry " + quoted(raw) + ": unknown tar type flag " +
                                  type_flag_text(*flag));
        }
        return Kind::kRegular;
      }
      case AE_IFDIR:
        return Kind::kDirectory;
      case AE_IFLNK:
        return Kind::kSymlink;
      case AE_IFCHR:
        return Kind::kCharDevice;
      case AE_IFBLK:
        return Kind::kBlockDevice;
      case AE_IFIFO:
        return Kind::kFifo;
      default:
        return Error::invalid("entry " + quoted(raw) + ": unsupported file type");
    }
  }

  static std::string type_flag_text(char c) {
    if (c >= 0x21 && c < 0x7f) return std::string("'") + c + "'";
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", static_cast<unsigned char>(c));
    return buf;
  }

  // Refuses a path that goes through a symlink or hard link this tar created earlier
  // (TestUntarInvalidSymlink case 7: "dir/loophole -> ../../victim", "dir/loophole/newfile").
  // Only proper prefixes count: replacing the link itself is an ordinary overwrite.
  Result<void> check_through_links(const std::string& raw, std::string_view path,
                                   std::string_view what) {
    if (links_.empty()) return {};
    for (size_t slash = path.find('/'); slash != std::string_view::npos;
         slash = path.find('/', slash + 1)) {
      auto it = links_.find(std::string(path.substr(0, slash)));
      if (it != links_.end())
        return Error::security("entry " + quoted(raw) + ": " + std::string(what) +
                               " goes through " +
                               (it->second == LinkKind::kSymlink ? "symlink " : "hard link ") +
                               quoted(it->first) + " created by this layer");
    }
    return {};
  }

  // Bookkeeping shared by both modes: `path` now holds what this tar put there.
  void mark_created(const std::string& path, Kind kind) {
    if (kind != Kind::kDirectory) erase_links_under(path);
    if (kind == Kind::kSymlink)
      links_[path] = LinkKind::kSymlink;
    else if (kind == Kind::kHardlink)
      links_[path] = LinkKind::kHardlink;
    else
      links_.erase(path);
    mark_kept(path);
  }

  // `path` and its ancestors hold entries of this layer: opaque markers and whiteouts leave
  // them alone ("Whiteout files MUST only apply to resources in lower/parent layers").
  void mark_kept(const std::string& path) {
    std::string p = path;
    for (;;) {
      whited_out_.erase(p);
      if (!kept_.insert(p).second) break;
      auto slash = p.rfind('/');
      if (slash == std::string::npos) break;
      p.resize(slash);
    }
  }

  void erase_links_under(const std::string& path) {
    links_.erase(path);
    // Keys below "path/" sort between "path/" and "path0" ('0' follows '/').
    links_.erase(links_.lower_bound(path + "/"), links_.lower_bound(path + "0"));
  }

  // A whiteout or opaque marker below a path this tar whited out hides nothing: the path is
  // gone.  (Layers written after `rm -rf /foo/bar` hold both `.wh.foo` and `foo/.wh.bar`;
  // containers/storage tolerates the ENOTDIR this gives on overlay.)
  bool under_whited_out(std::string_view path) const {
    if (whited_out_.empty()) return false;
    for (size_t slash = path.find('/'); slash != std::string_view::npos;
         slash = path.find('/', slash + 1))
      if (whited_out_.count(std::string(path.substr(0, slash)))) return true;
    return false;
  }

  // ---- entries that create something ------------------------------------------------------
  Result<void> entry(struct archive_entry* e, const std::string& raw, const std::string& path,
                     Kind kind) {
    COWLAB_TRY(check_through_links(raw, path, "path"));
    std::string link_target;
    if (kind == Kind::kHardlink) {
      auto target = clean_path(archive_entry_hardlink(e));
      if (!target || target->empty())
        return Error::security("entry " + quoted(raw) + ": hard link target " +
                               quoted(archive_entry_hardlink(e)) + " climbs out of the root");
      COWLAB_TRY(check_through_links(raw, *target, "hard link target"));
      if (starts_with(*target, std::string(kPlnkDir) + "/")) {
        std::string name(base_of(*target));
        if (!plnk_names_.count(name))
          return Error::invalid("entry " + quoted(raw) +
                                ": invalid aufs hardlink: " + quoted(*target) +
                                " is not in this layer's " + std::string(kPlnkDir));
      }
      link_target = *target;
    } else if (kind == Kind::kSymlink) {
      const char* t = archive_entry_symlink(e);
      if (!t || !*t) return Error::invalid("entry " + quoted(raw) + ": symlink without a target");
      link_target = t;
      // Absolute targets are resolved against the container's root at run time; a relative one
      // must stay inside the root when resolved from the link's directory.
      if (link_target[0] != '/' && !clean_path(join_path(parent_of(path), link_target)))
        return Error::security("entry " + quoted(raw) + ": symlink target " + quoted(link_target) +
                               " climbs out of the root");
    }
    if (validate_) {
      mark_created(path, kind);
      return {};
    }

    std::string parent(parent_of(path));
    std::string name(base_of(path));
    int pfd = COWLAB_TRY(parent_fd(parent, ParentMode::kCreate));
    if (opt_.format == WhiteoutFormat::kAufs) COWLAB_TRY(aufs_unwhiteout(pfd, parent, name, kind));
    switch (kind) {
      case Kind::kRegular:
        COWLAB_TRY(create_regular(e, pfd, name, path));
        break;
      case Kind::kDirectory:
        COWLAB_TRY(create_directory(e, pfd, name, path));
        break;
      case Kind::kSymlink:
        COWLAB_TRY(create_symlink(e, pfd, name, path, link_target));
        break;
      case Kind::kHardlink:
        COWLAB_TRY(create_hardlink(pfd, name, path, link_target));
        break;
      case Kind::kCharDevice:
      case Kind::kBlockDevice:
      case Kind::kFifo: {
        bool created = COWLAB_TRY(create_special(e, pfd, name, path, kind));
        if (!created) return {};
        break;
      }
    }
    mark_created(path, kind);
    if (opt_.format == WhiteoutFormat::kAufs && kind == Kind::kDirectory && pending_aufs_opaque_) {
      pending_aufs_opaque_ = false;
      auto dfd =
          APPLY_TRY(sys::openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW), "open", path);
      COWLAB_TRY(aufs_marker(dfd.get(), path));
    }
    return {};
  }

  // Creates `name` in `pfd` with `make`; if something is in the way, removes it (a directory
  // tree included) and tries once more.  Returns the lstat of what was removed, if anything.
  template <typename Make>
  Result<std::optional<struct stat>> create_replacing(int pfd, const std::string& name,
                                                      const std::string& rel, const char* call,
                                                      Make&& make) {
    auto r = make();
    if (r.ok()) return std::optional<struct stat>();
    if (r.error().err() != EEXIST) return at(r.error(), call, rel);
    auto st = APPLY_TRY(sys::fstatat(pfd, name, AT_SYMLINK_NOFOLLOW), "lstat", rel);
    COWLAB_TRY(remove_at(pfd, name, rel, st));
    auto again = make();
    if (!again.ok()) return at(again.error(), call, rel);
    return std::optional<struct stat>(st);
  }

  Result<void> remove_at(int pfd, const std::string& name, const std::string& rel,
                         const struct stat& st) {
    if (S_ISDIR(st.st_mode)) {
      invalidate_cache();
      auto r = sys::remove_all_at(pfd, name);
      if (!r.ok()) return std::move(r).error().with_context("remove " + rel);
      return {};
    }
    APPLY_TRY(sys::unlinkat(pfd, name, 0), "unlink", rel);
    return {};
  }

  Result<void> create_regular(struct archive_entry* e, int pfd, const std::string& name,
                              const std::string& path) {
    sys::Fd fd;
    COWLAB_TRY(create_replacing(pfd, name, path, "create", [&]() -> Result<void> {
      fd = COWLAB_TRY(sys::openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600));
      return {};
    }));
    COWLAB_TRY(write_data(fd.get(), path, archive_entry_size(e)));
    COWLAB_TRY(set_owner_mode_xattrs(e, fd.get(), -1, name, path, Kind::kRegular));
    struct timespec ts[2];
    entry_times(e, ts);
    APPLY_TRY(sys::futimens(fd.get(), ts), "utimes", path);
    return {};
  }

  // Writes the entry's data into a new, empty file.  Holes stay holes: libarchive reports a
  // sparse entry's data blocks at their offsets (the gaps are the holes), and runs of zeros
  // of a whole aligned block are skipped too, as `tar --sparse` / `cp --sparse=auto` do —
  // a layer of mostly-zero files otherwise costs its full size on disk and makes every
  // later copy-up copy it (issue 13: a 1 GiB sparse file cost 1 GiB at create on vfs).
  Result<void> write_data(int fd, const std::string& path, int64_t size) {
    struct archive* a = input_->handle();
    int64_t end = 0, written_end = 0;
    for (;;) {
      const void* buf = nullptr;
      size_t len = 0;
      la_int64_t offset = 0;
      int r = archive_read_data_block(a, &buf, &len, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r != ARCHIVE_OK && r != ARCHIVE_WARN) return input_->failure("data of " + quoted(path));
      const char* p = static_cast<const char*>(buf);
      size_t i = 0;
      while (i < len) {
        // Split at file-offset multiples of kSparseBlock; write each non-zero run at once.
        // The file is new and empty, so a zero piece needs no write even where it is only
        // part of a block (libarchive's blocks are not block-aligned): what is not written
        // reads as zeros, and a block gets allocated only if some of it is data.
        size_t start = i;
        bool zero = true;
        while (i < len) {
          size_t piece = std::min<size_t>(len - i, kSparseBlock - (offset + i) % kSparseBlock);
          bool z = all_zero(p + i, piece);
          if (i > start && z != zero) break;
          zero = z;
          i += piece;
        }
        if (!zero) {
          APPLY_TRY(sys::pwrite_all(fd, p + start, i - start, offset + static_cast<int64_t>(start)),
                    "write", path);
          written_end = std::max<int64_t>(written_end, offset + static_cast<int64_t>(i));
        }
      }
      end = std::max<int64_t>(end, offset + static_cast<int64_t>(len));
    }
    // A sparse entry may end in a hole, and a skipped zero run may be the file's tail.
    int64_t want = std::max(size, end);
    if (want > written_end) APPLY_TRY(sys::ftruncate(fd, want), "truncate", path);
    return {};
  }

  static constexpr size_t kSparseBlock = 4096;
  static bool all_zero(const char* p, size_t n) {
    return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
  }

  Result<void> create_directory(struct archive_entry* e, int pfd, const std::string& name,
                                const std::string& path) {
    bool make_opaque = false;
    auto r = sys::mkdirat(pfd, name, 0700);
    if (!r.ok()) {
      if (r.error().err() != EEXIST) return at(r.error(), "mkdir", path);
      auto st = APPLY_TRY(sys::fstatat(pfd, name, AT_SYMLINK_NOFOLLOW), "lstat", path);
      if (!S_ISDIR(st.st_mode)) {
        // A directory replacing an overlay whiteout must hide what the whiteout hid.
        make_opaque = opt_.format == WhiteoutFormat::kOverlay && is_overlay_whiteout(st);
        COWLAB_TRY(remove_at(pfd, name, path, st));
        APPLY_TRY(sys::mkdirat(pfd, name, 0700), "mkdir", path);
      }
    }
    auto dfd = APPLY_TRY(sys::openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW), "open", path);
    COWLAB_TRY(set_owner_mode_xattrs(e, dfd.get(), -1, name, path, Kind::kDirectory));
    if (make_opaque) COWLAB_TRY(set_overlay_opaque(dfd.get(), path));
    DirTimes dt;
    dt.path = path;
    entry_times(e, dt.times);
    dir_times_.push_back(std::move(dt));
    return {};
  }

  Result<void> create_symlink(struct archive_entry* e, int pfd, const std::string& name,
                              const std::string& path, const std::string& target) {
    COWLAB_TRY(create_replacing(pfd, name, path, "symlink",
                                [&] { return sys::symlinkat(target, pfd, name); }));
    COWLAB_TRY(set_owner_mode_xattrs(e, -1, pfd, name, path, Kind::kSymlink));
    struct timespec ts[2];
    entry_times(e, ts);
    APPLY_TRY(sys::utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW), "utimes", path);
    return {};
  }

  // The link shares the target's inode, whose attributes came with the target's own entry,
  // so the link's header attributes are not applied (Docker applies neither mode nor times
  // to hard links of non-symlinks).
  Result<void> create_hardlink(int pfd, const std::string& name, const std::string& path,
                               const std::string& target) {
    sys::Fd target_dir;
    int tfd;
    std::string tname(base_of(target));
    if (starts_with(target, std::string(kPlnkDir) + "/")) {
      tfd = scratch_fd_.get();
    } else {
      std::string tparent(parent_of(target));
      if (tparent.empty()) {
        tfd = root_fd_.get();
      } else {
        auto d = sys::openat2(root_fd_.get(), tparent, O_PATH | O_DIRECTORY, 0, kInRoot);
        if (!d.ok()) return at(d.error(), "hard link target", target);
        target_dir = std::move(*d);
        tfd = target_dir.get();
      }
    }
    COWLAB_TRY(create_replacing(pfd, name, path, "link", [&]() -> Result<void> {
      auto r = sys::linkat(tfd, tname, pfd, name, 0);
      if (!r.ok() && r.error().err() == ENOENT)
        return Error::from_errno("link " + path + " to", target, ENOENT);  // names the target
      return r;
    }));
    return {};
  }

  // Devices need CAP_MKNOD in the initial user namespace (a device node made in a user
  // namespace could not be opened anyway); without it they are skipped and counted, as Docker
  // does in user namespaces.  Returns false when skipped.
  Result<bool> create_special(struct archive_entry* e, int pfd, const std::string& name,
                              const std::string& path, Kind kind) {
    mode_t type = S_IFIFO;
    dev_t dev = 0;
    if (kind != Kind::kFifo) {
      if (!COWLAB_TRY(can_mknod())) {
        stats_.skipped_devices++;
        return false;
      }
      type = kind == Kind::kCharDevice ? S_IFCHR : S_IFBLK;
      dev = makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
    }
    COWLAB_TRY(create_replacing(pfd, name, path, "mknod",
                                [&] { return sys::mknodat(pfd, name, type | 0600, dev); }));
    COWLAB_TRY(set_owner_mode_xattrs(e, -1, pfd, name, path, kind));
    struct timespec ts[2];
    entry_times(e, ts);
    APPLY_TRY(sys::utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW), "utimes", path);
    return true;
  }

  Result<bool> can_mknod() {
    if (can_mknod_) return *can_mknod_;
    bool initial = COWLAB_TRY(sys::in_initial_user_namespace());
    bool cap = false;
    if (initial) {
      auto status = COWLAB_TRY(sys::read_file("/proc/self/status"));
      auto pos = status.find("\nCapEff:");
      if (pos != std::string::npos) {
        uint64_t eff = std::strtoull(status.c_str() + pos + 8, nullptr, 16);
        cap = (eff >> kCapMknod) & 1;
      }
    }
    can_mknod_ = initial && cap;
    return *can_mknod_;
  }

  // Owner, then mode (chown clears setuid/setgid), then xattrs (chown also drops
  // security.capability).  `fd` when the entry is open, else `pfd` + `name`.
  Result<void> set_owner_mode_xattrs(struct archive_entry* e, int fd, int pfd,
                                     const std::string& name, const std::string& path, Kind kind) {
    uid_t uid = static_cast<uid_t>(archive_entry_uid(e));
    gid_t gid = static_cast<gid_t>(archive_entry_gid(e));
    mode_t perm = archive_entry_perm(e) & 07777;
    if (fd >= 0) {
      APPLY_TRY(sys::fchown(fd, uid, gid), "chown", path);
      APPLY_TRY(sys::fchmod(fd, perm), "chmod", path);
    } else {
      APPLY_TRY(sys::fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW), "chown", path);
      // Symlink permissions are meaningless on Linux and cannot be changed.
      if (kind != Kind::kSymlink) APPLY_TRY(sys::fchmodat(pfd, name, perm, 0), "chmod", path);
    }
    archive_entry_xattr_reset(e);
    const char* xname = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    while (archive_entry_xattr_next(e, &xname, &value, &size) == ARCHIVE_OK) {
      if (!xname || is_overlay_xattr(xname)) continue;  // see is_overlay_xattr
      std::string_view v(static_cast<const char*>(value), size);
      Result<void> r =
          fd >= 0 ? sys::fsetxattr(fd, xname, v) : sys::lsetxattr(proc_path(pfd, name), xname, v);
      if (!r.ok()) {
        int err = r.error().err();
        if (err == ENOTSUP || err == EPERM) {
          stats_.skipped_xattrs++;  // Docker: a warning, not a failure
          continue;
        }
        return at(r.error(), std::string("setxattr ") + xname, path);
      }
    }
    return {};
  }

  // Path of `name` inside the directory open as `dirfd`: the *xattr calls have no *at form
  // before Linux 6.13, and /proc/self/fd/N resolves to the directory itself, not through any
  // path that could have changed.  The last component is never followed (l*xattr).
  static std::string proc_path(int dirfd, const std::string& name) {
    return "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
  }

  static void entry_times(struct archive_entry* e, struct timespec ts[2]) {
    ts[1].tv_sec = archive_entry_mtime(e);
    ts[1].tv_nsec = archive_entry_mtime_nsec(e);
    ts[0] = ts[1];
    // Docker: atime is never set earlier than mtime (a missing atime counts as earliest).
    if (archive_entry_atime_is_set(e)) {
      struct timespec a = {archive_entry_atime(e), archive_entry_atime_nsec(e)};
      if (a.tv_sec > ts[1].tv_sec || (a.tv_sec == ts[1].tv_sec && a.tv_nsec > ts[1].tv_nsec))
        ts[0] = a;
    }
  }

  Result<void> set_overlay_opaque(int dfd, const std::string& path) {
    APPLY_TRY(sys::fsetxattr(dfd, overlay_opaque_xattr(opt_.overlay_ns), "y"),
              "setxattr " + overlay_opaque_xattr(opt_.overlay_ns), path);
    return {};
  }

  // ---- whiteouts --------------------------------------------------------------------------
  Result<void> whiteout(const std::string& raw, const std::string& path, const std::string& dir,
                        const std::string& name, struct archive_entry* e) {
    COWLAB_TRY(check_through_links(raw, path, "path"));
    std::string target = join_path(dir, name);
    if (under_whited_out(target)) return {};
    bool kept = kept_.count(target) > 0;
    if (validate_) {
      if (!kept) erase_links_under(target);
      return {};
    }
    auto pfd_r = parent_fd(dir, ParentMode::kExisting);
    if (!pfd_r.ok()) {
      if (pfd_r.error().err() == ENOTDIR)
        return {};  // the parent is not a directory: nothing to hide
      return std::move(pfd_r).error();
    }
    int pfd = *pfd_r;
    auto st = APPLY_TRY(sys::fstatat_if_exists(pfd, name, AT_SYMLINK_NOFOLLOW), "lstat", target);
    if (kept) {
      // The path is this layer's own: the whiteout hides only what lies below it.
      if (st && S_ISDIR(st->st_mode)) {
        auto dfd =
            APPLY_TRY(sys::openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW), "open", target);
        COWLAB_TRY(prune(dfd.get(), target));
        if (opt_.format == WhiteoutFormat::kOverlay)
          COWLAB_TRY(set_overlay_opaque(dfd.get(), target));
        if (opt_.format == WhiteoutFormat::kAufs) COWLAB_TRY(aufs_marker(dfd.get(), target));
      }
      return {};
    }
    switch (opt_.format) {
      case WhiteoutFormat::kDeleteInPlace:
        if (st) COWLAB_TRY(remove_at(pfd, name, target, *st));
        break;
      case WhiteoutFormat::kOverlay: {
        if (st && !is_overlay_whiteout(*st)) COWLAB_TRY(remove_at(pfd, name, target, *st));
        // With the lowers known, a whiteout of a name no lower layer shows is left out: it
        // hides nothing, and in a directory without a lower counterpart overlayfs would list
        // it in readdir (only merged directories filter whiteouts).
        bool needed = true;
        if (!opt_.lower_dirs.empty()) needed = COWLAB_TRY(lower_lookup(target)).has_value();
        if (!needed) {
          if (st && is_overlay_whiteout(*st))
            APPLY_TRY(sys::unlinkat(pfd, name, 0), "unlink", target);
          break;
        }
        if (!st || !is_overlay_whiteout(*st))
          APPLY_TRY(sys::mknodat(pfd, name, S_IFCHR, makedev(0, 0)), "mknod", target);
        APPLY_TRY(sys::fchownat(pfd, name, static_cast<uid_t>(archive_entry_uid(e)),
                                static_cast<gid_t>(archive_entry_gid(e)), AT_SYMLINK_NOFOLLOW),
                  "chown", target);
        break;
      }
      case WhiteoutFormat::kAufs: {
        if (st) COWLAB_TRY(remove_at(pfd, name, target, *st));
        // aufs keeps the whiteout as the file the tar carries.
        std::string wh = std::string(kWhiteoutPrefix) + name;
        COWLAB_TRY(create_regular(e, pfd, wh, path));
        mark_kept(path);
        break;
      }
    }
    whited_out_.insert(target);
    erase_links_under(target);
    return {};
  }

  // `<dir>/.wh..wh..opq`: every child of dir that this tar did not create goes (c/storage's
  // one-pass form of "applied first wherever it stands").
  Result<void> opaque(const std::string& raw, const std::string& path, const std::string& dir,
                      struct archive_entry* e) {
    COWLAB_TRY(check_through_links(raw, path, "path"));
    if (!dir.empty() && (whited_out_.count(dir) || under_whited_out(dir))) return {};
    if (validate_) {
      if (!dir.empty()) mark_kept(dir);
      return {};
    }
    int dfd = root_fd_.get();
    if (!dir.empty()) {
      auto pfd_r = parent_fd(dir, ParentMode::kExisting);
      if (!pfd_r.ok()) {
        if (pfd_r.error().err() == ENOTDIR) return {};  // not a directory: nothing to hide
        return std::move(pfd_r).error();
      }
      dfd = *pfd_r;
      mark_kept(dir);  // the marker implies the directory, in this layer
    }
    COWLAB_TRY(prune(dfd, dir));
    switch (opt_.format) {
      case WhiteoutFormat::kDeleteInPlace:
        break;
      case WhiteoutFormat::kOverlay:
        if (dir.empty())
          COWLAB_TRY(whiteout_lower_root());
        else
          COWLAB_TRY(set_overlay_opaque(dfd, dir));
        break;
      case WhiteoutFormat::kAufs:
        COWLAB_TRY(create_regular(e, dfd, std::string(kOpaqueMarker), path));
        mark_kept(path);
        break;
    }
    return {};
  }

  // Removes every child of `dir` (open as `dfd`) that this tar did not create, recursively.
  Result<void> prune(int dfd, const std::string& dir) {
    auto entries = APPLY_TRY(sys::read_dir(dfd), "read directory", dir);
    for (const auto& ent : entries) {
      std::string child = join_path(dir, ent.name);
      if (!scratch_rel_.empty() &&
          (child == scratch_rel_ || starts_with(scratch_rel_, child + "/")))
        continue;
      auto st =
          APPLY_TRY(sys::fstatat_if_exists(dfd, ent.name, AT_SYMLINK_NOFOLLOW), "lstat", child);
      if (!st) continue;
      if (kept_.count(child)) {
        if (S_ISDIR(st->st_mode)) {
          auto cfd = APPLY_TRY(sys::openat(dfd, ent.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW),
                               "open", child);
          COWLAB_TRY(prune(cfd.get(), child));
        }
        continue;
      }
      COWLAB_TRY(remove_at(dfd, ent.name, child, *st));
      erase_links_under(child);
    }
    return {};
  }

  // Overlayfs ignores the opaque xattr on a layer's root directory (it only checks it on
  // directories it looks up), so a root opaque marker becomes a whiteout for every name the
  // lower layers show at the root.  Without lower_dirs there is nothing to hide.
  Result<void> whiteout_lower_root() {
    std::unordered_set<std::string> seen;
    std::vector<std::string> visible;
    for (const auto& lower : opt_.lower_dirs) {
      auto lfd = COWLAB_TRY(sys::open(lower, O_RDONLY | O_DIRECTORY));
      for (const auto& ent : COWLAB_TRY(sys::read_dir(lfd.get()))) {
        if (!seen.insert(ent.name).second) continue;
        auto st = COWLAB_TRY(sys::fstatat(lfd.get(), ent.name, AT_SYMLINK_NOFOLLOW));
        if (!is_overlay_whiteout(st)) visible.push_back(ent.name);
      }
    }
    for (const auto& name : visible) {
      if (kept_.count(name)) {
        // This layer's own directory replaces the lower one entirely.
        auto st = APPLY_TRY(sys::fstatat_if_exists(root_fd_.get(), name, AT_SYMLINK_NOFOLLOW),
                            "lstat", name);
        if (st && S_ISDIR(st->st_mode)) {
          auto dfd = APPLY_TRY(
              sys::openat(root_fd_.get(), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW), "open", name);
          COWLAB_TRY(set_overlay_opaque(dfd.get(), name));
        }
        continue;
      }
      if (!scratch_rel_.empty() && (name == scratch_rel_ || starts_with(scratch_rel_, name + "/")))
        continue;
      auto st = APPLY_TRY(sys::fstatat_if_exists(root_fd_.get(), name, AT_SYMLINK_NOFOLLOW),
                          "lstat", name);
      if (st && is_overlay_whiteout(*st)) continue;
      if (st) COWLAB_TRY(remove_at(root_fd_.get(), name, name, *st));
      APPLY_TRY(sys::mknodat(root_fd_.get(), name, S_IFCHR, makedev(0, 0)), "mknod", name);
      whited_out_.insert(name);
    }
    return {};
  }

  // aufs: an entry created where this branch holds `.wh.<name>` takes the whiteout's place; a
  // directory then must not show what the whiteout hid, so it gets an opaque marker.
  Result<void> aufs_unwhiteout(int pfd, const std::string& parent, const std::string& name,
                               Kind kind) {
    if (starts_with(name, kWhiteoutPrefix)) return {};
    std::string wh = std::string(kWhiteoutPrefix) + name;
    std::string rel = join_path(parent, wh);
    auto st = APPLY_TRY(sys::fstatat_if_exists(pfd, wh, AT_SYMLINK_NOFOLLOW), "lstat", rel);
    if (!st) return {};
    APPLY_TRY(sys::unlinkat(pfd, wh, 0), "unlink", rel);
    pending_aufs_opaque_ = kind == Kind::kDirectory;
    return {};
  }

  Result<void> aufs_marker(int dfd, const std::string& dir) {
    std::string marker(kOpaqueMarker);
    std::string rel = join_path(dir, marker);
    auto fd = sys::openat(dfd, marker, O_WRONLY | O_CREAT | O_NOFOLLOW, 0444);
    if (!fd.ok()) return at(fd.error(), "create", rel);
    mark_kept(rel);
    return {};
  }

  // ---- aufs hard-link targets -------------------------------------------------------------
  Result<void> plnk_file(struct archive_entry* e, const std::string& raw, const std::string& name) {
    plnk_names_.insert(name);
    if (validate_) return {};
    if (!scratch_fd_.valid()) {
      if (opt_.scratch_dir.empty())
        return Error::invalid("entry " + quoted(raw) +
                              ": aufs hard-link targets need a scratch directory");
      auto existing = COWLAB_TRY(sys::lstat_if_exists(opt_.scratch_dir));
      if (!existing) {
        COWLAB_TRY(sys::mkdir_all(opt_.scratch_dir, 0700));
        created_scratch_dir_ = true;
      }
      uint64_t random = 0;
      COWLAB_TRY(sys::random_bytes(&random, sizeof random));
      char sub[40];
      std::snprintf(sub, sizeof sub, "plnk-%016llx", static_cast<unsigned long long>(random));
      scratch_sub_ = opt_.scratch_dir + "/" + sub;
      COWLAB_TRY(sys::mkdir(scratch_sub_, 0700));
      scratch_fd_ = COWLAB_TRY(sys::open(scratch_sub_, O_RDONLY | O_DIRECTORY));
    }
    return create_regular(e, scratch_fd_.get(), name, std::string(kPlnkDir) + "/" + name);
  }

  Result<void> remove_scratch() {
    scratch_fd_.reset();
    if (!scratch_sub_.empty()) {
      COWLAB_TRY(sys::remove_all(scratch_sub_));
      scratch_sub_.clear();
    }
    if (created_scratch_dir_) {
      created_scratch_dir_ = false;
      COWLAB_TRY(sys::remove_all(opt_.scratch_dir));
    }
    return {};
  }

  // ---- directories --------------------------------------------------------------------------
  // An fd of directory `dir` (relative; "" is the root), created with its missing ancestors as
  // implied directories (0755, moby ImpliedDirectoryMode).  The last fd is cached: tars list
  // a directory's entries together.
  Result<int> parent_fd(const std::string& dir, ParentMode mode) {
    if (dir.empty()) return root_fd_.get();
    if (cache_valid_ && cache_path_ == dir) return cache_fd_.get();
    auto fd = sys::openat2(root_fd_.get(), dir, O_RDONLY | O_DIRECTORY, 0, kInRoot);
    if (!fd.ok()) {
      int err = fd.error().err();
      if (err != ENOENT && err != ENOTDIR) return at(fd.error(), "open", dir);
      fd = COWLAB_TRY(make_dirs(dir, mode));
    }
    cache_fd_ = std::move(*fd);
    cache_path_ = dir;
    cache_valid_ = true;
    return cache_fd_.get();
  }

  Result<sys::Fd> make_dirs(const std::string& dir, ParentMode mode) {
    sys::Fd cur;
    int cur_fd = root_fd_.get();
    std::string prefix;
    size_t i = 0;
    while (i < dir.size()) {
      size_t j = dir.find('/', i);
      if (j == std::string::npos) j = dir.size();
      std::string comp = dir.substr(i, j - i);
      prefix = join_path(prefix, comp);
      i = j + 1;
      auto next = sys::openat2(root_fd_.get(), prefix, O_RDONLY | O_DIRECTORY, 0, kInRoot);
      if (!next.ok()) {
        int err = next.error().err();
        if (err == ENOENT) {
          // In an overlay layer the directory may exist below: then it is the lower one
          // showing through, and the implied upper directory takes its attributes, as a
          // copy-up would; and a path the lowers show as a non-directory has nothing below it
          // to hide.
          std::optional<struct stat> lower;
          if (opt_.format == WhiteoutFormat::kOverlay && !opt_.lower_dirs.empty())
            lower = COWLAB_TRY(lower_lookup(prefix));
          if (lower && !S_ISDIR(lower->st_mode) && mode == ParentMode::kExisting)
            return Error::from_errno("open", prefix, ENOTDIR);
          bool copy = lower && S_ISDIR(lower->st_mode);
          auto mk = sys::mkdirat(cur_fd, comp, 0755);
          if (!mk.ok()) return at(mk.error(), "mkdir", prefix);
          if (copy)
            APPLY_TRY(
                sys::fchownat(cur_fd, comp, lower->st_uid, lower->st_gid, AT_SYMLINK_NOFOLLOW),
                "chown", prefix);
          // mkdir's mode passes through the umask; implied directories are 0755 exactly.
          APPLY_TRY(sys::fchmodat(cur_fd, comp, copy ? lower->st_mode & 07777 : 0755, 0), "chmod",
                    prefix);
        } else if (err == ENOTDIR && mode == ParentMode::kCreate &&
                   opt_.format == WhiteoutFormat::kOverlay) {
          // `.wh.d` then `d/f`: d is recreated in this layer and must hide the lower d.
          auto st = APPLY_TRY(sys::fstatat(cur_fd, comp, AT_SYMLINK_NOFOLLOW), "lstat", prefix);
          if (!is_overlay_whiteout(st)) return at(next.error(), "open", prefix);
          APPLY_TRY(sys::unlinkat(cur_fd, comp, 0), "unlink", prefix);
          APPLY_TRY(sys::mkdirat(cur_fd, comp, 0755), "mkdir", prefix);
          APPLY_TRY(sys::fchmodat(cur_fd, comp, 0755, 0), "chmod", prefix);
          auto d = APPLY_TRY(sys::openat(cur_fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW), "open",
                             prefix);
          COWLAB_TRY(set_overlay_opaque(d.get(), prefix));
        } else {
          return at(next.error(), "open", prefix);
        }
        next = sys::openat2(root_fd_.get(), prefix, O_RDONLY | O_DIRECTORY, 0, kInRoot);
        if (!next.ok()) return at(next.error(), "open", prefix);
      }
      cur = std::move(*next);
      cur_fd = cur.get();
    }
    return cur;
  }

  // What the lower layers (opt_.lower_dirs, nearest first) show at `rel`, looked up the way
  // overlayfs does: component by component, a whiteout ends the search, a non-directory hides
  // everything below it, and an opaque directory hides the layers under it.
  Result<std::optional<struct stat>> lower_lookup(const std::string& rel) {
    std::vector<size_t> layers(opt_.lower_dirs.size());
    for (size_t i = 0; i < layers.size(); ++i) layers[i] = i;
    std::string prefix;
    size_t i = 0;
    std::optional<struct stat> found;
    while (i < rel.size()) {
      size_t j = rel.find('/', i);
      if (j == std::string::npos) j = rel.size();
      prefix = join_path(prefix, rel.substr(i, j - i));
      i = j + 1;
      found.reset();
      std::vector<size_t> below;
      for (size_t idx : layers) {
        std::string path = opt_.lower_dirs[idx] + "/" + prefix;
        auto st = sys::lstat(path);
        if (!st.ok()) {
          if (st.error().err() == ENOENT || st.error().err() == ENOTDIR) continue;
          return std::move(st).error();
        }
        if (is_overlay_whiteout(*st)) break;
        if (!found) {
          found = *st;
          if (!S_ISDIR(st->st_mode)) break;
        } else if (!S_ISDIR(st->st_mode)) {
          break;
        }
        below.push_back(idx);
        auto opaque = COWLAB_TRY(sys::lgetxattr(path, overlay_opaque_xattr(opt_.overlay_ns)));
        if (opaque && *opaque == "y") break;
      }
      if (!found) return found;
      if (j < rel.size() && !S_ISDIR(found->st_mode))
        return std::optional<struct stat>();  // below a non-dir
      layers = std::move(below);
    }
    return found;
  }

  // After a directory was removed the cached fd may name a deleted directory.  It stays open
  // (the caller of parent_fd may still be using it) until the next lookup replaces it.
  void invalidate_cache() { cache_valid_ = false; }

  Result<void> set_dir_times() {
    for (const auto& d : dir_times_) {
      auto fd =
          sys::openat2(root_fd_.get(), d.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, kInRoot);
      if (!fd.ok()) {
        int err = fd.error().err();
        if (err == ENOENT || err == ENOTDIR || err == ELOOP) continue;  // replaced or removed later
        return at(fd.error(), "open", d.path);
      }
      APPLY_TRY(sys::futimens(fd->get(), d.times), "utimes", d.path);
    }
    return {};
  }

  const std::string root_;
  const ApplyOptions& opt_;
  bool validate_ = false;
  ApplyStats stats_;
  TarInput* input_ = nullptr;
  sys::Fd root_fd_;
  sys::Fd cache_fd_;
  std::string cache_path_;
  bool cache_valid_ = false;
  // Paths this tar created (and their ancestors).
  std::unordered_set<std::string> kept_;
  // Symlinks and hard links this tar created, ordered so a subtree can be erased.
  std::map<std::string, LinkKind> links_;
  // Paths this tar deleted and has not recreated.
  std::unordered_set<std::string> whited_out_;
  std::vector<DirTimes> dir_times_;
  std::optional<bool> can_mknod_;
  bool pending_aufs_opaque_ = false;
  // aufs plnk scratch space.
  std::unordered_set<std::string> plnk_names_;
  std::string scratch_rel_;  // the scratch dir relative to the root when it lies inside it
  std::string scratch_sub_;
  sys::Fd scratch_fd_;
  bool created_scratch_dir_ = false;
};

}  // namespace

Result<ApplyStats> apply_layer(const std::string& root, Reader& tar, const ApplyOptions& options) {
  Applier applier(root, options);
  auto r = applier.run(tar);
  if (!r.ok()) return std::move(r).error().with_context(options.context);
  return r;
}

}  // namespace cowlab
