// The system seam.  Every wrapper: retry EINTR, return Error::from_errno(call, path, errno).
#include "cowlab/sys.h"
#include "cowlab/sys_text.h"
#include "cowlab/sys_process.h"

#include <libmount.h>
#include <sys/sysmacros.h>

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/quota.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>

namespace cowlab::sys {

namespace {

template <typename F>
auto retry(F&& f) {
  decltype(f()) r;
  do {
    r = f();
  } while (r == -1 && errno == EINTR);
  return r;
}

Error err(std::string_view call, std::string_view path) {
  return Error::from_errno(call, path, errno);
}

std::string at_path(int dirfd, const std::string& path) {
  (void)dirfd;
  return path;
}

}  // namespace

// ---- Fd -------------------------------------------------------------------------------------
Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = o.release();
  }
  return *this;
}
Fd::~Fd() { reset(); }
void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

// ---- opening ---------------------------------------------------------------------------------
Result<Fd> open(const std::string& path, int flags, mode_t mode) {
  int fd = retry([&] { return ::open(path.c_str(), flags | O_CLOEXEC, mode); });
  if (fd < 0) return err("open", path);
  return Fd(fd);
}

Result<Fd> openat(int dirfd, const std::string& path, int flags, mode_t mode) {
  int fd = retry([&] { return ::openat(dirfd, path.c_str(), flags | O_CLOEXEC, mode); });
  if (fd < 0) return err("openat", at_path(dirfd, path));
  return Fd(fd);
}

Result<Fd> openat2(int dirfd, const std::string& path, int flags, mode_t mode, uint64_t resolve) {
  struct open_how how {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
  how.resolve = resolve;
  int fd = static_cast<int>(
      retry([&] { return ::syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof(how)); }));
  if (fd < 0) return err("openat2", path);
  return Fd(fd);
}

// ---- metadata -------------------------------------------------------------------------------
Result<struct stat> stat(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return err("stat", path);
  return st;
}
Result<struct stat> lstat(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return err("lstat", path);
  return st;
}
Result<struct stat> fstat(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return err("fstat", "fd " + std::to_string(fd));
  return st;
}
Result<struct stat> fstatat(int dirfd, const std::string& path, int flags) {
  struct stat st {};
  if (::fstatat(dirfd, path.c_str(), &st, flags) != 0) return err("fstatat", path);
  return st;
}
Result<std::optional<struct stat>> lstat_if_exists(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::optional<struct stat>();
    return err("lstat", path);
  }
  return std::optional<struct stat>(st);
}
Result<std::optional<struct stat>> fstatat_if_exists(int dirfd, const std::string& path, int flags) {
  struct stat st {};
  if (::fstatat(dirfd, path.c_str(), &st, flags) != 0) {
    if (errno == ENOENT) return std::optional<struct stat>();
    return err("fstatat", path);
  }
  return std::optional<struct stat>(st);
}
Result<struct statfs> statfs(const std::string& path) {
  struct statfs s {};
  if (retry([&] { return ::statfs(path.c_str(), &s); }) != 0) return err("statfs", path);
  return s;
}
Result<struct statfs> fstatfs(int fd) {
  struct statfs s {};
  if (retry([&] { return ::fstatfs(fd, &s); }) != 0) return err("fstatfs", "fd " + std::to_string(fd));
  return s;
}

Result<void> fchmodat(int dirfd, const std::string& path, mode_t mode, int flags) {
  if (::fchmodat(dirfd, path.c_str(), mode, flags) != 0) return err("fchmodat", path);
  return {};
}
Result<void> fchmod(int fd, mode_t mode) {
  if (::fchmod(fd, mode) != 0) return err("fchmod", "fd " + std::to_string(fd));
  return {};
}
Result<void> fchownat(int dirfd, const std::string& path, uid_t uid, gid_t gid, int flags) {
  if (::fchownat(dirfd, path.c_str(), uid, gid, flags) != 0) return err("fchownat", path);
  return {};
}
Result<void> fchown(int fd, uid_t uid, gid_t gid) {
  if (::fchown(fd, uid, gid) != 0) return err("fchown", "fd " + std::to_string(fd));
  return {};
}
Result<void> utimensat(int dirfd, const std::string& path, const struct timespec times[2], int flags) {
  if (::utimensat(dirfd, path.c_str(), times, flags) != 0) return err("utimensat", path);
  return {};
}
Result<void> futimens(int fd, const struct timespec times[2]) {
  if (::futimens(fd, times) != 0) return err("futimens", "fd " + std::to_string(fd));
  return {};
}

// ---- namespace operations -------------------------------------------------------------------
Result<void> mkdir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0) return err("mkdir", path);
  return {};
}
Result<void> mkdirat(int dirfd, const std::string& path, mode_t mode) {
  if (::mkdirat(dirfd, path.c_str(), mode) != 0) return err("mkdirat", path);
  return {};
}
Result<void> mkdir_all(const std::string& path, mode_t mode) {
  if (path.empty()) return {};
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return {};
    return Error::from_errno("mkdir", path, ENOTDIR);
  }
  auto slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) COWLAB_TRY(mkdir_all(path.substr(0, slash), mode));
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return err("mkdir", path);
  return {};
}
Result<std::string> make_temp_dir(const std::string& dir, const std::string& prefix) {
  std::string tmpl = dir + "/" + prefix + "XXXXXX";
  if (!::mkdtemp(tmpl.data())) return err("mkdtemp", tmpl);
  return tmpl;
}
Result<void> mknodat(int dirfd, const std::string& path, mode_t mode, dev_t dev) {
  if (::mknodat(dirfd, path.c_str(), mode, dev) != 0) return err("mknodat", path);
  return {};
}
Result<void> symlinkat(const std::string& target, int dirfd, const std::string& path) {
  if (::symlinkat(target.c_str(), dirfd, path.c_str()) != 0) return err("symlinkat", path);
  return {};
}
Result<void> linkat(int olddirfd, const std::string& oldpath, int newdirfd,
                    const std::string& newpath, int flags) {
  if (::linkat(olddirfd, oldpath.c_str(), newdirfd, newpath.c_str(), flags) != 0)
    return err("linkat", newpath + " -> " + oldpath);
  return {};
}
Result<void> unlinkat(int dirfd, const std::string& path, int flags) {
  if (::unlinkat(dirfd, path.c_str(), flags) != 0) return err("unlinkat", path);
  return {};
}
Result<void> renameat(int olddirfd, const std::string& oldpath, int newdirfd,
                      const std::string& newpath, unsigned flags) {
  if (::renameat2(olddirfd, oldpath.c_str(), newdirfd, newpath.c_str(), flags) != 0)
    return err("renameat2", oldpath + " -> " + newpath);
  return {};
}
Result<void> rename(const std::string& oldpath, const std::string& newpath) {
  if (::rename(oldpath.c_str(), newpath.c_str()) != 0) return err("rename", oldpath + " -> " + newpath);
  return {};
}
Result<std::string> readlinkat(int dirfd, const std::string& path) {
  std::string buf(256, '\0');
  for (;;) {
    ssize_t n = ::readlinkat(dirfd, path.c_str(), buf.data(), buf.size());
    if (n < 0) return err("readlinkat", path);
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(n);
      return buf;
    }
    buf.resize(buf.size() * 2);
  }
}
Result<std::string> readlink(const std::string& path) { return readlinkat(AT_FDCWD, path); }
Result<void> rmdir(const std::string& path) {
  if (::rmdir(path.c_str()) != 0) return err("rmdir", path);
  return {};
}
Result<void> unlink(const std::string& path) {
  if (::unlink(path.c_str()) != 0) return err("unlink", path);
  return {};
}

