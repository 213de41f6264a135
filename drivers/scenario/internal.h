// Runner internals: backing stores, layer tar building, tree digests.  Internal.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cowlab/result.h"
#include "scenario/model.h"

namespace cowlab::scenario {

// Deterministic content for generated files: `pattern` random (seeded splitmix64), zero, or
// text (readable repeating lines).  fill() writes bytes [offset, offset+len).
class Pattern {
 public:
  Pattern(std::string kind, uint64_t seed) : kind_(std::move(kind)), seed_(seed) {}
  void fill(uint64_t offset, char* buf, size_t len) const;

 private:
  std::string kind_;
  uint64_t seed_;
};

// Writes the entries of a layer definition as an OCI layer tar to `path`.
Result<void> write_entries_tar(const std::vector<Entry>& entries, const std::string& path);

// A fresh backing store for one driver: a directory (vfs, overlay, aufs, devicemapper's
// loop files), a loop-mounted btrfs, or a file-backed zpool.  Everything is made under
// `work` and torn down by teardown(), which also works from another process after the
// runner died (it only needs `work`).
struct Backing {
  std::string driver;
  std::string work;  // a fresh directory owned by this backing
  std::string root;  // the store root to use
  std::map<std::string, std::string> storage_opts;
  std::string loop_device;  // btrfs
  std::string loop_fstype;  // the loop filesystem's type (its image is work/<type>.img); "" = none
  std::string zpool;        // zfs
};
Result<Backing> make_backing(const std::string& driver, const std::string& work_parent);
// Unmounts everything under `b.work`, removes the device-mapper devices a devicemapper store
// left active (a worker killed with the store open), detaches the loop device, destroys the
// pool, removes the directory.  Best effort; returns the first error.
Result<void> teardown_backing(const Backing& b);

// Image checkpoints (`scenario run --repeat`, docs/scenarios.md "Repeats"): the store as its
// image import left it, saved by the first run of a cell and copied back for each later run,
// which then starts on a store no earlier run has touched without importing the image again.
//
// quiesce_backing() makes the files under `b.work` the whole state of a store that has been
// closed, in one of two ways (Quiesce).  Anything that stays held is an error naming it.
// resume_backing() brings a quiesced (or copied) backing back: after kReleased the loop
// filesystem attached and mounted at work/mnt again and the pool imported from the work dir
// under its name (a devicemapper store sets up its own pool at open); after kLive nothing.
enum class Quiesce {
  // Nothing holds the files: the devicemapper store's devices removed, every mount under the
  // work dir unmounted, the pool exported, the loop devices on its files detached.
  kReleased,
  // zfs on a work dir whose filesystem clones files (FICLONE): every mount under the work dir
  // unmounted and the pool synced, but left imported.  A clone is atomic against the pool's
  // writes, so the copy is one of the states a power cut could have left, which ZFS imports
  // by design; the export and import (about 1.3 s a checkpoint under TCG) are saved.
  kLive,
};
const char* quiesce_name(Quiesce q);  // "released", "live"
Result<Quiesce> quiesce_backing(Backing& b);
Result<void> resume_backing(Backing& b, Quiesce how);
// What a checkpoint holds besides the store: the runner's state that is not in it.
struct CheckpointMeta {
  std::map<std::string, std::string> aliases;        // scenario layer id -> store layer id (OCI)
  std::map<std::string, std::string> image_digests;  // scenario layer id -> its digest as
                                                     // imported ("" map: none was taken)
};
// Copies a quiesced backing's work dir, with `meta`, to the new directory `dir`: holes, hard
// links, owners, modes, xattrs and times kept (vfs::copy_tree).  After Quiesce::kLive every
// file with data must be cloned, not copied (a copy of a live pool's vdev could be torn):
// otherwise it fails.  The copy is made under a temporary name and renamed into place, so a
// run killed while copying never leaves a checkpoint that restores half a store; on failure
// nothing is left.
Result<void> save_checkpoint(const Backing& b, const std::string& dir, const CheckpointMeta& meta,
                             Quiesce how);
// A fresh backing (a new work dir under `work_parent`) holding a copy of the checkpoint `dir`
// — or, with kConsume, the checkpoint itself, moved into place and gone from `dir` — resumed
// and ready for the store to be opened; `meta` receives what save_checkpoint stored.  On
// failure nothing is left.
Result<Backing> restore_backing(const std::string& driver, const std::string& work_parent,
                                const std::string& dir, RunOptions::CheckpointUse use,
                                CheckpointMeta* meta);

// A digest of a whole tree as seen through `root`: names, types, modes, owners, sizes,
// symlink targets and file contents (not times or inode numbers).
Result<std::string> tree_digest(const std::string& root);

// The entry names of a layer tar, directories with a trailing '/'.
Result<std::vector<std::string>> tar_entry_names(const std::string& tar);

// Bytes of the store's files in the page cache: every regular file under `root`, each inode
// counted once (st_dev, st_ino), read with sys::resident_bytes.  Mounts below `root` are
// walked (btrfs subvolumes, devicemapper's thin devices, zfs datasets) except union mounts
// (overlay, aufs): their files have no pages of their own — reads through them cache the
// branch files, which are under `root` too.  The machine-wide "Cached:" of /proc/meminfo,
// used before, moved with every other writer on the machine (a concurrent build, the guest's
// own logging): overlay's cache_4 read 100 KiB instead of 0 in one CI run and up to 8.1 MiB
// beside an image build, against a bound of 4 MiB.
Result<uint64_t> page_cache_bytes(const std::string& root);

// Shell text for the exported scripts (ops.cpp, export.cpp): S in single quotes, any ' inside
// written as '\''; and the bytes of S as lowercase hex.
std::string shell_quote(const std::string& s);
std::string hex_bytes(const std::string& s);
// A scenario id as part of a shell variable name ("c-1" → "c_1"; $ROOT_c_1, $L_c_1).
std::string shell_var(const std::string& id);

}  // namespace cowlab::scenario
