// Scenario parsing and strict validation with yaml-cpp.  Every check reports the position
// of the offending node; all problems of a file are collected before giving up, so one run
// of `cowlab scenario check` shows them all.
#include <fnmatch.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <functional>
#include <regex>
#include <set>

#include "cowlab/fs.h"
#include "cowlab/sys.h"
#include "scenario/model.h"
#include "scenario/ops.h"

namespace cowlab::scenario {

namespace {

constexpr uint64_t kMaxSweepPoints = 64;

const std::set<std::string> kDrivers = {"aufs", "btrfs", "zfs", "devicemapper", "overlay", "vfs"};
// storage-opt key prefixes of each driver (`options:`), as docs/storage.md names them.
const std::map<std::string, std::string> kOptionPrefixes = {
    {"overlay.", "overlay"}, {"overlay2.", "overlay"}, {"aufs.", "aufs"}, {"btrfs.", "btrfs"},
    {"zfs.", "zfs"},         {"dm.", "devicemapper"},  {"vfs.", "vfs"}};

std::string join_names(const std::vector<std::string>& v) {
  std::string o;
  for (const auto& x : v) o += (o.empty() ? "" : ", ") + x;
  return o;
}

class Checker {
 public:
  Checker(std::string file, std::vector<Diagnostic>& diags) : file_(std::move(file)), diags_(diags) {}

  void error(const YAML::Node& n, const std::string& msg) { error(mark_of(n), msg); }
  void error(const Mark& m, const std::string& msg) {
    diags_.push_back({file_, m.line, m.column, msg});
  }
  static Mark mark_of(const YAML::Node& n) {
    Mark m;
    if (n.IsDefined()) {
      m.line = n.Mark().line + 1;
      m.column = n.Mark().column + 1;
    }
    return m;
  }

  // Checks `n` is a mapping with only known keys and no duplicates.  Returns false if not a
  // mapping at all.
  bool check_map(const YAML::Node& n, const std::string& what, const std::set<std::string>& allowed) {
    if (!n.IsMap()) {
      error(n, what + " must be a mapping");
      return false;
    }
    std::set<std::string> seen;
    for (auto it = n.begin(); it != n.end(); ++it) {
      if (!it->first.IsScalar()) {
        error(it->first, what + ": keys must be plain names");
        continue;
      }
      std::string k = it->first.Scalar();
      if (!seen.insert(k).second) error(it->first, what + ": duplicate key \"" + k + "\"");
      if (!allowed.count(k)) {
        std::string known;
        for (const auto& a : allowed) known += (known.empty() ? "" : ", ") + a;
        error(it->first, what + ": unknown key \"" + k + "\" (expected one of: " + known + ")");
      }
    }
    return true;
  }

  // Converts and checks one field value.
  bool value(const YAML::Node& n, const FieldSpec& spec, const std::string& what, Value& out) {
    if (!value(n, spec.type, what, out)) return false;
    if (spec.choices.empty()) return true;
    auto bad_choice = [&](const std::string& v) {
      error(n, what + ": unknown value \"" + v +
                   "\" (expected one of: " + join_names(spec.choices) + ")");
      return false;
    };
    if (out.kind == Value::Kind::kScalar) {
      if (std::find(spec.choices.begin(), spec.choices.end(), out.scalar) == spec.choices.end())
        return bad_choice(out.scalar);
    } else {
      for (const auto& v : out.list)
        if (std::find(spec.choices.begin(), spec.choices.end(), v) == spec.choices.end())
          return bad_choice(v);
    }
    return true;
  }

  bool value(const YAML::Node& n, T type, const std::string& what, Value& out) {
    out.mark = mark_of(n);
    if (type == T::kErrno && n.IsSequence()) {
      // A set of acceptable errnos (a quota hit may be EDQUOT or ENOSPC).
      if (!value(n, T::kList, what, out)) return false;
      if (out.list.empty()) {
        error(n, what + ": an empty errno set can never match");
        return false;
      }
      for (const auto& e : out.list)
        if (errno_from_name(e) < 0) {
          error(n, what + ": unknown errno name \"" + e +
                       "\" (use names like ENOENT, EXDEV, or 0 for success)");
          return false;
        }
      return true;
    }
    if (type == T::kBytesMap) {
      if (!value(n, T::kMap, what, out)) return false;
      for (const auto& [k, v] : out.map)
        if (!valid_bytes(v)) {
          error(n, what + "." + k + ": \"hex:\" needs an even number of hex digits (got \"" + v +
                       "\")");
          return false;
        }
      return true;
    }
    if (type == T::kList || type == T::kStrOrList) {
      if (type == T::kStrOrList && n.IsScalar()) {
        out.kind = Value::Kind::kList;
        out.list = {n.Scalar()};
        return true;
      }
      if (!n.IsSequence()) {
        error(n, what + " must be a list");
        return false;
      }
      out.kind = Value::Kind::kList;
      for (const auto& e : n) {
        if (!e.IsScalar()) {
          error(e, what + ": list items must be scalars");
          return false;
        }
        out.list.push_back(e.Scalar());
      }
      return true;
    }
    if (type == T::kMap) {
      if (!n.IsMap()) {
        error(n, what + " must be a mapping");
        return false;
      }
      out.kind = Value::Kind::kMap;
      for (auto it = n.begin(); it != n.end(); ++it) {
        if (!it->first.IsScalar() || !it->second.IsScalar()) {
          error(it->first, what + ": keys and values must be scalars");
          return false;
        }
        if (out.map.count(it->first.Scalar())) error(it->first, what + ": duplicate key \"" + it->first.Scalar() + "\"");
        out.map[it->first.Scalar()] = it->second.Scalar();
      }
      return true;
    }
    if (!n.IsScalar()) {
      error(n, what + " must be a scalar, not a " + (n.IsMap() ? "mapping" : n.IsSequence() ? "list" : "null"));
      return false;
    }
    out.kind = Value::Kind::kScalar;
    out.scalar = n.Scalar();
    const std::string& s = out.scalar;
    // Values still holding a sweep placeholder are checked once substituted.
    auto bad = [&](const std::string& why) {
      error(n, what + ": " + why + " (got \"" + s + "\")");
      return false;
    };
    switch (type) {
      case T::kStr:
        return true;
      case T::kInt: {
        if (s.empty() || !std::all_of(s.begin() + (s[0] == '-' ? 1 : 0), s.end(), ::isdigit) || s == "-")
          return bad("expected an integer");
        // Range-checked here so no later conversion can throw (a stoi on "99999999999" used
        // to abort `scenario check` with an uncaught std::out_of_range).
        if (!int_of(s)) return bad("integer out of range");
        return true;
      }
      case T::kNumber: {
        char* end = nullptr;
        std::strtod(s.c_str(), &end);
        if (s.empty() || *end) return bad("expected a number");
        return true;
      }
      case T::kSize: {
        // "F*SIZE" scales a size (bounds relative to a swept size: "0.9*${size}").
        std::string sz = s;
        auto star = s.find('*');
        if (star != std::string::npos) {
          char* end = nullptr;
          std::string f = s.substr(0, star);
          std::strtod(f.c_str(), &end);
          if (f.empty() || *end) return bad("expected FACTOR*SIZE like 0.9*64MiB");
          sz = s.substr(star + 1);
        }
        auto r = parse_size(sz);
        if (!r.ok()) return bad("expected a size like 4096, 64KiB, 1.5G");
        return true;
      }
      case T::kMode: {
        if (s.empty() || s.size() > 6 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '7'; }))
          return bad("expected an octal mode like \"0644\" or \"4755\"");
        if (std::stoul(s, nullptr, 8) > 07777) return bad("mode out of range");
        return true;
      }
      case T::kOwner: {
        static const std::regex re("^[0-9]+:[0-9]+$");
        if (!std::regex_match(s, re)) return bad("expected \"uid:gid\" with numeric ids");
        return true;
      }
      case T::kRdev: {
        static const std::regex re("^[0-9]+:[0-9]+$");
        if (!std::regex_match(s, re)) return bad("expected \"major:minor\"");
        return true;
      }
      case T::kBool: {
        if (s != "true" && s != "false") return bad("expected true or false");
        return true;
      }
      case T::kErrno: {
        if (errno_from_name(s) < 0) return bad("unknown errno name (use names like ENOENT, EXDEV, or 0 for success)");
        out.kind = Value::Kind::kList;
        out.list = {s};
        return true;
      }
      case T::kBytes: {
        if (!valid_bytes(s)) return bad("\"hex:\" needs an even number of hex digits");
        return true;
      }
      default:
        return true;
    }
  }

