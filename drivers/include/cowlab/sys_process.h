// The process part of the system seam: forked workers with timeouts, and mount-namespace
// holders.  Same conventions as sys.h.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>

#include "cowlab/result.h"
#include "cowlab/sys.h"

namespace cowlab::sys {

// A forked child and the read end of a pipe its body writes to.
struct Child {
  pid_t pid = -1;
  Fd out;
};

// Forks; the child runs `body(write_fd)` and exits with its return value (it never returns
// into the caller's code).  The child gets its own process group so a timeout kills it and
// anything it started.
Result<Child> fork_child(const std::function<int(int out_fd)>& body);

// Waits for the child up to `timeout_ms` (-1: no limit), draining its pipe into `output`.
// Returns its exit status (128+signal when killed by a signal), or std::nullopt on timeout,
// in which case the child's process group has been SIGKILLed and reaped.
Result<std::optional<int>> wait_child(Child& child, int timeout_ms, std::string* output);

// Forks a child that unshares its mount namespace (taking a private copy of every mount,
// as runc init or a systemd unit with PrivateTmp does) and then sleeps until killed.
// Mounts visible now stay referenced in that namespace: the situation of moby#16112 and
// moby#27381.  Returns once the child's namespace exists.
Result<pid_t> spawn_mount_holder();

// SIGKILLs and reaps a child started by spawn_mount_holder.
Result<void> kill_child(pid_t pid);

}  // namespace cowlab::sys
