#include "resolution.h"

#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cowlab/harness/profile.h"
#include "cowlab/sys.h"
#include "process.h"
#include "util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace cowlab::harness::detail {

namespace {

// Bumped when the cached file's meaning changes.
constexpr int kCacheVersion = 1;

void tell(const ResolveRequest& r, const std::string& line) {
  if (r.say) r.say("[" + r.label + "] " + line);
}

std::string utc_now() {
  std::time_t now = std::time(nullptr);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  return b;
}

std::string file_or_missing(const fs::path& p) {
  auto t = read_file(p);
  return p.filename().string() + "\n" + (t.ok() ? *t : std::string("<missing>")) + "\n";
}

// The shared libraries the runtime binary loads, as ldd resolves them (without load
// addresses): resolve.sh maps them to the runtime packages the guest root must carry.
Result<std::string> runtime_libraries(const fs::path& binary, const fs::path& log) {
  if (binary.empty()) return std::string("-");
  SpawnOptions so;
  so.argv = {"ldd", binary.string()};
  so.output_file = log;
  std::string out;
  auto run = COWLAB_TRY(run_tool(so, std::chrono::seconds(60), [&](std::string_view l) {
    std::string line(l);
    if (auto paren = line.rfind(" (0x"); paren != std::string::npos) line.resize(paren);
    out += line + "\n";
  }));
  // ldd fails on a static binary ("not a dynamic executable"): then there is nothing to map.
  return run.exit_status == 0 ? out : std::string("static");
}

bool is_offline_warning(std::string_view line) {
  // lib.sh's papt_update: "vm-images: apt update failed (see ...); using the package lists from
  // the last update".
  return line.find("apt update failed") != std::string_view::npos;
}

}  // namespace

Result<Resolution> resolve_packages(const ResolveRequest& r) {
  const fs::path logs = cache_dir() / "logs";
  std::error_code ec;
  fs::create_directories(logs, ec);
  std::string inputs;
  for (const char* f :
       {"resolve.sh", "lib.sh", "apt-sources.sh", "packages/base.txt", "packages/runtime.txt"})
    inputs += file_or_missing(r.images / f);
  inputs += file_or_missing(r.recipe);
  inputs += "runtime libraries:\n" +
            COWLAB_TRY_CTX(runtime_libraries(r.runtime_binary, logs / ("ldd-" + r.label + ".log")),
                           "resolve profile " + r.label);
  const std::string key =
      sha256_hex("resolution-v" + std::to_string(kCacheVersion) + "\n" + inputs);
  const fs::path cached = cache_dir() / "resolved" / (key.substr(0, 24) + ".json");

  if (r.mode == ResolveMode::kCached) {
    if (auto text = read_file(cached); text.ok()) {
      json j = json::parse(*text, nullptr, false);
      if (!j.is_discarded() && j.value("version", 0) == kCacheVersion && j.contains("values") &&
          j["values"].is_object()) {
        Resolution out;
        out.from_cache = true;
        for (auto& [k, v] : j["values"].items())
          if (v.is_string()) out.values[k] = v.get<std::string>();
        out.resolved_at = j.value("resolved_at", "");
        out.offline_warning = j.value("offline_warning", "");
        tell(r, "package versions as resolved " + out.resolved_at +
                    (out.offline_warning.empty()
                         ? ""
                         : " from package lists that could not be refreshed then (offline)") +
                    " (cached; --refresh resolves again)");
        return out;
      }
      tell(r, "the cached resolution " + cached.string() + " is unreadable; resolving again");
    }
  }

  tell(r, "resolving package versions (" + r.recipe.filename().string() + ")");
  SpawnOptions so;
  so.argv = {"bash", (r.images / "resolve.sh").string(), r.recipe.string()};
  so.env = {{"COWLAB_CACHE", cache_dir().string()}, {"COWLAB_BIN", r.runtime_binary.string()}};
  so.output_file = logs / ("resolve-" + r.label + ".log");
  Resolution out;
  std::string text;
  auto run = COWLAB_TRY_CTX(run_tool(so, std::chrono::seconds(900),
                                     [&](std::string_view l) {
                                       if (is_offline_warning(l)) {
                                         out.offline_warning = std::string(l);
                                         // On the terminal, not only in the log: the versions
                                         // may be behind the archive.
                                         tell(r, "offline: " + out.offline_warning);
                                       }
                                       text += std::string(l) + "\n";
                                     }),
                            "resolve profile " + r.label);
  if (run.exit_status != 0)
    return Error(ErrorKind::kSystem, "resolve profile " + r.label + ": resolve.sh failed (exit " +
                                         std::to_string(run.exit_status) + "; log " +
                                         so.output_file.string() + "):\n" + run.output_tail);
  out.values = parse_key_values(text);
  out.resolved_at = utc_now();
  json j = {{"version", kCacheVersion},
            {"profile", r.label},
            {"recipe", r.recipe.string()},
            {"resolved_at", out.resolved_at},
            {"offline_warning", out.offline_warning},
            {"values", out.values}};
  fs::create_directories(cached.parent_path(), ec);
  // A cache that cannot be written costs the next run a resolution, nothing else.
  if (auto w = sys::write_file_atomic(cached.string(), j.dump(2) + "\n"); !w.ok())
    tell(r, "cannot cache the resolution: " + w.error().message());
  return out;
}

}  // namespace cowlab::harness::detail
