// The vfs driver: no copy-on-write, the baseline (Docker's daemon/graphdriver/vfs).
//
// Layout under the home (<root>/vfs, 0700): dir/<id> (0755), each a complete tree.  create()
// copies the whole parent (see vfs/copy.h for what is preserved).  Regular-file data is
// cloned with FICLONE when the backing filesystem shares extents (btrfs, xfs with reflink=1),
// otherwise copied with copy_file_range; which one is probed once at init.  get() returns the
// directory (nothing is mounted); put() does nothing.  Diffs are Docker's naive diffs.
//
// Options: none.  "vfs.size" is refused (Invalid): Docker implements it with xfs project
// quota, which cowlab's vfs does not; per-layer "size" is refused likewise, and create() of a
// read-only layer with any storage option is an error, as in Docker.
//
// status(): Docker prints nothing for vfs.  cowlab reports two rows, a documented addition:
//   Backing Filesystem  the home's filesystem (Docker's FsNames)
//   Reflink             "true" when layer copies share extents (FICLONE probe), else "false"
// because they explain vfs's create cost, which is what a vfs scenario measures.
#pragma once

#include <memory>

#include "cowlab/driver.h"
#include "cowlab/result.h"

namespace cowlab {

Result<std::unique_ptr<Driver>> init_vfs(const DriverConfig& config);

}  // namespace cowlab
