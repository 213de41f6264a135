// Crash runner internals (cowlab/crash.h is the contract).  Internal.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cowlab/crash.h"
#include "cowlab/layer_store.h"
#include "cowlab/result.h"
#include "devicemapper/dm.h"
#include "scenario/model.h"

namespace cowlab::crash {

// ---- phases: the scenario as an ordered list of named, separately recorded operations -----
enum class PhaseKind { kImport, kCreate, kWrite, kRemove };

struct Phase {
  std::string name;  // "import base", "create c1", "write c1", "remove top"
  PhaseKind kind = PhaseKind::kImport;
  std::string id;       // the layer or container it acts on
  std::string parent;   // import: parent layer; create: image
  std::string tar;      // import: the layer tar (off the recorded device)
  std::string path;     // write: file inside the container
  std::string data;     // write: bytes written
  uint64_t offset = 0;  // write: at this offset
};

// Phases of the scenario's one document, in the order the scenario runner uses: layers,
// containers, steps.  Layer tars of literal entries are written into `tar_dir`.  Ops other
// than write/append/remove are refused naming the step.
Result<std::vector<Phase>> build_phases(const scenario::Doc& doc, const std::string& tar_dir);
// Indices of the phases `spec` names ("all" = every phase); an unknown name is an error that
// lists the known ones.  A name may also be "step N" (the Nth of all phases, 1-based).
Result<std::vector<size_t>> crashed_phases(const std::vector<Phase>& phases,
                                           const scenario::CrashSpec& spec);
// Performs one phase on an open store.
Result<void> perform(LayerStore& store, const Phase& p);

// ---- tar manifests: what a layer must contain ---------------------------------------------
struct ManifestEntry {
  char type = 'f';  // f regular, d dir, l symlink, h hardlink, w whiteout, o opaque, c other
  uint64_t size = 0;
  std::string digest;  // regular files
  std::string target;  // symlinks
};
using Manifest = std::map<std::string, ManifestEntry>;  // normalised path → entry
Result<Manifest> read_manifest(const std::string& tar);
Result<Manifest> read_manifest_from_string(const std::string& tar_bytes);

// ---- the state at one crash point ----------------------------------------------------------
struct Expectation {
  const std::vector<Phase>* phases = nullptr;
  std::set<size_t> done;                      // phases whose end mark is in the replayed prefix
  std::optional<size_t> running;              // phase in progress
  std::map<std::string, Manifest> manifests;  // imported layer id → its tar's manifest
};
// Opens the store at `root` (recovery runs), checks every invariant of cowlab/crash.h,
// releases every mount it made and the driver (cleanup).  Returns the failed invariants.
std::vector<Finding> check_state(const std::string& root, const std::string& driver,
                                 const std::map<std::string, std::string>& storage_opts,
                                 const Expectation& want);

// `zfs list -H -p -o name,clones -t snapshot ...` output → the snapshots of datasets below
// `parent` that have no clone.  The zfs driver keeps a snapshot only as a child's origin, so
// the checker's no-orphans counts these as leaked (a create cut after its snapshot).
std::vector<std::string> zfs_stray_snapshots(const std::string& zfs_list_output,
                                             const std::string& parent);

// ---- the backing store: the filesystem or pool on the recorded device ----------------------
// The store root is <mnt>/root.  ext4 (vfs, overlay, devicemapper's loop files), btrfs, or a
// zfs pool whose only vdev is the device (backing.cpp).
class Backing {
 public:
  virtual ~Backing() = default;
  // A new filesystem or pool on `dev`, mounted on `mnt`.
  virtual Result<void> make(const std::string& dev, const std::string& mnt) = 0;
  // Brings up the store on `dev` as a boot would (journal or log-tree replay at mount; zpool
  // import) and mounts it on `mnt`.  An error here is the kernel facility's failure.
  virtual Result<void> attach(const std::string& dev, const std::string& mnt) = 0;
  // Unmounts `mnt` and lets go of the device (zpool export).
  virtual Result<void> detach(const std::string& mnt) = 0;
  // Storage options the driver gets for this backing (devicemapper's loop sizes).
  const std::map<std::string, std::string>& storage_opts() const { return storage_opts_; }

 protected:
  std::map<std::string, std::string> storage_opts_;
};
// kNotSupported for a driver the runner cannot back yet (aufs).
Result<std::unique_ptr<Backing>> backing_for(const std::string& driver);
// umount2, falling back to a lazy unmount.
Result<void> unmount_dir(const std::string& mnt);

// ---- the device stack ----------------------------------------------------------------------
// A thin pool on the scratch device; thin volumes "origin" (the recorded device), "replay"
// (a snapshot of origin's starting state that the log is replayed onto), "log" (the
// dm-log-writes log) and "state" (a snapshot of replay per crash point, mounted and checked).
class DmStack {
 public:
  static Result<DmStack> create(const std::string& device);
  DmStack(DmStack&&) noexcept;
  DmStack& operator=(DmStack&&) = delete;
  ~DmStack();  // removes every device it made

  std::string origin() const;
  std::string logwrites() const;
  std::string log() const;
  std::string replay() const;
  std::string state() const;
  uint64_t volume_bytes() const { return volume_sectors_ * 512; }

  // Snapshots origin into replay (origin must not be in use by a filesystem being written).
  Result<void> snapshot_start();
  Result<void> start_logging();                // log-writes over origin → logwrites()
  Result<void> mark(const std::string& name);  // a mark in the log
  Result<void> stop_logging();                 // removes log-writes (writes its end mark)
  Result<void> activate_replay();
  Result<void> make_state();  // snapshot replay → state, active
  Result<void> drop_state();

 private:
  DmStack() = default;
  // dm::create of <prefix><name> with `table`, recorded for removal, its node made.
  Result<void> add_device(const std::string& name, const std::vector<dm::Target>& table);
  // Activates thin device `id` of the pool as <prefix><name>.
  Result<void> activate_thin(const std::string& name, uint32_t id, uint64_t sectors);
  // create_thin `id` in the pool, then activates it.
  Result<void> thin(const std::string& name, uint32_t id, uint64_t sectors);
  // Snapshot `origin_id` (active as <prefix><origin>) into new thin `id`: dm-thin wants the
  // origin suspended meanwhile ("suspend the origin before create_snap").
  Result<void> snapshot(uint32_t id, const std::string& origin, uint32_t origin_id);
  Result<void> remove_device(const std::string& name);
  std::string prefix_;
  uint64_t volume_sectors_ = 0, log_sectors_ = 0;
  std::vector<std::string> devices_;  // made by us, removal order = reverse
  bool moved_ = false;
};

}  // namespace cowlab::crash
