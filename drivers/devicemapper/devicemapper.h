// The devicemapper driver: Docker's devmapper graph driver
// (daemon/graphdriver/devmapper/{driver.go,deviceset.go}, removed in Docker 25) on dm-thin,
// through libdevmapper (dm.h) — never by parsing dmsetup output.
//
// Every layer is a thin device holding a whole filesystem: a thin snapshot of its parent's
// device, or of the base device (an empty ext4 or xfs filesystem) for a layer without
// parent.  Copy-on-write is therefore block level: a 1-byte write into a large file costs one
// pool block (dm.blocksize, 64 KiB by default), not the file.
//
// On-disk layout under the home (<root>/devicemapper), Docker's:
//   devicemapper/data, devicemapper/metadata   loop-lvm sparse files (absent with
//                                              dm.thinpooldev)
//   metadata/<id>, metadata/base               per-device JSON, written atomically
//   metadata/deviceset-metadata, metadata/transaction-metadata
//   mnt/<id>                                   a mounted layer's filesystem root, with
//                                              rootfs/ (the layer's content, what get()
//                                              returns) and an "id" file naming the layer
// Devices are named docker-<maj>:<min>-<inode of the home>-<id>, the pool
// docker-<maj>:<min>-<inode>-pool in loop-lvm mode (see device_set.h for ids, transactions and
// the rollback of an interrupted one at start-up).
//
// Pool.  Without dm.thinpooldev the driver runs in loop-lvm mode and prints on stderr that
// this is not for production (as Docker does); the pool stays active across cowlab processes
// and cleanup() removes it once no device of the store is in use — only a driver opened
// under the exclusive lock (DriverAccess::kExclusive): under the shared lock cleanup()
// releases this process's own mounts and leaves every device and the pool to the other
// processes that may be using them.  With dm.thinpooldev the named pool must exist, and
// must be empty the first time (Docker's checkThinPool).
//
// get() activates the device and mounts it on mnt/<id> (xfs with nouuid, plus dm.mountopt);
// put() unmounts with MNT_DETACH, removes mnt/<id> and deactivates the device — deferred
// when the kernel supports deferred removal (dm driver >= 4.27), so a mount that leaked into
// another namespace cannot make put() fail (moby#27381, moby#34573).  Removing a device that
// is still open elsewhere marks it for deferred deletion (dm.use_deferred_deletion, on by
// default where deferred removal is): the layer is gone for the driver and the thin device
// is deleted at a later remove, init or cleanup.  Device removals retry EBUSY 200 times,
// 100 ms apart.
//
// Options (options.h): dm.basesize (may only grow; growing runs resize2fs/xfs_growfs),
// dm.loopdatasize, dm.loopmetadatasize, dm.fs (ext4|xfs; default xfs where the kernel and
// mkfs.xfs allow, as Docker), dm.mkfsarg, dm.mountopt, dm.thinpooldev, dm.blocksize,
// dm.min_free_space, dm.use_deferred_removal, dm.use_deferred_deletion, dm.blkdiscard.
//
// Per-layer size: a "size" storage option (create and create_rw, as Docker) gives the new
// device that size and grows its filesystem; a size below the parent's is kInvalid ("cannot
// be smaller than").  supports_quota() is false: the size is a device size that can only
// grow from the base size (10 GiB by default), not a quota a caller may set freely.
//
// status(): Docker's rows in Docker's order (Pool Name ... Library Version), sizes read
// from the live pool.  metadata(): DeviceId, DeviceSize, DeviceName.  Diffs are naive.
//
// A kernel without device-mapper (or without the thin-pool target) is kNotSupported with the
// reason, so selection moves on.  Thread-safety: one thread at a time (driver.h).
#pragma once

#include <memory>

#include "cowlab/driver.h"
#include "cowlab/result.h"

namespace cowlab {

Result<std::unique_ptr<Driver>> init_devicemapper(const DriverConfig& config);

// Removes the device-mapper devices named after the store whose home is `home` (its thin
// devices, then its loop-lvm pool) that a process which died with the store open left
// active, e.g. a `scenario run` worker killed at its timeout: they outlive the process, hold
// the pool's loop devices and so the filesystem under them, and their names (the home's
// device and inode) come back with the next store whose home gets that inode, which would
// then take the dead store's pool as its own.  For a store being torn down: none of its
// devices may be mounted any more (kSystem EBUSY naming the device otherwise).  A home that
// does not exist has no devices.  Returns the names removed.
Result<std::vector<std::string>> remove_store_devices(const std::string& home);

namespace devmapper {
class ThinPool;
class BlockOps;
struct DeviceSetConfig;
}  // namespace devmapper
// For tests: the driver over a device set on `pool` and `block` (fakes of the kernel's thin
// pool and block devices, device_set_test.cpp) instead of the kernel's, the set initialised
// with config.access; nothing is probed, no loop device or pool is set up, and cleanup()
// closes no pool.  set_config.home is config.home.  `pool` and `block` must outlive the
// driver.
Result<std::unique_ptr<Driver>> devicemapper_driver_over(const DriverConfig& config,
                                                         devmapper::DeviceSetConfig set_config,
                                                         devmapper::ThinPool& pool,
                                                         devmapper::BlockOps& block);

}  // namespace cowlab
