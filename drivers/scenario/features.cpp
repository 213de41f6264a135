// Kernel features that scenarios can require, probed once per process and driver (bpftrace's
// BPFfeature pattern): each is the answer of the running kernel, not of configuration.  Only
// the features of the driver under test are probed: probing loads modules, and loading zfs or
// aufs for a vfs cell taints the kernel (P OE) and changes what is being measured.
#include <unistd.h>

#include <mutex>

#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "scenario/model.h"

namespace cowlab::scenario {

namespace {

bool param_is_yes(const std::string& path) {
  auto t = sys::read_file(path);
  return t.ok() && !t->empty() && ((*t)[0] == 'Y' || (*t)[0] == 'y' || (*t)[0] == '1');
}

bool exists(const std::string& path) { return sys::lstat_if_exists(path).value_or(std::nullopt).has_value(); }

// modprobe quietly; absence of the module is not an error here, the probe reports it.
void load_module(const std::string& name) {
  std::string out;
  (void)sys::run({"modprobe", "-q", name}, &out);
}

bool fs_supported(const std::string& fs) { return sys::filesystem_supported(fs).value_or(false); }

std::map<std::string, bool> probe(const std::string& driver) {
  std::map<std::string, bool> f;
  auto kv = sys::kernel_version();
  f["userns"] = exists("/proc/self/ns/user") && sys::read_file("/proc/sys/user/max_user_namespaces").value_or("0") != "0\n";
  f["drop_caches"] = ::access("/proc/sys/vm/drop_caches", W_OK) == 0;
  if (driver == "overlay") {
    if (!fs_supported("overlay")) load_module("overlay");
    const std::string ovl = "/sys/module/overlay/parameters/";
    f["overlay.redirect_dir"] = param_is_yes(ovl + "redirect_dir");
    f["overlay.metacopy"] = param_is_yes(ovl + "metacopy");
    f["overlay.index"] = param_is_yes(ovl + "index");
    // One lowerdir+ per layer through fsconfig() exists since Linux 6.7 (commit 24e16e385f22).
    f["overlay.new_mount_api"] = fs_supported("overlay") && kv.at_least(6, 7);
  } else if (driver == "btrfs") {
    if (!fs_supported("btrfs")) load_module("btrfs");
    f["btrfs.quota"] = fs_supported("btrfs");
  } else if (driver == "devicemapper") {
    if (!exists("/sys/module/dm_thin_pool")) load_module("dm_thin_pool");
    f["dm.thin"] = exists("/sys/module/dm_thin_pool");
    // Deferred removal arrived with dm driver 4.27 (Linux 3.13); every kernel we run has it.
    f["dm.deferred_remove"] = f["dm.thin"] && kv.at_least(3, 13);
  } else if (driver == "zfs") {
    if (!exists("/dev/zfs")) load_module("zfs");
    f["zfs"] = exists("/dev/zfs");
  } else if (driver == "aufs") {
    if (!fs_supported("aufs")) load_module("aufs");
    f["aufs"] = fs_supported("aufs");
  }
  return f;
}

}  // namespace

bool is_driver_feature(const std::string& feature) {
  for (const char* prefix : {"overlay.", "btrfs.", "dm.", "zfs", "aufs"})
    if (feature.rfind(prefix, 0) == 0) return true;
  return false;
}

const std::map<std::string, bool>& probed_features(const std::string& driver) {
  static std::mutex mu;
  static std::map<std::string, std::map<std::string, bool>> cache;  // never erased: references stay valid
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(driver);
  if (it == cache.end()) it = cache.emplace(driver, probe(driver)).first;
  return it->second;
}

}  // namespace cowlab::scenario
