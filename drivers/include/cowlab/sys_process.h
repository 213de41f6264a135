// The process part of the system seam.  Same conventions as sys.h.
//
// Two things, and one way each (tests/lint/one_way.py fails the build's tests otherwise):
//
//  * Programs.  Every other program cowlab starts — mkfs, modprobe, zfs, git, make, QEMU, the
//    image recipes — is started by `run` (to completion, output captured) or `Subprocess`
//    (long-running, output to a file), both on Boost.Process and confined to spawn.cpp.
//    Errors name the command and the cause ("run mkfs.xfs: not found in PATH").
//
//  * Forked workers.  `fork_child` forks WITHOUT exec to run C++ code of this binary in a
//    child: a scenario run under a timeout (its process group is killed on timeout), a holder
//    of a private mount namespace, a mount(2) from another working directory, tests that kill
//    or drop capabilities in a child.  That is not starting a program, so Boost.Process has
//    nothing to offer for it; it is the only fork in the code (fork.cpp).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cowlab/result.h"
#include "cowlab/sys.h"

namespace cowlab::sys {

// ---- programs (spawn.cpp, Boost.Process) ------------------------------------------------------

// Runs a program (argv[0] looked up in PATH unless it contains a '/'), stdin /dev/null, waits,
// returns its exit status (128+signal when killed by one); stdout and stderr are captured into
// `out` (combined) when non-null.  Never a shell.  Errors: empty argv (kInvalid), argv[0] not
// in PATH (kNotFound, "run NAME: not found in PATH"), the program could not be started
// ("run NAME: <cause>").  The child inherits the caller's process group, so Ctrl-C reaches it.
Result<int> run(const std::vector<std::string>& argv, std::string* out = nullptr);

enum class StdioMode { kFile, kInherit, kNull };
// kOwn: the child leads a process group of its own, which everything it starts joins unless it
// leaves it (setsid, setpgid): terminal Ctrl-C does not reach them, and terminate()/kill()
// signal the whole group.  kInherit: the child shares ours (an interactive QEMU that must get
// the terminal's signals); only the child itself is signalled.
enum class ProcessGroup { kOwn, kInherit };

struct SpawnOptions {
  std::vector<std::string> argv;                         // argv[0] is looked up in PATH
  std::vector<std::pair<std::string, std::string>> env;  // added to / overriding ours
  StdioMode stdin_mode = StdioMode::kNull;
  StdioMode output_mode = StdioMode::kFile;  // stdout and stderr together
  std::filesystem::path output_file;         // for kFile (created/truncated)
  ProcessGroup group = ProcessGroup::kOwn;
};

// A running program and, with ProcessGroup::kOwn (the default), everything it started: a
// script's children and grandchildren (a recipe's mmdebstrap, make's compilers) are stopped
// with it, so stopping a build leaves no process behind that could still write into a
// directory the caller is about to remove.  The child is killed when this process dies
// (PR_SET_PDEATHSIG; that reaches the child only) and is always reaped; a Subprocess that goes
// out of scope kills its child and what is left of its group.  Output goes to a file, never to
// a pipe, so a stalled reader can never block a child and the file doubles as the log.
class Subprocess {
 public:
  // Errors as for run(), with "spawn" for "run".
  static Result<Subprocess> spawn(const SpawnOptions& options);
  Subprocess(Subprocess&&) noexcept;
  Subprocess& operator=(Subprocess&&) noexcept;
  ~Subprocess();  // kills and reaps a child still running

  pid_t pid() const;
  // Non-blocking: true while the child runs.  Once false, exit_status() is set.
  bool running();
  // Exit code, or 128 + signal number when killed by a signal.
  std::optional<int> exit_status() const;
  // Waits up to `timeout` for the child to exit; true if it did.
  bool wait_for(std::chrono::milliseconds timeout);
  // SIGTERM to the group (kInherit: the child), then SIGKILL to whatever of it still runs
  // after `grace`; returns once the child is reaped and no member of its group runs.  Also
  // after the child exited on its own: what it left running in its group is stopped.
  void terminate(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));
  // SIGKILL, likewise; a member that outlives SIGKILL by 10 s (uninterruptible sleep) is
  // reported (diag::warn) and left.
  void kill();

 private:
  struct Impl;
  explicit Subprocess(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---- forked workers (fork.cpp, no exec) -------------------------------------------------------

// A forked child and the read end of a pipe its body writes to.
struct Child {
  pid_t pid = -1;
  Fd out;
};

// What the child does with stdio buffers when its body returns.  kFlushStdio: flush them (the
// body may have printed).  kImmediate: _exit at once, for bodies that keep to async-signal-safe
// calls (a multi-threaded parent may have forked while another thread held a stdio lock).
enum class ChildExit { kFlushStdio, kImmediate };

// Forks; the child runs `body(write_fd)` and exits with its return value (it never returns
// into the caller's code).  The child gets its own process group so a timeout kills it and
// anything it started.
Result<Child> fork_child(const std::function<int(int out_fd)>& body,
                         ChildExit on_exit = ChildExit::kFlushStdio);

// Waits for the child up to `timeout_ms` (-1: no limit), draining its pipe into `output`.
// Returns its exit status (128+signal when killed by a signal), or std::nullopt on timeout,
// in which case the child's process group has been SIGKILLed and reaped.  `stop` (if given) is
// polled at least every 100 ms; once it returns true the child is killed and reaped the same
// way and std::nullopt returned (an interrupted caller: the child has its own process group,
// so a terminal's Ctrl-C never reaches it, and it must not outlive the caller).
Result<std::optional<int>> wait_child(Child& child, int timeout_ms, std::string* output,
                                      const std::function<bool()>& stop = nullptr);

// Forks a child that unshares its mount namespace (taking a private copy of every mount,
// as runc init or a systemd unit with PrivateTmp does) and then sleeps until killed.
// Mounts visible now stay referenced in that namespace: the situation of moby#16112 and
// moby#27381.  Returns once the child's namespace exists.
Result<pid_t> spawn_mount_holder();

// SIGKILLs and reaps a child started by fork_child or spawn_mount_holder.
Result<void> kill_child(pid_t pid);

// ---- test kill points (fork.cpp) ---------------------------------------------------------------

// Test-only (never set in production): when the environment has COWLAB_TEST_KILL_AT=<name>,
// the process SIGKILLs itself here, so kill tests hit every window of a multi-step operation
// instead of hoping a random kill lands in it.  The points are listed where they are used (the
// layer store: layer_store.cpp; the zfs driver: zfs.h).
void kill_point(const char* name);

// Test-only, like kill_point: when the environment has COWLAB_TEST_FAIL_AT=<name>, returns an
// EIO error "injected failure at <name> (COWLAB_TEST_FAIL_AT)" instead of success, so a test can
// fail one step of a multi-step operation that the kernel will not fail on demand (the zfs
// driver's clone: zfs.h).
Result<void> fail_point(const char* name);

}  // namespace cowlab::sys
