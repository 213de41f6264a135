// Mount points of a store's readers, for drivers whose get() mounts (zfs, devicemapper).
// Internal to drivers.
//
// Readers (DriverAccess::kShared) run at once under the store's shared lock, so a layer's one
// mount point (<home>/<...>/<id>) cannot be theirs: the second reader of a layer would find it
// mounted and count it as a reference, and the first to finish would unmount it under the
// other (two `cowlab diff`s of one layer).  Each reader mounts on a directory of its own
// instead, and unmounts only that; the kernel keeps the count that matters (each mount holds
// the dataset or device).
#pragma once

#include <cstddef>
#include <string>

#include "cowlab/result.h"

namespace cowlab {

class ReaderMountPoints {
 public:
  // `readers_dir`: where readers register their mount points (<home>/readers), so the next
  // writer can sweep what a killed reader left mounted.  `hidden_dir`: an existing directory
  // of the home that readers never use (the writers' mount points), over which a reader of a
  // read-only store mounts a tmpfs of its own (see make).
  ReaderMountPoints(std::string readers_dir, std::string hidden_dir);

  // A new, empty directory for this process's mount of layer `id`:
  // <readers_dir>/<id>.<pid>.<random>.  When the store is read-only (EROFS), the process
  // first moves into a private mount namespace of its own and mounts a tmpfs over
  // `hidden_dir` there, and makes the directory on that tmpfs: nothing is written to the
  // store or outside it, and its mounts exist in that namespace alone and end with the
  // process, however it ends.  Errors name the directory and the cause.
  Result<std::string> make(const std::string& id);

 private:
  enum class Namespace { kHost, kPrivate };
  std::string readers_dir_;
  std::string hidden_dir_;
  Namespace namespace_ = Namespace::kHost;
};

// The exclusive init's sweep (no reader runs then): unmounts (MNT_DETACH) every directory in
// `readers_dir` that a killed reader left mounted and removes it; an entry that is not empty
// once unmounted is left (what is in it would be a layer's content).  Returns how many
// entries it found.  A missing `readers_dir` is nothing to sweep.
Result<size_t> sweep_reader_mount_points(const std::string& readers_dir);

}  // namespace cowlab