namespace {
// Removes every entry under the open directory `dfd` (not crossing mounts: `dev` is the
// device of the tree being removed; an entry on another device is a mount point → EBUSY).
Result<void> remove_children(int dfd, const std::string& shown, dev_t dev) {
  auto entries = COWLAB_TRY(read_dir(dfd));
  for (const auto& e : entries) {
    std::string child = shown + "/" + e.name;
    struct stat st {};
    if (::fstatat(dfd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;
      return err("fstatat", child);
    }
    if (S_ISDIR(st.st_mode)) {
      if (st.st_dev != dev) return Error::from_errno("remove", child + " (a mount point)", EBUSY);
      int cfd = ::openat(dfd, e.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (cfd < 0) return err("openat", child);
      Fd c(cfd);
      // A directory without write permission (e.g. mode 0555) cannot be emptied: fix that.
      if ((st.st_mode & 0700) != 0700) (void)::fchmod(cfd, st.st_mode | 0700);
      COWLAB_TRY(remove_children(cfd, child, dev));
      if (::unlinkat(dfd, e.name.c_str(), AT_REMOVEDIR) != 0) {
        // A btrfs subvolume or a busy mount point: surface the error with the path.
        return err("rmdir", child);
      }
    } else {
      if (::unlinkat(dfd, e.name.c_str(), 0) != 0 && errno != ENOENT) return err("unlink", child);
    }
  }
  return {};
}
}  // namespace

Result<void> remove_all_at(int dirfd, const std::string& name) {
  struct stat st {};
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return {};
    return err("fstatat", name);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) return err("unlink", name);
    return {};
  }
  int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return err("openat", name);
  Fd d(fd);
  if ((st.st_mode & 0700) != 0700) (void)::fchmod(fd, st.st_mode | 0700);
  COWLAB_TRY(remove_children(fd, name, st.st_dev));
  d.reset();
  if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) return err("rmdir", name);
  return {};
}

Result<void> remove_all(const std::string& path) { return remove_all_at(AT_FDCWD, path); }

Result<std::vector<DirEntry>> read_dir(int dirfd) {
  int dup = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return err("dup", "fd " + std::to_string(dirfd));
  DIR* d = ::fdopendir(dup);
  if (!d) {
    int e = errno;
    ::close(dup);
    return Error::from_errno("fdopendir", "fd " + std::to_string(dirfd), e);
  }
  ::rewinddir(d);
  std::vector<DirEntry> out;
  for (;;) {
    errno = 0;
    struct dirent* de = ::readdir(d);
    if (!de) {
      int e = errno;
      ::closedir(d);
      if (e) return Error::from_errno("readdir", "fd " + std::to_string(dirfd), e);
      break;
    }
    if (de->d_name[0] == '.' && (de->d_name[1] == 0 || (de->d_name[1] == '.' && de->d_name[2] == 0)))
      continue;
    out.push_back({de->d_name, de->d_type, de->d_ino});
  }
  return out;
}
Result<std::vector<DirEntry>> read_dir(const std::string& path) {
  auto fd = COWLAB_TRY(open(path, O_RDONLY | O_DIRECTORY));
  auto r = read_dir(fd.get());
  if (!r.ok()) return std::move(r).error().with_context("read_dir " + path);
  return r;
}

// ---- data ------------------------------------------------------------------------------------
Result<size_t> read(int fd, void* buf, size_t len) {
  ssize_t n = retry([&] { return ::read(fd, buf, len); });
  if (n < 0) return err("read", "fd " + std::to_string(fd));
  return static_cast<size_t>(n);
}
Result<void> write_all(int fd, const void* buf, size_t len) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = retry([&] { return ::write(fd, p, len); });
    if (n < 0) return err("write", "fd " + std::to_string(fd));
    p += n;
    len -= static_cast<size_t>(n);
  }
  return {};
}
Result<size_t> pread(int fd, void* buf, size_t len, off_t off) {
  ssize_t n = retry([&] { return ::pread(fd, buf, len, off); });
  if (n < 0) return err("pread", "fd " + std::to_string(fd));
  return static_cast<size_t>(n);
}
Result<void> fsync(int fd) {
  if (retry([&] { return ::fsync(fd); }) != 0) return err("fsync", "fd " + std::to_string(fd));
  return {};
}
Result<void> ftruncate(int fd, off_t len) {
  if (retry([&] { return ::ftruncate(fd, len); }) != 0) return err("ftruncate", "fd " + std::to_string(fd));
  return {};
}
Result<void> fallocate(int fd, int mode, off_t off, off_t len) {
  if (retry([&] { return ::fallocate(fd, mode, off, len); }) != 0)
    return err("fallocate", "fd " + std::to_string(fd));
  return {};
}
Result<void> syncfs(int fd) {
  if (::syncfs(fd) != 0) return err("syncfs", "fd " + std::to_string(fd));
  return {};
}

Result<uint64_t> resident_bytes(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return err("fstat", path);
  if (!S_ISREG(st.st_mode) || st.st_size <= 0) return uint64_t{0};
  auto len = static_cast<size_t>(st.st_size);
  void* map = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return err("mmap", path);
  const auto page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec((len + page - 1) / page);
  int rc = ::mincore(map, len, vec.data());
  int e = errno;
  ::munmap(map, len);
  if (rc != 0) return Error::from_errno("mincore", path, e);
  uint64_t pages = 0;
  for (unsigned char v : vec) pages += v & 1;
  return pages * page;
}

Result<void> fsync_dir(const std::string& path) {
  auto fd = COWLAB_TRY(open(path, O_RDONLY | O_DIRECTORY));
  return fsync(fd.get());
}

Result<std::string> read_file(const std::string& path) {
  auto fd = COWLAB_TRY(open(path, O_RDONLY));
  std::string out;
  char buf[65536];
  for (;;) {
    auto n = read(fd.get(), buf, sizeof buf);
    if (!n.ok()) return std::move(n).error().with_context("read " + path);
    if (*n == 0) break;
    out.append(buf, *n);
  }
  return out;
}
namespace {
constexpr std::string_view kAtomicTempInfix = ".tmp-";
}  // namespace

std::string atomic_write_temp_path(const std::string& path) {
  return path + std::string(kAtomicTempInfix) + std::to_string(::getpid()) + "-" +
         std::to_string(std::random_device{}() & 0xffffff);
}

