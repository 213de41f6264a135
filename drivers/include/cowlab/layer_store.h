// The layer store: layers with ids, parents, DiffIDs and ChainIDs on top of one Driver.
//
// On disk, under the store root:
//   <root>/lock               flock()ed exclusively by every operation that reads or
//                             changes the store, so concurrent cowlab processes serialise
//   <root>/layers/<id>.json   one metadata file per layer, written atomically; the driver
//                             stores the layer under its cache id, not its layer id
//                             (temp file, fsync, rename, fsync dir)
//   <root>/tmp/               staging for imports (same filesystem as the driver home)
//   <root>/<driver>/          the driver's home
//
// A layer being created is first recorded with "incomplete": true; only a finished layer
// loses the flag, and only after its data is durable (syncfs of the driver's home), so a power
// cut never leaves a complete layer with missing or zero-byte files (docs/crash.md checks this
// with dm-log-writes).  Test-only: COWLAB_TEST_FAULT=skip-layer-sync in the environment skips
// that barrier, so the power-cut test can show it catches the bug.  Opening the store removes
// incomplete layers and leftovers in tmp/, so an interrupted import (crash, kill, full disk)
// leaves nothing behind.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cowlab/driver.h"
#include "cowlab/io.h"
#include "cowlab/registry.h"
#include "cowlab/result.h"

namespace cowlab {

enum class LayerKind { kReadOnly, kReadWrite };

struct LayerInfo {
  std::string id;
  // The driver's name for the layer (Docker's cache-id): 32 random hex digits, so layer ids
  // are free for the user and never collide with names a driver reserves in its home.
  std::string cache_id;
  std::string parent;  // "" for a base layer
  LayerKind kind = LayerKind::kReadOnly;
  int64_t size = -1;       // bytes applied (import) or diff size at last measure; -1 unknown
  std::string diff_id;     // "sha256:..." of the uncompressed tar; "" for layers not imported
  std::string chain_id;    // OCI ChainID; "" when any ancestor has no DiffID
  std::string compressed_digest;  // digest of the input as given (may equal diff_id)
  int64_t created = 0;     // unix seconds
  int mount_count = 0;     // references held through mount()/unmount(), across processes
  std::string mount_point; // path returned by the driver while mounted
  bool incomplete = false;
};

struct StoreOptions {
  std::string root;
  std::string driver;  // "" = auto-select
  std::vector<std::string> priority;
  std::map<std::string, std::string> storage_opts;
};

// Validates a layer id: [A-Za-z0-9][A-Za-z0-9_.-]*, at most 128 bytes.
Result<void> validate_layer_id(const std::string& id);

class LayerStore {
 public:
  // Creates the root if needed, takes the store lock for the lifetime of the object, selects
  // the driver (registry.h rules) and cleans up leftovers of interrupted operations.
  static Result<std::unique_ptr<LayerStore>> open(const StoreOptions& options);
  ~LayerStore();

  Driver& driver() { return *driver_; }
  const std::string& root() const { return root_; }
  // Drivers tried during selection and why they were skipped.
  const std::vector<DriverProbe>& selection() const { return tried_; }

  Result<std::vector<LayerInfo>> layers();
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
  // children.  The input is first spooled into the store's tmp/ and checked entry by entry
  // (names, link targets, links through links) without touching the layer, so a malicious
  // or malformed tar is refused before anything is written.  Returns bytes applied.
  Result<int64_t> apply_diff(const std::string& id, Reader& tar);
  // Diffs of `id` against `parent`; std::nullopt means the layer's own parent ("" = against
  // nothing, every entry an Add).
  Result<void> diff(const std::string& id, const std::optional<std::string>& parent, Writer& out);
  Result<std::vector<Change>> changes(const std::string& id, const std::optional<std::string>& parent);
  Result<int64_t> diff_size(const std::string& id, const std::optional<std::string>& parent);

  // Mount references persist across processes: the first mount() calls the driver's get(),
  // the last unmount() its put().
  Result<std::string> mount(const std::string& id);
  Result<void> unmount(const std::string& id);
  // Deletes a layer; refuses while it has children or is mounted.
  Result<void> delete_layer(const std::string& id);
  // Deletes every layer (children first) and the driver's home.
  Result<void> wipe();

  // Parent chain of `id`, nearest first (excluding `id`).
  Result<std::vector<std::string>> ancestors(const std::string& id);

 private:
  LayerStore() = default;
  // Records the layer as incomplete and creates it in the driver; the caller finishes it.
  Result<LayerInfo> create_incomplete(const std::string& id, const std::string& parent,
                                      LayerKind kind, const CreateOpts& opts, const std::string& ctx);
  // The data barrier every layer passes before it loses its incomplete mark.
  Result<void> sync_layer(const LayerInfo& info);
  Result<void> write_info(const LayerInfo& info);
  Result<void> remove_info(const std::string& id);
  Result<void> recover();

  std::string root_;
  int lock_fd_ = -1;
  std::unique_ptr<Driver> driver_;
  std::vector<DriverProbe> tried_;
};

// ---- offline image import (image.cpp) -----------------------------------------------------
struct ImportedImage {
  std::string source_format;  // "oci-layout", "docker-save-oci", "docker-save-legacy"
  std::string reference;      // tag or manifest digest
  std::vector<LayerInfo> layers;  // base first
  std::vector<bool> reused;       // per layer: already present (same ChainID)
};

// Imports an OCI image layout directory or a `docker save` tar (legacy per-layer form or the
// OCI-based form of Docker >= 25).  Verifies every blob's digest and each layer's DiffID
// against the config's rootfs.diff_ids; creates the chain with layer ids = ChainID hex, so
// an already imported stack is reused.  `ref` picks a manifest by tag when there are several.
Result<ImportedImage> import_image(LayerStore& store, const std::string& path, const std::string& ref = "");

}  // namespace cowlab
