// The system seam: the only place cowlab calls the kernel.
//
// Every wrapper returns Result<T>; a failure is an Error of kind kSystem whose message names
// the call, the path and the errno ("mknodat a/.wh.b: EEXIST (File exists)").  Paths in
// messages are the caller's view of the path (relative to a dirfd where one is used).
// Wrappers retry EINTR.  Nothing here follows a caller's policy: security checks
// (RESOLVE_IN_ROOT, no-follow) are requested explicitly by the caller through flags.
#pragma once

#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::sys {

// An owned file descriptor; closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { int f = fd_; fd_ = -1; return f; }
  void reset();

 private:
  int fd_ = -1;
};

inline constexpr int kCwd = -100;  // AT_FDCWD

// ---- opening ---------------------------------------------------------------------------------
Result<Fd> open(const std::string& path, int flags, mode_t mode = 0);
Result<Fd> openat(int dirfd, const std::string& path, int flags, mode_t mode = 0);

// openat2(2) resolve flags (subset of RESOLVE_*).
enum ResolveFlags : uint64_t {
  kResolveNone = 0,
  kResolveNoXdev = 0x01,
  kResolveNoMagiclinks = 0x02,
  kResolveNoSymlinks = 0x04,
  kResolveBeneath = 0x08,
  kResolveInRoot = 0x10,
};
// openat2(2): open `path` relative to `dirfd` with the given resolve restrictions.  With
// kResolveInRoot, symlinks and ".." are resolved as if dirfd were "/", so the result is always
// inside dirfd (Linux >= 5.6).
Result<Fd> openat2(int dirfd, const std::string& path, int flags, mode_t mode, uint64_t resolve);

// ---- metadata -------------------------------------------------------------------------------
Result<struct stat> stat(const std::string& path);
Result<struct stat> lstat(const std::string& path);
Result<struct stat> fstat(int fd);
Result<struct stat> fstatat(int dirfd, const std::string& path, int flags);
// Like lstat but ENOENT yields std::nullopt instead of an error.
Result<std::optional<struct stat>> lstat_if_exists(const std::string& path);
Result<std::optional<struct stat>> fstatat_if_exists(int dirfd, const std::string& path, int flags);
Result<struct statfs> statfs(const std::string& path);
Result<struct statfs> fstatfs(int fd);

Result<void> fchmodat(int dirfd, const std::string& path, mode_t mode, int flags = 0);
Result<void> fchmod(int fd, mode_t mode);
Result<void> fchownat(int dirfd, const std::string& path, uid_t uid, gid_t gid, int flags);
Result<void> fchown(int fd, uid_t uid, gid_t gid);
Result<void> utimensat(int dirfd, const std::string& path, const struct timespec times[2], int flags);
Result<void> futimens(int fd, const struct timespec times[2]);

// ---- namespace operations -------------------------------------------------------------------
Result<void> mkdir(const std::string& path, mode_t mode);
Result<void> mkdirat(int dirfd, const std::string& path, mode_t mode);
// mkdir -p; existing directories are fine.  Created directories get `mode`.
Result<void> mkdir_all(const std::string& path, mode_t mode);
// mkdtemp(3): a new directory `<dir>/<prefix>XXXXXX` (mode 0700); returns its path.
Result<std::string> make_temp_dir(const std::string& dir, const std::string& prefix);
Result<void> mknodat(int dirfd, const std::string& path, mode_t mode, dev_t dev);
Result<void> symlinkat(const std::string& target, int dirfd, const std::string& path);
Result<void> linkat(int olddirfd, const std::string& oldpath, int newdirfd,
                    const std::string& newpath, int flags);
Result<void> unlinkat(int dirfd, const std::string& path, int flags);
Result<void> renameat(int olddirfd, const std::string& oldpath, int newdirfd,
                      const std::string& newpath, unsigned flags = 0);
