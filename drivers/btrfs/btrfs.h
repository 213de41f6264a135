// The btrfs driver: Docker's btrfs graph driver (daemon/graphdriver/btrfs/btrfs.go) on
// libbtrfsutil subvolumes.
//
// On-disk layout under the home (<root>/btrfs), exactly Docker's:
//   subvolumes/<id>   the layer: a new subvolume for a base layer, a writable snapshot of the
//                     parent's subvolume otherwise (creation cost independent of layer size)
//   quotas/<id>       the layer's size limit in decimal bytes, present only for layers made
//                     with a size
// The home must be on btrfs; anything else is kNotSupported ("backing filesystem is extfs,
// btrfs driver needs btrfs") and init leaves nothing behind, so selection moves on.
//
// get() never mounts: it returns subvolumes/<id> and re-applies the qgroup limit from
// quotas/<id> (Docker's cleanup turns quota off, dropping every limit; cowlab's cleanup leaves
// quota on, but a store may have been opened by Docker or `btrfs quota disable` meanwhile);
// put() has nothing to release.
//
// remove() deletes, in order: quotas/<id>; every subvolume nested in the layer, deepest first
// (a container that ran `btrfs subvolume create` must not block removal, moby#9939/#18686);
// the layer's qgroup and those of the nested subvolumes, so none leak (moby#29325); the
// subvolume itself; then waits for a running quota rescan, only when quota is enabled
// (moby#29810: rescanning with quota off fails with EPERM in unprivileged containers).
//
// Quota: a per-layer "size" storage option (create and create_rw, as in Docker), or the
// btrfs.size default for read-write layers, enables quota on the filesystem and sets the
// layer qgroup's max_rfer; writes beyond it fail with EDQUOT.  Size 0 is "invalid storage
// size"; a size below btrfs.min_space is refused with "cannot be less than".
//
// Options: btrfs.min_space (smallest size a layer may be given; setting it enables quota at
// init, as Docker), btrfs.size (default size of read-write layers, containers/storage's
// storage.conf key).  btrfs.mountopt is refused as containers/storage does; any other key is
// an Invalid error naming it.
//
// status(): Build Version (`btrfs --version`, the btrfs-progs build installed), Library Version
// (libbtrfsutil the driver was built against), the keys containers/storage prints.
// Diffs are Docker's naive diffs.  Thread-safety: one thread at a time (driver.h).
#pragma once

#include <memory>

#include "cowlab/driver.h"
#include "cowlab/result.h"

namespace cowlab {

Result<std::unique_ptr<Driver>> init_btrfs(const DriverConfig& config);

}  // namespace cowlab
