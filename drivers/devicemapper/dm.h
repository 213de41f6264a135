// The device-mapper part of the system seam: dm.cpp is the only file in cowlab that includes
// libdevmapper.h.  Device-mapper state is never read by parsing dmsetup output.
//
// Each function builds one dm task, runs it and returns a Result.  A failure is an Error that
// names the task and the device, carries the errno the ioctl left (dm_task_get_errno, never
// log text scraping as Docker did) and appends the last error line libdevmapper logged:
//
//   dm remove docker-8:1-1234-base: EBUSY (Device or resource busy): device-mapper: remove
//   ioctl on docker-8:1-1234-base  failed: Device or resource busy
//
// The kind is kBusy for EBUSY, kNotFound for ENXIO (no such device) and kSystem otherwise, so
// callers branch on kind()/err(), never on text.  libdevmapper's own log output is captured
// (errors only, for these messages) and never printed.
//
// /dev/mapper nodes.  When udev sync is available (udevd running, dm_udev_get_sync_support),
// tasks that add or remove devices carry a udev cookie that is always waited on — bounded, so
// a system without dm udev rules cannot hang us, and completed by hand on timeout so no SysV
// semaphore leaks.  Without udev (cowlab's guests) tasks carry no cookie, so libdevmapper
// creates and removes the nodes itself (its "library fallback", what DM_DISABLE_UDEV=1 gives
// dmsetup); node operations are flushed right after each task, and ensure_node() checks the
// node and remakes it (dm_mknodes) if it is still missing.
//
// Thread-safety: libdevmapper keeps global state; use from one thread at a time (driver.h).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::dm {

// One line of a table or status: sectors and the target's own parameter string.
struct Target {
  uint64_t start = 0;
  uint64_t length = 0;
  std::string type;
  std::string params;
};

// dm_info of a device; exists == false when the kernel knows no device of that name.
struct DeviceInfo {
  bool exists = false;
  bool suspended = false;
  int32_t open_count = 0;
  uint32_t major = 0;
  uint32_t minor = 0;
  bool deferred_remove = false;  // a deferred removal is scheduled
  int32_t target_count = 0;
};

struct Version {
  uint32_t major = 0, minor = 0, patch = 0;
  bool at_least(uint32_t ma, uint32_t mi) const {
    return major > ma || (major == ma && minor >= mi);
  }
  std::string text() const;
};

// Whether this kernel has device-mapper: /proc/misc lists it (after one `modprobe dm_mod`
// attempt) and the DM_VERSION ioctl answers.  kNotSupported with the reason otherwise:
// "this kernel has no device-mapper: /proc/misc has no device-mapper entry, /dev/mapper/control:
// ENOENT (modprobe dm_mod: exit status 1: ...)".
Result<void> probe_kernel();
// The kernel driver's version (DM_VERSION ioctl), e.g. 4.47.0.
Result<Version> driver_version();
// libdevmapper's version string, e.g. "1.02.185 (2022-05-18)" (`docker info`'s Library Version).
std::string library_version();
// Target types the kernel has loaded, with versions (DM_LIST_VERSIONS).
Result<std::vector<std::pair<std::string, Version>>> target_versions();
// Whether the kernel has the thin-pool target; loads dm_thin_pool with modprobe once if not.
Result<bool> ensure_thin_pool_target();
// Whether tasks synchronise with udev (probed once per process; see above).
bool udev_sync_supported();
// Whether this libdevmapper can ask for deferred removal (dm_task_deferred_remove): fixed at
// build time by the library cowlab links against.
bool library_deferred_remove_supported();

Result<DeviceInfo> info(const std::string& name);
// Creates `name` with `table` and resumes it (DM_DEVICE_CREATE with targets: create, load,
// resume), so the device is live on return.  EEXIST (kSystem) if the name is taken.
Result<void> create(const std::string& name, const std::vector<Target>& table);
// Suspends the device (flushing and freezing a mounted filesystem: "lockfs").
Result<void> suspend(const std::string& name);
Result<void> resume(const std::string& name);
enum class Removal { kImmediate, kDeferred };
// Removes the device.  kDeferred asks the kernel to remove an open device when its last
// opener closes it (dm driver >= 4.27); an unopened device goes at once either way.
Result<void> remove(const std::string& name, Removal how);
// Sends a target message (sector 0): pool messages such as "create_thin 7", or
// "@cancel_deferred_remove" to a device.  Returns the target's response text.
Result<std::string> message(const std::string& name, const std::string& text);
// DM_TABLE_STATUS of the live table: status lines, or table lines with `kind` table.
// kStatus lets the target flush before it reports: dm-thin's pool_status commits the pool's
// metadata then (drivers/md/dm-thin.c, unless the device is suspended), which rewrites the
// metadata device.  kStatusNoFlush sets DM_NOFLUSH_FLAG (dmsetup status --noflush): the
// target reports its in-core state and writes nothing.
enum class TableKind { kStatus, kStatusNoFlush, kTable };
Result<std::vector<Target>> table(const std::string& name, TableKind kind);
// Names of every device-mapper device.
Result<std::vector<std::string>> list_devices();
// "/dev/mapper/<name>" (libdevmapper's dm_dir()).
std::string device_path(const std::string& name);
// Makes sure device_path(name) is the block device of the live device, asking libdevmapper
// to (re)create it if not.  Error if the device does not exist or the node cannot be made.
Result<void> ensure_node(const std::string& name);

}  // namespace cowlab::dm
