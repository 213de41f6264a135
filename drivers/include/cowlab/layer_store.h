// The layer store: layers with ids, parents, DiffIDs and ChainIDs on top of one Driver.
//
// On disk, under the store root:
//   <root>/lock                  flock()ed: shared by commands that only read, exclusive by
//                                commands that change the store (and by recovery)
//   <root>/layers/<id>.json      one metadata file per layer, replaced atomically (temp file
//                                <id>.json.tmp-*, fsync, rename, fsync dir); the driver
//                                stores the layer under its cache id, not its layer id
//   <root>/layers/<id>.json.deleting   a layer being deleted (renamed, so no space is needed)
//   <root>/layers/<id>.json.damaged    quarantined metadata (unreadable, or a parent loop)
//   <root>/tmp/                  staging (same filesystem as the driver home)
//   <root>/<driver>/             the driver's home
//
// One intent/commit scheme covers every mutating operation: before the driver is touched the
// layer's metadata records what is about to happen, and one atomic metadata write commits
// the result.  Whatever a crash interrupts, the next writer to open the store finds the
// intent and rolls it back or forward (recover()):
//   create/import   "incomplete": true until the data is synced; removed by recovery
//   applydiff       intent {applydiff, staging cache id}: the tar is applied to a fresh copy
//                   of the layer (same parent, the layer's diff re-applied), synced, and the
//                   metadata switches cache ids in one write (intent {retire, old cache id}),
//                   so a reader never sees a half-applied layer and a crash leaves the old
//                   content; DiffID/ChainID are cleared in that same write
//   mount/unmount   intent {mount} / {unmount} around the driver's get()/put() of the first
//                   and last reference; recovery put()s the layer and sets the count to 0;
//                   a recorded mount whose directory (Driver::mount_dir: the path returned
//                   or an ancestor of it) /proc/self/mountinfo no longer shows (reboot,
//                   umount by hand) is reset as well, and so are references taken in an
//                   earlier boot (the boot id is recorded), whatever the driver mounts
//   delete/wipe     rename to <id>.json.deleting, then remove the driver's data, then unlink
// Data is made durable (sync_layer: Driver::sync_data) before "incomplete" is dropped or a
// staged applydiff is committed, so a power cut never leaves a complete layer with missing or
// zero-byte files (docs/crash.md checks this with dm-log-writes).  Test-only fault hooks
// (environment, never set in production):
//   COWLAB_TEST_FAULT=skip-layer-sync  skip that data barrier (the power-cut test catches it)
//   COWLAB_TEST_KILL_AT=<point>        SIGKILL this process at a named step (kill tests);
//                                      the points are listed in kKillPoints (layer_store.cpp)
//
// Readers (shared lock) that find an interrupted operation take the lock exclusive, recover
// like a writer and return to shared (containers/storage does the same), so a crash never
// leaves readers with a half-done store until some writer comes along.  On a read-only store
// nothing can change: readers skip incomplete layers and layers being deleted, see an
// interrupted applydiff's old content, and report what is left (not_recovered()).
// Unreadable metadata never blocks the store: writers move it aside (.damaged), everyone
// reports it (damaged()), and delete_layer()/wipe() remove it.  Its driver data goes with it
// even when the text no longer names it: driver data that no metadata claims (Driver::list)
// is collected when the last unreadable metadata is deleted (or recovery drops an unreadable
// .deleting file), never while any unreadable file is left that might own it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cowlab/driver.h"
#include "cowlab/io.h"
#include "cowlab/registry.h"
#include "cowlab/result.h"
#include "cowlab/sys.h"

