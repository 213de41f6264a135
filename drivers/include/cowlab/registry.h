// The one table of drivers and the selection rules (Docker's graphdriver.New()).
#pragma once

#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cowlab/driver.h"
#include "cowlab/result.h"

namespace cowlab {

struct DriverEntry {
  const char* name;
  DriverInit init;
  // Option-key prefixes addressed to this driver ("overlay." ...).
  std::vector<std::string> option_prefixes;
};

// Every driver cowlab knows, in no particular order.
std::span<const DriverEntry> driver_table();
// The entry of `name`; Docker's name "overlay2" finds overlay.  nullptr if unknown.
const DriverEntry* find_driver(const std::string& name);
// "aufs, btrfs, devicemapper, overlay (or overlay2), vfs, zfs": for usage errors.
std::string driver_names_text();
// "vfs,overlay2" -> {"vfs", "overlay"} (canonical names, duplicates dropped); "all" -> every
// driver.  An unknown name or an empty list is a Usage error naming it and the valid names.
Result<std::vector<std::string>> parse_driver_list(const std::string& list);
// Splits a comma-separated list, trimming blanks and dropping empty items ("a, b,," -> a, b).
std::vector<std::string> split_list(const std::string& list);

// The seed's Linux priority list: aufs, btrfs, zfs, devicemapper, overlay, vfs.
std::vector<std::string> default_priority();

struct SelectOptions {
  std::string root;                                // store root
  std::string driver;                              // explicit choice ("" = auto)
  std::vector<std::string> priority;               // empty = default_priority()
  std::map<std::string, std::string> options;      // all --storage-opt pairs
  DriverAccess access = DriverAccess::kExclusive;  // passed to the driver's init
  // probe_drivers only: a directory private to the caller (made before, removed after) where a
  // driver whose home <root>/<name> does not exist is tried, at <probe_dir>/<name>.  Then a
  // probe never makes, uses or removes a home another process may be making or using at the
  // same time (a second probe, a reader selecting a driver).  Empty: such a driver is tried at
  // <root>/<name> and a home the probe made is removed again — only for a caller that nothing
  // else probes or selects beside (an exclusive lock, or a read-only root).
  std::string probe_dir;
};

// The outcome of trying one driver.
struct DriverProbe {
  std::string name;
  bool usable = false;
  std::string reason;  // why not usable (or "" when usable)
};

// Selection, in order:
//  1. an explicit driver is used; its init error is returned (no fallback);
//  2. a non-empty home (<root>/<name>, any driver but vfs) of a previously used driver pins
//     that driver; two such homes are an error naming both;
//  3. the priority list: the first driver whose init succeeds; kNotSupported errors and
//     errors with errno EPERM/EACCES (an unprivileged caller) are recorded in `tried` and
//     skipped, other errors are returned.
// An unknown explicit driver name is a Usage error listing the valid names.
// Options with an unknown prefix are an Invalid error.
Result<std::unique_ptr<Driver>> select_driver(const SelectOptions& options,
                                              std::vector<DriverProbe>* tried = nullptr);

// Tries every registered driver (priority order, then the rest) and reports usability.
// Each usable driver is initialised and cleaned up again.  A driver whose home exists is tried
// there, and the home is left; one without a home is tried in options.probe_dir (see there),
// whose home is removed again.
std::vector<DriverProbe> probe_drivers(const SelectOptions& options);

// Splits "key=value" pairs; an entry without '=' or with an empty key is an Invalid error.
Result<std::map<std::string, std::string>> parse_storage_opts(
    const std::vector<std::string>& pairs);

}  // namespace cowlab
