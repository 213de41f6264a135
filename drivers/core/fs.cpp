#include "cowlab/fs.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "cowlab/sys.h"

namespace cowlab {

std::string fs_name_for_magic(long magic) {
  // Docker's FsNames (daemon/graphdriver/driver_linux.go) plus a few kernel magics
  // (include/uapi/linux/magic.h) that show up as homes in practice.
  static const std::map<long, const char*> kNames = {
      {0x61756673, "aufs"},     {0x9123683E, "btrfs"},  {0x0000EF51, "extfs"},
      {0x0000EF53, "extfs"},    {0xf15f, "ecryptfs"},   {0x65735546, "fuseblk"},
      {0x2fc12fc1, "zfs"},      {0x6969, "nfs"},        {0x794C7630, "overlayfs"},
      {0x52654973, "reiserfs"}, {0x73717368, "squashfs"}, {0x01021994, "tmpfs"},
      {0x58465342, "xfs"},      {0xE0F5E1E2, "erofs"},  {0x9fa0, "proc"},
      {0x62656572, "sysfs"},    {0x1021997, "v9fs"},    {0x6a656a63, "fakeowner"},
  };
  auto it = kNames.find(magic & 0xffffffffL);
  if (it != kNames.end()) return it->second;
  char buf[48];
  std::snprintf(buf, sizeof buf, "<unknown 0x%lx>", magic & 0xffffffffL);
  return buf;
}

Result<long> backing_fs_magic(const std::string& path) {
  std::string p = path;
  for (;;) {
    auto st = sys::statfs(p);
    if (st.ok()) return static_cast<long>(st->f_type);
    if (st.error().err() != ENOENT || p.empty() || p == "/")
      return std::move(st).error().with_context("backing filesystem of " + path);
    auto slash = p.find_last_of('/');
    p = slash == 0 ? "/" : (slash == std::string::npos ? "." : p.substr(0, slash));
  }
}

Result<std::string> backing_fs_name(const std::string& path) {
  long magic = COWLAB_TRY(backing_fs_magic(path));
  return fs_name_for_magic(magic);
}

Result<uint64_t> parse_size(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return Error::invalid("invalid size \"" + text + "\": " + why);
  };
  if (text.empty()) return bad("empty");
  size_t i = 0;
  while (i < text.size() && (isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) return bad("no number");
  std::string num = text.substr(0, i);
  if (std::count(num.begin(), num.end(), '.') > 1) return bad("malformed number");
  std::string unit = text.substr(i);
  for (auto& c : unit) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  uint64_t mult = 1;
  if (unit.empty() || unit == "b") mult = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib") mult = 1ULL << 10;
  else if (unit == "m" || unit == "mb" || unit == "mib") mult = 1ULL << 20;
  else if (unit == "g" || unit == "gb" || unit == "gib") mult = 1ULL << 30;
  else if (unit == "t" || unit == "tb" || unit == "tib") mult = 1ULL << 40;
  else return bad("unknown unit \"" + text.substr(i) + "\"");
  long double v = std::strtold(num.c_str(), nullptr);
  long double bytes = v * static_cast<long double>(mult);
  if (!std::isfinite(static_cast<double>(bytes)) || bytes > 1.8e19L) return bad("too large");
  return static_cast<uint64_t>(std::llround(bytes));
}

std::string human_size(uint64_t bytes) {
  // Docker's units.HumanSize: decimal units, 4 significant digits.
  static const char* kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1000.0 && u < 6) {
    v /= 1000.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g %s", v, kUnits[u]);
  return buf;
}

}  // namespace cowlab

// Driver::space_used's default lives here because it is a backing-filesystem measurement.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cowlab/driver.h"

namespace cowlab {

Result<uint64_t> Driver::space_used() {
  std::string h = home();
  auto fd = COWLAB_TRY_CTX(sys::open(h, O_RDONLY | O_DIRECTORY), "space used by " + name());
  // syncfs so delayed allocation is accounted before statfs reads the counters.
  ::syncfs(fd.get());
  auto st = COWLAB_TRY_CTX(sys::fstatfs(fd.get()), "space used by " + name());
  return static_cast<uint64_t>(st.f_blocks - st.f_bfree) * static_cast<uint64_t>(st.f_frsize);
}

Result<std::vector<std::string>> Driver::list() {
  return Error::not_supported(name() + ": cannot list its layers");
}

Result<std::vector<std::string>> subdirectories(const std::string& dir) {
  std::vector<std::string> out;
  if (!COWLAB_TRY(sys::lstat_if_exists(dir))) return out;
  for (const auto& e : COWLAB_TRY(sys::read_dir(dir))) {
    bool is_dir = e.type == DT_DIR;
    if (e.type == DT_UNKNOWN) {
      auto st = sys::lstat(dir + "/" + e.name);
      is_dir = st.ok() && S_ISDIR(st->st_mode);
    }
    if (is_dir) out.push_back(e.name);
  }
  return out;
}

Result<void> Driver::sync_data() {
  auto fd = COWLAB_TRY_CTX(sys::open(home(), O_RDONLY | O_DIRECTORY), "sync " + name() + " data");
  COWLAB_TRY_CTX(sys::syncfs(fd.get()), "sync " + name() + " data");
  return {};
}

}  // namespace cowlab