namespace cowlab {

enum class LayerKind { kReadOnly, kReadWrite };

// A recorded, not yet committed change to a layer (see the scheme above).
enum class IntentOp { kNone, kApplyDiff, kRetire, kMount, kUnmount };
struct Intent {
  IntentOp op = IntentOp::kNone;
  std::string cache_id;  // kApplyDiff: the staging copy; kRetire: the replaced copy
};

struct LayerInfo {
  std::string id;
  // The driver's name for the layer (Docker's cache-id): 32 random hex digits, so layer ids
  // are free for the user and never collide with names a driver reserves in its home.
  std::string cache_id;
  std::string parent;  // "" for a base layer
  LayerKind kind = LayerKind::kReadOnly;
  int64_t size = -1;     // bytes applied (import) or diff size at last measure; -1 unknown
  std::string diff_id;   // "sha256:..." of the uncompressed tar; "" for layers not imported
  std::string chain_id;  // OCI ChainID; "" when any ancestor has no DiffID
  std::string compressed_digest;  // digest of the input as given (may equal diff_id)
  int64_t created = 0;            // unix seconds
  int mount_count = 0;            // references held through mount()/unmount(), across processes
  std::string mount_point;        // path returned by the driver while mounted
  std::string mount_boot;         // boot id (/proc/sys/kernel/random/boot_id) of the first mount
  bool incomplete = false;
  std::string driver;  // the driver that made the layer; "" in metadata of older versions
  std::map<std::string, std::string> create_opts;  // per-layer options given at creation
  Intent intent;
};

// Metadata that cannot be used: unreadable (quarantined as <id>.json.damaged), part of a
// parent loop (quarantined), or naming a parent that does not exist (left in place).
enum class Damage {
  kUnreadable,   // not JSON, wrong fields, or naming another layer (writers quarantine it)
  kLoop,         // its parent chain loops (writers quarantine it)
  kQuarantined,  // already moved aside as <id>.json.damaged
  kOrphan,       // its parent is missing or damaged (left in place; deletable)
};
struct DamagedLayer {
  std::string id;    // from the file name
  std::string file;  // the metadata file as it is now
  std::string reason;
  Damage damage = Damage::kUnreadable;
};

enum class LockMode { kShared, kExclusive };

struct StoreOptions {
  std::string root;
  std::string driver;  // "" = auto-select
  std::vector<std::string> priority;
  std::map<std::string, std::string> storage_opts;
  // A driver outside the registry's table, used instead of selection (`driver` and
  // `priority` are ignored; its home is <root>/<entry name>; layers of another driver are
  // refused as usual).  For tests of the store's contract with drivers: a driver built to
  // show one rule (layer_store_recovery_test.cpp).  nullptr: the registry selects.
  const DriverEntry* driver_entry = nullptr;
  // Readers take the lock shared and never recover; writers take it exclusive.
  LockMode lock = LockMode::kExclusive;
  // Seconds to wait for the lock; negative waits forever.  Running out is a kTimeout error
  // naming the holders.
  double lock_timeout_s = -1;
  // Called once after a second of waiting, with "waiting for the store lock held by PID N
  // (COMMAND)".
  std::function<void(const std::string&)> on_lock_wait;
};

// Copies an input into an unnamed file in <root>/tmp (O_TMPFILE, or a file unlinked at once
// where the filesystem lacks it), so a slow pipe is read before the store lock is taken and
// a killed copy leaves nothing behind.  An empty input is refused (kInvalid, naming it).
class StagedInput final : public Reader {
 public:
  static Result<std::unique_ptr<StagedInput>> stage(const std::string& root, Reader& in);
  Result<size_t> read(void* buf, size_t len) override;
  std::string name() const override { return name_; }
  int64_t size() const { return size_; }

 private:
  StagedInput() = default;
  sys::Fd fd_;
  std::string name_;
  int64_t size_ = 0;
};

// Validates a layer id: [A-Za-z0-9][A-Za-z0-9_.-]*, at most 128 bytes.  A bad id is a
// kUsage error (it comes from the command line); the id is quoted with escapes.
Result<void> validate_layer_id(const std::string& id);

class LayerStore {
 public:
  // Creates the root if needed (writers), takes the store lock for the lifetime of the object,
  // selects the driver — the one the layers record when no driver is given; a different one
  // is refused naming both — and, for writers, recovers interrupted operations (recovered()).
  static Result<std::unique_ptr<LayerStore>> open(const StoreOptions& options);
  // `cowlab info --all`: tries every driver on the store's root as a reader would — under the
  // store's shared lock (waited for as `options` say; options.lock is ignored), each driver
  // initialised with DriverAccess::kShared and released again — so it repairs, sets up and
  // tears down nothing that other processes use (devicemapper's pool and devices).  It makes
  // the root, its lock file and tmp/, nothing else of a store: a driver without a home is tried
  // in tmp/probe-<pid>-<random>/ (SelectOptions::probe_dir), removed after, so concurrent
  // probes and readers never see a home made for a probe.  options.driver_entry is ignored.
  static Result<std::vector<DriverProbe>> probe_drivers(const StoreOptions& options);
  ~LayerStore();

  Driver& driver() { return *driver_; }
  const std::string& root() const { return root_; }
  // Drivers tried during selection and why they were skipped.
  const std::vector<DriverProbe>& selection() const { return tried_; }

  // What opening the store recovered, one line each ("removed interrupted import of layer
  // a", ...); empty when nothing was interrupted.
  const std::vector<std::string>& recovered() const { return recovered_; }
  // A reader on a read-only store: the interrupted operations it could not recover (it does
  // not see them), one line each.
  const std::vector<std::string>& not_recovered() const { return not_recovered_; }

  // Usable layers (incomplete ones included, flagged); damaged metadata is left out.
  Result<std::vector<LayerInfo>> layers();
  Result<std::vector<DamagedLayer>> damaged();
  Result<LayerInfo> layer(const std::string& id);
  bool exists(const std::string& id);
  // The layer whose ChainID is `chain_id`, if any.
  Result<std::optional<LayerInfo>> find_by_chain_id(const std::string& chain_id);

