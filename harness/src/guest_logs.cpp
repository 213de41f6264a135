#include "src/guest_logs.h"

#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <system_error>
#include <utility>
#include <vector>

#include "cowlab/harness/profile.h"

namespace cowlab::harness {

namespace fs = std::filesystem;

size_t prune_oldest_files(const fs::path& dir, size_t keep) {
  // Each mtime is read once, with an error_code: the throwing directory_entry::last_write_time()
  // inside a sort comparator aborted `cowlab vm run` (an uncaught filesystem_error, "cannot get
  // file time") when another vm run had just removed the file, or for a dangling symlink.
  std::vector<std::pair<fs::file_time_type, fs::path>> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code st;
    if (!it->is_regular_file(st) || st) continue;
    auto mtime = fs::last_write_time(it->path(), st);
    if (st) continue;
    files.emplace_back(mtime, it->path());
  }
  if (files.size() <= keep) return 0;
  std::sort(files.begin(), files.end());
  size_t removed = 0;
  for (size_t i = 0; i + keep < files.size(); ++i) {
    std::error_code rm;
    if (fs::remove(files[i].second, rm)) ++removed;
  }
  return removed;
}

fs::path new_guest_console_log(const std::string& profile, size_t keep) {
  fs::path logs = cache_dir() / "logs" / "guests";
  std::error_code ec;
  fs::create_directories(logs, ec);
  prune_oldest_files(logs, keep);
  char ts[32];
  std::time_t t = std::time(nullptr);
  std::strftime(ts, sizeof ts, "%Y%m%d-%H%M%S", std::localtime(&t));
  static int seq = 0;
  return logs / (std::string(ts) + "-" + std::to_string(::getpid()) + "-" + std::to_string(seq++) +
                 "-" + profile + ".console.log");
}

}  // namespace cowlab::harness
