// The graph-driver contract, modelled on Docker's graphdriver (daemon/graphdriver/driver.go).
//
// A Driver owns one home directory (<store root>/<driver name>) and stores layers there in
// the on-disk layout Docker uses for that driver.  Layer ids are opaque strings chosen by the
// caller (validated by the layer store: [A-Za-z0-9][A-Za-z0-9_.-]*, at most 128 bytes).
//
// Concurrency: a Driver is used by one thread at a time; the layer store serialises access
// across processes with its store lock.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cowlab/io.h"
#include "cowlab/result.h"

namespace cowlab {

// Ordered key/value pairs ("docker info" rows, metadata).  Order is part of the contract.
using KeyValues = std::vector<std::pair<std::string, std::string>>;

struct CreateOpts {
  std::string mount_label;                         // SELinux label; unused by cowlab's drivers
  std::map<std::string, std::string> storage_opt;  // per-layer options; only "size" is defined
};

// Docker's change kinds, in Docker's numeric order.
enum class ChangeKind { kModify = 0, kAdd = 1, kDelete = 2 };
struct Change {
  std::string path;  // absolute within the layer: "/a/b"
  ChangeKind kind;
  bool operator==(const Change&) const = default;
};
char change_kind_letter(ChangeKind kind);  // 'C', 'A', 'D'

// How a driver stores deletions on disk.
enum class WhiteoutFormat {
  kDeleteInPlace,  // vfs, btrfs, zfs, devicemapper: the layer is a full tree; delete entries
  kOverlay,        // overlay: 0/0 character devices, opaque dirs carry <ns>.overlay.opaque=y
  kAufs,           // aufs: `.wh.<name>` files and `.wh..wh..opq` markers stay as files
};

// Which xattr namespace overlay metadata lives in ("trusted" normally, "user" with userxattr).
enum class OverlayXattrNs { kTrusted, kUser };

// What the caller's store lock lets a driver change while it initialises (the layer store
// passes its lock mode).  A driver that keeps state of its own beside the layers (devicemapper:
// pool transactions, deferred deletions, the base device) repairs and sets it up in init; only
// one process may do that at a time.
enum class DriverAccess {
  kExclusive,  // no other process uses the store: init may repair and set up
  kShared,     // readers run at once: init changes nothing — no file in the home, no pool or
               // device of the store — and lists the work it found in pending_recovery()
};

// Everything a driver's init function receives.
struct DriverConfig {
  std::string root;  // the store root; scratch files for probes stay inside it
  std::string home;  // <root>/<driver name>; created by init if missing (kExclusive)
  // Options addressed to this driver, keys with their prefix ("overlay.size", "dm.basesize").
  // A driver rejects keys it does not know with an Invalid error naming the key.
  std::map<std::string, std::string> options;
  DriverAccess access = DriverAccess::kExclusive;
};

class Driver {
 public:
  virtual ~Driver() = default;

  // Registry name ("overlay", "vfs", ...).
  virtual std::string name() const = 0;

  // Creates a read-only (image) layer `id` on top of `parent` ("" = none).  The parent must
  // exist.  Per-layer storage options are rejected unless the driver supports them for
  // read-only layers (Docker: only size, only for rw layers on most drivers).
  virtual Result<void> create(const std::string& id, const std::string& parent,
                              const CreateOpts& opts) = 0;
  // Creates a read-write (container) layer.  `size` quota where the driver supports it.
  virtual Result<void> create_rw(const std::string& id, const std::string& parent,
                                 const CreateOpts& opts) = 0;
  // Removes a layer and everything the driver holds for it (mounts, subvolumes, devices),
  // including what an interrupted create or remove left of it — a half-made layer, for which
  // exists() may be false (aufs: diff/<id> and mnt/<id> made, layers/<id> not yet written).
  // Idempotent: once it succeeds nothing of `id` is left, and a later call changes nothing.
  // kNotFound when the driver held nothing at all of `id`.  The layer store calls it for every
  // layer it recovers, whatever exists() says, and takes kNotFound as done.
  virtual Result<void> remove(const std::string& id) = 0;

