// The aufs driver: Docker's aufs graph driver (daemon/graphdriver/aufs, removed in Docker 24)
// on an aufs-patched kernel.  No Debian kernel has aufs; see docs/aufs.md for running one.
//
// On-disk layout under the home (<root>/aufs), exactly Docker's:
//   layers/<id>   text file: the ids of every ancestor, nearest first, one per line (empty for
//                 a base layer)
//   diff/<id>     the layer's own files; deletions as aufs whiteouts (`.wh.<name>` files and
//                 `.wh..wh..opq` markers), plus aufs's own metadata in the rw branch
//                 (`.wh..wh.aufs`, `.wh..wh.plnk/`, `.wh..wh.orph/`), which is never exported
//   mnt/<id>      mount point of the union
//   xino/         holds aufs's external inode number file (see below)
//   probes        the dirperm1 probe's result and the boot, kernel release, aufs version and
//                 device it was probed on (written atomically; an init whose fingerprint
//                 matches mounts nothing to probe)
//   .probe-<hex>  an init's dirperm1 test mount, removed by the init that made it
// Root dirs 0710, per-layer dirs 0755.  Ids ending in "-removing" are refused: that suffix
// marks directories being deleted (Docker's atomicRemove), and init deletes leftovers.
//
// Mounting (get): a layer without ancestors is its diff dir (no mount).  Otherwise aufs on
// mnt/<id> with "br:<diff/id>=rw:<diff/parent>=ro+wh:...,dio,xino=<home>/xino/aufs.xino" and
// ",dirperm1" when a probe mount at init accepted it.  Branches that do not fit in one page of
// mount data are added by MS_REMOUNT "append:" calls (aufs/branches.h), and after mounting the
// branch list the kernel reports (/sys/fs/aufs/si_<id>/br*, or the mount options when aufs has
// no sysfs) must equal the requested one, so a silently shortened stack (moby#9151) is an
// error, never a container with missing files.
//   xino: Docker uses /dev/shm/aufs.xino.  cowlab writes nothing outside the store root, so
//   the xino file lives in <home>/xino/ instead; aufs unlinks it right after opening it, so
//   the directory stays empty and only the filesystem's used space shows it.
//
// Unmounting (last put, remove, cleanup): `auplink <mnt> flush` when aufs-tools' auplink is
// installed (retried on EINVAL as Docker does), then umount with up to 5 EBUSY retries 100 ms
// apart; a mount still busy after that is detached lazily (MNT_DETACH), so a put never leaks
// EBUSY to the caller.
//
// Diffs: native (the diff dir exported with aufs whiteouts converted to OCI form, changes from
// the diff dir alone, apply into the diff dir) when `parent` is the layer's direct parent
// ("" for a base layer); otherwise Docker's naive diff over mounted trees.
//
// Create refuses every per-layer storage option ("--storage-opt is not supported for aufs");
// the driver takes no aufs.* options.  supports_quota() is false.
//
// status(): Root Dir, Backing Filesystem, Dirs (entries in layers/), Dirperm1 Supported.
// metadata(): none (Docker's GetMetadata returns nil for aufs).
//
// Init: aufs must be in /proc/filesystems (after `modprobe aufs`), else kNotSupported "this
// kernel has no aufs (not in /proc/filesystems and modprobe aufs failed)" and selection moves
// on.  Refused with kNotSupported: a backing filesystem of aufs, btrfs or ecryptfs, and a
// non-initial user namespace (Docker's rules).
//
// Access (DriverConfig::access): only an init under kExclusive deletes what killed inits and
// removes left (.probe-* dirs and their mounts, -removing dirs, temp files of the probes write)
// and sets the home's mode.  An init under kShared runs beside other readers: it changes
// nothing that exists in the home, probes (if its fingerprint does not match) in a .probe- dir
// it alone removes, lists -removing dirs in pending_recovery(), and works on a read-only home —
// there it takes the dirperm1 result recorded in `probes` whatever it was probed on, and
// without one fails with kNotSupported "aufs init: <home> is read-only and holds no dirperm1
// probe result ...".
#pragma once

#include <memory>

#include "aufs/branches.h"
#include "cowlab/driver.h"
#include "cowlab/result.h"

namespace cowlab {

Result<std::unique_ptr<Driver>> init_aufs(const DriverConfig& config);

// What init probed, for reports.
struct AufsProbes {
  std::string backing_fs;         // "extfs", "xfs", ...
  bool dirperm1 = false;          // a probe mount with dirperm1 succeeded
  std::string auplink;            // path of auplink, "" when not installed
  long page_size = 4096;          // budget of one mount(2) data string
  int branch_max = 0;             // the kernel's AUFS_BRANCH_MAX; 0 when it could not be read
  std::string branch_max_source;  // where it was read, or why it is unknown
};

// The running kernel's aufs branch limit (aufs/branches.h BranchLimit), from /sys/fs/aufs/config
// (aufs as a module), /proc/config.gz, /boot/config-RELEASE or /lib/modules/RELEASE/{config,
// build/.config}; kNotFound naming every place tried when none tells.  A mount deeper than a
// known limit is refused before mounting with an error naming the limit and its source.
Result<aufs::BranchLimit> kernel_aufs_branch_limit();

// The probes of an aufs driver; nullptr when `driver` is not one.
const AufsProbes* aufs_probes(const Driver& driver);

// For host tests only: the driver without the kernel checks and probes (`probes` is taken as
// given).  Everything that does not mount works — layout, create, remove, native diff,
// changes and apply-diff, status — and get() of a layer with ancestors fails at mount(2).
Result<std::unique_ptr<Driver>> init_aufs_unprobed_for_tests(const DriverConfig& config,
                                                             const AufsProbes& probes);

}  // namespace cowlab
