// Forked workers (sys_process.h): the only fork in the tree (tests/lint/one_way.py).  A fork
// here runs C++ code of this binary in a child and never execs; programs are started by
// spawn.cpp.  Also the test kill points (kill_point).
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "cowlab/sys_process.h"

namespace cowlab::sys {

Result<Child> fork_child(const std::function<int(int out_fd)>& body, ChildExit on_exit) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Error::from_errno("pipe2", "", errno);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(p[0]);
    ::close(p[1]);
    return Error::from_errno("fork", "", e);
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::close(p[0]);
    int rc = body(p[1]);
    if (on_exit == ChildExit::kFlushStdio) std::fflush(nullptr);
    ::_exit(rc);
  }
  ::setpgid(pid, pid);
  ::close(p[1]);
  Child c;
  c.pid = pid;
  c.out = Fd(p[0]);
  return c;
}

Result<std::optional<int>> wait_child(Child& child, int timeout_ms, std::string* output,
                                      const std::function<bool()>& stop) {
  struct timespec start;
  ::clock_gettime(CLOCK_MONOTONIC, &start);
  auto elapsed_ms = [&] {
    struct timespec now;
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start.tv_sec) * 1000L + (now.tv_nsec - start.tv_nsec) / 1000000L;
  };
  char buf[65536];
  bool open = child.out.valid();
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(child.pid, &status, WNOHANG);
    if (r == child.pid) {
      // Drain what is left.
      while (open) {
        ssize_t n = ::read(child.out.get(), buf, sizeof buf);
        if (n <= 0) break;
        if (output) output->append(buf, n);
      }
      child.out.reset();
      if (WIFEXITED(status)) return std::optional<int>(WEXITSTATUS(status));
      return std::optional<int>(128 + WTERMSIG(status));
    }
    if (r < 0 && errno != EINTR)
      return Error::from_errno("waitpid", std::to_string(child.pid), errno);
    if ((timeout_ms >= 0 && elapsed_ms() > timeout_ms) || (stop && stop())) {
      ::kill(-child.pid, SIGKILL);
      ::kill(child.pid, SIGKILL);
      while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
      }
      child.out.reset();
      return std::optional<int>();
    }
    if (open) {
      struct pollfd pfd = {child.out.get(), POLLIN, 0};
      int pr = ::poll(&pfd, 1, 100);
      if (pr > 0) {
        ssize_t n = ::read(child.out.get(), buf, sizeof buf);
        if (n > 0) {
          if (output) output->append(buf, n);
        } else if (n == 0) {
          open = false;
        }
      }
    } else {
      ::usleep(20000);
    }
  }
}

Result<pid_t> spawn_mount_holder() {
  auto child = COWLAB_TRY(fork_child(
      [](int out_fd) -> int {
        char ok = ::unshare(CLONE_NEWNS) == 0 ? 'y' : 'n';
        // Keep the copies private so unmounts in the parent namespace do not propagate here.
        if (ok == 'y') ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr);
        (void)!::write(out_fd, &ok, 1);
        ::close(out_fd);
        for (;;) ::pause();
      },
      ChildExit::kImmediate));
  char ok = 'n';
  ssize_t n;
  do {
    n = ::read(child.out.get(), &ok, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1 || ok != 'y') {
    (void)kill_child(child.pid);
    return Error::from_errno("unshare", "CLONE_NEWNS", EPERM);
  }
  return child.pid;
}

Result<void> kill_child(pid_t pid) {
  if (::kill(pid, SIGKILL) != 0 && errno != ESRCH)
    return Error::from_errno("kill", std::to_string(pid), errno);
  int status;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno == EINTR) continue;
    if (errno == ECHILD) break;
    return Error::from_errno("waitpid", std::to_string(pid), errno);
  }
  return {};
}

void kill_point(const char* name) {
  const char* want = std::getenv("COWLAB_TEST_KILL_AT");
  if (want && std::string_view(want) == name) ::kill(::getpid(), SIGKILL);
}

Result<void> fail_point(const char* name) {
  const char* want = std::getenv("COWLAB_TEST_FAIL_AT");
  if (want && std::string_view(want) == name)
    return Error(ErrorKind::kSystem, std::string("injected failure at ") + name + " (COWLAB_TEST_FAIL_AT)", EIO);
  return {};
}

}  // namespace cowlab::sys