  // Reads the fields of a mapping against `schema`; `skip` keys are handled by the caller.
  Fields fields(const YAML::Node& n, const Schema& schema, const std::string& what,
                const std::set<std::string>& extra_keys = {}, bool enforce_required = true) {
    Fields out;
    std::set<std::string> allowed = extra_keys;
    for (const auto& [k, v] : schema) allowed.insert(k);
    if (!check_map(n, what, allowed)) return out;
    for (const auto& [k, spec] : schema) {
      const YAML::Node v = n[k];
      if (!v.IsDefined() || v.IsNull()) {
        if (spec.required && enforce_required) error(n, what + ": missing required key \"" + k + "\"");
        continue;
      }
      Value val;
      if (value(v, spec, what + "." + k, val)) out[k] = std::move(val);
    }
    return out;
  }

  std::optional<Condition> condition(const YAML::Node& n, const std::string& what) {
    Schema s = {{"drivers", {T::kList}}, {"not_drivers", {T::kList}}, {"kernel", {T::kStr}},
                {"features", {T::kList}}, {"without", {T::kList}}, {"runs", {T::kList}}};
    Fields f = fields(n, s, what);
    Condition c;
    c.mark = mark_of(n);
    auto names = [&](const char* key, std::vector<std::string>& dst, const std::set<std::string>& known,
                     const char* kind) {
      auto it = f.find(key);
      if (it == f.end()) return;
      for (const auto& v : it->second.list) {
        if (!known.count(v))
          error(it->second.mark,
                what + "." + key + ": unknown " + kind + " \"" + v +
                    "\" (expected one of: " + join_names({known.begin(), known.end()}) + ")");
        dst.push_back(v);
      }
    };
    names("drivers", c.drivers, kDrivers, "driver");
    names("not_drivers", c.not_drivers, kDrivers, "driver");
    const std::set<std::string> features(feature_names().begin(), feature_names().end());
    names("features", c.features, features, "feature");
    names("without", c.without, features, "feature");
    if (f.count("runs")) {
      for (const auto& v : f["runs"].list) {
        int n = 0;
        size_t used = 0;
        try {
          n = std::stoi(v, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != v.size() || n < 1) error(f["runs"].mark, what + ".runs: \"" + v + "\" is not a run number (1, 2, ...)");
        c.runs.push_back(n);
      }
    }
    if (f.count("kernel")) {
      c.kernel = f["kernel"].scalar;
      if (!valid_kernel_constraint(c.kernel))
        error(f["kernel"].mark, what + ".kernel: expected constraints like \">=5.11\" or \">=4.10 <6.7\"");
    }
    return c;
  }

  // `cases:` — a list of mappings with an optional `when:` and overriding fields.
  std::vector<Case> cases(const YAML::Node& n, const Schema& schema, const std::string& what) {
    std::vector<Case> out;
    if (!n.IsSequence()) {
      error(n, what + " must be a list of cases");
      return out;
    }
    int i = 0;
    bool saw_default = false;
    for (const auto& c : n) {
      ++i;
      std::string cw = what + "[" + std::to_string(i) + "]";
      Case cs;
      Schema s = schema;
      s["skip"] = {T::kStr};
      cs.fields = fields(c, s, cw, {"when"}, /*enforce_required=*/false);
      if (c.IsMap() && c["when"].IsDefined()) {
        cs.when = condition(c["when"], cw + ".when");
      } else {
        if (saw_default) error(c, cw + ": a second default case (without when:) can never match");
        saw_default = true;
      }
      out.push_back(std::move(cs));
    }
    return out;
  }

 private:
  std::string file_;
  std::vector<Diagnostic>& diags_;
};

// ---- the parser --------------------------------------------------------------------------
class Parser {
 public:
  Parser(Checker& c, Scenario::Impl& s) : c_(c), s_(s) {}

