// Mount namespaces, the part of the system seam a single process uses for itself.  Same
// conventions as sys.h.  (A holder of a namespace for others is sys::spawn_mount_holder in
// sys_process.h.)
#pragma once

#include "cowlab/result.h"

namespace cowlab::sys {

// Moves this process into a mount namespace of its own (unshare(CLONE_NEWNS)) from which no
// mount propagates (MS_REC|MS_PRIVATE on /): a mount it makes afterwards is seen by this
// process alone and goes away with it, however it ends.  It keeps a copy of every mount that
// exists now for as long as it runs (moby#16112).  EINVAL while other threads of the process
// run (they share its filesystem context, unshare(2)).  Errors name the syscall.
Result<void> enter_private_mount_namespace();

}  // namespace cowlab::sys
