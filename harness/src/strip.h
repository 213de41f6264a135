// The cowlab binary that goes into guests, without debug information: a RelWithDebInfo build is
// ~90 MB, most of it DWARF, and every guest's initrd carried it (unpacking it is part of each
// boot).  The copy is made once per binary (keyed by path, size and mtime) in
// $COWLAB_CACHE/payload/, next to its debug information (cowlab.debug, linked from the stripped
// copy with .gnu_debuglink), so a guest backtrace can still be symbolised on the host.
#pragma once

#include <filesystem>

#include "cowlab/result.h"

namespace cowlab::harness {

struct StrippedBinary {
  std::filesystem::path stripped;  // what to put in the guest
  std::filesystem::path debug;     // the debug information, kept on the host
};

// `binary` is read; `name` (default: `binary`) names the copy and keys the cache, so a binary read
// through a pinned descriptor (/proc/<pid>/fd/<n>, self_binary.h) shares the entry of its path.
Result<StrippedBinary> stripped_binary(const std::filesystem::path& binary, const std::filesystem::path& name = {});

}  // namespace cowlab::harness
