// The one table of drivers.  Only this file knows every driver; drivers never include one
// another.  Selection follows Docker's graphdriver.New() (daemon/graphdriver/driver.go).
#include "cowlab/registry.h"

#include <algorithm>
#include <cerrno>
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
  static const std::set<std::string> kAll = {"aufs",         "btrfs",   "zfs",
                                             "devicemapper", "overlay", "vfs"};
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
      return Error::invalid("storage option \"" + k +
                            "\": no driver takes options with this prefix");
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

// `home` empty: the driver's home in the store, <root>/<name>.
Result<std::unique_ptr<Driver>> init_entry(const DriverEntry& e, const SelectOptions& o,
                                           const std::string& home = "") {
  DriverConfig cfg;
  cfg.root = o.root;
  cfg.home = home.empty() ? o.root + "/" + e.name : home;
  cfg.options = options_for(e, o.options);
  cfg.access = o.access;
  auto r = e.init(cfg);
  if (!r.ok()) {
    // Drivers often name themselves already ("btrfs: unknown option ..."): say it once.
    Error err = std::move(r).error();
    std::string msg = err.message(), own = std::string(e.name) + ": ";
    if (msg.rfind(own, 0) == 0) msg.erase(0, own.size());
    return Error(err.kind(), std::string("driver ") + e.name + ": " + msg, err.err());
  }
  return r;
}

}  // namespace

std::span<const DriverEntry> driver_table() {
  return table();
}

const DriverEntry* find_driver(const std::string& name) {
  // Docker calls its overlay driver "overlay2" (the original "overlay" was removed in Docker
  // 24): accept both, so `--driver overlay2` works as it does for dockerd.
  const std::string canonical = name == "overlay2" ? "overlay" : name;
  for (const auto& e : table())
    if (canonical == e.name) return &e;
  return nullptr;
}

std::string driver_names_text() {
  std::vector<std::string> names;
  for (const auto& e : table())
    names.push_back(std::string(e.name) +
                    (std::string(e.name) == "overlay" ? " (or overlay2)" : ""));
  std::sort(names.begin(), names.end());
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

Result<std::vector<std::string>> parse_driver_list(const std::string& list) {
  std::vector<std::string> out;
  if (list == "all") {
    for (const auto& e : table()) out.push_back(e.name);
    return out;
  }
  for (const auto& word : split_list(list)) {
    const DriverEntry* e = find_driver(word);
    if (!e)
      return Error::usage("unknown driver \"" + word + "\" (valid: " + driver_names_text() +
                          ", or all)");
    if (std::find(out.begin(), out.end(), e->name) == out.end()) out.push_back(e->name);
  }
  if (out.empty())
    return Error::usage("empty driver list (valid: " + driver_names_text() + ", or all)");
  return out;
}

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= list.size()) {
    size_t j = list.find(',', i);
    if (j == std::string::npos) j = list.size();
    std::string word = list.substr(i, j - i);
    while (!word.empty() && word.front() == ' ') word.erase(0, 1);
    while (!word.empty() && word.back() == ' ') word.pop_back();
    if (!word.empty()) out.push_back(word);
    i = j + 1;
  }
  return out;
}

std::vector<std::string> default_priority() {
  return {"aufs", "btrfs", "zfs", "devicemapper", "overlay", "vfs"};
}

Result<std::map<std::string, std::string>> parse_storage_opts(
    const std::vector<std::string>& pairs) {
  std::map<std::string, std::string> out;
  for (const auto& p : pairs) {
    auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0)
      return Error::usage("storage option \"" + escape_for_message(p) + "\": expected KEY=VALUE");
    std::string key = p.substr(0, eq);
    for (auto& c : key) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    out[key] = p.substr(eq + 1);
  }
  return out;
}

namespace {
Result<std::unique_ptr<Driver>> select_any(const SelectOptions& o, std::vector<DriverProbe>* tried);
}  // namespace

