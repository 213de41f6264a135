// The zfs driver: Docker's zfs graph driver (daemon/graphdriver/zfs) on OpenZFS.
//
// Datasets: one filesystem per layer, <fsname>/<id>, where fsname is the zfs.fsname option or
// else the dataset mounted where the store root lives (found, as Docker does, by the store
// root's st_dev in /proc/self/mountinfo).  Every layer dataset has mountpoint=legacy, so
// nothing but this driver ever mounts it.
//   - a base layer is a new filesystem (lzc_create);
//   - a child is a clone of a fresh snapshot of its parent named after the child,
//     "<parent>@<id>" (lzc_snapshot + lzc_clone; Docker names it after the clock), and that
//     snapshot is at once destroyed *deferred* (lzc_destroy_snaps with defer, `zfs destroy
//     -d`): it lives exactly as long as the clone, so removing the child leaves no orphaned
//     @snapshot behind.  A create cut (power cut, kill) after the snapshot and before the
//     clone or the deferral leaves the snapshot alone; its name ties it to the child: a retried
//     create of the id replaces it and remove(id) destroys it (the layer store's recovery of
//     the incomplete child calls remove), even when no dataset <id> exists (then remove is
//     kNotFound only when there was no such snapshot either).  remove(id) knows of such a
//     snapshot from <home>/creating/<id>, written durably before the snapshot and removed once
//     its destroy is deferred: a remove without that file lists nothing (a store made before
//     the file existed keeps such a snapshot until the parent's removal takes it);
//   - a "size" storage option (create or create_rw, as in Docker) sets the dataset's quota
//     property; supports_quota() is true.
// Layout under the home (<root>/zfs): graph/<id> (mount points, made by get() and removed by
// the last put()), readers/ (readers' own mount points), removing/<n> (datasets whose
// destruction is pending, see remove()), creating/<id> (a child's create in progress: its
// origin snapshot's name).
//
// Library: libzfs_core through the sys seam (dlopen of libzfs_core.so.3, so one binary serves
// ZFS 2.0, 2.1 and 2.3 guests).  Without it the zfs command does the same steps
// (`zfs create|snapshot|clone -o mountpoint=legacy|destroy [-d]|rename`).  Properties are read
// with the zfs command in both cases (`zfs get -Hp`, `zpool list -H -o health`): libzfs_core
// has no call for that.  zfs_probes() reports which way was taken and why.
//
// Get mounts the dataset with mount(2) ("zfs", zfs.mountopt) on <home>/graph/<id>; Put unmounts
// it with MNT_DETACH and removes the mount point (Docker's Put).  Opened with
// DriverAccess::kShared (a reader; several run at once) it changes nothing that exists in the
// home, destroys nothing pending, and mounts on a directory of its own, readers/<id>.<pid>.<r>
// (core/reader_mounts.h; on a read-only store, in a private mount namespace); an init with
// kExclusive unmounts and removes what killed readers left there.
//
// Remove, and moby#16112 ("dataset is busy"): zfs refuses to destroy a filesystem that is
// mounted anywhere, and a copy of the mount can live on in another mount namespace (a
// container runtime, a systemd unit with PrivateTmp, `unshare -m`).  Remove therefore
//   1. detaches our own mount (MNT_DETACH) and removes the mount point directory: since Linux
//      3.18 removing a directory detaches every mount on it in every other mount namespace
//      ("vfs: Lazily remove mounts on unlinked files and directories"), which releases copies
//      that are merely held by a namespace;
//   2. destroys the dataset, retrying EBUSY for up to 2 s (the last reference goes
//      asynchronously); leftover snapshots without clones (an interrupted create) are destroyed
//      first;
//   3. if the dataset is still busy — some process has a file open or its cwd inside a copy of
//      the mount — renames it to <fsname>/cowlab-removing:<n> (':' never occurs in layer ids),
//      and its origin "<parent>@<id>" to "<parent>@cowlab-rm:<first 8 of n>", and records it in
//      <home>/removing/<n>; the layer is gone and its id reusable, and the
//      dataset is destroyed by the next remove(), cleanup() or init once its holder has let go.
//      pending_removals() lists what is still waiting.
//
// status(): Zpool, Zpool Health, Parent Dataset, Space Used By Parent, Space Available, Parent
// Quota ("no" when unset), Compression — Docker's keys and order, values read live from the
// pool at each call.  metadata(): Mountpoint, Dataset.  space_used(): the parent dataset's
// "used" property after `zpool sync`.
//
// list(): the layers are the children of the parent dataset, but the parent is not the
// store's own: other stores (another root on the same dataset: the same fsname) and datasets
// cowlab never made may be its children too, and the layer store destroys listed data that no
// layer claims.  So every layer dataset carries the user property cowlab:home = the home of
// the store that made it, and list() names only the children carrying this home (`zfs list`
// through the zfs command: libzfs_core cannot list; without the command kNotSupported).
// Datasets made before that property existed are not listed, so never collected.
//
// Kill points (COWLAB_TEST_KILL_AT, sys::kill_point; tests only): zfs:snapshotted (a child's
// snapshot taken, not cloned), zfs:cloned (cloned, the snapshot's destroy not yet deferred).
// Fail points (COWLAB_TEST_FAIL_AT, sys::fail_point; tests only): zfs:snapshot and zfs:clone
// fail a child's create at that step with EIO.  A create that fails leaves neither its snapshot
// nor its ledger (creating/<id>); the ledger stays only while the snapshot it names could not
// be destroyed.
//
// Options: zfs.fsname, zfs.mountopt.  Anything else is an Invalid error.
// Init on a kernel without zfs: kNotSupported "this kernel has no zfs: /dev/zfs missing (...)".
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cowlab/driver.h"
#include "cowlab/result.h"
#include "cowlab/sys.h"