  // `implicit_in`: build steps act on the layer's temporary container and take no `in`.
  Item step(const YAML::Node& n, const std::string& what, int index, bool implicit_in = false) {
    Item it;
    it.mark = Checker::mark_of(n);
    it.index = index;
    if (!n.IsMap()) {
      c_.error(n, what + " must be a mapping with an op");
      return it;
    }
    const YAML::Node op = n["op"];
    if (!op.IsDefined() || !op.IsScalar()) {
      c_.error(n, what + ": missing \"op\"");
      return it;
    }
    it.kind = op.Scalar();
    const OpDef* def = find_op(it.kind);
    if (!def) {
      std::string known;
      for (const auto& d : op_table()) known += (known.empty() ? "" : ", ") + d.name;
      c_.error(op, what + ": unknown op \"" + it.kind + "\" (expected one of: " + known + ")");
      return it;
    }
    Schema schema = def->fields;
    schema["op"] = {T::kStr, true};
    if (def->target == Target::kContainers && !implicit_in) schema["in"] = {T::kStrOrList, true};
    if (implicit_in && !def->in_build)
      c_.error(op, what + ": op \"" + it.kind + "\" cannot be used in build steps");
    schema["errno"] = {T::kErrno};
    Schema measure_schema = {{"space", {T::kStr}}, {"time", {T::kStr}}, {"page_cache", {T::kStr}}};
    it.fields = c_.fields(n, schema, what + " (" + it.kind + ")", {"cases", "measure"});
    if (n["measure"].IsDefined()) {
      Fields m = c_.fields(n["measure"], measure_schema, what + ".measure");
      for (const auto& [k, v] : m) {
        it.fields["measure." + k] = v;
        measures_.insert(v.scalar);
      }
    }
    if (n["cases"].IsDefined()) {
      // A case may replace any of the op's own fields (a map_read's content per driver) and
      // its errno; not where it runs (`in`).
      Schema cs = def->fields;
      for (auto& [k, spec] : cs) spec.required = false;
      cs["errno"] = {T::kErrno};
      it.cases = c_.cases(n["cases"], cs, what + ".cases");
    }
    auto report = [&](const Mark& m, const std::string& msg) {
      c_.error(m.line ? m : it.mark, what + " (" + it.kind + "): " + msg);
    };
    if (def->check) def->check(it.fields, report);
    if (def->records)
      for (const auto& name : def->records(it.fields)) measures_.insert(name);
    names_in_order(it, report);
    return it;
  }

  // Named descriptors, mappings, watches and stat captures must be made by an earlier step
  // (and not closed since); a second `open` of a name still open is a mistake.
  void names_in_order(const Item& it,
                      const std::function<void(const Mark&, const std::string&)>& report) {
    auto name = [&](const char* key) -> std::pair<std::string, Mark> {
      auto f = it.fields.find(key);
      return f == it.fields.end() ? std::pair<std::string, Mark>{"", {}}
                                  : std::pair{f->second.scalar, f->second.mark};
    };
    auto need = [&](std::set<std::string>& set, const char* key, const char* kind,
                    const char* maker) {
      auto [n, m] = name(key);
      if (!n.empty() && !set.count(n))
        report(m, std::string(kind) + " \"" + n + "\" is not open here (make it with op: " + maker +
                      " first)");
    };
    auto make = [&](std::set<std::string>& set, const char* key, const char* kind) {
      auto [n, m] = name(key);
      if (!n.empty() && !set.insert(n).second)
        report(m, std::string(kind) + " \"" + n + "\" is already open");
    };
    const std::string& k = it.kind;
    if (k == "open") {
      make(fds_, "fd", "fd");
    } else if (k == "mmap") {
      need(fds_, "fd", "fd", "open");
      make(maps_, "map", "map");
    } else if (k == "watch") {
      make(watches_, "watch", "watch");
    } else if (k == "stat") {
      captures_.insert(name("as").first);
    } else {
      need(fds_, "fd", "fd", "open");
      need(maps_, "map", "map", "mmap");
      need(watches_, "watch", "watch", "watch");
    }
    if (k == "close") fds_.erase(name("fd").first);
    if (k == "munmap") maps_.erase(name("map").first);
  }

  Item expectation(const YAML::Node& n, const std::string& what, int index) {
    Item it;
    it.mark = Checker::mark_of(n);
    it.index = index;
    if (!n.IsMap()) {
      c_.error(n, what + " must be a mapping");
      return it;
    }
    std::string kind;
    for (auto p = n.begin(); p != n.end(); ++p) {
      std::string k = p->first.IsScalar() ? p->first.Scalar() : "";
      if (find_expect(k)) {
        if (!kind.empty()) c_.error(p->first, what + ": one expectation per item (\"" + kind + "\" and \"" + k + "\")");
        kind = k;
      }
    }
    if (kind.empty()) {
      std::string known;
      for (const auto& d : expect_table()) known += (known.empty() ? "" : ", ") + d.name;
      c_.error(n, what + ": no expectation kind (expected one of: " + known + ")");
      return it;
    }
    it.kind = kind;
    const ExpectDef& def = *find_expect(kind);
    const Schema& schema = def.fields;
    std::string w = what + " (" + kind + ")";
    const YAML::Node body = n[kind];
    if (def.shape == Shape::kNamed) {
      std::set<std::string> allowed = {kind, "cases"};
      for (const auto& [k, spec] : schema)
        if (k != "name") allowed.insert(k);
      c_.check_map(n, w, allowed);
      Value v;
      if (c_.value(body, T::kStr, w, v)) it.fields["name"] = v;
      for (const auto& [k, spec] : schema)
        if (k != "name" && n[k].IsDefined() && c_.value(n[k], spec, w + "." + k, v))
          it.fields[k] = v;
      if (!it.fields.count("min") && !it.fields.count("max") && !n["cases"].IsDefined())
        c_.error(n, w + ": needs min or max");
      if (it.fields.count("name")) used_measures_.push_back({it.fields["name"].scalar, it.fields["name"].mark});
    } else if (def.shape == Shape::kBool) {
      c_.check_map(n, w, {kind, "cases"});
      Value v;
      if (c_.value(body, T::kBool, w, v)) it.fields["value"] = v;
    } else if (def.shape == Shape::kList) {
      c_.check_map(n, w, {kind, "cases"});
      Value v;
      if (c_.value(body, T::kList, w, v)) {
        it.fields["containers"] = v;
        for (const auto& id : v.list) refs_.push_back({id, v.mark, w, /*container=*/true});
      }
    } else {
      c_.check_map(n, w, {kind, "cases"});
      it.fields = c_.fields(body, schema, w);
      if (kind == "ratio") {
        for (const char* k : {"of", "to"})
          if (it.fields.count(k)) used_measures_.push_back({it.fields[k].scalar, it.fields[k].mark});
        if (!it.fields.count("min") && !it.fields.count("max") && !n["cases"].IsDefined())
          c_.error(body, w + ": needs min or max");
      }
      if ((kind == "changes" || kind == "diff") && !it.fields.count(kind == "changes" ? "equals" : "entries") &&
          !it.fields.count("includes") && !n["cases"].IsDefined())
        c_.error(body, w + ": needs " + (kind == "changes" ? "equals" : "entries") + " or includes");
      if (kind == "changes")
        for (const char* k : {"equals", "includes"})
          if (it.fields.count(k))
            for (const auto& line : it.fields[k].list) {
              static const std::regex re("^[ACD] /.*$");
              if (!std::regex_match(line, re))
                c_.error(it.fields[k].mark, w + "." + k + ": \"" + line + "\" is not \"A|C|D /path\"");
            }
      if (kind == "view") {
        if (it.fields.count("since") && !captures_.count(it.fields["since"].scalar))
          c_.error(it.fields["since"].mark,
                   w + ".since: \"" + it.fields["since"].scalar +
                       "\" is not recorded by a stat step (op: stat, as: NAME)");
        if ((it.fields.count("same") || it.fields.count("changed")) && !it.fields.count("since"))
          c_.error(body, w + ": same/changed compare with a stat step's result: give since");
      }
      if (it.fields.count("in")) refs_.push_back({it.fields["in"].scalar, it.fields["in"].mark, w, false});
    }
    if (n["cases"].IsDefined()) {
      Schema cs = schema;
      if (def.shape == Shape::kNamed) cs.erase("name");
      it.cases = c_.cases(n["cases"], cs, w + ".cases");
    }
    return it;
  }

