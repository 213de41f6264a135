// This process's own executable, pinned when the process starts.
//
// A long `matrix`, `kernel build`, `bisect` or `vm` run puts its own binary into guests and hands
// it to image recipes and to `git bisect run` — minutes or hours after it started.  Reading
// /proc/self/exe at that moment fails once the file has been rebuilt (a linker unlinks and
// recreates its output): the link then reads "…/cowlab (deleted)", a path that no longer exists.
// pin_self_binary() opens the executable at start-up and keeps the descriptor; self_binary() then
// names a path whose contents are exactly this executable for the rest of the process's life.
#pragma once

#include <filesystem>

#include "cowlab/result.h"

namespace cowlab::harness {

struct SelfBinary {
  // The path the process was started from: names, cache keys and messages.
  std::filesystem::path path;
  // /proc/<pid>/fd/<n> of the descriptor opened at start-up: reads and executes this process's
  // executable whatever has become of `path`, for this process and its children (root, or the
  // same user) while this process lives.
  std::filesystem::path readable;
};

// Opens /proc/self/exe once (idempotent; main() calls it before parsing the command line).
// `exe` pins another file instead: for tests of the mechanism.
Result<void> pin_self_binary(const std::filesystem::path& exe = "/proc/self/exe");

// The pinned executable (pinned now if pin_self_binary() was never called).
Result<SelfBinary> self_binary();

}  // namespace cowlab::harness