bool is_atomic_write_temp_name(std::string_view name) {
  auto at = name.rfind(kAtomicTempInfix);
  if (at == std::string_view::npos || at == 0) return false;
  std::string_view tail = name.substr(at + kAtomicTempInfix.size());
  auto dash = tail.find('-');
  if (dash == std::string_view::npos || dash == 0 || dash + 1 == tail.size()) return false;
  auto digits = [](std::string_view d) {
    return std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  return digits(tail.substr(0, dash)) && digits(tail.substr(dash + 1));
}

Result<void> write_file_atomic(const std::string& path, std::string_view content, mode_t mode) {
  auto slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  std::string tmp = atomic_write_temp_path(path);
  auto fd = COWLAB_TRY(open(tmp, O_WRONLY | O_CREAT | O_EXCL, mode));
  auto fail = [&](Error e) -> Error {
    ::unlink(tmp.c_str());
    return std::move(e).with_context("write " + path);
  };
  if (auto r = write_all(fd.get(), content.data(), content.size()); !r.ok()) return fail(r.error());
  if (auto r = fchmod(fd.get(), mode); !r.ok()) return fail(r.error());
  if (auto r = fsync(fd.get()); !r.ok()) return fail(r.error());
  fd.reset();
  if (auto r = rename(tmp, path); !r.ok()) return fail(r.error());
  auto dfd = COWLAB_TRY(open(dir, O_RDONLY | O_DIRECTORY));
  COWLAB_TRY(fsync(dfd.get()));
  return {};
}

Result<void> ficlone(int dst_fd, int src_fd) {
  if (::ioctl(dst_fd, FICLONE, src_fd) != 0) return err("ioctl FICLONE", "fd " + std::to_string(dst_fd));
  return {};
}

namespace {
Result<void> copy_range(int dst_fd, int src_fd, uint64_t start, uint64_t len);
}  // namespace

Result<void> copy_file_data(int dst_fd, int src_fd, uint64_t len) {
  return copy_range(dst_fd, src_fd, 0, len);
}

Result<void> copy_file_sparse(int dst_fd, int src_fd, uint64_t len) {
  uint64_t pos = 0;
  while (pos < len) {
    off_t data = ::lseek(src_fd, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      if (errno == EINVAL || errno == EOPNOTSUPP) return copy_range(dst_fd, src_fd, pos, len - pos);
      return err("lseek SEEK_DATA", "fd " + std::to_string(src_fd));
    }
    off_t hole = ::lseek(src_fd, data, SEEK_HOLE);
    if (hole < 0) return err("lseek SEEK_HOLE", "fd " + std::to_string(src_fd));
    uint64_t stop = std::min<uint64_t>(static_cast<uint64_t>(hole), len);
    if (static_cast<uint64_t>(data) >= stop) break;
    COWLAB_TRY(copy_range(dst_fd, src_fd, static_cast<uint64_t>(data),
                          stop - static_cast<uint64_t>(data)));
    pos = stop;
  }
  return ftruncate(dst_fd, static_cast<off_t>(len));
}

namespace {
Result<void> copy_range(int dst_fd, int src_fd, uint64_t start, uint64_t len) {
  bool use_cfr = true;
  loff_t in_off = static_cast<loff_t>(start), out_off = static_cast<loff_t>(start);
  const uint64_t end = start + len;
  while (use_cfr && static_cast<uint64_t>(in_off) < end) {
    ssize_t n = ::copy_file_range(src_fd, &in_off, dst_fd, &out_off, end - in_off, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP) {
        use_cfr = false;
        break;
      }
      return err("copy_file_range", "fd " + std::to_string(src_fd));
    }
    if (n == 0) break;  // source shorter than expected
  }
  if (use_cfr) return {};
  std::vector<char> buf(1 << 20);
  while (static_cast<uint64_t>(in_off) < end) {
    auto n =
        COWLAB_TRY(pread(src_fd, buf.data(), std::min<uint64_t>(buf.size(), end - in_off), in_off));
    if (n == 0) break;
    ssize_t w = 0;
    while (static_cast<size_t>(w) < n) {
      ssize_t k = retry([&] { return ::pwrite(dst_fd, buf.data() + w, n - w, out_off + w); });
      if (k < 0) return err("pwrite", "fd " + std::to_string(dst_fd));
      w += k;
    }
    in_off += n;
    out_off += n;
  }
  return {};
}
}  // namespace

// ---- extended attributes -------------------------------------------------------------------
namespace {
std::vector<std::string> split_xattr_list(const std::string& buf) {
  std::vector<std::string> names;
  size_t i = 0;
  while (i < buf.size()) {
    size_t j = buf.find('\0', i);
    if (j == std::string::npos) j = buf.size();
    if (j > i) names.emplace_back(buf.substr(i, j - i));
    i = j + 1;
  }
  return names;
}
}  // namespace

Result<std::vector<std::string>> llistxattr(const std::string& path) {
  for (;;) {
    ssize_t n = ::llistxattr(path.c_str(), nullptr, 0);
    if (n < 0) {
      if (errno == ENOTSUP) return std::vector<std::string>{};
      return err("llistxattr", path);
    }
    if (n == 0) return std::vector<std::string>{};
    std::string buf(n, '\0');
    ssize_t m = ::llistxattr(path.c_str(), buf.data(), buf.size());
    if (m < 0) {
      if (errno == ERANGE) continue;
      return err("llistxattr", path);
    }
    buf.resize(m);
    return split_xattr_list(buf);
  }
}
Result<std::vector<std::string>> flistxattr(int fd) {
  for (;;) {
    ssize_t n = ::flistxattr(fd, nullptr, 0);
    if (n < 0) {
      if (errno == ENOTSUP) return std::vector<std::string>{};
      return err("flistxattr", "fd " + std::to_string(fd));
    }
    if (n == 0) return std::vector<std::string>{};
    std::string buf(n, '\0');
    ssize_t m = ::flistxattr(fd, buf.data(), buf.size());
    if (m < 0) {
      if (errno == ERANGE) continue;
      return err("flistxattr", "fd " + std::to_string(fd));
    }
    buf.resize(m);
    return split_xattr_list(buf);
  }
}
Result<std::optional<std::string>> lgetxattr(const std::string& path, const std::string& name) {
  for (;;) {
    ssize_t n = ::lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
    if (n < 0) {
      if (errno == ENODATA || errno == ENOTSUP) return std::optional<std::string>();
      return err("lgetxattr " + name, path);
    }
    std::string buf(n, '\0');
    ssize_t m = n ? ::lgetxattr(path.c_str(), name.c_str(), buf.data(), buf.size()) : 0;
    if (m < 0) {
      if (errno == ERANGE) continue;
      if (errno == ENODATA) return std::optional<std::string>();
      return err("lgetxattr " + name, path);
    }
    buf.resize(m);
    return std::optional<std::string>(std::move(buf));
  }
}
Result<std::optional<std::string>> fgetxattr(int fd, const std::string& name) {
  for (;;) {
    ssize_t n = ::fgetxattr(fd, name.c_str(), nullptr, 0);
    if (n < 0) {
      if (errno == ENODATA || errno == ENOTSUP) return std::optional<std::string>();
      return err("fgetxattr " + name, "fd " + std::to_string(fd));
    }
    std::string buf(n, '\0');
    ssize_t m = n ? ::fgetxattr(fd, name.c_str(), buf.data(), buf.size()) : 0;
    if (m < 0) {
      if (errno == ERANGE) continue;
      if (errno == ENODATA) return std::optional<std::string>();
      return err("fgetxattr " + name, "fd " + std::to_string(fd));
    }
    buf.resize(m);
    return std::optional<std::string>(std::move(buf));
  }
}
Result<void> lsetxattr(const std::string& path, const std::string& name, std::string_view value, int flags) {
  if (::lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), flags) != 0)
    return err("lsetxattr " + name, path);
  return {};
}
Result<void> fsetxattr(int fd, const std::string& name, std::string_view value, int flags) {
  if (::fsetxattr(fd, name.c_str(), value.data(), value.size(), flags) != 0)
    return err("fsetxattr " + name, "fd " + std::to_string(fd));
  return {};
}
Result<void> lremovexattr(const std::string& path, const std::string& name) {
  if (::lremovexattr(path.c_str(), name.c_str()) != 0) return err("lremovexattr " + name, path);
  return {};
}
Result<void> fremovexattr(int fd, const std::string& name) {
  if (::fremovexattr(fd, name.c_str()) != 0) return err("fremovexattr " + name, "fd " + std::to_string(fd));
  return {};
}