  Entry entry(const YAML::Node& n, const std::string& what) {
    Entry e;
    e.mark = Checker::mark_of(n);
    static const Schema kEntrySchema = schema_of(entry_table());
    e.fields = c_.fields(n, kEntrySchema, what);
    std::string type = e.fields.count("type") ? e.fields["type"].scalar : "file";
    bool sparse = e.fields.count("sparse") && e.fields["sparse"].scalar == "true";
    if (sparse && (!e.fields.count("size") || type != "file"))
      c_.error(e.fields["sparse"].mark, what + ".sparse: a sparse entry is a file with a size");
    if (sparse && (e.fields.count("pattern") || e.fields.count("seed")))
      c_.error(e.fields["sparse"].mark,
               what + ".sparse: its data is content (at offset 0), not a pattern");
    if (sparse && e.fields.count("content") && e.fields.count("size") &&
        parse_size(e.fields["size"].scalar).ok() &&
        e.fields["content"].scalar.size() > *parse_size(e.fields["size"].scalar))
      c_.error(e.fields["content"].mark, what + ".content: longer than size");
    if ((type == "symlink" || type == "hardlink") && !e.fields.count("target"))
      c_.error(n, what + ": a " + type + " needs target");
    if (type != "symlink" && type != "hardlink" && e.fields.count("target"))
      c_.error(e.fields["target"].mark, what + ": target only applies to symlink and hardlink entries");
    if (e.fields.count("content") && e.fields.count("size") && !sparse)
      c_.error(n, what + ": give either content or size, not both (or sparse: true)");
    if (type != "file" && (e.fields.count("content") || e.fields.count("size")))
      c_.error(n, what + ": content and size only apply to files");
    if ((type == "char" || type == "block") && !e.fields.count("rdev"))
      c_.error(n, what + ": a device needs rdev");
    if (e.fields.count("path")) {
      const std::string& p = e.fields["path"].scalar;
      if (p == "." && type == "opaque") {
        // the layer root made opaque: ".wh..wh..opq" at the top of the tar
      } else if (p.empty() || p == "." || p[0] == '/' || p.find("..") != std::string::npos && (p == ".." || p.rfind("../", 0) == 0 ||
                                                                             p.find("/../") != std::string::npos))
        c_.error(e.fields["path"].mark, what + ".path: must be relative and stay inside the layer");
    }
    return e;
  }

  // Expands "${i}" in every scalar of a node tree (for generate:).
  static YAML::Node substitute_i(const YAML::Node& n, int i) {
    if (n.IsScalar()) {
      std::string s = n.Scalar();
      std::string key = "${i}";
      for (size_t p = s.find(key); p != std::string::npos; p = s.find(key, p)) s.replace(p, key.size(), std::to_string(i));
      YAML::Node out(s);
      return out;
    }
    if (n.IsSequence()) {
      YAML::Node out(YAML::NodeType::Sequence);
      for (const auto& e : n) out.push_back(substitute_i(e, i));
      return out;
    }
    if (n.IsMap()) {
      YAML::Node out(YAML::NodeType::Map);
      for (auto it = n.begin(); it != n.end(); ++it) out[it->first.Scalar()] = substitute_i(it->second, i);
      return out;
    }
    return n;
  }

