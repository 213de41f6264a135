// The one table of drivers.  Only this file knows every driver; drivers never include one
// another.  Selection follows Docker's graphdriver.New() (daemon/graphdriver/driver.go).
#include "cowlab/registry.h"

#include <algorithm>
#include <set>

#include "aufs/aufs.h"
#include "btrfs/btrfs.h"
#include "cowlab/sys.h"
#include "devicemapper/devicemapper.h"
#include "overlay/overlay.h"
#include "vfs/vfs.h"
#include "zfs/zfs.h"

namespace cowlab {

namespace {

const std::vector<DriverEntry>& table() {
  static const std::vector<DriverEntry> kTable = {
      {"aufs", init_aufs, {"aufs."}},
      {"btrfs", init_btrfs, {"btrfs."}},
      {"devicemapper", init_devicemapper, {"dm."}},
      {"overlay", init_overlay, {"overlay.", "overlay2."}},
      {"vfs", init_vfs, {"vfs."}},
      {"zfs", init_zfs, {"zfs."}},
  };
  return kTable;
}

// Drivers of the seed's priority list that this build does not contain yet.
bool known_name(const std::string& name) {
  static const std::set<std::string> kAll = {"aufs", "btrfs", "zfs", "devicemapper", "overlay", "vfs"};
  return kAll.count(name) > 0;
}

std::map<std::string, std::string> options_for(const DriverEntry& e,
                                               const std::map<std::string, std::string>& all) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : all)
    for (const auto& p : e.option_prefixes)
      if (k.rfind(p, 0) == 0) out[k] = v;
  return out;
}

Result<void> check_option_prefixes(const std::map<std::string, std::string>& all) {
  for (const auto& [k, v] : all) {
    bool known = false;
    for (const auto& e : table())
      for (const auto& p : e.option_prefixes)
        if (k.rfind(p, 0) == 0) known = true;
    if (!known) {
      // dm.*, zfs.* and aufs.* belong to drivers of the full set; accept their prefixes only
      // once those drivers are in the table.
      return Error::invalid("storage option \"" + k + "\": no driver takes options with this prefix");
    }
  }
  return {};
}

// A directory is "non-empty" if it has any entry (Docker's isEmptyDir check).
bool non_empty_dir(const std::string& path) {
  auto st = sys::lstat_if_exists(path);
  if (!st.ok() || !*st || !S_ISDIR((*st)->st_mode)) return false;
  auto entries = sys::read_dir(path);
  return entries.ok() && !entries->empty();
}

Result<std::unique_ptr<Driver>> init_entry(const DriverEntry& e, const SelectOptions& o) {
  DriverConfig cfg;
  cfg.root = o.root;
  cfg.home = o.root + "/" + e.name;
  cfg.options = options_for(e, o.options);
  auto r = e.init(cfg);
  if (!r.ok()) return std::move(r).error().with_context(std::string("driver ") + e.name);
  return r;
}

}  // namespace

std::span<const DriverEntry> driver_table() { return table(); }

const DriverEntry* find_driver(const std::string& name) {
  for (const auto& e : table())
    if (name == e.name) return &e;
  return nullptr;
}

std::vector<std::string> default_priority() {
  return {"aufs", "btrfs", "zfs", "devicemapper", "overlay", "vfs"};
}

Result<std::map<std::string, std::string>> parse_storage_opts(const std::vector<std::string>& pairs) {
  std::map<std::string, std::string> out;
  for (const auto& p : pairs) {
    auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0)
      return Error::invalid("storage option \"" + p + "\": expected KEY=VALUE");
    std::string key = p.substr(0, eq);
    for (auto& c : key) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    out[key] = p.substr(eq + 1);
  }
  return out;
}