Result<std::unique_ptr<Driver>> select_driver(const SelectOptions& o,
                                              std::vector<DriverProbe>* tried) {
  COWLAB_TRY(check_option_prefixes(o.options));
  auto d = COWLAB_TRY(select_any(o, tried));
  // Options addressed to another driver would be silently ignored (docs/storage.md: unknown
  // keys are errors), as Docker's drivers refuse options they do not know.
  const DriverEntry* e = find_driver(d->name());
  for (const auto& [k, v] : o.options) {
    bool mine = false;
    for (const auto& p : e->option_prefixes) mine = mine || k.rfind(p, 0) == 0;
    if (!mine) {
      std::string prefixes;
      for (const auto& p : e->option_prefixes)
        prefixes += (prefixes.empty() ? "" : ", ") + std::string(p) + "*";
      (void)d->cleanup();
      return Error::invalid("storage option \"" + k +
                            "\" is not an option of the selected driver " + d->name() +
                            " (its options: " + prefixes + ")");
    }
  }
  return d;
}

namespace {
Result<std::unique_ptr<Driver>> select_any(const SelectOptions& o,
                                           std::vector<DriverProbe>* tried) {
  std::vector<DriverProbe> local;
  std::vector<DriverProbe>& log = tried ? *tried : local;

  // 1. An explicit choice: no fallback.
  if (!o.driver.empty()) {
    const DriverEntry* e = find_driver(o.driver);
    if (!e) {
      if (known_name(o.driver))
        return Error::not_supported("driver " + o.driver + ": not compiled into this build");
      return Error::usage("unknown storage driver \"" + o.driver +
                          "\" (valid: " + driver_names_text() + ")");
    }
    auto r = init_entry(*e, o);
    log.push_back({e->name, r.ok(), r.ok() ? "" : r.error().message()});
    return r;
  }

  std::vector<std::string> priority = o.priority.empty() ? default_priority() : o.priority;

  // 2. Prior driver homes pin the choice (vfs is never "prior", as in Docker).
  std::vector<std::string> prior;
  for (const auto& e : table())
    if (std::string(e.name) != "vfs" && non_empty_dir(o.root + "/" + e.name))
      prior.push_back(e.name);
  if (prior.size() > 1) {
    std::string names;
    for (const auto& n : prior) names += (names.empty() ? "" : ", ") + o.root + "/" + n;
    return Error::invalid("store root " + o.root + " contains several driver homes in use (" +
                          names +
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
      log.push_back(
          {name, false, known_name(name) ? "not compiled into this build" : "unknown driver name"});
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
    // Docker moves on past drivers that report "not supported"; a probe refused for lack of
    // privilege (mount(2) as a non-root user: EPERM) means the same for this caller, so an
    // unprivileged store falls through to vfs instead of aborting on overlay's probe mount.
    bool unprivileged = r.error().err() == EPERM || r.error().err() == EACCES;
    if (r.error().kind() != ErrorKind::kNotSupported && !unprivileged) return std::move(r).error();
  }
  std::string why;
  for (const auto& p : log) why += "\n  " + p.name + ": " + p.reason;
  return Error::not_supported("no usable storage driver for " + o.root + ":" + why);
}
}  // namespace

std::vector<DriverProbe> probe_drivers(const SelectOptions& o) {
  std::vector<DriverProbe> out;
  std::vector<std::string> order = o.priority.empty() ? default_priority() : o.priority;
  for (const auto& e : table())
    if (std::find(order.begin(), order.end(), e.name) == order.end()) order.push_back(e.name);
  for (const auto& name : order) {
    const DriverEntry* e = find_driver(name);
    if (!e) {
      out.push_back(
          {name, false, known_name(name) ? "not compiled into this build" : "unknown driver"});
      continue;
    }
    std::string home = o.root + "/" + name;
    bool existed = sys::lstat_if_exists(home).value_or(std::nullopt).has_value();
    // No home yet: tried in the caller's private directory.  A home the probe made in the
    // store would be seen by a concurrent probe as existing (so kept by it, or used by it
    // while this one removes it): probes left driver homes behind that pin the driver at
    // the next selection, and failed each other's overlay test mounts.
    if (!existed && !o.probe_dir.empty()) home = o.probe_dir + "/" + name;
    auto r = init_entry(*e, o, home);
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