  void layers(const YAML::Node& n, Doc& doc) {
    if (!n.IsDefined()) {
      c_.error(Mark{1, 1}, "missing required key \"layers\"");
      return;
    }
    if (!n.IsSequence() || n.size() == 0) {
      c_.error(n, "layers must be a non-empty list");
      return;
    }
    std::string prev;
    int i = 0;
    for (const auto& l : n) {
      ++i;
      std::string what = "layers[" + std::to_string(i) + "]";
      if (l.IsMap() && l["generate"].IsDefined()) {
        c_.check_map(l, what, {"generate"});
        const YAML::Node g = l["generate"];
        if (!c_.check_map(g, what + ".generate", {"count", "id", "entries", "parent"})) continue;
        Value count;
        if (!g["count"].IsDefined() || !c_.value(g["count"], T::kInt, what + ".generate.count", count)) {
          if (!g["count"].IsDefined()) c_.error(g, what + ".generate: missing count");
          continue;
        }
        int64_t cnt = *int_of(count.scalar);
        if (cnt < 1 || cnt > 1000) {
          c_.error(g["count"], what + ".generate.count: must be 1..1000");
          continue;
        }
        if (!g["id"].IsDefined() || !g["id"].IsScalar() || g["id"].Scalar().find("${i}") == std::string::npos) {
          c_.error(g, what + ".generate.id: needs a template containing ${i}");
          continue;
        }
        std::string parent = prev;
        if (g["parent"].IsDefined()) parent = g["parent"].IsNull() ? "" : g["parent"].Scalar();
        for (int k = 1; k <= cnt; ++k) {
          LayerDef d;
          d.mark = Checker::mark_of(l);
          d.id = substitute_i(g["id"], k).Scalar();
          d.parent = parent;
          if (g["entries"].IsDefined()) {
            YAML::Node es = substitute_i(g["entries"], k);
            if (!es.IsSequence()) {
              c_.error(g["entries"], what + ".generate.entries must be a list");
              break;
            }
            int j = 0;
            for (const auto& e : es) {
              Entry en = entry(e, what + ".generate.entries[" + std::to_string(++j) + "]");
              en.mark = Checker::mark_of(g["entries"]);
              d.entries.push_back(std::move(en));
            }
          }
          add_layer(std::move(d), doc, what);
          parent = doc.layers.back().id;
        }
        prev = parent;
        continue;
      }
      if (!c_.check_map(l, what, {"id", "parent", "entries", "tar", "oci", "build"})) continue;
      LayerDef d;
      d.mark = Checker::mark_of(l);
      if (!l["id"].IsDefined() || !l["id"].IsScalar()) {
        c_.error(l, what + ": missing id");
        continue;
      }
      d.id = l["id"].Scalar();
      d.parent = prev;
      if (l["parent"].IsDefined()) d.parent = l["parent"].IsNull() ? "" : l["parent"].Scalar();
      int sources = 0;
      if (l["entries"].IsDefined()) {
        ++sources;
        d.source = LayerSource::kEntries;
        if (!l["entries"].IsSequence()) {
          c_.error(l["entries"], what + ".entries must be a list");
        } else {
          int j = 0;
          for (const auto& e : l["entries"]) d.entries.push_back(entry(e, what + ".entries[" + std::to_string(++j) + "]"));
        }
      }
      for (const char* k : {"tar", "oci"}) {
        if (!l[k].IsDefined()) continue;
        ++sources;
        d.source = std::string(k) == "tar" ? LayerSource::kTar : LayerSource::kOci;
        if (!l[k].IsScalar()) {
          c_.error(l[k], what + "." + k + " must be a path");
          continue;
        }
        std::string p = l[k].Scalar();
        d.path = p[0] == '/' ? p : s_.dir + "/" + p;
        if (!sys::lstat_if_exists(d.path).value_or(std::nullopt).has_value())
          c_.error(l[k], what + "." + k + ": " + d.path + " does not exist");
      }
      if (l["build"].IsDefined()) {
        ++sources;
        d.source = LayerSource::kBuild;
        if (!l["build"].IsSequence()) {
          c_.error(l["build"], what + ".build must be a list of steps");
        } else {
          int j = 0;
          for (const auto& st : l["build"]) {
            ++j;  // before the call: the order its arguments are evaluated in is unspecified
            Item item =
                step(st, what + ".build[" + std::to_string(j) + "]", j, /*implicit_in=*/true);
            // Build steps act on the temporary container: `in` is implicit.
            d.build.push_back(std::move(item));
          }
        }
      }
      if (sources == 0) c_.error(l, what + ": needs one of entries, tar, oci, build");
      if (sources > 1) c_.error(l, what + ": give only one of entries, tar, oci, build");
      add_layer(std::move(d), doc, what);
      prev = doc.layers.back().id;
    }
  }

  void add_layer(LayerDef d, Doc& doc, const std::string& what) {
    auto id_ok = validate_layer_id_str(d.id);
    if (!id_ok.empty()) c_.error(d.mark, what + ": id \"" + d.id + "\": " + id_ok);
    if (!ids_.insert(d.id).second) c_.error(d.mark, what + ": duplicate id \"" + d.id + "\"");
    if (!d.parent.empty() && !layer_ids_.count(d.parent))
      c_.error(d.mark, what + ": parent \"" + d.parent + "\" is not a layer defined above");
    layer_ids_.insert(d.id);
    doc.layers.push_back(std::move(d));
  }

  static std::string validate_layer_id_str(const std::string& id) {
    if (id.empty()) return "empty";
    if (id.size() > 100) return "longer than 100 bytes";
    if (!isalnum(static_cast<unsigned char>(id[0]))) return "must start with a letter or digit";
    for (char ch : id)
      if (!isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '.' && ch != '-')
        return "only letters, digits, '_', '.' and '-' are allowed";
    return "";
  }

  // `samples:` of a container (1..32); false (and an error naming `what`) when it is invalid.
  bool samples_of(const YAML::Node& v, const std::string& what, int& out) {
    Value val;
    if (!c_.value(v, T::kInt, what + ".samples", val)) return false;
    auto n = int_of(val.scalar);
    if (!n || *n < 1 || *n > 32) {
      c_.error(v, what + ".samples: must be 1..32, got " + val.scalar);
      return false;
    }
    out = static_cast<int>(*n);
    return true;
  }

  void containers(const YAML::Node& n, Doc& doc) {
    if (!n.IsDefined()) return;
    if (!n.IsSequence()) {
      c_.error(n, "containers must be a list");
      return;
    }
    int i = 0;
    for (const auto& cn : n) {
      ++i;
      std::string what = "containers[" + std::to_string(i) + "]";
      if (cn.IsMap() && cn["generate"].IsDefined()) {
        c_.check_map(cn, what, {"generate"});
        const YAML::Node g = cn["generate"];
        if (!c_.check_map(g, what + ".generate", {"count", "id", "image", "size", "samples"}))
          continue;
        int samples = 1;
        if (g["samples"].IsDefined() && !samples_of(g["samples"], what + ".generate", samples))
          continue;
        Value count;
        if (!g["count"].IsDefined() || !c_.value(g["count"], T::kInt, what + ".generate.count", count)) {
          if (!g["count"].IsDefined()) c_.error(g, what + ".generate: missing count");
          continue;
        }
        int64_t cnt = *int_of(count.scalar);
        if (cnt < 1 || cnt > 256) {
          c_.error(g["count"], what + ".generate.count: must be 1..256");
          continue;
        }
        if (!g["id"].IsDefined() || g["id"].Scalar().find("${i}") == std::string::npos || !g["image"].IsDefined()) {
          c_.error(g, what + ".generate: needs id (a template containing ${i}) and image");
          continue;
        }
        for (int k = 1; k <= cnt; ++k) {
          ContainerDef d;
          d.mark = Checker::mark_of(cn);
          d.id = substitute_i(g["id"], k).Scalar();
          d.image = g["image"].Scalar();
          if (g["size"].IsDefined()) d.size = g["size"].Scalar();
          d.samples = samples;
          add_container(std::move(d), doc, what);
        }
        continue;
      }
      Fields f = c_.fields(cn,
                           {{"id", {T::kStr, true}},
                            {"image", {T::kStr, true}},
                            {"size", {T::kSize}},
                            {"samples", {T::kStr}}},
                           what);
      if (!f.count("id") || !f.count("image")) continue;
      ContainerDef d;
      d.mark = Checker::mark_of(cn);
      d.id = f["id"].scalar;
      d.image = f["image"].scalar;
      if (f.count("size")) d.size = f["size"].scalar;
      if (cn["samples"].IsDefined() && !samples_of(cn["samples"], what, d.samples)) continue;
      add_container(std::move(d), doc, what);
    }
  }