Result<std::unique_ptr<Driver>> select_driver(const SelectOptions& o, std::vector<DriverProbe>* tried) {
  COWLAB_TRY(check_option_prefixes(o.options));
  std::vector<DriverProbe> local;
  std::vector<DriverProbe>& log = tried ? *tried : local;

  // 1. An explicit choice: no fallback.
  if (!o.driver.empty()) {
    const DriverEntry* e = find_driver(o.driver);
    if (!e) {
      if (known_name(o.driver))
        return Error::not_supported("driver " + o.driver + ": not compiled into this build");
      return Error::invalid("unknown storage driver \"" + o.driver + "\"");
    }
    auto r = init_entry(*e, o);
    log.push_back({e->name, r.ok(), r.ok() ? "" : r.error().message()});
    return r;
  }

  std::vector<std::string> priority = o.priority.empty() ? default_priority() : o.priority;

  // 2. Prior driver homes pin the choice (vfs is never "prior", as in Docker).
  std::vector<std::string> prior;
  for (const auto& e : table())
    if (std::string(e.name) != "vfs" && non_empty_dir(o.root + "/" + e.name)) prior.push_back(e.name);
  if (prior.size() > 1) {
    std::string names;
    for (const auto& n : prior) names += (names.empty() ? "" : ", ") + o.root + "/" + n;
    return Error::invalid("store root " + o.root + " contains several driver homes in use (" + names +
                          "); remove the stale one or choose the driver explicitly (--driver)");
  }
  if (prior.size() == 1) {
    auto r = init_entry(*find_driver(prior[0]), o);
    log.push_back({prior[0], r.ok(), r.ok() ? "" : r.error().message()});
    if (!r.ok())
      return std::move(r).error().with_context("previously used driver " + prior[0] + " (home " +
                                               o.root + "/" + prior[0] + " is not empty)");
    return r;
  }

  // 3. The priority list, then everything else.
  std::vector<std::string> order = priority;
  for (const auto& e : table())
    if (std::find(order.begin(), order.end(), e.name) == order.end()) order.push_back(e.name);
  for (const auto& name : order) {
    const DriverEntry* e = find_driver(name);
    if (!e) {
      log.push_back({name, false,
                     known_name(name) ? "not compiled into this build" : "unknown driver name"});
      continue;
    }
    std::string home = o.root + "/" + name;
    bool existed = sys::lstat_if_exists(home).value_or(std::nullopt).has_value();
    auto r = init_entry(*e, o);
    if (r.ok()) {
      log.push_back({name, true, ""});
      return r;
    }
    log.push_back({name, false, r.error().message()});
    // A home made only by this failed attempt must not pin the driver next time.
    if (!existed) (void)sys::remove_all(home);
    if (r.error().kind() != ErrorKind::kNotSupported) return std::move(r).error();
  }
  std::string why;
  for (const auto& p : log) why += "\n  " + p.name + ": " + p.reason;
  return Error::not_supported("no usable storage driver for " + o.root + ":" + why);
}

std::vector<DriverProbe> probe_drivers(const SelectOptions& o) {
  std::vector<DriverProbe> out;
  std::vector<std::string> order = o.priority.empty() ? default_priority() : o.priority;
  for (const auto& e : table())
    if (std::find(order.begin(), order.end(), e.name) == order.end()) order.push_back(e.name);
  for (const auto& name : order) {
    const DriverEntry* e = find_driver(name);
    if (!e) {
      out.push_back({name, false, known_name(name) ? "not compiled into this build" : "unknown driver"});
      continue;
    }
    std::string home = o.root + "/" + name;
    bool existed = sys::lstat_if_exists(home).value_or(std::nullopt).has_value();
    auto r = init_entry(*e, o);
    if (r.ok()) {
      (void)(*r)->cleanup();
      out.push_back({name, true, ""});
    } else {
      out.push_back({name, false, r.error().message()});
    }
    // A home made only for this probe must not pin the driver at the next selection.
    if (!existed) (void)sys::remove_all(home);
  }
  return out;
}

}  // namespace cowlab
