// Config fragments for `cowlab kernel build`: parsing, merging (merge_config.sh semantics), and
// checking what survived olddefconfig.
#include <algorithm>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "cowlab/harness/kernel_build.h"
#include "util.h"

namespace fs = std::filesystem;

namespace cowlab::harness {
namespace {

// "CONFIG_X=v" -> {X, v}; "# CONFIG_X is not set" -> {X, "n"}; anything else -> nullopt.
std::optional<std::pair<std::string, std::string>> parse_config_line(const std::string& line) {
  static const std::regex kSet("^(CONFIG_[A-Za-z0-9_]+)=(.*)$");
  static const std::regex kUnset("^# (CONFIG_[A-Za-z0-9_]+) is not set\\s*$");
  std::smatch m;
  if (std::regex_match(line, m, kSet)) return std::make_pair(m[1].str(), m[2].str());
  if (std::regex_match(line, m, kUnset)) return std::make_pair(m[1].str(), std::string("n"));
  return std::nullopt;
}

std::map<std::string, std::string> config_values(std::string_view text) {
  std::map<std::string, std::string> v;
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);)
    if (auto kv = parse_config_line(line)) v[kv->first] = kv->second;
  return v;
}

std::string describe(const std::string& value) {
  return value == "n" ? " not set" : "=" + value;
}

}  // namespace

Result<std::vector<RequestedOption>> parse_config_fragment(std::string_view text,
                                                           std::string_view origin,
                                                           FragmentOwner owner) {
  std::vector<RequestedOption> out;
  std::istringstream in{std::string(text)};
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.pop_back();
    if (auto kv = parse_config_line(line)) {
      std::string value = kv->second;
      if (value.empty())
        return Error::invalid("config fragment " + std::string(origin) + ":" + std::to_string(n) +
                              ": " + kv->first + " has no value");
      out.push_back({kv->first, value, std::string(origin) + ":" + std::to_string(n), owner});
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    return Error::invalid(
        "config fragment " + std::string(origin) + ":" + std::to_string(n) +
        ": not an option line (want CONFIG_X=value or '# CONFIG_X is not set'): " + line);
  }
  return out;
}

std::string merge_config_text(std::string_view base,
                              const std::vector<RequestedOption>& requested) {
  // The last request for an option wins (merge_config.sh: later fragments override earlier ones).
  std::map<std::string, std::string> want;
  std::vector<std::string> order;
  for (const auto& r : requested) {
    if (!want.count(r.name)) order.push_back(r.name);
    want[r.name] = r.value;
  }
  auto render = [](const std::string& name, const std::string& value) {
    return value == "n" ? "# " + name + " is not set" : name + "=" + value;
  };
  std::string out;
  std::set<std::string> done;
  std::istringstream in{std::string(base)};
  for (std::string line; std::getline(in, line);) {
    auto kv = parse_config_line(line);
    if (kv && want.count(kv->first)) {
      if (done.insert(kv->first).second) out += render(kv->first, want[kv->first]) + "\n";
      continue;
    }
    out += line + "\n";
  }
  for (const auto& name : order)
    if (!done.count(name)) out += render(name, want[name]) + "\n";
  return out;
}

std::vector<std::string> dropped_options(const std::vector<RequestedOption>& requested,
                                         std::string_view final_config) {
  auto have = config_values(final_config);
  std::map<std::string, const RequestedOption*> last;
  std::vector<std::string> order;
  for (const auto& r : requested) {
    if (!last.count(r.name)) order.push_back(r.name);
    last[r.name] = &r;
  }
  std::vector<std::string> out;
  for (const auto& name : order) {
    const auto& r = *last[name];
    auto it = have.find(name);
    std::string got = it == have.end() ? "n" : it->second;
    if (got == r.value) continue;
    out.push_back(name + describe(r.value) + " (from " + r.origin + ") ended up " +
                  (got == "n" ? std::string("not set") : "as " + got) +
                  (got == "n" && r.value != "n" ? " (a dependency is missing)" : ""));
  }
  return out;
}

Result<std::vector<std::string>> kconfig_symbols(const fs::path& tree) {
  static const std::regex kDecl("^\\s*(menu)?config\\s+([A-Za-z0-9_]+)\\s*$");
  std::set<std::string> syms;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(tree, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return Error::from_errno("walk", tree.string(), ec.value());
    const std::string name = it->path().filename().string();
    if (it->is_directory(ec)) {
      // Build directories and VCS metadata hold no Kconfig files of the tree.
      if (name == ".git" || (it.depth() == 0 && name.rfind("o-", 0) == 0) ||
          name == "Documentation")
        it.disable_recursion_pending();
      continue;
    }
    if (name.rfind("Kconfig", 0) != 0) continue;
    auto text = detail::read_file(it->path());
    if (!text.ok()) continue;
    std::istringstream in(*text);
    std::smatch m;
    for (std::string line; std::getline(in, line);)
      if (line.find("config") != std::string::npos && std::regex_match(line, m, kDecl))
        syms.insert("CONFIG_" + m[2].str());
  }
  if (syms.empty())
    return Error::invalid("kernel tree " + tree.string() + ": no Kconfig symbols found");
  return std::vector<std::string>(syms.begin(), syms.end());
}

UnknownOptions sort_out_unknown_options(std::vector<RequestedOption>& requested,
                                        const std::vector<std::string>& symbols) {
  UnknownOptions out;
  std::vector<RequestedOption> known;
  for (auto& r : requested) {
    if (std::binary_search(symbols.begin(), symbols.end(), r.name)) {
      known.push_back(std::move(r));
      continue;
    }
    const std::string what = r.origin + ": " + r.name + " is not a Kconfig symbol of this tree";
    (r.owner == FragmentOwner::kCowlab ? out.skipped : out.refused).push_back(what);
  }
  requested = std::move(known);
  return out;
}

Result<std::vector<fs::path>> default_config_fragments() {
  auto images = COWLAB_TRY(vm_images_dir());
  std::vector<fs::path> out = {images / "kconfig" / "harness.config",
                               images / "kconfig" / "storage.config"};
  for (const auto& f : out)
    if (!fs::is_regular_file(f))
      return Error::not_found("cowlab's config fragment " + f.string() + ": missing");
  return out;
}

}  // namespace cowlab::harness
