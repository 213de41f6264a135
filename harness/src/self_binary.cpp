// Why a descriptor and not a path: a path names whatever file is there now; after a rebuild that
// is a different program, and during the rebuild there may be none.  An open descriptor keeps the
// original inode alive and readable even once it is unlinked (unlink(2): the file is removed when
// the last descriptor referring to it is closed), and /proc/<pid>/fd/<n> reopens it (proc(5):
// "/proc/pid/fd/ … opening the file, the link behaves as if it were the file").
#include "cowlab/harness/self_binary.h"

#include <fcntl.h>
#include <unistd.h>

#include <mutex>
#include <optional>
#include <string>

#include "cowlab/sys.h"

namespace cowlab::harness {
namespace fs = std::filesystem;

namespace {

struct Pinned {
  fs::path path;
  sys::Fd fd;
};

std::mutex mu;
std::optional<Pinned> pinned;

// The kernel appends this to /proc/self/exe's target once the file is unlinked.
constexpr std::string_view kDeleted = " (deleted)";

}  // namespace

Result<void> pin_self_binary(const fs::path& exe) {
  std::lock_guard<std::mutex> l(mu);
  if (pinned) return {};
  Pinned p;
  std::string target = exe.string();
  if (fs::is_symlink(exe)) target = COWLAB_TRY(sys::readlink(exe.string()));
  // Already replaced (a `git bisect run` step started through a parent's pinned descriptor): the
  // link still opens this executable; only its name carries the suffix.
  if (target.size() > kDeleted.size() && target.ends_with(kDeleted))
    target.resize(target.size() - kDeleted.size());
  p.path = target;
  p.fd = COWLAB_TRY(sys::open(exe.string(), O_RDONLY | O_CLOEXEC));
  pinned = std::move(p);
  return {};
}

Result<SelfBinary> self_binary() {
  COWLAB_TRY(pin_self_binary());
  std::lock_guard<std::mutex> l(mu);
  // Always the descriptor, even while the path still holds the same file: what is handed out here
  // is read later — by a recipe minutes into an image build, by every `git bisect run` step — and
  // the path may be rebuilt in between.
  return SelfBinary{pinned->path, "/proc/" + std::to_string(::getpid()) + "/fd/" +
                                      std::to_string(pinned->fd.get())};
}

}  // namespace cowlab::harness
