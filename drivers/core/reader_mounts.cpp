#include "core/reader_mounts.h"

#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "cowlab/sys.h"
#include "cowlab/sys_namespace.h"

namespace cowlab {

ReaderMountPoints::ReaderMountPoints(std::string readers_dir, std::string hidden_dir)
    : readers_dir_(std::move(readers_dir)), hidden_dir_(std::move(hidden_dir)) {}

Result<std::string> ReaderMountPoints::make(const std::string& id) {
  unsigned char r[8];
  COWLAB_TRY(sys::random_bytes(r, sizeof r));
  std::string name = id + "." + std::to_string(::getpid()) + ".";
  for (unsigned char c : r) {
    name += "0123456789abcdef"[c >> 4];
    name += "0123456789abcdef"[c & 15];
  }
  if (namespace_ == Namespace::kHost) {
    const std::string dir = readers_dir_ + "/" + name;
    auto made = sys::mkdir_all(readers_dir_, 0700);
    if (made.ok()) made = sys::mkdir(dir, 0700);
    if (made.ok()) return dir;
    if (made.error().err() != EROFS) return std::move(made).error();
    // A read-only store has no room for a registered mount point, and needs none: a mount in
    // a private namespace of this process is seen by nobody else and ends with the process
    // (the kernel tears the namespace down with its last member), so no writer has anything
    // to sweep.  New mounts in a namespace made by unshare(CLONE_NEWNS) would still propagate
    // back through shared peers; sys::enter_private_mount_namespace makes / rprivate first
    // (Documentation/filesystems/sharedsubtree.rst).  The price: for its life the namespace
    // holds a copy of every mount that existed when it was made (moby#16112); removing a
    // mount point detaches such copies (Linux >= 3.18).
    const std::string ctx = "a reader of a read-only store (" + made.error().message() + ")";
    COWLAB_TRY_CTX(sys::enter_private_mount_namespace(), ctx);
    namespace_ = Namespace::kPrivate;
    COWLAB_TRY_CTX(sys::mount("cowlab-reader", hidden_dir_, "tmpfs",
                              MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700,size=1m"),
                   ctx);
  }
  const std::string dir = hidden_dir_ + "/" + name;
  COWLAB_TRY(sys::mkdir(dir, 0700));
  return dir;
}

Result<size_t> sweep_reader_mount_points(const std::string& readers_dir) {
  const std::string ctx = "readers' mounts left in " + readers_dir;
  if (!COWLAB_TRY_CTX(sys::lstat_if_exists(readers_dir), ctx)) return size_t{0};
  auto entries = COWLAB_TRY_CTX(sys::read_dir(readers_dir), ctx);
  for (const auto& e : entries) {
    const std::string path = readers_dir + "/" + e.name;
    for (int i = 0; i < 8; ++i) {  // stacked mounts
      auto m = COWLAB_TRY_CTX(sys::is_mountpoint(path), ctx);
      if (!m) break;
      COWLAB_TRY_CTX(sys::umount2(path, MNT_DETACH), ctx);
    }
    (void)sys::rmdir(path);
  }
  return entries.size();
}

}  // namespace cowlab