Result<void> rename(const std::string& oldpath, const std::string& newpath);
Result<std::string> readlinkat(int dirfd, const std::string& path);
Result<std::string> readlink(const std::string& path);
Result<void> rmdir(const std::string& path);
Result<void> unlink(const std::string& path);
// rm -rf without crossing mount points: a mount found inside is an error (EBUSY), never
// traversed.  A missing path is success.
Result<void> remove_all(const std::string& path);
// rm -rf of everything under dirfd's directory (the directory itself stays).
Result<void> remove_all_at(int dirfd, const std::string& name);

// Directory entries of `dirfd` (excluding "." and ".."), in readdir order.
struct DirEntry {
  std::string name;
  unsigned char type;  // DT_*; DT_UNKNOWN possible on filesystems without d_type
  ino_t ino;
};
Result<std::vector<DirEntry>> read_dir(int dirfd);
Result<std::vector<DirEntry>> read_dir(const std::string& path);

// ---- data ------------------------------------------------------------------------------------
Result<size_t> read(int fd, void* buf, size_t len);
Result<void> write_all(int fd, const void* buf, size_t len);
Result<size_t> pread(int fd, void* buf, size_t len, off_t off);
Result<void> fsync(int fd);
// syncfs(2): writes back every dirty page and inode of the filesystem holding `fd`.
Result<void> syncfs(int fd);
// Bytes of the regular file open as `fd` that are in the page cache now: mincore(2) over a
// read-only shared mapping of the whole file (nothing is read; `path` only names it in
// errors).  0 for an empty file or anything but a regular file.  mincore reports page-cache
// pages only to a caller that owns the file or may write it (Linux 5.2, "mm/mincore.c: make
// mincore() more conservative"); everything else reads as not cached.  On a union filesystem
// (overlay, aufs) the mapping is the branch file's, so its pages are the branch file's.
Result<uint64_t> resident_bytes(int fd, const std::string& path);
// fsync of a directory: makes renames and unlinks in it durable.
Result<void> fsync_dir(const std::string& path);
Result<void> ftruncate(int fd, off_t len);
Result<void> fallocate(int fd, int mode, off_t off, off_t len);
Result<std::string> read_file(const std::string& path);
// Writes `content` to `path` atomically: temp file in the same directory
// (atomic_write_temp_path), fsync, rename, fsync of the directory.  A crash can leave the
// temp file behind, empty or cut short; whoever owns the directory removes such files at
// recovery (is_atomic_write_temp_name) and never reads them as data.
Result<void> write_file_atomic(const std::string& path, std::string_view content, mode_t mode = 0644);
// A fresh temp path for `path`: "<path>.tmp-<pid>-<random>".
std::string atomic_write_temp_path(const std::string& path);
// Whether a directory entry's name is such a temp file (ends in ".tmp-<digits>-<digits>").
bool is_atomic_write_temp_name(std::string_view name);

// Clones the whole of src into dst (FICLONE).  ENOTSUP/EXDEV/EINVAL mean "no reflink here".
Result<void> ficlone(int dst_fd, int src_fd);
// copy_file_range(2) loop copying `len` bytes; falls back to read/write where the kernel
// refuses (EXDEV, ENOSYS, EINVAL).
Result<void> copy_file_data(int dst_fd, int src_fd, uint64_t len);
// Like copy_file_data into an empty dst, but copies only src's data segments (SEEK_DATA /
// SEEK_HOLE) and sets dst's size to `len`, so holes stay holes (`cp --sparse=auto`).  Where
// the filesystem cannot report holes it copies everything.
Result<void> copy_file_sparse(int dst_fd, int src_fd, uint64_t len);

// ---- extended attributes -------------------------------------------------------------------
Result<std::vector<std::string>> llistxattr(const std::string& path);
Result<std::vector<std::string>> flistxattr(int fd);
// std::nullopt when the attribute does not exist (ENODATA).
Result<std::optional<std::string>> lgetxattr(const std::string& path, const std::string& name);
Result<std::optional<std::string>> fgetxattr(int fd, const std::string& name);
Result<void> lsetxattr(const std::string& path, const std::string& name, std::string_view value,
                       int flags = 0);
