// A profile's package resolution, cached.  Internal to harness/.
//
// vm-images/resolve.sh turns a profile recipe into exact package versions (KEY=value lines): it
// refreshes private apt lists and simulates installs against the archive, 1–2 minutes that every
// `cowlab matrix` start used to pay again.  The answer is kept in $COWLAB_CACHE/resolved/ and
// reused until asked to re-resolve (`cowlab vm build --refresh`, `cowlab matrix --refresh`).
//
// The cache key covers what resolve.sh reads besides the archive: the scripts (resolve.sh,
// lib.sh, apt-sources.sh), the recipe, packages/*.txt, and the shared libraries of the runtime
// binary (ldd; they choose runtime packages).  A change in any of them resolves again; a change
// in the archive does not, until --refresh.
//
// When resolve.sh could not refresh the package lists (offline) it resolves from the lists of
// the last update and says so on stderr; that warning is shown on the terminal (not only in the
// log), and kept with the cached answer so later uses say the versions came from stale lists.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "cowlab/harness/profile.h"  // ResolveMode
#include "cowlab/result.h"

namespace cowlab::harness::detail {

struct ResolveRequest {
  std::filesystem::path images;          // the vm-images directory (resolve.sh and its inputs)
  std::filesystem::path recipe;          // the profile's .conf
  std::filesystem::path runtime_binary;  // COWLAB_BIN for resolve.sh
  std::string label;                     // the profile name, for messages and the log file
  ResolveMode mode = ResolveMode::kCached;
  std::function<void(std::string_view)> say;  // progress and warnings for the terminal
};

struct Resolution {
  std::map<std::string, std::string> values;  // resolve.sh's KEY=value lines
  bool from_cache = false;
  std::string resolved_at;      // UTC, "2026-12-02 03:10:05 UTC"
  std::string offline_warning;  // resolve.sh's "apt update failed ..." line, if any
};

// Returns the cached resolution for the request's inputs, or runs resolve.sh (kRefresh always
// runs it) and caches what it printed.  A failed resolve.sh caches nothing.
Result<Resolution> resolve_packages(const ResolveRequest& request);

}  // namespace cowlab::harness::detail