  Result<LayerInfo> create_layer(const std::string& id, const std::string& parent, LayerKind kind,
                                 const CreateOpts& opts = {});
  // Creates read-only layer `id` on `parent` from a layer tar (uncompressed, gzip or zstd).
  // Atomic: on any error no layer and no files remain.  Records DiffID and ChainID.
  Result<LayerInfo> import_layer(const std::string& id, const std::string& parent, Reader& tar);
  // Applies a layer tar (uncompressed, gzip or zstd) to an existing layer that has no
  // children and is not mounted.  The input is first spooled into the store's tmp/ and
  // checked entry by entry (names, link targets, links through links) without touching the
  // layer, so a malicious or malformed tar is refused before anything is written; then it is
  // applied to a staged copy that replaces the layer in one metadata write (see above): on
  // any error or crash the layer keeps its old content, DiffID and ChainID.  Returns bytes
  // applied.
  Result<int64_t> apply_diff(const std::string& id, Reader& tar);
  // Diffs of `id` against `parent`; std::nullopt means the layer's own parent ("" = against
  // nothing, every entry an Add).
  Result<void> diff(const std::string& id, const std::optional<std::string>& parent, Writer& out);
  Result<std::vector<Change>> changes(const std::string& id,
                                      const std::optional<std::string>& parent);
  Result<int64_t> diff_size(const std::string& id, const std::optional<std::string>& parent);

  // Mount references persist across processes: the first mount() calls the driver's get(),
  // the last unmount() its put().
  Result<std::string> mount(const std::string& id);
  Result<void> unmount(const std::string& id);
  // Deletes a layer; refuses while it has children or is mounted.  A damaged layer is
  // deleted too, with its data: the cache ids its text still names, and — once no other
  // unreadable metadata is left that could own it — every piece of driver data no layer
  // claims (reported in recovered()).  Needs no free space.
  Result<void> delete_layer(const std::string& id);
  // Deletes every layer (children first, damaged ones included), staging leftovers and the
  // driver's home.  Needs no free space.
  Result<void> wipe();

  // Parent chain of `id`, nearest first (excluding `id`).
  Result<std::vector<std::string>> ancestors(const std::string& id);

 private:
  LayerStore() = default;
  struct Scan;
  Result<Scan> scan();
  Result<void> take_lock(const StoreOptions& options);
  // flock()s the open lock file in `mode`, waiting as options say (converts a held lock).
  Result<void> acquire_lock(const StoreOptions& options, LockMode mode);
  std::vector<std::string> pending_recovery(const Scan& sc);
  // The data barrier before a commit: Driver::sync_data, unless the test-only fault hook
  // COWLAB_TEST_FAULT=skip-layer-sync is set.
  Result<void> sync_layer(const LayerInfo& info);
  // Driver::remove of a cache id whatever exists() says — an interrupted create can leave data
  // for which exists() is false (aufs: diff/<id> without layers/<id>) — with kNotFound (the
  // driver held nothing of it) taken as done.
  Result<void> remove_driver_data(const std::string& cache);
  // Removes a layer's driver data and metadata, given its parsed metadata file.
  Result<void> destroy(const LayerInfo& info, const std::string& file, const std::string& ctx);
  Result<void> delete_damaged(const DamagedLayer& d, const std::string& ctx);
  // Removes driver data that no metadata claims, once no unreadable metadata (but `leaving`)
  // could own it; reports each in recovered().
  Result<void> collect_orphans(const std::string& ctx, const std::string& leaving);
  // Records the layer as incomplete and creates it in the driver; the caller finishes it.
  Result<LayerInfo> create_incomplete(const std::string& id, const std::string& parent,
                                      LayerKind kind, const CreateOpts& opts,
                                      const std::string& ctx);
  Result<void> write_info(const LayerInfo& info);
  // A record with references whose driver mount is gone (see the scheme above).
  bool recorded_mount_gone(const LayerInfo& l);
  Result<void> remove_info(const std::string& id);
  Result<void> recover();

  std::string root_;
  int lock_fd_ = -1;
  LockMode lock_mode_ = LockMode::kExclusive;
  bool read_only_ = false;  // the lock file could only be opened read-only
  std::vector<std::string> recovered_;
  std::vector<std::string> not_recovered_;
  std::unique_ptr<Driver> driver_;
  std::vector<DriverProbe> tried_;
};

// ---- offline image import (image.cpp) -----------------------------------------------------
struct ImportedImage {
  std::string source_format;      // "oci-layout", "docker-save-oci", "docker-save-legacy"
  std::string reference;          // tag or manifest digest
  std::vector<LayerInfo> layers;  // base first
  std::vector<bool> reused;       // per layer: already present (same ChainID)
};

// What import_image would import from an image directory (an OCI layout, or the files of a
// docker save tar): index, manifests and config parsed and their digests verified; nothing is
// written and no layer blob is read.  Exposed for the importer's fuzz target.
enum class ImageSource { kDirectory, kArchive };
struct ImagePlan {
  std::string format, reference;
  std::vector<std::string> layer_files;  // base first
  std::vector<std::string> diff_ids;
};
Result<ImagePlan> plan_image(const std::string& dir, const std::string& ref, ImageSource source);

// Imports an OCI image layout directory or a `docker save` tar (legacy per-layer form or the
// OCI-based form of Docker >= 25).  Verifies every blob's digest and each layer's DiffID
// against the config's rootfs.diff_ids; creates the chain with layer ids = ChainID hex, so
// an already imported stack is reused.  `ref` picks a manifest by tag when there are several.
Result<ImportedImage> import_image(LayerStore& store, const std::string& path,
                                   const std::string& ref = "");

}  // namespace cowlab
