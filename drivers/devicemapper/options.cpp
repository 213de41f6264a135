#include "devicemapper/options.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <sstream>

#include "cowlab/fs.h"

namespace cowlab::devmapper {

namespace {

// Docker options cowlab knows by name but does not implement: refusing them with their own
// message tells a Docker user it is not a typo.
const std::set<std::string> kDockerOnly = {
    "dm.datadev",
    "dm.metadatadev",
    "dm.override_udev_sync_check",
    "dm.xfs_nospace_max_retries",
    "dm.libdm_log_level",
    "dm.directlvm_device",
    "dm.directlvm_device_force",
    "dm.thinp_percent",
    "dm.thinp_metapercent",
    "dm.thinp_autoextend_percent",
    "dm.thinp_autoextend_threshold",
};

Error bad_value(const std::string& key, const std::string& value, const std::string& why) {
  return Error::invalid("devicemapper: option " + key + "=\"" + value + "\": " + why);
}

Result<uint64_t> positive_size(const std::string& key, const std::string& value) {
  auto size = parse_size(value);
  if (!size.ok()) return bad_value(key, value, size.error().message());
  if (*size == 0) return bad_value(key, value, "size must be greater than 0");
  return *size;
}

Result<Setting> setting(const std::string& key, const std::string& value) {
  auto b = parse_go_bool(value);
  if (!b) return bad_value(key, value, "not a boolean (true/false/1/0/t/f)");
  return *b ? Setting::kEnabled : Setting::kDisabled;
}

}  // namespace

std::string filesystem_name(BaseFilesystem fs) {
  return fs == BaseFilesystem::kXfs ? "xfs" : "ext4";
}

std::optional<bool> parse_go_bool(const std::string& text) {
  static const std::set<std::string> kTrue = {"1", "t", "T", "TRUE", "true", "True"};
  static const std::set<std::string> kFalse = {"0", "f", "F", "FALSE", "false", "False"};
  if (kTrue.count(text)) return true;
  if (kFalse.count(text)) return false;
  return std::nullopt;
}

std::string join_mount_options(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "," + b;
}

Result<DmOptions> parse_options(const std::map<std::string, std::string>& options) {
  DmOptions out;
  for (const auto& [raw_key, value] : options) {
    std::string key = raw_key;
    std::transform(key.begin(), key.end(), key.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (key == "dm.basesize") {
      out.base_size = COWLAB_TRY(positive_size(key, value));
      out.base_size_given = true;
    } else if (key == "dm.loopdatasize") {
      out.loop_data_size = COWLAB_TRY(positive_size(key, value));
    } else if (key == "dm.loopmetadatasize") {
      out.loop_metadata_size = COWLAB_TRY(positive_size(key, value));
    } else if (key == "dm.fs") {
      if (value == "ext4")
        out.filesystem = BaseFilesystem::kExt4;
      else if (value == "xfs")
        out.filesystem = BaseFilesystem::kXfs;
      else
        return bad_value(key, value, "unsupported filesystem (ext4 or xfs)");
    } else if (key == "dm.mkfsarg") {
      // Docker passes each dm.mkfsarg as one argument and allows the key repeatedly; a storage
      // option map holds one value per key, so the value is split on whitespace instead.
      std::istringstream in(value);
      std::string arg;
      while (in >> arg) out.mkfs_args.push_back(arg);
      if (out.mkfs_args.empty()) return bad_value(key, value, "no mkfs argument given");
    } else if (key == "dm.mountopt") {
      if (value.empty()) return bad_value(key, value, "empty mount options");
      out.mount_options = join_mount_options(out.mount_options, value);
    } else if (key == "dm.thinpooldev") {
      std::string name = value;
      if (name.rfind("/dev/mapper/", 0) == 0) name = name.substr(12);
      if (name.empty() || name.find('/') != std::string::npos)
        return bad_value(key, value, "not a device-mapper device name");
      out.thin_pool_device = name;
    } else if (key == "dm.blocksize") {
      uint64_t bytes = COWLAB_TRY(positive_size(key, value));
      // The kernel's thin-pool takes 64 KiB..1 GiB in multiples of 64 KiB
      // (Documentation/admin-guide/device-mapper/thin-provisioning.rst); Docker passes the
      // value through and lets the pool table fail, cowlab says why up front.
      if (bytes % (64 * 1024) != 0 || bytes < 64 * 1024 || bytes > (1ULL << 30))
        return bad_value(key, value,
                         "thin-pool block size must be a multiple of 64 KiB between "
                         "64 KiB and 1 GiB");
      out.block_sectors = static_cast<uint32_t>(bytes >> 9);
    } else if (key == "dm.min_free_space") {
      if (value.empty() || value.back() != '%')
        return bad_value(key, value, "requires a % suffix (e.g. 10%)");
      std::string digits = value.substr(0, value.size() - 1);
      if (digits.empty() || digits.size() > 3 ||
          !std::all_of(digits.begin(), digits.end(),
                       [](unsigned char c) { return std::isdigit(c); }))
        return bad_value(key, value, "not a whole percentage");
      uint32_t percent = static_cast<uint32_t>(std::stoul(digits));
      if (percent >= 100) return bad_value(key, value, "must be below 100%");
      out.min_free_space_percent = percent;
    } else if (key == "dm.use_deferred_removal") {
      out.deferred_removal = COWLAB_TRY(setting(key, value));
    } else if (key == "dm.use_deferred_deletion") {
      out.deferred_deletion = COWLAB_TRY(setting(key, value));
    } else if (key == "dm.blkdiscard") {
      out.blkdiscard = COWLAB_TRY(setting(key, value));
    } else if (kDockerOnly.count(key)) {
      return bad_value(key, value,
                       "a Docker option cowlab's devicemapper driver does not implement");
    } else {
      return bad_value(key, value, "unknown option");
    }
  }
  // Docker: "Deferred deletion can not be enabled as deferred removal is not enabled".
  if (out.deferred_deletion == Setting::kEnabled && out.deferred_removal == Setting::kDisabled)
    return Error::invalid(
        "devicemapper: option dm.use_deferred_deletion=true needs deferred removal, but "
        "dm.use_deferred_removal=false");
  return out;
}

}  // namespace cowlab::devmapper
