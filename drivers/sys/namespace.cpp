// Mount namespaces (sys_namespace.h).
#include <sched.h>
#include <sys/mount.h>

#include <cerrno>

#include "cowlab/sys_namespace.h"

namespace cowlab::sys {

Result<void> enter_private_mount_namespace() {
  if (::unshare(CLONE_NEWNS) != 0) return Error::from_errno("unshare", "CLONE_NEWNS", errno);
  // A new namespace copies the propagation of its parent's mounts (shared, on systemd hosts);
  // making them private is what keeps this process's mounts out of the parent's namespace
  // (Documentation/filesystems/sharedsubtree.rst).
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return Error::from_errno("mount --make-rprivate", "/ (in a new mount namespace)", errno);
  return {};
}

}  // namespace cowlab::sys