Result<void> fsetxattr(int fd, const std::string& name, std::string_view value, int flags = 0);
Result<void> lremovexattr(const std::string& path, const std::string& name);
Result<void> fremovexattr(int fd, const std::string& name);

// ---- mounts ----------------------------------------------------------------------------------
Result<void> mount(const std::string& source, const std::string& target, const std::string& fstype,
                   unsigned long flags, const std::string& data);
Result<void> umount2(const std::string& target, int flags);
// New mount API (Linux >= 5.2).
Result<Fd> fsopen(const std::string& fstype, unsigned flags);
// fsconfig(FSCONFIG_SET_STRING / SET_FLAG / CMD_CREATE).  `value` nullopt = SET_FLAG.
Result<void> fsconfig_string(int fsfd, const std::string& key, const std::string& value);
Result<void> fsconfig_flag(int fsfd, const std::string& key);
Result<void> fsconfig_create(int fsfd);
Result<Fd> fsmount(int fsfd, unsigned flags, unsigned attr_flags);
Result<void> move_mount_to(int from_fd, const std::string& to_path);
// Reads the kernel's log lines that fsconfig left on an fs context fd (for error messages).
std::string fs_context_log(int fsfd);

// True if `path` is a mount point in this mount namespace (per /proc/self/mountinfo).
Result<bool> is_mountpoint(const std::string& path);
struct MountInfo {
  std::string mount_point;
  std::string fstype;
  std::string source;
  std::string options;        // per-mount options
  std::string super_options;  // per-superblock options
  unsigned major = 0, minor = 0;
};
Result<std::vector<MountInfo>> mountinfo(const std::string& file = "/proc/self/mountinfo");

// ---- misc ------------------------------------------------------------------------------------
Result<int> ioctl(int fd, unsigned long request, void* arg, std::string_view what);
// flock(2) on an open file; `exclusive` vs shared; blocking.
Result<void> flock(int fd, int op);
// Processes holding an flock(2) on the file `fd` refers to, per /proc/locks (matched by
// inode; the device numbers /proc/locks prints are the superblock's, which btrfs subvolumes
// do not report through stat).  Each entry is "PID (COMMAND)"; COMMAND from
// /proc/PID/cmdline, shortened.
Result<std::vector<std::string>> flock_holders(int fd);
long page_size();
struct KernelVersion {
  int major = 0, minor = 0, patch = 0;
  std::string release;  // uname -r
  bool at_least(int ma, int mi) const { return major > ma || (major == ma && minor >= mi); }
};
KernelVersion kernel_version();
// Looks for a filesystem in /proc/filesystems.
Result<bool> filesystem_supported(const std::string& fstype);
// Programs (run, Subprocess) and forked workers: cowlab/sys_process.h.

// ---- overlay and vfs drivers ---------------------------------------------------------------
// mount(2) performed by a short-lived child process whose working directory is `dir`, so
// relative paths in `data` resolve against `dir` while the caller's cwd (shared by all its
// threads) is untouched.  Docker re-executes itself as `docker-mountfrom` for the same
// reason: overlay mount data must fit in one page, and relative short-link paths are what
// makes a deep stack fit.  The error names "mount -t <fstype>", the target and the errno the
// child saw (or "chdir <dir>" when the directory change failed).
Result<void> mount_in_dir(const std::string& dir, const std::string& source, const std::string& target,
                          const std::string& fstype, unsigned long flags, const std::string& data);
// True when this process runs in the initial user namespace (/proc/self/uid_map maps the
// whole 32-bit range onto itself).  A missing uid_map (kernel without user namespaces) counts
// as initial.
Result<bool> in_initial_user_namespace();
// Fills `buf` from getrandom(2) (blocking until the pool is initialised).
Result<void> random_bytes(void* buf, size_t len);
// quotactl(2) on the block device `special` (e.g. QCMD(Q_XSETQLIM, PRJQUOTA) for xfs project
// quotas).  The error names "quotactl <special>" and the id.
Result<void> quotactl(int cmd, const std::string& special, int id, void* addr);

