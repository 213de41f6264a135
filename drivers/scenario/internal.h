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
  std::string zpool;        // zfs
};
Result<Backing> make_backing(const std::string& driver, const std::string& work_parent);
// Unmounts everything under `b.work`, removes the device-mapper devices a devicemapper store
// left active (a worker killed with the store open), detaches the loop device, destroys the
// pool, removes the directory.  Best effort; returns the first error.
Result<void> teardown_backing(const Backing& b);

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
