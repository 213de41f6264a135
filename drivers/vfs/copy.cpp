#include "vfs/copy.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <map>
#include <utility>

#include "cowlab/sys.h"

namespace cowlab::vfs {

namespace {

class TreeCopier {
 public:
  explicit TreeCopier(DataCopy data) : data_(data) {}

  Result<void> copy_root(const std::string& src, const std::string& dst) {
    auto src_fd = COWLAB_TRY(sys::open(src, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    auto dst_fd = COWLAB_TRY(sys::open(dst, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    auto st = COWLAB_TRY(sys::fstat(src_fd.get()));
    COWLAB_TRY(copy_children(src_fd.get(), src, dst_fd.get(), dst));
    return finish_dir(dst_fd.get(), src, dst, st);
  }

  const CopyStats& stats() const { return stats_; }

 private:
  Result<void> copy_children(int src_dfd, const std::string& src, int dst_dfd,
                             const std::string& dst) {
    auto entries = COWLAB_TRY(sys::read_dir(src_dfd));
    for (const auto& e : entries) {
      std::string s = src + "/" + e.name;
      std::string d = dst + "/" + e.name;
      auto st = COWLAB_TRY(sys::fstatat(src_dfd, e.name, AT_SYMLINK_NOFOLLOW));
      ++stats_.entries;
      // Hard links inside the tree stay hard links: the second name of an inode links to the
      // first copy (Docker's copy.DirCopy; TestCopyHardlink).
      if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
        auto key = std::make_pair(st.st_dev, st.st_ino);
        auto it = links_.find(key);
        if (it != links_.end()) {
          COWLAB_TRY(sys::linkat(sys::kCwd, it->second, dst_dfd, e.name, 0));
          ++stats_.hard_links;
          continue;
        }
        links_.emplace(key, d);
      }
      switch (st.st_mode & S_IFMT) {
        case S_IFDIR: {
          COWLAB_TRY(sys::mkdirat(dst_dfd, e.name, 0700));
          auto sfd = COWLAB_TRY(sys::openat(src_dfd, e.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
          auto dfd = COWLAB_TRY(sys::openat(dst_dfd, e.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
          COWLAB_TRY(copy_children(sfd.get(), s, dfd.get(), d));
          COWLAB_TRY(finish_dir(dfd.get(), s, d, st));
          break;
        }
        case S_IFREG:
          COWLAB_TRY(copy_file(src_dfd, dst_dfd, e.name, s, d, st));
          break;
        case S_IFLNK: {
          auto target = COWLAB_TRY(sys::readlinkat(src_dfd, e.name));
          COWLAB_TRY(sys::symlinkat(target, dst_dfd, e.name));
          COWLAB_TRY(sys::fchownat(dst_dfd, e.name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW));
          COWLAB_TRY(copy_xattrs_path(s, d));
          COWLAB_TRY(set_times_at(dst_dfd, e.name, st));
          break;
        }
        case S_IFCHR:
        case S_IFBLK:
        case S_IFIFO:
        case S_IFSOCK:
          COWLAB_TRY(sys::mknodat(dst_dfd, e.name, st.st_mode & (S_IFMT | 0600), st.st_rdev));
          COWLAB_TRY(sys::fchownat(dst_dfd, e.name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW));
          COWLAB_TRY(sys::fchmodat(dst_dfd, e.name, st.st_mode & 07777));
          COWLAB_TRY(copy_xattrs_path(s, d));
          COWLAB_TRY(set_times_at(dst_dfd, e.name, st));
          break;
        default:
          return Error::invalid("copy " + s + ": unknown file type " +
                                std::to_string(st.st_mode & S_IFMT));
      }
    }
    return {};
  }

  Result<void> copy_file(int src_dfd, int dst_dfd, const std::string& name, const std::string& s,
                         const std::string& d, const struct stat& st) {
    auto in = COWLAB_TRY(sys::openat(src_dfd, name, O_RDONLY | O_NOFOLLOW));
    auto out =
        COWLAB_TRY(sys::openat(dst_dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600));
    bool cloned = false;
    if (data_ == DataCopy::kReflink && st.st_size > 0) {
      auto r = sys::ficlone(out.get(), in.get());
      if (r.ok()) {
        cloned = true;
      } else if (r.error().err() != EOPNOTSUPP && r.error().err() != EXDEV &&
                 r.error().err() != EINVAL) {
        return std::move(r).error().with_context("copy " + s);
      }
    }
    if (!cloned && st.st_size > 0) {
      // Holes stay holes (a reflink keeps them too): copying a sparse image file's holes as
      // zeros made a 1 GiB sparse file cost 1 GiB at every container create (issue 13).
      auto r = sys::copy_file_sparse(out.get(), in.get(), static_cast<uint64_t>(st.st_size));
      if (!r.ok()) return std::move(r).error().with_context("copy " + s);
    }
    // An empty file has no data to clone or copy: it counts as neither.
    if (cloned)
      ++stats_.reflinked;
    else if (st.st_size > 0)
      ++stats_.copied;
    // chown clears setuid/setgid and security.capability (cap_inode_killpriv), so the order
    // is: owner, then mode, then xattrs, then times.
    COWLAB_TRY(sys::fchown(out.get(), st.st_uid, st.st_gid));
    COWLAB_TRY(sys::fchmod(out.get(), st.st_mode & 07777));
    COWLAB_TRY(copy_xattrs_path(s, d));
    return set_times_fd(out.get(), st);
  }

  Result<void> finish_dir(int dst_fd, const std::string& s, const std::string& d,
                          const struct stat& st) {
    COWLAB_TRY(sys::fchown(dst_fd, st.st_uid, st.st_gid));
    COWLAB_TRY(sys::fchmod(dst_fd, st.st_mode & 07777));
    COWLAB_TRY(copy_xattrs_path(s, d));
    // Last: creating the children changed the directory's mtime.
    return set_times_fd(dst_fd, st);
  }

  // Path-based so symlinks and device nodes (which cannot be opened for xattr calls) take
  // the same route as everything else; l* calls never follow the last component.
  Result<void> copy_xattrs_path(const std::string& s, const std::string& d) {
    auto names = COWLAB_TRY(sys::llistxattr(s));
    for (const auto& n : names) {
      auto value = COWLAB_TRY(sys::lgetxattr(s, n));
      if (!value) continue;  // removed meanwhile
      COWLAB_TRY(sys::lsetxattr(d, n, *value));
    }
    return {};
  }

  static Result<void> set_times_fd(int fd, const struct stat& st) {
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    return sys::futimens(fd, times);
  }
  static Result<void> set_times_at(int dfd, const std::string& name, const struct stat& st) {
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    return sys::utimensat(dfd, name, times, AT_SYMLINK_NOFOLLOW);
  }

  DataCopy data_;
  CopyStats stats_;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;  // source inode -> first copy
};

}  // namespace

Result<CopyStats> copy_tree(const std::string& src, const std::string& dst, DataCopy data) {
  TreeCopier copier(data);
  auto r = copier.copy_root(src, dst);
  if (!r.ok()) return std::move(r).error().with_context("copy " + src + " to " + dst);
  return copier.stats();
}

}  // namespace cowlab::vfs
