// Backing stores for driver tests: the filesystem a test's store root lives on, made fresh
// before a test and taken apart after it.
//
//   "tmpdir"      a new directory under $COWLAB_TEST_TMPDIR, $TMPDIR or /var/tmp (the host's
//                 filesystem: vfs, overlay)
//   "btrfs-loop"  a sparse image formatted with mkfs.btrfs, attached to a loop device (autoclear)
//                 and mounted (btrfs; vfs on btrfs uses reflinks)
//   "xfs-loop"    the same with mkfs.xfs, mounted with pquota (overlay's project quota)
//   "zfs-pool"    a file-backed zpool made for the test (zpool create on a sparse file vdev,
//                 no mount points) and a directory under $COWLAB_TEST_TMPDIR...; the store
//                 hands the driver zfs.fsname=<pool> (zfs in guests)
//   "dir:PATH"    a new directory under PATH: a filesystem the harness prepared in a guest (a zfs
//                 dataset's mount point, xfs mounted with pquota, ...)
//
// tear_down() always takes everything apart — mounts left below the root are detached, loop
// devices are detached, files are removed — and then reports what the test left behind as an
// error: every mount point that was still below the root and every loop device still bound to
// a file of the store (its own image, or loop files a driver made there, as devicemapper's
// loopback pool does).  So a leak fails the test that caused it and never reaches the next.
// The destructor tears down a store that is still up (ignoring the report), so a store is
// taken apart even when a test throws.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::testing {

class BackingStore {
 public:
  virtual ~BackingStore() = default;
  // The spec it was made from ("tmpdir", "btrfs-loop", "dir:/mnt/scratch").
  virtual std::string name() const = 0;
  // Makes the store; returns the store root (an empty directory).  kNotSupported when this
  // machine cannot provide it (no mkfs.btrfs, no btrfs in the kernel, no loop devices).
  virtual Result<std::string> set_up() = 0;
  // Takes the store apart; an error lists leftovers (see above) or what could not be removed.
  virtual Result<void> tear_down() = 0;
  // The directory holding everything the store made (root, image file, vdev); valid between
  // set_up and tear_down.  Leak checks look for mounts and loop-device backing files below it.
  virtual std::string base_dir() const = 0;
  // The loop device ("" for stores without one); valid between set_up and tear_down.
  virtual std::string loop_device() const { return ""; }
  // Storage options a driver needs to use this store ({"zfs.fsname", "<pool>"} for zfs-pool).
  virtual std::map<std::string, std::string> storage_opts() const { return {}; }
};

// kInvalid for an unknown spec.
Result<std::unique_ptr<BackingStore>> make_backing_store(const std::string& spec);
// The spec names, for usage messages.
std::vector<std::string> backing_store_names();

// Mount points at or below `dir` (per /proc/self/mountinfo), deepest first.
std::vector<std::string> mounts_under(const std::string& dir);
// Loop devices whose backing file is at or below `dir`.
std::vector<std::string> loop_devices_backed_under(const std::string& dir);
// Where temporary stores go: $COWLAB_TEST_TMPDIR, else $TMPDIR, else /var/tmp.
std::string test_tmp_base();

}  // namespace cowlab::testing