namespace cowlab {

Result<std::unique_ptr<Driver>> init_zfs(const DriverConfig& config);

// How the driver changes datasets.
enum class ZfsBackend {
  kAuto,        // libzfs_core when it loads, else the zfs command
  kLibZfsCore,  // lzc_* through dlopen
  kCommand,     // the zfs command
};
const char* zfs_backend_name(ZfsBackend backend);  // "libzfs_core", "zfs command", "auto"

// For tests: init with the backend forced.  Forcing kLibZfsCore where it does not load is
// kNotSupported.
Result<std::unique_ptr<Driver>> init_zfs_with_backend(const DriverConfig& config,
                                                      ZfsBackend backend);

// What init found, for reports.
struct ZfsProbes {
  ZfsBackend backend = ZfsBackend::kAuto;  // the one in use
  std::string library;                     // loaded libzfs_core path ("" with kCommand)
  std::string library_unavailable;         // why libzfs_core was not used ("" when it is)
  std::string zfs_command;                 // path of `zfs`, "" when not installed
  std::string fsname;                      // the parent dataset
};
const ZfsProbes* zfs_probes(const Driver& driver);

// Datasets whose destruction is pending (see remove() above), for tests and reports.
Result<std::vector<std::string>> zfs_pending_removals(Driver& driver);

// ---- pure helpers (exposed for unit tests) ---------------------------------------------------

struct ZfsOptions {
  std::string fsname;             // "" = from the store root's mount
  unsigned long mount_flags = 0;  // MS_* from zfs.mountopt
  std::string mount_data;         // the rest of zfs.mountopt, comma-separated
};
// zfs.fsname (a valid dataset name, no snapshot) and zfs.mountopt; unknown keys are Invalid.
Result<ZfsOptions> parse_zfs_options(const std::map<std::string, std::string>& options);

// Splits a mount option string into MS_* flags and the data the filesystem parses itself.
void split_mount_options(const std::string& options, unsigned long* flags, std::string* data);

// The per-layer "size" option in bytes (nullopt: none, or 0 as in Docker); other keys Invalid.
Result<std::optional<uint64_t>> parse_zfs_layer_size(
    const std::map<std::string, std::string>& storage_opt);

// "<fsname>/<id>", checking the id (Docker layer id grammar) and ZFS's name length limit with
// room for a 20-character "@<snapshot>" suffix.
Result<std::string> zfs_layer_dataset(const std::string& fsname, const std::string& id);

// The dataset mounted with device major:minor (the store root's st_dev), per mountinfo.
// kNotSupported when that mount is not zfs.
Result<std::string> zfs_fsname_for_device(const std::vector<sys::MountInfo>& mounts, unsigned major,
                                          unsigned minor);

// `zfs list -H -p -o name,cowlab:home -t filesystem -d 1 <fsname>` output → the ids of the
// layers of the store whose home is `home`: direct children of fsname named like a layer id
// whose cowlab:home property is `home` (see list() above).
std::vector<std::string> parse_zfs_layer_list(const std::string& output, const std::string& fsname,
                                              const std::string& home);

// `zfs get -H -p -o property,value ...` output → property → value.
std::map<std::string, std::string> parse_zfs_get(const std::string& output);

// The inputs of status(); each value is what the pool reported or an error text.
struct ZfsStatusInputs {
  std::string fsname;
  Result<std::string> health = std::string();  // zpool health
  Result<std::map<std::string, std::string>> properties = std::map<std::string, std::string>();
};
// Docker's rows: Zpool, Zpool Health, Parent Dataset, Space Used By Parent, Space Available,
// Parent Quota, Compression.
KeyValues format_zfs_status(const ZfsStatusInputs& in);

}  // namespace cowlab