  void add_container(ContainerDef d, Doc& doc, const std::string& what) {
    auto id_ok = validate_layer_id_str(d.id);
    if (!id_ok.empty()) c_.error(d.mark, what + ": id \"" + d.id + "\": " + id_ok);
    if (!ids_.insert(d.id).second) c_.error(d.mark, what + ": duplicate id \"" + d.id + "\"");
    // A container may sit on another container (Docker's <id>-init layer under a container).
    if (!layer_ids_.count(d.image) && !container_ids_.count(d.image))
      c_.error(d.mark, what + ": image \"" + d.image + "\" is not a layer or an earlier container");
    if (!d.size.empty() && !parse_size(d.size).ok()) c_.error(d.mark, what + ".size: invalid size \"" + d.size + "\"");
    container_ids_.insert(d.id);
    measures_.insert("create." + d.id + ".space");
    measures_.insert("create." + d.id + ".time");
    doc.containers.push_back(std::move(d));
  }

  void check_step_refs(const Item& it, const std::string& what) {
    auto f = it.fields.find("in");
    if (f == it.fields.end()) return;
    for (const auto& pat : f->second.list) {
      bool any = false;
      for (const auto& c : container_ids_) {
        if (::fnmatch(pat.c_str(), c.c_str(), 0) != 0) continue;
        auto gone = removed_.find(c);
        if (gone != removed_.end()) {
          c_.error(f->second.mark, what + ".in: container \"" + c + "\" was removed by step " +
                                       std::to_string(gone->second));
          continue;
        }
        any = true;
        if (it.kind == "remove") removed_.emplace(c, it.index);
      }
      if (!any &&
          !(removed_.size() && std::any_of(removed_.begin(), removed_.end(), [&](const auto& r) {
              return ::fnmatch(pat.c_str(), r.first.c_str(), 0) == 0;
            })))
        c_.error(f->second.mark, what + ".in: \"" + pat + "\" matches no container");
    }
  }

  void finish_refs() {
    for (const auto& r : refs_) {
      bool ok = r.container_only ? container_ids_.count(r.id) : (container_ids_.count(r.id) || layer_ids_.count(r.id));
      if (!ok)
        c_.error(r.mark, r.what + ": \"" + r.id + "\" is not a " + (r.container_only ? "container" : "container or layer"));
      // The run would fail to mount it: refuse now (issue 13: check accepted these).
      auto gone = removed_.find(r.id);
      if (gone != removed_.end())
        c_.error(r.mark, r.what + ": container \"" + r.id + "\" was removed by step " +
                             std::to_string(gone->second) + "; nothing can be expected of it");
    }
    for (const auto& [name, mark] : used_measures_) {
      if (!measures_.count(name)) c_.error(mark, "measurement \"" + name + "\" is never recorded by a step");
    }
  }

 private:
  struct Ref {
    std::string id;
    Mark mark;
    std::string what;
    bool container_only;
  };
  Checker& c_;
  Scenario::Impl& s_;
  std::set<std::string> ids_, layer_ids_, container_ids_, measures_;
  std::set<std::string> fds_, maps_, watches_, captures_;
  std::map<std::string, int> removed_;  // container → the step that removed it
  std::vector<Ref> refs_;
  std::vector<std::pair<std::string, Mark>> used_measures_;
};

std::vector<std::string> list_of(Checker& c, const YAML::Node& n, const std::string& what) {
  Value v;
  if (!n.IsDefined()) return {};
  if (c.value(n, T::kList, what, v)) return v.list;
  return {};
}

// `crash:` (power-cut testing, docs/crash.md): which phases to cut and at which points.  The
// phase names are checked against the document by the crash runner (drivers/crash).
void parse_crash(Checker& c, Scenario::Impl& s, const YAML::Node& n) {
  if (!c.check_map(n, "crash", {"steps", "points", "random"})) return;
  CrashSpec spec;
  spec.mark = Checker::mark_of(n);
  const YAML::Node steps = n["steps"];
  if (!steps.IsDefined()) {
    c.error(n, "crash: missing required key \"steps\" (a list of phase names, or all)");
  } else if (steps.IsScalar()) {
    if (steps.Scalar() != "all") c.error(steps, "crash.steps: must be all or a list of phase names");
    spec.all = true;
  } else {
    spec.steps = list_of(c, steps, "crash.steps");
    if (spec.steps.empty()) c.error(steps, "crash.steps: empty list");
  }
  if (n["points"].IsDefined()) {
    spec.points = n["points"].IsScalar() ? n["points"].Scalar() : "";
    if (spec.points != "flush" && spec.points != "all_flushes_and_random")
      c.error(n["points"], "crash.points: must be flush or all_flushes_and_random");
  }
  if (n["random"].IsDefined()) {
    Value v;
    if (c.value(n["random"], T::kInt, "crash.random", v)) {
      long long r = std::strtoll(v.scalar.c_str(), nullptr, 10);
      if (r < 0 || r > 100000) c.error(n["random"], "crash.random: must be 0..100000");
      else spec.random = static_cast<int>(r);
      if (spec.points != "all_flushes_and_random")
        c.error(n["random"], "crash.random: only with points: all_flushes_and_random");
    }
  }
  s.crash = std::move(spec);
}

void parse_doc(Checker& c, Scenario::Impl& s, const YAML::Node& root, Doc& doc, bool first) {
  Parser p(c, s);
  if (first) {
    std::set<std::string> top;
    for (const auto& k : top_level_table()) top.insert(k.key);
    if (!c.check_map(root, "scenario file", top)) return;
    if (!root["scenario"].IsDefined() || !root["scenario"].IsScalar()) {
      c.error(Mark{1, 1}, "missing required key \"scenario\" (the scenario's name)");
    } else {
      s.name = root["scenario"].Scalar();
      static const std::regex re("^[a-z0-9][a-z0-9-]*$");
      if (!std::regex_match(s.name, re)) c.error(root["scenario"], "scenario: name must match [a-z0-9][a-z0-9-]*");
    }
    if (!root["description"].IsDefined() || !root["description"].IsScalar() || root["description"].Scalar().empty())
      c.error(Mark{1, 1}, "missing required key \"description\"");
    else
      s.description = root["description"].Scalar();
    s.groups = list_of(c, root["groups"], "groups");
    s.links = list_of(c, root["links"], "links");
    for (const auto& l : s.links)
      if (l.rfind("http://", 0) != 0 && l.rfind("https://", 0) != 0)
        c.error(root["links"], "links: \"" + l + "\" is not a URL");
    if (std::count(s.groups.begin(), s.groups.end(), "regression") && s.links.empty())
      c.error(root["groups"], "groups: a regression scenario must link its upstream report (links:)");
    if (root["timeout"].IsDefined()) {
      Value v;
      if (c.value(root["timeout"], T::kInt, "timeout", v)) {
        int64_t t = *int_of(v.scalar);
        if (t <= 0 || t > 86400)
          c.error(root["timeout"], "timeout: must be 1..86400 seconds (got " + v.scalar + ")");
        else
          s.timeout = static_cast<int>(t);
      }
    }
    if (root["crash"].IsDefined()) parse_crash(c, s, root["crash"]);
    if (root["requires"].IsDefined()) {
      auto cond = c.condition(root["requires"], "requires");
      if (cond) {
        if (!cond->without.empty()) c.error(root["requires"], "requires: use features, not without");
        if (!cond->runs.empty()) c.error(root["requires"], "requires: runs is only for cases");
        s.requires_.drivers = cond->drivers;
        s.requires_.not_drivers = cond->not_drivers;
        s.requires_.features = cond->features;
        s.requires_.kernel = cond->kernel;
      }
    }
  }
  if (root["options"].IsDefined()) {
    Value v;
    if (c.value(root["options"], T::kMap, "options", v)) {
      for (const auto& entry : v.map) {
        // A named reference, not a structured binding: clang 14 (the fuzz build's compiler)
        // cannot capture structured bindings in a lambda (P1091 landed in clang 16).
        const std::string& k = entry.first;
        bool known = std::any_of(
            kOptionPrefixes.begin(), kOptionPrefixes.end(),
            [&](const auto& p) { return k.rfind(p.first, 0) == 0 && k.size() > p.first.size(); });
        if (!known)
          c.error(root["options"], "options: \"" + k +
                                       "\" is not a driver's storage option (keys start with " +
                                       "overlay., aufs., btrfs., zfs., dm. or vfs.)");
      }
      doc.options = v.map;
    }
  }
  p.layers(root["layers"], doc);
  p.containers(root["containers"], doc);
  if (root["steps"].IsDefined()) {
    if (!root["steps"].IsSequence()) {
      c.error(root["steps"], "steps must be a list");
    } else {
      int i = 0;
      for (const auto& st : root["steps"]) {
        std::string what = "steps[" + std::to_string(++i) + "]";
        Item it = p.step(st, what, i);
        p.check_step_refs(it, what);
        doc.steps.push_back(std::move(it));
      }
    }
  }
  // Build steps run in a temporary container: their `in` is not checked against containers.
  if (root["expect"].IsDefined()) {
    if (!root["expect"].IsSequence()) {
      c.error(root["expect"], "expect must be a list");
    } else {
      int i = 0;
      for (const auto& e : root["expect"]) {
        ++i;  // before the call: argument evaluation order is unspecified
        doc.expect.push_back(p.expectation(e, "expect[" + std::to_string(i) + "]", i));
      }
    }
  }
  p.finish_refs();
}

}  // namespace