  // Returns the absolute path of the layer's root filesystem, mounting it if needed.  Each
  // successful get() must be paired with one put(); the driver counts references per layer
  // in this process, and a layer found already mounted when first seen counts as one
  // reference (Docker's RefCounter), so state survives a restart.
  virtual Result<std::string> get(const std::string& id, const std::string& mount_label) = 0;
  // Releases one reference; the last one unmounts.
  virtual Result<void> put(const std::string& id) = 0;
  // The directory get() mounts the layer's filesystem on — the path get() returns or one of
  // its ancestors (devicemapper: <home>/mnt/<id>, get() returns its rootfs/) — or "" when
  // get() of this layer mounts nothing (vfs, btrfs, an overlay or aufs layer without parent).
  // It changes nothing and reads no mount table.  The layer store checks it against
  // /proc/self/mountinfo to find recorded mounts that a reboot or a umount by hand ended.
  // kNotFound when the layer does not exist.
  virtual Result<std::string> mount_dir(const std::string& id) = 0;

  virtual bool exists(const std::string& id) = 0;
  // Ids of every layer the driver holds data for, in no particular order: each complete layer
  // (exists() is true) and each half-made one that remove() takes away; the layer store
  // collects with it data that no layer claims.  kNotSupported (the default) where the driver
  // cannot enumerate its layers.
  virtual Result<std::vector<std::string>> list();
  // `docker info` rows for this driver, Docker's key names and order.  Every boolean is
  // the result of a probe, not an echo of configuration.
  virtual KeyValues status() = 0;
  // Driver-specific facts about a layer (overlay: WorkDir, MergedDir, UpperDir, LowerDir).
  virtual Result<KeyValues> metadata(const std::string& id) = 0;
  // Releases everything the driver holds in this process (mounts of its home, quota state).
  virtual Result<void> cleanup() = 0;

  // Work an init under DriverAccess::kShared found and left undone because it changes the
  // store (an interrupted pool transaction to roll back, a base device to create), one line
  // each; empty when there is none, and always empty after an init under kExclusive, which
  // does such work itself.  The layer store reacts as to its own pending recovery: it takes
  // its lock exclusive and initialises the driver again.  Until then the driver serves what
  // does not depend on that work, and refuses the rest naming it.
  virtual std::vector<std::string> pending_recovery() const { return {}; }

  // ---- diffs (DiffDriver).  `parent` "" means "against nothing": every entry is an Add.
  // Writes an uncompressed, reproducible OCI layer tar of `id` relative to `parent`.
  virtual Result<void> diff(const std::string& id, const std::string& parent, Writer& out) = 0;
  // Changes sorted by path; Docker's meaning of Modify (see changes.h).
  virtual Result<std::vector<Change>> changes(const std::string& id, const std::string& parent) = 0;
  // Applies an uncompressed OCI layer tar to layer `id` (whose parent is `parent`).  Returns
  // the number of bytes applied (sum of the tar's entry sizes, as Docker reports).  Refuses
  // escapes (see archive.h); on error the layer may hold partial content — the layer store
  // removes such layers, so callers must go through it.
  virtual Result<int64_t> apply_diff(const std::string& id, const std::string& parent,
                                     Reader& tar) = 0;
  // Bytes that diff() would carry: sizes of added and modified regular files, each inode once.
  virtual Result<int64_t> diff_size(const std::string& id, const std::string& parent) = 0;

  // ---- durability
  // Makes every layer's data written so far durable (the layer store calls it before a layer
  // loses its "incomplete" mark or a staged applydiff is committed).  The default syncfs()es
  // the filesystem holding the home; drivers whose layers live elsewhere (a pool, a thin
  // device) override it with their own barrier.
  virtual Result<void> sync_data();

  // ---- measurement
  // Bytes allocated in the store this driver writes to, for space expectations (container
  // create cost, copy-up bytes).  The default reports the used blocks of the filesystem
  // holding the home (after syncing it); drivers with their own pool (devicemapper's thin
  // pool data, zfs's pool) override it to report the pool's allocation.
  virtual Result<uint64_t> space_used();
  // The home directory (<root>/<name>).
  virtual std::string home() const = 0;

  // ---- capabilities
  virtual WhiteoutFormat whiteout_format() const = 0;
  // Whether create_rw honours a "size" storage option on this backing store.
  virtual bool supports_quota() const = 0;
};

// A driver's init function: validates options, probes the kernel and backing filesystem, and
// returns a ready driver or an error.  Errors of kind kNotSupported mean "this driver cannot
// run here" and make selection move on; anything else is fatal for selection.
using DriverInit = Result<std::unique_ptr<Driver>> (*)(const DriverConfig& config);

}  // namespace cowlab