// ---- btrfs driver ----------------------------------------------------------------------------
// Subvolumes through libbtrfsutil; quota and qgroups through the btrfs ioctls
// (linux/btrfs.h), which libbtrfsutil does not cover.  A libbtrfsutil failure is a kSystem
// error naming the library call, the path, the library's text and the errno it left.
Result<void> btrfs_create_subvolume(const std::string& path);
// A writable snapshot of the subvolume `source` at `path`.
Result<void> btrfs_create_snapshot(const std::string& source, const std::string& path);
// Deletes one subvolume; one that still holds nested subvolumes fails (ENOTEMPTY).
Result<void> btrfs_delete_subvolume(const std::string& path);
Result<bool> btrfs_is_subvolume(const std::string& path);
// Id of the subvolume containing `path` (its level-0 qgroup is 0/<id>).
Result<uint64_t> btrfs_subvolume_id(const std::string& path);
struct BtrfsSubvolume {
  std::string path;  // relative to the subvolume that was listed
  uint64_t id = 0;
};
// Subvolumes nested anywhere below the subvolume at `path`, deepest first (post-order), so
// deleting them in order always deletes children before their parents.
Result<std::vector<BtrfsSubvolume>> btrfs_nested_subvolumes(const std::string& path);
// Waits until the deleted subvolume `id` of the filesystem holding `path` has been cleaned
// up by the kernel (what `btrfs subvolume sync` waits for), forcing commits meanwhile.
// kTimeout after `timeout_ms`.
Result<void> btrfs_wait_subvolume_cleaned(const std::string& path, uint64_t id, int timeout_ms);
// BTRFS_IOC_QUOTA_CTL on the filesystem holding `path`.
enum class BtrfsQuotaCmd { kEnable, kDisable };
Result<void> btrfs_quota_ctl(const std::string& path, BtrfsQuotaCmd cmd);
// Whether quota is enabled on the filesystem holding `path`
// (/sys/fs/btrfs/<fsid>/qgroups exists, Linux >= 5.9).
Result<bool> btrfs_quota_enabled(const std::string& path);
// BTRFS_IOC_QGROUP_CREATE: creates or destroys qgroup `qgroupid` (level 0: the subvolume id).
enum class BtrfsQgroupOp { kCreate, kDestroy };
Result<void> btrfs_qgroup_ctl(const std::string& path, BtrfsQgroupOp op, uint64_t qgroupid);
// BTRFS_IOC_QGROUP_LIMIT: sets max_rfer of the level-0 qgroup of the subvolume at `subvolume`.
Result<void> btrfs_qgroup_limit(const std::string& subvolume, uint64_t max_rfer);
// Whether level-0 qgroup 0/<id> exists (/sys/fs/btrfs/<fsid>/qgroups/0_<id>).
Result<bool> btrfs_qgroup_exists(const std::string& path, uint64_t id);
// BTRFS_IOC_QUOTA_RESCAN_WAIT: waits for a running quota rescan to finish.
Result<void> btrfs_quota_rescan_wait(const std::string& path);
// BTRFS_IOC_QUOTA_RESCAN: starts a quota rescan (a running one, EINPROGRESS, is success).
Result<void> btrfs_quota_rescan(const std::string& path);

