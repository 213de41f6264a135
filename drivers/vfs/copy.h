// Full tree copies for the vfs driver (Docker's daemon/graphdriver/copy.DirCopy).  Internal.
#pragma once

#include <cstdint>
#include <string>

#include "cowlab/result.h"

namespace cowlab::vfs {

// How regular-file data is copied.
enum class DataCopy {
  kReflink,    // FICLONE first (extents shared, O(1) per file); copy_file_range where refused
  kCopyRange,  // copy_file_range (in-kernel copy; read/write where the kernel refuses)
};

struct CopyStats {
  uint64_t entries = 0;     // entries created below the destination root
  uint64_t reflinked = 0;   // regular files whose data was cloned
  uint64_t copied = 0;      // regular files whose data was copied (empty files count in neither)
  uint64_t hard_links = 0;  // entries made as hard links to an earlier copy
};

// Copies everything below `src` into the existing, empty directory `dst`, and then `src`'s
// own owner, mode, xattrs and times onto `dst`.  Preserved: file types (regular, directory,
// symlink, char/block device, fifo, socket), hard links between entries of the tree (one
// inode in, one inode out), uid/gid, mode bits including setuid/setgid/sticky, every xattr
// (including security.capability, which chown would clear, so it is set after chown), and
// atime/mtime with nanoseconds — directories last, after their children.  Symlinks are copied,
// never followed; the walk never leaves `src`'s filesystem tree through a symlink.  On error
// `dst` holds a partial copy; the caller removes it.
Result<CopyStats> copy_tree(const std::string& src, const std::string& dst, DataCopy data);

}  // namespace cowlab::vfs
