// Config fragments for `cowlab kernel build`: parsing, merging (merge_config.sh semantics), and
// checking what survived olddefconfig.
#include <algorithm>
#include <functional>
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

// Calls FN(path, text) for every Kconfig* file of TREE; build directories (o-*), .git and
// Documentation hold none of the tree's Kconfig files.
Result<void> for_each_kconfig_file(
    const fs::path& tree, const std::function<void(const fs::path&, const std::string&)>& fn) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(tree, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return Error::from_errno("walk", tree.string(), ec.value());
    const std::string name = it->path().filename().string();
    if (it->is_directory(ec)) {
      if (name == ".git" || (it.depth() == 0 && name.rfind("o-", 0) == 0) ||
          name == "Documentation")
        it.disable_recursion_pending();
      continue;
    }
    if (name.rfind("Kconfig", 0) != 0) continue;
    auto text = detail::read_file(it->path());
    if (text.ok()) fn(it->path(), *text);
  }
  return ok();
}

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
  COWLAB_TRY(for_each_kconfig_file(tree, [&](const fs::path&, const std::string& text) {
    std::istringstream in(text);
    std::smatch m;
    for (std::string line; std::getline(in, line);)
      if (line.find("config") != std::string::npos && std::regex_match(line, m, kDecl))
        syms.insert("CONFIG_" + m[2].str());
  }));
  if (syms.empty())
    return Error::invalid("kernel tree " + tree.string() + ": no Kconfig symbols found");
  return std::vector<std::string>(syms.begin(), syms.end());
}

namespace {

struct KconfigFile {
  std::vector<std::string> lines;
};

// One condition that guards a symbol: where it is written and its expression.
struct Guard {
  std::string where;  // "fs/Kconfig:316"
  std::string text;   // "if MISC_FILESYSTEMS" or "depends on BLOCK"
  std::string expr;   // "MISC_FILESYSTEMS"
};

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

// The `if EXPR` blocks open at line `upto` (exclusive) of a Kconfig file, outermost first.
std::vector<Guard> open_ifs(const std::string& rel, const KconfigFile& f, size_t upto) {
  std::vector<Guard> stack;
  for (size_t i = 0; i < upto && i < f.lines.size(); ++i) {
    const std::string line = trim(f.lines[i]);
    if (line.rfind("if ", 0) == 0)
      stack.push_back({rel + ":" + std::to_string(i + 1), line, trim(line.substr(3))});
    else if (line == "endif" || line.rfind("endif ", 0) == 0 || line.rfind("endif\t", 0) == 0) {
      if (!stack.empty()) stack.pop_back();
    }
  }
  return stack;
}

}  // namespace

std::vector<std::string> kconfig_unmet_guards(const fs::path& tree, std::string_view option,
                                              std::string_view final_config) {
  const std::string sym = std::string(option).substr(option.rfind("CONFIG_", 0) == 0 ? 7 : 0);
  std::map<std::string, KconfigFile> files;  // relative path -> lines
  auto walked = for_each_kconfig_file(tree, [&](const fs::path& path, const std::string& text) {
    KconfigFile f;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) f.lines.push_back(line);
    files[fs::relative(path, tree).string()] = std::move(f);
  });
  if (!walked.ok()) return {};
  std::vector<Guard> guards;
  // The declaration: its own `depends on` lines, then the ifs around it, then, file by file, the
  // ifs around the `source` line that pulls the file in (aufs's kbuild patch sources
  // fs/aufs/Kconfig inside `if MISC_FILESYSTEMS`, which tinyconfig leaves off).
  std::string file;
  size_t decl = 0;
  for (const auto& [rel, f] : files) {
    for (size_t i = 0; i < f.lines.size() && file.empty(); ++i) {
      const std::string line = trim(f.lines[i]);
      if (line == "config " + sym || line == "menuconfig " + sym) {
        file = rel;
        decl = i;
      }
    }
    if (!file.empty()) break;
  }
  if (file.empty()) return {};
  const auto& df = files[file];
  for (size_t i = decl + 1; i < df.lines.size(); ++i) {
    const std::string raw = df.lines[i];
    if (!raw.empty() && raw[0] != ' ' && raw[0] != '\t' && raw[0] != '#') break;
    const std::string line = trim(raw);
    if (line.rfind("depends on ", 0) == 0)
      guards.push_back({file + ":" + std::to_string(i + 1), line, trim(line.substr(11))});
  }
  size_t at = decl;
  for (int depth = 0; depth < 32 && !file.empty(); ++depth) {
    auto ifs = open_ifs(file, files[file], at);
    guards.insert(guards.begin(), ifs.begin(), ifs.end());
    std::string parent;
    for (const auto& [rel, f] : files) {
      for (size_t i = 0; i < f.lines.size() && parent.empty(); ++i) {
        const std::string line = trim(f.lines[i]);
        if (line.rfind("source", 0) == 0 && line.find("\"" + file + "\"") != std::string::npos) {
          parent = rel;
          at = i;
        }
      }
      if (!parent.empty()) break;
    }
    file = parent;
  }
  // Keep the guards whose expression names a symbol that is not set: those are the cause.
  auto have = config_values(final_config);
  static const std::regex kSym("[A-Z][A-Z0-9_]*");
  std::vector<std::string> out;
  for (const auto& g : guards) {
    std::vector<std::string> unset;
    for (auto m = std::sregex_iterator(g.expr.begin(), g.expr.end(), kSym);
         m != std::sregex_iterator(); ++m) {
      const std::string name = "CONFIG_" + m->str();
      auto it = have.find(name);
      if (it == have.end() || it->second == "n") unset.push_back(name);
    }
    if (unset.empty()) continue;
    std::string names;
    for (const auto& u : unset) names += (names.empty() ? "" : ", ") + u;
    out.push_back(g.where + " `" + g.text + "` (" + names + " not set)");
  }
  return out;
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