std::string Diagnostic::str() const {
  return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message;
}

Scenario::Scenario(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Scenario::~Scenario() = default;
const std::string& Scenario::name() const { return impl_->name; }
const std::string& Scenario::file() const { return impl_->file; }
const std::vector<std::string>& Scenario::groups() const { return impl_->groups; }
const std::vector<std::string>& Scenario::links() const { return impl_->links; }
const std::vector<std::map<std::string, std::string>>& Scenario::sweep_points() const { return impl_->points; }
int Scenario::timeout_seconds() const { return impl_->timeout; }

namespace {

std::string substitute(std::string text, const std::map<std::string, std::string>& vars) {
  for (const auto& [k, v] : vars) {
    std::string key = "${" + k + "}";
    for (size_t p = text.find(key); p != std::string::npos; p = text.find(key, p + v.size())) text.replace(p, key.size(), v);
  }
  return text;
}

Result<YAML::Node> parse_yaml(const std::string& text, const std::string& file, std::vector<Diagnostic>& diags) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    diags.push_back({file, e.mark.line + 1, e.mark.column + 1, "YAML syntax: " + e.msg});
    return Error::invalid(diags.back().str());
  }
}

}  // namespace

Result<std::unique_ptr<Scenario>> load(const std::string& path, std::vector<Diagnostic>* out_diags) {
  std::vector<Diagnostic> local;
  std::vector<Diagnostic>& diags = out_diags ? *out_diags : local;
  auto text = sys::read_file(path);
  if (!text.ok()) return std::move(text).error().with_context("scenario " + path);
  auto impl = std::make_unique<Scenario::Impl>();
  impl->file = path;
  auto slash = path.find_last_of('/');
  impl->dir = slash == std::string::npos ? "." : path.substr(0, slash);
  auto finish = [&]() -> Result<std::unique_ptr<Scenario>> {
    if (!diags.empty()) {
      std::sort(diags.begin(), diags.end(), [](const Diagnostic& a, const Diagnostic& b) {
        return a.line != b.line ? a.line < b.line : a.column < b.column;
      });
      diags.erase(std::unique(diags.begin(), diags.end(),
                              [](const Diagnostic& a, const Diagnostic& b) { return a.str() == b.str(); }),
                  diags.end());
      std::string msg;
      for (const auto& d : diags) msg += (msg.empty() ? "" : "\n") + d.str();
      return Error::invalid(msg);
    }
    return std::make_unique<Scenario>(std::move(impl));
  };

  auto raw = parse_yaml(*text, path, diags);
  if (!raw.ok()) return finish();
  Checker checker(path, diags);
  // Sweep points: the cartesian product of every sweep list.
  std::vector<std::map<std::string, std::string>> points = {{}};
  const YAML::Node sweep = (*raw).IsMap() ? (*raw)["sweep"] : YAML::Node();
  if (sweep.IsDefined()) {
    if (!sweep.IsMap() || sweep.size() == 0) {
      checker.error(sweep, "sweep must be a mapping of name to a list of values");
    } else {
      // Bound the product before expanding it: five variables of 100 values are 10^10
      // points, which used to be expanded until memory ran out.
      uint64_t total = 1;
      for (auto it = sweep.begin(); it != sweep.end(); ++it) {
        uint64_t n = it->second.IsSequence() ? std::max<size_t>(it->second.size(), 1) : 1;
        total = std::min<uint64_t>(total * n, kMaxSweepPoints + 1);
      }
      if (total > kMaxSweepPoints) {
        std::string dims;
        for (auto it = sweep.begin(); it != sweep.end(); ++it)
          dims += (dims.empty() ? "" : " x ") +
                  std::to_string(it->second.IsSequence() ? it->second.size() : 1);
        checker.error(
            sweep, "sweep: " + dims + " values make more than " + std::to_string(kMaxSweepPoints) +
                       " points (each point is a full run per driver); split the scenario");
        return finish();
      }
      for (auto it = sweep.begin(); it != sweep.end(); ++it) {
        std::string name = it->first.Scalar();
        static const std::regex re("^[a-z_][a-z0-9_]*$");
        if (!std::regex_match(name, re) || name == "i") {
          checker.error(it->first, "sweep: \"" + name + "\" is not a valid name (lowercase, not \"i\")");
          continue;
        }
        if (!it->second.IsSequence() || it->second.size() == 0) {
          checker.error(it->second, "sweep." + name + " must be a non-empty list");
          continue;
        }
        if (text->find("${" + name + "}") == std::string::npos)
          checker.error(it->first, "sweep." + name + ": ${" + name + "} is never used");
        std::vector<std::map<std::string, std::string>> next;
        for (const auto& p : points)
          for (const auto& v : it->second) {
            if (!v.IsScalar()) {
              checker.error(v, "sweep." + name + ": values must be scalars");
              continue;
            }
            auto q = p;
            q[name] = v.Scalar();
            next.push_back(q);
          }
        points = next;
      }
    }
  }
  if (!diags.empty()) return finish();
  impl->points = points;
  bool first = true;
  for (const auto& point : points) {
    std::string expanded = substitute(*text, point);
    auto doc_yaml = parse_yaml(expanded, path, diags);
    if (!doc_yaml.ok()) return finish();
    Doc doc;
    doc.sweep = point;
    size_t before = diags.size();
    parse_doc(checker, *impl, *doc_yaml, doc, first);
    if (diags.size() > before && !point.empty()) {
      std::string where;
      for (const auto& [k, v] : point) where += (where.empty() ? "" : ", ") + k + "=" + v;
      for (size_t i = before; i < diags.size(); ++i) diags[i].message += " (sweep " + where + ")";
    }
    first = false;
    impl->docs.push_back(std::move(doc));
    if (!diags.empty()) break;
  }
  return finish();
}

