// The scratch disk of a scenario guest (matrix, bisect steps, reduce): the filesystem the
// runner's backing stores are made on.  Internal to the harness.
#pragma once

#include <string>

namespace cowlab::harness {

// The filesystem the scratch disk gets for `driver`:
//   overlay, vfs, aufs (and any other)  ext4: their stores live on it, so what the matrix
//       reports for them is what they do on ext4, as Docker's default hosts run them;
//   btrfs, zfs, devicemapper            xfs with reflink: their stores live in a filesystem,
//       pool or thin pool of their own on loop files, and the scratch disk only holds those
//       files; xfs clones them, so the image checkpoints of `--repeat` cost a clone instead
//       of a copy, and a zfs pool is checkpointed without being exported (docs/regressions.md).
const char* scratch_filesystem(const std::string& driver);

// Shell commands (`set -e` in force) that format the guest's /dev/cowlab/scratch0 with
// scratch_filesystem(driver) and mount it at /run/cowlab/work.
std::string scratch_setup_script(const std::string& driver);

}  // namespace cowlab::harness