// ---- loop devices ----------------------------------------------------------------------------
// Attaches `file` to a free loop device (LOOP_CTL_GET_FREE, then LOOP_CONFIGURE on Linux >= 5.8
// or LOOP_SET_FD + LOOP_SET_STATUS64 before; a device another process grabbed in between is
// skipped).  kAutoclear makes the kernel detach the device when its last user goes away: the
// returned fd is such a user, so keep it open until the device is in use (mounted), then drop it.
enum class LoopFlags { kNone, kAutoclear };
struct LoopAttachment {
  std::string device;  // "/dev/loop3"
  Fd fd;               // the device, open read-write
};
Result<LoopAttachment> loop_attach(const std::string& file, LoopFlags flags);
// LOOP_CLR_FD.  A device that is already unbound (ENXIO) is success.
Result<void> loop_detach(const std::string& device);
struct LoopDevice {
  std::string device;        // "/dev/loop3"
  std::string backing_file;  // as the kernel reports it (may end in " (deleted)")
};
// Bound loop devices per /sys/block/loop*/loop/backing_file.
Result<std::vector<LoopDevice>> loop_devices();

}  // namespace cowlab::sys

// ---- zfs driver ------------------------------------------------------------------------------
// libzfs_core (lzc_*) and libnvpair, loaded with dlopen() on first use instead of linked: guests
// run the OpenZFS 2.0, 2.1 and 2.3 userlands of their kernel profiles while the cowlab binary is
// built once, on the host.  Only libzfs_core.so.3 and libnvpair.so.3 are accepted — the sonames
// ZFS 2.0.3 (bullseye), 2.1.11 (bookworm) and 2.3.2 (bookworm-backports) all ship with the
// same lzc_create/clone/snapshot/destroy/destroy_snaps/exists/rename signatures; ZFS 0.7/0.8
// used other sonames, and 0.7's lzc_create took different arguments under the same name.
// Every lzc_* error is a kSystem error naming the call, the dataset and the errno it returned
// (ZFS's own codes >= 1024 show as E<number>).
#include <variant>

namespace cowlab::sys {

// Loads both libraries and runs libzfs_core_init() (which opens /dev/zfs) once per process;
// later calls return the cached outcome.  Returns the path of the loaded libzfs_core.  Failure
// is kNotSupported naming each library tried and dlerror()'s text, or libzfs_core_init's errno.
Result<std::string> zfs_core_load();

// A property set when a dataset is created or cloned ("mountpoint"="legacy", "quota"=bytes).
struct ZfsProperty {
  std::string name;
  std::variant<std::string, uint64_t> value;
};
// lzc_create(dataset, LZC_DATSET_TYPE_ZFS, props): a filesystem; nothing is mounted.
Result<void> zfs_create(const std::string& dataset, const std::vector<ZfsProperty>& props);
// lzc_snapshot of one snapshot ("pool/fs@name").
Result<void> zfs_snapshot(const std::string& snapshot);
// lzc_clone(dataset, origin snapshot, props); nothing is mounted.  If setting a property fails
// the kernel destroys the new clone again.
Result<void> zfs_clone(const std::string& dataset, const std::string& origin,
                       const std::vector<ZfsProperty>& props);
// lzc_destroy of a filesystem (it must have no snapshots or children; EBUSY while mounted
// anywhere, in any mount namespace).
Result<void> zfs_destroy(const std::string& dataset);
// lzc_destroy_snaps of one snapshot.  kDeferred marks a snapshot that still has clones for
// destruction when its last clone goes (`zfs destroy -d`).
enum class ZfsSnapshotDestroy { kNow, kDeferred };
Result<void> zfs_destroy_snapshot(const std::string& snapshot, ZfsSnapshotDestroy when);
// lzc_exists.
Result<bool> zfs_exists(const std::string& dataset);
// lzc_rename (filesystems; a mounted dataset keeps its mount).
Result<void> zfs_rename(const std::string& from, const std::string& to);

}  // namespace cowlab::sys

// ---- layer applier -------------------------------------------------------------------------
namespace cowlab::sys {

// pwrite(2) until all of `len` bytes are written at `off` (the layer applier writes sparse tar
// entries block by block at their offsets, leaving holes).
Result<void> pwrite_all(int fd, const void* buf, size_t len, off_t off);

}  // namespace cowlab::sys