Result<std::vector<std::string>> collect_files(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  std::function<Result<void>(const std::string&)> walk = [&](const std::string& dir) -> Result<void> {
    auto entries = COWLAB_TRY(sys::read_dir(dir));
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    for (const auto& e : entries) {
      std::string p = dir + "/" + e.name;
      auto st = COWLAB_TRY(sys::stat(p));
      if (S_ISDIR(st.st_mode)) {
        COWLAB_TRY(walk(p));
      } else if (e.name.size() > 5 && (e.name.ends_with(".yaml") || e.name.ends_with(".yml"))) {
        out.push_back(p);
      }
    }
    return {};
  };
  for (const auto& a : args) {
    auto st = sys::stat(a);
    if (!st.ok()) return std::move(st).error().with_context("scenario");
    if (S_ISDIR(st->st_mode)) {
      std::string d = a;
      while (d.size() > 1 && d.back() == '/') d.pop_back();
      COWLAB_TRY(walk(d));
    } else {
      out.push_back(a);
    }
  }
  if (out.empty()) return Error::not_found("no scenario files (*.yaml) in the given paths");
  return out;
}

// ---- conditions ---------------------------------------------------------------------------
bool valid_kernel_constraint(const std::string& constraint) {
  static const std::regex re("^\\s*((>=|<=|==|<|>)\\s*[0-9]+\\.[0-9]+\\s*)+$");
  return std::regex_match(constraint, re);
}

bool kernel_satisfies(const std::string& constraint, int major, int minor) {
  static const std::regex re("(>=|<=|==|<|>)\\s*([0-9]+)\\.([0-9]+)");
  long have = major * 1000L + minor;
  for (std::sregex_iterator it(constraint.begin(), constraint.end(), re), end; it != end; ++it) {
    std::string op = (*it)[1];
    long want = std::stol((*it)[2]) * 1000L + std::stol((*it)[3]);
    bool ok = op == ">=" ? have >= want : op == "<=" ? have <= want : op == ">" ? have > want
              : op == "<" ? have < want : have == want;
    if (!ok) return false;
  }
  return true;
}

bool matches(const Condition& c, const Context& ctx) {
  auto has = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  if (!c.drivers.empty() && !has(c.drivers, ctx.driver)) return false;
  if (has(c.not_drivers, ctx.driver)) return false;
  if (!c.runs.empty() && std::find(c.runs.begin(), c.runs.end(), ctx.run) == c.runs.end()) return false;
  if (!c.kernel.empty() && !kernel_satisfies(c.kernel, ctx.kernel_major, ctx.kernel_minor)) return false;
  auto feature = [&](const std::string& f) {
    if (!ctx.features) return false;
    auto it = ctx.features->find(f);
    return it != ctx.features->end() && it->second;
  };
  for (const auto& f : c.features)
    if (!feature(f)) return false;
  for (const auto& f : c.without)
    if (feature(f)) return false;
  return true;
}

std::map<std::string, std::string> options_for(const std::map<std::string, std::string>& options,
                                               const std::string& driver) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : options)
    for (const auto& [prefix, d] : kOptionPrefixes)
      if (d == driver && k.rfind(prefix, 0) == 0) out[k] = v;
  return out;
}

Fields resolve(const Item& item, const Context& ctx, std::string* skip, std::string* branch) {
  Fields out = item.fields;
  int n = 0;
  for (const auto& cs : item.cases) {
    ++n;
    if (cs.when && !matches(*cs.when, ctx)) continue;
    if (branch) *branch = "case " + std::to_string(n) + (cs.when ? "" : " (default)");
    for (const auto& [k, v] : cs.fields) {
      if (k == "skip") {
        if (skip) *skip = v.scalar;
        continue;
      }
      out[k] = v;
    }
    break;
  }
  return out;
}

std::optional<int64_t> int_of(const std::string& s) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

int errno_from_name(const std::string& name) {
  if (name == "0" || name == "ok") return 0;
  for (int e = 1; e < 134; ++e) {
    const char* n = ::strerrorname_np(e);
    if (n && name == n) return e;
  }
  return -1;
}

}  // namespace cowlab::scenario