// ---- mounts ----------------------------------------------------------------------------------
Result<void> mount(const std::string& source, const std::string& target, const std::string& fstype,
                   unsigned long flags, const std::string& data) {
  if (::mount(source.empty() ? nullptr : source.c_str(), target.c_str(),
              fstype.empty() ? nullptr : fstype.c_str(), flags,
              data.empty() ? nullptr : data.c_str()) != 0)
    return err("mount" + (fstype.empty() ? std::string() : " -t " + fstype), target);
  return {};
}
Result<void> umount2(const std::string& target, int flags) {
  if (retry([&] { return ::umount2(target.c_str(), flags); }) != 0) return err("umount", target);
  return {};
}
Result<Fd> fsopen(const std::string& fstype, unsigned flags) {
  int fd = static_cast<int>(::syscall(SYS_fsopen, fstype.c_str(), flags | FSOPEN_CLOEXEC));
  if (fd < 0) return err("fsopen", fstype);
  return Fd(fd);
}
std::string fs_context_log(int fsfd) {
  std::string out;
  char buf[1024];
  for (;;) {
    ssize_t n = ::read(fsfd, buf, sizeof buf - 1);
    if (n <= 0) break;
    buf[n] = 0;
    if (!out.empty()) out += "; ";
    out.append(buf, n);
    while (!out.empty() && out.back() == '\n') out.pop_back();
  }
  return out;
}
namespace {
Error fsconfig_error(int fsfd, const std::string& what) {
  int e = errno;
  std::string log = fs_context_log(fsfd);
  Error er = Error::from_errno("fsconfig", what, e);
  if (!log.empty()) er = Error(er.kind(), er.message() + " [kernel: " + log + "]", e);
  return er;
}
}  // namespace
Result<void> fsconfig_string(int fsfd, const std::string& key, const std::string& value) {
  if (::syscall(SYS_fsconfig, fsfd, FSCONFIG_SET_STRING, key.c_str(), value.c_str(), 0) != 0)
    return fsconfig_error(fsfd, key + "=" + value);
  return {};
}
Result<void> fsconfig_flag(int fsfd, const std::string& key) {
  if (::syscall(SYS_fsconfig, fsfd, FSCONFIG_SET_FLAG, key.c_str(), nullptr, 0) != 0)
    return fsconfig_error(fsfd, key);
  return {};
}
Result<void> fsconfig_create(int fsfd) {
  if (::syscall(SYS_fsconfig, fsfd, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0)
    return fsconfig_error(fsfd, "create");
  return {};
}
Result<Fd> fsmount(int fsfd, unsigned flags, unsigned attr_flags) {
  int fd = static_cast<int>(::syscall(SYS_fsmount, fsfd, flags | FSMOUNT_CLOEXEC, attr_flags));
  if (fd < 0) return fsconfig_error(fsfd, "fsmount");
  return Fd(fd);
}
Result<void> move_mount_to(int from_fd, const std::string& to_path) {
  if (::syscall(SYS_move_mount, from_fd, "", AT_FDCWD, to_path.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
    return err("move_mount", to_path);
  return {};
}

Result<std::vector<MountInfo>> mountinfo(const std::string& file) {
  // libmount parses the format (optional fields, \ooo escapes in every field) as mount(8) does.
  std::unique_ptr<libmnt_table, decltype(&mnt_unref_table)> tb(mnt_new_table(), mnt_unref_table);
  if (!tb) return Error(ErrorKind::kSystem, "mnt_new_table " + file + ": ENOMEM", ENOMEM);
  int rc = mnt_table_parse_file(tb.get(), file.c_str());
  if (rc != 0) {
    int e = rc < 0 ? -rc : EINVAL;
    return Error(ErrorKind::kSystem, "mnt_table_parse_file " + file + ": " + std::string(errno_name(e)), e);
  }
  std::unique_ptr<libmnt_iter, decltype(&mnt_free_iter)> it(mnt_new_iter(MNT_ITER_FORWARD), mnt_free_iter);
  std::vector<MountInfo> out;
  struct libmnt_fs* fs = nullptr;
  auto str = [](const char* s) { return s ? std::string(s) : std::string(); };
  while (mnt_table_next_fs(tb.get(), it.get(), &fs) == 0) {
    MountInfo mi;
    mi.mount_point = str(mnt_fs_get_target(fs));
    mi.fstype = str(mnt_fs_get_fstype(fs));
    mi.source = str(mnt_fs_get_source(fs));
    mi.options = str(mnt_fs_get_vfs_options(fs));
    mi.super_options = str(mnt_fs_get_fs_options(fs));
    dev_t dev = mnt_fs_get_devno(fs);
    mi.major = major(dev);
    mi.minor = minor(dev);
    out.push_back(std::move(mi));
  }
  return out;
}

Result<bool> is_mountpoint(const std::string& path) {
  auto mounts = COWLAB_TRY(mountinfo());
  for (const auto& m : mounts)
    if (m.mount_point == path) return true;
  return false;
}

// ---- misc ------------------------------------------------------------------------------------
Result<int> ioctl(int fd, unsigned long request, void* arg, std::string_view what) {
  int r = retry([&] { return ::ioctl(fd, request, arg); });
  if (r < 0) return err("ioctl", what);
  return r;
}
Result<void> flock(int fd, int op) {
  if (retry([&] { return ::flock(fd, op); }) != 0) return err("flock", "fd " + std::to_string(fd));
  return {};
}

Result<std::vector<std::string>> flock_holders(int fd) {
  auto st = COWLAB_TRY(fstat(fd));
  auto text = COWLAB_TRY(read_file("/proc/locks"));
  std::vector<std::string> out;
  // "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF" (fs/locks.c lock_get_status); lines of
  // waiters start "1: -> FLOCK".
  for (const std::string& line : split_lines(text)) {
    char kind[16] = {}, adv[16] = {}, rw[16] = {};
    int pid = 0;
    unsigned maj = 0, min = 0;
    unsigned long long ino = 0;
    int id = 0;
    if (std::sscanf(line.c_str(), "%d: %15s %15s %15s %d %x:%x:%llu", &id, kind, adv, rw, &pid, &maj,
                    &min, &ino) != 8)
      continue;
    if (std::string(kind) != "FLOCK" || ino != static_cast<unsigned long long>(st.st_ino)) continue;
    std::string cmd;
    auto cl = read_file("/proc/" + std::to_string(pid) + "/cmdline");
    if (cl.ok()) {
      for (char c : *cl) cmd += c == '\0' ? ' ' : c;
      while (!cmd.empty() && cmd.back() == ' ') cmd.pop_back();
    }
    if (cmd.size() > 80) cmd = cmd.substr(0, 77) + "...";
    out.push_back(std::to_string(pid) + " (" + (cmd.empty() ? "?" : cmd) + ")");
  }
  return out;
}
long page_size() { return ::sysconf(_SC_PAGESIZE); }

KernelVersion kernel_version() {
  struct utsname u {};
  ::uname(&u);
  KernelVersion v;
  v.release = u.release;
  std::sscanf(u.release, "%d.%d.%d", &v.major, &v.minor, &v.patch);
  return v;
}

Result<bool> filesystem_supported(const std::string& fstype) {
  auto text = COWLAB_TRY(read_file("/proc/filesystems"));
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto tab = line.find('\t');
    std::string name = tab == std::string::npos ? line : line.substr(tab + 1);
    if (name == fstype) return true;
  }
  return false;
}

// ---- overlay and vfs drivers ---------------------------------------------------------------
Result<void> mount_in_dir(const std::string& dir, const std::string& source, const std::string& target,
                          const std::string& fstype, unsigned long flags, const std::string& data) {
  // Everything the child touches is prepared before fork(): after fork only async-signal-safe
  // calls (chdir, mount, write, _exit) are allowed in a process that may have threads.
  const char* c_dir = dir.c_str();
  const char* c_source = source.empty() ? nullptr : source.c_str();
  const char* c_target = target.c_str();
  const char* c_fstype = fstype.empty() ? nullptr : fstype.c_str();
  const char* c_data = data.empty() ? nullptr : data.c_str();
  auto child = COWLAB_TRY(fork_child(
      [&](int out_fd) -> int {
        // Report {stage, errno}: stage 1 = chdir, 2 = mount.
        int report[2] = {0, 0};
        if (::chdir(c_dir) != 0) {
          report[0] = 1;
          report[1] = errno;
        } else if (::mount(c_source, c_target, c_fstype, flags, c_data) != 0) {
          report[0] = 2;
          report[1] = errno;
        }
        if (report[0] != 0) (void)!::write(out_fd, report, sizeof report);
        return report[0] == 0 ? 0 : 1;
      },
      ChildExit::kImmediate));
  std::string output;
  auto status = COWLAB_TRY(wait_child(child, -1, &output));
  int report[2] = {0, 0};
  if (output.size() == sizeof report) std::memcpy(report, output.data(), sizeof report);
  if (report[0] == 1) return Error::from_errno("chdir", dir, report[1]);
  if (report[0] == 2)
    return Error::from_errno("mount" + (fstype.empty() ? std::string() : " -t " + fstype), target, report[1]);
  if (status != 0)
    return Error(ErrorKind::kSystem, "mount " + target + ": mount helper process died", EIO);
  return {};
}

Result<bool> in_initial_user_namespace() {
  auto text = read_file("/proc/self/uid_map");
  if (!text.ok()) {
    if (text.error().err() == ENOENT) return true;
    return std::move(text).error();
  }
  unsigned long inside = 0, outside = 0, count = 0;
  if (std::sscanf(text->c_str(), "%lu %lu %lu", &inside, &outside, &count) != 3) return false;
  return inside == 0 && outside == 0 && count == 4294967295UL;
}

Result<void> random_bytes(void* buf, size_t len) {
  char* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = ::getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return err("getrandom", "");
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return {};
}

Result<void> quotactl(int cmd, const std::string& special, int id, void* addr) {
  if (retry([&] { return ::quotactl(cmd, special.c_str(), id, static_cast<caddr_t>(addr)); }) != 0)
    return err("quotactl", special + " id " + std::to_string(id));
  return {};
}

}  // namespace cowlab::sys

// ---- btrfs driver and loop devices -----------------------------------------------------------
// (Includes kept beside the only code that needs them.)
#include <btrfsutil.h>
#include <linux/btrfs.h>
#include <linux/loop.h>
#include <sys/sysmacros.h>

#include <chrono>
#include <cstdlib>
#include <thread>

namespace cowlab::sys {

namespace {

// libbtrfsutil returns its own error code and leaves errno as the failing syscall set it.
Error btrfs_util_error(std::string_view call, std::string_view path, enum btrfs_util_error code,
                       int saved_errno) {
  std::string msg(call);
  msg += ' ';
  msg += path;
  msg += ": ";
  msg += btrfs_util_strerror(code);
  ErrorKind kind = ErrorKind::kSystem;
  if (saved_errno != 0) {
    msg += ": ";
    msg += errno_name(saved_errno);
    msg += " (";
    msg += ::strerror(saved_errno);
    msg += ')';
    if (saved_errno == ENOENT) kind = ErrorKind::kNotFound;
    if (saved_errno == EEXIST) kind = ErrorKind::kExists;
    if (saved_errno == EBUSY) kind = ErrorKind::kBusy;
  }
  return Error(kind, std::move(msg), saved_errno);
}

// Calls a libbtrfsutil function with errno cleared, so the errno in an error is the call's own.
template <typename F>
Result<void> btrfs_util_call(std::string_view call, std::string_view path, F&& f) {
  errno = 0;
  enum btrfs_util_error code = f();
  if (code == BTRFS_UTIL_OK) return {};
  return btrfs_util_error(call, path, code, errno);
}

// The filesystem UUID under which sysfs lists the filesystem (/sys/fs/btrfs/<fsid>).
Result<std::string> btrfs_sysfs_dir(const std::string& path) {
  auto fd = COWLAB_TRY(open(path, O_RDONLY | O_DIRECTORY));
  struct btrfs_ioctl_fs_info_args info {};
  COWLAB_TRY(ioctl(fd.get(), BTRFS_IOC_FS_INFO, &info, "BTRFS_IOC_FS_INFO " + path));
  char uuid[37];
  const unsigned char* u = info.fsid;
  std::snprintf(uuid, sizeof uuid,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                u[15]);
  return std::string("/sys/fs/btrfs/") + uuid;
}

Result<bool> path_exists(const std::string& path) {
  auto st = COWLAB_TRY(lstat_if_exists(path));
  return st.has_value();
}

}  // namespace

Result<void> btrfs_create_subvolume(const std::string& path) {
  return btrfs_util_call("btrfs_util_create_subvolume", path, [&] {
    return btrfs_util_create_subvolume(path.c_str(), 0, nullptr, nullptr);
  });
}

Result<void> btrfs_create_snapshot(const std::string& source, const std::string& path) {
  return btrfs_util_call("btrfs_util_create_snapshot", source + " -> " + path, [&] {
    return btrfs_util_create_snapshot(source.c_str(), path.c_str(), 0, nullptr, nullptr);
  });
}

Result<void> btrfs_delete_subvolume(const std::string& path) {
  return btrfs_util_call("btrfs_util_delete_subvolume", path,
                         [&] { return btrfs_util_delete_subvolume(path.c_str(), 0); });
}

Result<bool> btrfs_is_subvolume(const std::string& path) {
  errno = 0;
  enum btrfs_util_error code = btrfs_util_is_subvolume(path.c_str());
  if (code == BTRFS_UTIL_OK) return true;
  if (code == BTRFS_UTIL_ERROR_NOT_SUBVOLUME || code == BTRFS_UTIL_ERROR_NOT_BTRFS) return false;
  return btrfs_util_error("btrfs_util_is_subvolume", path, code, errno);
}

Result<uint64_t> btrfs_subvolume_id(const std::string& path) {
  uint64_t id = 0;
  COWLAB_TRY(btrfs_util_call("btrfs_util_subvolume_id", path,
                             [&] { return btrfs_util_subvolume_id(path.c_str(), &id); }));
  return id;
}

Result<std::vector<BtrfsSubvolume>> btrfs_nested_subvolumes(const std::string& path) {
  struct btrfs_util_subvolume_iterator* iter = nullptr;
  COWLAB_TRY(btrfs_util_call("btrfs_util_create_subvolume_iterator", path, [&] {
    return btrfs_util_create_subvolume_iterator(path.c_str(), 0,
                                                BTRFS_UTIL_SUBVOLUME_ITERATOR_POST_ORDER, &iter);
  }));
  std::vector<BtrfsSubvolume> out;
  for (;;) {
    char* sub_path = nullptr;
    uint64_t id = 0;
    errno = 0;
    enum btrfs_util_error code = btrfs_util_subvolume_iterator_next(iter, &sub_path, &id);
    if (code == BTRFS_UTIL_ERROR_STOP_ITERATION) break;
    if (code != BTRFS_UTIL_OK) {
      int e = errno;
      btrfs_util_destroy_subvolume_iterator(iter);
      return btrfs_util_error("btrfs_util_subvolume_iterator_next", path, code, e);
    }
    out.push_back({sub_path, id});
    std::free(sub_path);
  }
  btrfs_util_destroy_subvolume_iterator(iter);
  return out;
}

Result<void> btrfs_wait_subvolume_cleaned(const std::string& path, uint64_t id, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    struct btrfs_util_subvolume_info info {};
    errno = 0;
    enum btrfs_util_error code = btrfs_util_subvolume_info(path.c_str(), id, &info);
    if (code == BTRFS_UTIL_ERROR_SUBVOLUME_NOT_FOUND) return {};
    if (code != BTRFS_UTIL_OK)
      return btrfs_util_error("btrfs_util_subvolume_info", path + " id " + std::to_string(id), code,
                              errno);
    if (std::chrono::steady_clock::now() >= deadline)
      return Error(ErrorKind::kTimeout,
                   "wait for deleted subvolume " + std::to_string(id) + " of " + path +
                       " to be cleaned: still present after " + std::to_string(timeout_ms) + " ms",
                   ETIMEDOUT);
    // A transaction commit wakes the cleaner thread that drops deleted subvolumes.
    COWLAB_TRY(btrfs_util_call("btrfs_util_sync", path, [&] { return btrfs_util_sync(path.c_str()); }));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Result<void> btrfs_quota_ctl(const std::string& path, BtrfsQuotaCmd cmd) {
  auto fd = COWLAB_TRY(open(path, O_RDONLY | O_DIRECTORY));
  struct btrfs_ioctl_quota_ctl_args args {};
  args.cmd = cmd == BtrfsQuotaCmd::kEnable ? BTRFS_QUOTA_CTL_ENABLE : BTRFS_QUOTA_CTL_DISABLE;
  COWLAB_TRY(ioctl(fd.get(), BTRFS_IOC_QUOTA_CTL, &args,
                   std::string(cmd == BtrfsQuotaCmd::kEnable ? "BTRFS_QUOTA_CTL_ENABLE "
                                                             : "BTRFS_QUOTA_CTL_DISABLE ") +
                       path));
  return {};
}

Result<bool> btrfs_quota_enabled(const std::string& path) {
  std::string dir = COWLAB_TRY(btrfs_sysfs_dir(path));
  return path_exists(dir + "/qgroups");
}

Result<void> btrfs_qgroup_ctl(const std::string& path, BtrfsQgroupOp op, uint64_t qgroupid) {
  auto fd = COWLAB_TRY(open(path, O_RDONLY | O_DIRECTORY));
  struct btrfs_ioctl_qgroup_create_args args {};
  args.create = op == BtrfsQgroupOp::kCreate ? 1 : 0;
  args.qgroupid = qgroupid;
  std::string what = std::string(op == BtrfsQgroupOp::kCreate ? "BTRFS_IOC_QGROUP_CREATE "
                                                               : "BTRFS_IOC_QGROUP_CREATE(destroy) ") +
                     "0/" + std::to_string(qgroupid) + " " + path;
  COWLAB_TRY(ioctl(fd.get(), BTRFS_IOC_QGROUP_CREATE, &args, what));
  return {};
}

Result<void> btrfs_qgroup_limit(const std::string& subvolume, uint64_t max_rfer) {
  auto fd = COWLAB_TRY(open(subvolume, O_RDONLY | O_DIRECTORY));
  struct btrfs_ioctl_qgroup_limit_args args {};
  args.qgroupid = 0;  // 0: the qgroup of the subvolume `fd` is in (fs/btrfs/ioctl.c)
  args.lim.flags = BTRFS_QGROUP_LIMIT_MAX_RFER;
  args.lim.max_rfer = max_rfer;
  COWLAB_TRY(ioctl(fd.get(), BTRFS_IOC_QGROUP_LIMIT, &args,
                   "BTRFS_IOC_QGROUP_LIMIT max_rfer=" + std::to_string(max_rfer) + " " + subvolume));
  return {};
}

Result<bool> btrfs_qgroup_exists(const std::string& path, uint64_t id) {
  std::string dir = COWLAB_TRY(btrfs_sysfs_dir(path));
  return path_exists(dir + "/qgroups/0_" + std::to_string(id));
}

Result<void> btrfs_quota_rescan_wait(const std::string& path) {
  auto fd = COWLAB_TRY(open(path, O_RDONLY | O_DIRECTORY));
  COWLAB_TRY(ioctl(fd.get(), BTRFS_IOC_QUOTA_RESCAN_WAIT, nullptr, "BTRFS_IOC_QUOTA_RESCAN_WAIT " + path));
  return {};
}

Result<void> btrfs_quota_rescan(const std::string& path) {
  auto fd = COWLAB_TRY(open(path, O_RDONLY | O_DIRECTORY));
  struct btrfs_ioctl_quota_rescan_args args {};
  auto r = ioctl(fd.get(), BTRFS_IOC_QUOTA_RESCAN, &args, "BTRFS_IOC_QUOTA_RESCAN " + path);
  if (!r.ok() && r.error().err() != EINPROGRESS) return std::move(r).error();
  return {};
}

// ---- loop devices ----------------------------------------------------------------------------
namespace {

Result<Fd> open_loop_device(int index, const std::string& device) {
  auto fd = open(device, O_RDWR);
  if (fd.ok() || fd.error().err() != ENOENT) return fd;
  // No devtmpfs node yet (a minimal guest /dev): make one.  Loop devices are block major 7.
  auto made = mknodat(AT_FDCWD, device, S_IFBLK | 0600, makedev(7, index));
  if (!made.ok() && made.error().err() != EEXIST) return std::move(made).error();
  return open(device, O_RDWR);
}

}  // namespace

Result<LoopAttachment> loop_attach(const std::string& file, LoopFlags flags) {
  auto backing = COWLAB_TRY(open(file, O_RDWR));
  auto control = COWLAB_TRY(open("/dev/loop-control", O_RDWR));
  for (int attempt = 0; attempt < 64; ++attempt) {
    int index = COWLAB_TRY(ioctl(control.get(), LOOP_CTL_GET_FREE, nullptr, "LOOP_CTL_GET_FREE"));
    std::string device = "/dev/loop" + std::to_string(index);
    auto dev = COWLAB_TRY(open_loop_device(index, device));
    struct loop_config config {};
    config.fd = static_cast<__u32>(backing.get());
    std::snprintf(reinterpret_cast<char*>(config.info.lo_file_name), LO_NAME_SIZE, "%s", file.c_str());
    if (flags == LoopFlags::kAutoclear) config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    if (::ioctl(dev.get(), LOOP_CONFIGURE, &config) == 0) return LoopAttachment{device, std::move(dev)};
    // EBUSY: another process bound this device between GET_FREE and CONFIGURE; take the next.
    if (errno == EBUSY) continue;
    if (errno != EINVAL && errno != ENOTTY) return err("ioctl LOOP_CONFIGURE", device);
    // Linux < 5.8 has no LOOP_CONFIGURE: bind, then set the status.
    if (::ioctl(dev.get(), LOOP_SET_FD, backing.get()) != 0) {
      if (errno == EBUSY) continue;
      return err("ioctl LOOP_SET_FD", device);
    }
    if (::ioctl(dev.get(), LOOP_SET_STATUS64, &config.info) != 0) {
      int e = errno;
      (void)::ioctl(dev.get(), LOOP_CLR_FD, 0);
      return Error::from_errno("ioctl LOOP_SET_STATUS64", device, e);
    }
    return LoopAttachment{device, std::move(dev)};
  }
  return Error::from_errno("loop_attach", file + " (no free loop device after 64 attempts)", EBUSY);
}

Result<void> loop_detach(const std::string& device) {
  auto fd = open(device, O_RDONLY);
  if (!fd.ok()) {
    if (fd.error().err() == ENOENT || fd.error().err() == ENXIO) return {};
    return std::move(fd).error();
  }
  if (::ioctl(fd->get(), LOOP_CLR_FD, 0) != 0 && errno != ENXIO) return err("ioctl LOOP_CLR_FD", device);
  return {};
}

Result<std::vector<LoopDevice>> loop_devices() {
  std::vector<LoopDevice> out;
  auto entries = COWLAB_TRY(read_dir("/sys/block"));
  for (const auto& e : entries) {
    if (e.name.rfind("loop", 0) != 0) continue;
    std::string file = "/sys/block/" + e.name + "/loop/backing_file";
    auto text = read_file(file);
    if (!text.ok()) {
      // An unbound device has no loop/ directory (or an empty backing_file).
      if (text.error().err() == ENOENT || text.error().err() == ENXIO) continue;
      return std::move(text).error();
    }
    std::string backing = *text;
    while (!backing.empty() && backing.back() == '\n') backing.pop_back();
    if (backing.empty()) continue;
    out.push_back({"/dev/" + e.name, backing});
  }
  return out;
}

}  // namespace cowlab::sys

// ---- zfs driver: libzfs_core through dlopen ---------------------------------------------------
// (Includes kept beside the only code that needs them.)
#include <dlfcn.h>

#include <mutex>

#include "zfs/lzc_abi.h"

namespace cowlab::sys {

namespace {

struct ZfsCore {
  std::string library;  // path of the loaded libzfs_core
  lzc_abi::lzc_create_fn create = nullptr;
  lzc_abi::lzc_clone_fn clone = nullptr;
  lzc_abi::lzc_snapshot_fn snapshot = nullptr;
  lzc_abi::lzc_destroy_snaps_fn destroy_snaps = nullptr;
  lzc_abi::lzc_destroy_fn destroy = nullptr;
  lzc_abi::lzc_exists_fn exists = nullptr;
  lzc_abi::lzc_rename_fn rename = nullptr;
  lzc_abi::nvlist_alloc_fn nv_alloc = nullptr;
  lzc_abi::nvlist_free_fn nv_free = nullptr;
  lzc_abi::nvlist_add_boolean_fn nv_add_boolean = nullptr;
  lzc_abi::nvlist_add_string_fn nv_add_string = nullptr;
  lzc_abi::nvlist_add_uint64_fn nv_add_uint64 = nullptr;
};

// Loaded once per process; the handles stay open for the process's lifetime.
Result<const ZfsCore*> zfs_core() {
  static std::once_flag once;
  static ZfsCore core;
  static std::optional<Error> failure;
  std::call_once(once, [] {
    auto fail = [](std::string why) {
      failure = Error::not_supported("libzfs_core unavailable: " + why);
    };
    void* nv = ::dlopen("libnvpair.so.3", RTLD_NOW | RTLD_GLOBAL);
    if (!nv) return fail(std::string("dlopen libnvpair.so.3: ") + ::dlerror());
    void* lzc = ::dlopen("libzfs_core.so.3", RTLD_NOW | RTLD_GLOBAL);
    if (!lzc) return fail(std::string("dlopen libzfs_core.so.3: ") + ::dlerror());
    std::string missing;
    auto sym = [&](void* lib, const char* name) -> void* {
      ::dlerror();
      void* p = ::dlsym(lib, name);
      if (!p) missing += std::string(missing.empty() ? "" : ", ") + name;
      return p;
    };
    auto init = reinterpret_cast<lzc_abi::libzfs_core_init_fn>(sym(lzc, "libzfs_core_init"));
    core.create = reinterpret_cast<lzc_abi::lzc_create_fn>(sym(lzc, "lzc_create"));
    core.clone = reinterpret_cast<lzc_abi::lzc_clone_fn>(sym(lzc, "lzc_clone"));
    core.snapshot = reinterpret_cast<lzc_abi::lzc_snapshot_fn>(sym(lzc, "lzc_snapshot"));
    core.destroy_snaps = reinterpret_cast<lzc_abi::lzc_destroy_snaps_fn>(sym(lzc, "lzc_destroy_snaps"));
    core.destroy = reinterpret_cast<lzc_abi::lzc_destroy_fn>(sym(lzc, "lzc_destroy"));
    core.exists = reinterpret_cast<lzc_abi::lzc_exists_fn>(sym(lzc, "lzc_exists"));
    core.rename = reinterpret_cast<lzc_abi::lzc_rename_fn>(sym(lzc, "lzc_rename"));
    core.nv_alloc = reinterpret_cast<lzc_abi::nvlist_alloc_fn>(sym(nv, "nvlist_alloc"));
    core.nv_free = reinterpret_cast<lzc_abi::nvlist_free_fn>(sym(nv, "nvlist_free"));
    core.nv_add_boolean = reinterpret_cast<lzc_abi::nvlist_add_boolean_fn>(sym(nv, "nvlist_add_boolean"));
    core.nv_add_string = reinterpret_cast<lzc_abi::nvlist_add_string_fn>(sym(nv, "nvlist_add_string"));
    core.nv_add_uint64 = reinterpret_cast<lzc_abi::nvlist_add_uint64_fn>(sym(nv, "nvlist_add_uint64"));
    if (!missing.empty()) return fail("libzfs_core.so.3/libnvpair.so.3 lack " + missing);
    char path[4096] = "libzfs_core.so.3";
    if (::dlinfo(lzc, RTLD_DI_ORIGIN, path) == 0) std::strncat(path, "/libzfs_core.so.3", sizeof path - std::strlen(path) - 1);
    core.library = path;
    // Opens /dev/zfs; ENOENT when the module is not loaded.
    int e = init();
    if (e != 0) {
      failure = Error(ErrorKind::kNotSupported,
                      "libzfs_core_init (" + core.library + "): " + std::string(errno_name(e)) + " (" +
                          std::strerror(e) + ")",
                      e);
    }
  });
  if (failure) return *failure;
  return &core;
}

// An nvlist freed on scope exit.
class NvList {
 public:
  explicit NvList(const ZfsCore* core) : core_(core) {}
  ~NvList() {
    if (nvl_) core_->nv_free(nvl_);
  }
  NvList(const NvList&) = delete;
  NvList& operator=(const NvList&) = delete;
  Result<void> alloc(std::string_view what) {
    int e = core_->nv_alloc(&nvl_, lzc_abi::kNvUniqueName, 0);
    if (e != 0) return Error::from_errno("nvlist_alloc", what, e);
    return {};
  }
  Result<void> add(const ZfsProperty& p) {
    int e = std::holds_alternative<uint64_t>(p.value)
                ? core_->nv_add_uint64(nvl_, p.name.c_str(), std::get<uint64_t>(p.value))
                : core_->nv_add_string(nvl_, p.name.c_str(), std::get<std::string>(p.value).c_str());
    if (e != 0) return Error::from_errno("nvlist_add", p.name, e);
    return {};
  }
  Result<void> add_boolean(const std::string& name) {
    int e = core_->nv_add_boolean(nvl_, name.c_str());
    if (e != 0) return Error::from_errno("nvlist_add_boolean", name, e);
    return {};
  }
  lzc_abi::nvlist_t* get() const { return nvl_; }
  // Receives an errlist an lzc call allocates.
  lzc_abi::nvlist_t** out() { return &nvl_; }

 private:
  const ZfsCore* core_;
  lzc_abi::nvlist_t* nvl_ = nullptr;
};

Result<void> props_list(const ZfsCore* core, NvList& nvl, const std::vector<ZfsProperty>& props,
                        const std::string& dataset) {
  COWLAB_TRY(nvl.alloc(dataset));
  for (const auto& p : props) COWLAB_TRY(nvl.add(p));
  return {};
}

}  // namespace

Result<std::string> zfs_core_load() {
  auto core = COWLAB_TRY(zfs_core());
  return core->library;
}

Result<void> zfs_create(const std::string& dataset, const std::vector<ZfsProperty>& props) {
  auto core = COWLAB_TRY(zfs_core());
  NvList nvl(core);
  COWLAB_TRY(props_list(core, nvl, props, dataset));
  int e = core->create(dataset.c_str(), lzc_abi::kDatasetTypeZfs, nvl.get(), nullptr, 0);
  if (e != 0) return Error::from_errno("lzc_create", dataset, e);
  return {};
}

Result<void> zfs_snapshot(const std::string& snapshot) {
  auto core = COWLAB_TRY(zfs_core());
  NvList snaps(core);
  COWLAB_TRY(snaps.alloc(snapshot));
  COWLAB_TRY(snaps.add_boolean(snapshot));
  NvList errors(core);
  int e = core->snapshot(snaps.get(), nullptr, errors.out());
  if (e != 0) return Error::from_errno("lzc_snapshot", snapshot, e);
  return {};
}

Result<void> zfs_clone(const std::string& dataset, const std::string& origin,
                       const std::vector<ZfsProperty>& props) {
  auto core = COWLAB_TRY(zfs_core());
  NvList nvl(core);
  COWLAB_TRY(props_list(core, nvl, props, dataset));
  int e = core->clone(dataset.c_str(), origin.c_str(), nvl.get());
  if (e != 0) return Error::from_errno("lzc_clone", dataset + " (origin " + origin + ")", e);
  return {};
}

Result<void> zfs_destroy(const std::string& dataset) {
  auto core = COWLAB_TRY(zfs_core());
  int e = core->destroy(dataset.c_str());
  if (e != 0) return Error::from_errno("lzc_destroy", dataset, e);
  return {};
}

Result<void> zfs_destroy_snapshot(const std::string& snapshot, ZfsSnapshotDestroy when) {
  auto core = COWLAB_TRY(zfs_core());
  NvList snaps(core);
  COWLAB_TRY(snaps.alloc(snapshot));
  COWLAB_TRY(snaps.add_boolean(snapshot));
  NvList errors(core);
  int e = core->destroy_snaps(snaps.get(), when == ZfsSnapshotDestroy::kDeferred ? lzc_abi::kTrue : lzc_abi::kFalse,
                              errors.out());
  if (e != 0)
    return Error::from_errno(when == ZfsSnapshotDestroy::kDeferred ? "lzc_destroy_snaps (deferred)" : "lzc_destroy_snaps",
                             snapshot, e);
  return {};
}

Result<bool> zfs_exists(const std::string& dataset) {
  auto core = COWLAB_TRY(zfs_core());
  return core->exists(dataset.c_str()) != lzc_abi::kFalse;
}

Result<void> zfs_rename(const std::string& from, const std::string& to) {
  auto core = COWLAB_TRY(zfs_core());
  int e = core->rename(from.c_str(), to.c_str());
  if (e != 0) return Error::from_errno("lzc_rename", from + " -> " + to, e);
  return {};
}

}  // namespace cowlab::sys

// ---- layer applier -------------------------------------------------------------------------
namespace cowlab::sys {

Result<void> pwrite_all(int fd, const void* buf, size_t len, off_t off) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, len, off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::from_errno("pwrite", "fd " + std::to_string(fd), errno);
    }
    p += n;
    off += n;
    len -= static_cast<size_t>(n);
  }
  return {};
}

}  // namespace cowlab::sys
