// The device stack of a crash run, through the device-mapper seam (devicemapper/dm.h):
//
//   scratch device ─┬─ <p>meta (linear, 64 MiB)  ─┐
//                   └─ <p>data (linear, the rest) ─┴─ <p>pool (thin-pool, 64 KiB blocks)
//   thin 1 <p>origin   the device the store's filesystem lives on (recorded)
//   thin 2 <p>replay   snapshot of origin's starting state; the log is replayed onto it
//   thin 3 <p>log      the dm-log-writes log
//   thin 4 <p>state    snapshot of replay at one crash point: mounted, checked, dropped
//   <p>lw              log-writes over origin and log, while recording
//
// Snapshots of thin volumes cost nothing until written, so each crash state is cheap (the
// way fstests' generic/482 checks every flush point).  The pool zeroes new blocks, so a state
// never shows data of an earlier state.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>

#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "crash/internal.h"
#include "devicemapper/dm.h"

namespace cowlab::crash {

namespace {

constexpr uint64_t kMetaSectors = 64ull << 11;   // 64 MiB of pool metadata
constexpr uint64_t kVolumeSectors = 6ull << 21;  // 6 GiB per thin volume (virtual)
constexpr uint64_t kLogSectors = 24ull << 21;    // 24 GiB of log (virtual)
constexpr uint32_t kOrigin = 1, kReplay = 2, kLog = 3, kState = 4;

// Loads the device-mapper target `target` from `module`.  A source-built kernel (the aufs
// profile) has the targets built in and no module tree: modprobe fails there although the
// target is registered (DM_LIST_VERSIONS lists it).
Result<void> ensure_target(const std::string& target, const std::string& module) {
  std::string out;
  int rc = COWLAB_TRY(sys::run({"modprobe", module}, &out));
  if (rc == 0) return {};
  for (const auto& [name, version] : COWLAB_TRY(dm::target_versions()))
    if (name == target) return {};
  return Error::not_supported("no " + target + " target: modprobe " + module + ": exit " +
                              std::to_string(rc) + ": " + out);
}

}  // namespace

std::string DmStack::origin() const {
  return dm::device_path(prefix_ + "origin");
}
std::string DmStack::logwrites() const {
  return dm::device_path(prefix_ + "lw");
}
std::string DmStack::log() const {
  return dm::device_path(prefix_ + "log");
}
std::string DmStack::replay() const {
  return dm::device_path(prefix_ + "replay");
}
std::string DmStack::state() const {
  return dm::device_path(prefix_ + "state");
}

DmStack::DmStack(DmStack&& o) noexcept
    : prefix_(std::move(o.prefix_)),
      volume_sectors_(o.volume_sectors_),
      log_sectors_(o.log_sectors_),
      devices_(std::move(o.devices_)) {
  o.moved_ = true;
}

DmStack::~DmStack() {
  if (moved_) return;
  for (auto it = devices_.rbegin(); it != devices_.rend(); ++it)
    (void)dm::remove(*it, dm::Removal::kImmediate);
}

Result<void> DmStack::remove_device(const std::string& name) {
  auto info = COWLAB_TRY(dm::info(name));
  if (info.exists) COWLAB_TRY(dm::remove(name, dm::Removal::kImmediate));
  std::erase(devices_, name);
  return {};
}

Result<DmStack> DmStack::create(const std::string& device) {
  const std::string ctx = "crash device stack on " + device;
  // The device first: a wrong --device is the user's mistake, whatever the kernel has.
  auto st = COWLAB_TRY_CTX(sys::stat(device), ctx);
  if (!S_ISBLK(st.st_mode)) return Error::invalid(ctx + ": not a block device");
  COWLAB_TRY_CTX(dm::probe_kernel(), ctx);
  COWLAB_TRY_CTX(ensure_target("thin-pool", "dm_thin_pool"), ctx);
  COWLAB_TRY_CTX(ensure_target("log-writes", "dm_log_writes"), ctx);
  DmStack s;
  s.prefix_ = "cowlab-crash-";
  // Leftovers of an earlier run that died: the names are ours.
  for (const char* n : {"state", "lw", "replay", "log", "origin", "pool", "data", "meta"}) {
    auto info = COWLAB_TRY_CTX(dm::info(s.prefix_ + n), ctx);
    if (info.exists)
      COWLAB_TRY_CTX(dm::remove(s.prefix_ + n, dm::Removal::kImmediate), ctx + ": remove leftover");
  }
  auto fd = COWLAB_TRY_CTX(sys::open(device, O_RDWR | O_CLOEXEC | O_EXCL), ctx);
  uint64_t bytes = 0;
  COWLAB_TRY_CTX(sys::ioctl(fd.get(), BLKGETSIZE64, &bytes, "BLKGETSIZE64 " + device), ctx);
  fd.reset();
  uint64_t sectors = bytes / 512;
  if (sectors < kMetaSectors + (2ull << 21))
    return Error::invalid(ctx + ": " + std::to_string(bytes) +
                          " bytes is too small (at least 2 GiB + 64 MiB)");
  uint64_t data_sectors = (sectors - kMetaSectors) / 128 * 128;
  s.volume_sectors_ = kVolumeSectors;
  s.log_sectors_ = kLogSectors;
  auto add = [&](const std::string& n, std::vector<dm::Target> table) -> Result<void> {
    COWLAB_TRY_CTX(s.add_device(n, table), ctx);
    return {};
  };
  COWLAB_TRY(add("meta", {{0, kMetaSectors, "linear", device + " 0"}}));
  {
    // A zeroed superblock makes the pool format fresh metadata.
    auto m =
        COWLAB_TRY_CTX(sys::open(dm::device_path(s.prefix_ + "meta"), O_WRONLY | O_CLOEXEC), ctx);
    std::string zero(1 << 20, '\0');
    COWLAB_TRY_CTX(sys::pwrite_all(m.get(), zero.data(), zero.size(), 0), ctx);
    COWLAB_TRY_CTX(sys::fsync(m.get()), ctx);
  }
  COWLAB_TRY(
      add("data", {{0, data_sectors, "linear", device + " " + std::to_string(kMetaSectors)}}));
  COWLAB_TRY(add("pool", {{0, data_sectors, "thin-pool",
                           dm::device_path(s.prefix_ + "meta") + " " +
                               dm::device_path(s.prefix_ + "data") + " 128 0"}}));
  COWLAB_TRY(s.thin("origin", kOrigin, s.volume_sectors_));
  COWLAB_TRY(s.thin("log", kLog, s.log_sectors_));
  return s;
}

Result<void> DmStack::add_device(const std::string& name, const std::vector<dm::Target>& table) {
  COWLAB_TRY(dm::create(prefix_ + name, table));
  devices_.push_back(prefix_ + name);
  COWLAB_TRY(dm::ensure_node(prefix_ + name));
  return {};
}

Result<void> DmStack::activate_thin(const std::string& name, uint32_t id, uint64_t sectors) {
  return add_device(
      name, {{0, sectors, "thin", dm::device_path(prefix_ + "pool") + " " + std::to_string(id)}});
}

Result<void> DmStack::thin(const std::string& name, uint32_t id, uint64_t sectors) {
  const std::string ctx = "crash device stack: thin volume " + name;
  COWLAB_TRY_CTX(dm::message(prefix_ + "pool", "create_thin " + std::to_string(id)), ctx);
  COWLAB_TRY_CTX(activate_thin(name, id, sectors), ctx);
  return {};
}

Result<void> DmStack::snapshot(uint32_t id, const std::string& origin, uint32_t origin_id) {
  COWLAB_TRY(dm::suspend(prefix_ + origin));
  auto r = dm::message(prefix_ + "pool",
                       "create_snap " + std::to_string(id) + " " + std::to_string(origin_id));
  COWLAB_TRY(dm::resume(prefix_ + origin));
  if (!r.ok()) return std::move(r).error();
  return {};
}

Result<void> DmStack::snapshot_start() {
  COWLAB_TRY_CTX(snapshot(kReplay, "origin", kOrigin), "snapshot start state");
  return {};
}

Result<void> DmStack::start_logging() {
  COWLAB_TRY_CTX(add_device("lw", {{0, volume_sectors_, "log-writes", origin() + " " + log()}}),
                 "start dm-log-writes");
  return {};
}

Result<void> DmStack::mark(const std::string& name) {
  COWLAB_TRY_CTX(dm::message(prefix_ + "lw", "mark " + name), "dm-log-writes mark " + name);
  return {};
}

Result<void> DmStack::stop_logging() {
  // Removing the target logs the writes no flush covered yet and its end mark, and updates
  // the log's super (dm-log-writes.c, log_writes_dtr).  The origin goes too: only snapshots
  // of the starting state are used from here on.
  COWLAB_TRY_CTX(remove_device(prefix_ + "lw"), "stop dm-log-writes");
  COWLAB_TRY_CTX(remove_device(prefix_ + "origin"), "stop dm-log-writes");
  return {};
}

Result<void> DmStack::activate_replay() {
  COWLAB_TRY_CTX(activate_thin("replay", kReplay, volume_sectors_), "activate replay volume");
  return {};
}

Result<void> DmStack::make_state() {
  const std::string ctx = "snapshot crash state";
  COWLAB_TRY_CTX(snapshot(kState, "replay", kReplay), ctx);
  COWLAB_TRY_CTX(activate_thin("state", kState, volume_sectors_), ctx);
  return {};
}

Result<void> DmStack::drop_state() {
  COWLAB_TRY_CTX(remove_device(prefix_ + "state"), "drop crash state");
  COWLAB_TRY_CTX(dm::message(prefix_ + "pool", "delete " + std::to_string(kState)),
                 "drop crash state");
  return {};
}

}  // namespace cowlab::crash
