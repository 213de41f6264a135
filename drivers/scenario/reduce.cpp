// `cowlab scenario reduce`: delta debugging (Zeller's ddmin) over the lists of a scenario —
// expectations first (each run gets cheaper), then steps, containers, layers, each layer's
// entries and build steps — and then over sizes, until no single reduction keeps the
// failure.  A candidate counts only if it still fails with the target expectation and
// with no failure the original did not have (removing a layer entry that a step needs
// makes that step fail: a different failure, not the same one).  A difference between two
// sides (ReduceOptions::against) is kept the same way on each side: the side that failed the
// target still fails it, the other still does not, and neither gains a failure.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <set>
#include <variant>

#include "cowlab/fs.h"
#include "cowlab/scenario.h"
#include "cowlab/sys.h"
#include "scenario/model.h"

namespace cowlab::scenario {

namespace {

// "expect 3 view c1:f exists" → "view c1:f exists"; "step 2 unlink in c1 errno" → "unlink in
// c1 errno": positions change as items are removed, what failed does not.
std::string signature(const std::string& expectation) {
  for (const char* prefix : {"expect ", "step ", "build step "}) {
    if (expectation.rfind(prefix, 0) != 0) continue;
    size_t p = std::string(prefix).size();
    size_t sp = expectation.find(' ', p);
    if (sp != std::string::npos) return std::string(prefix) + expectation.substr(sp + 1);
  }
  return expectation;
}

// The target of a scenario that ends as a whole ("run ends in panic"), not by an expectation.
std::string whole_run(Status status) {
  return std::string("run ends in ") + status_name(status);
}

using Runner = std::function<Result<std::vector<RunResult>>(const std::string& file)>;

Result<std::vector<RunResult>> run_file(const Runner& runner, const RunOptions& ro,
                                        const std::string& path) {
  if (runner) return runner(path);
  auto s = COWLAB_TRY(load(path));
  return run(*s, ro);
}

std::set<std::string> signatures(const RunResult& r) {
  std::set<std::string> out;
  for (const auto& f : r.failures) out.insert(signature(f.expectation));
  return out;
}

// One side of a reduction: how its candidates run and what its original run failed.
struct Side {
  std::string label;
  Runner runner;
  RunOptions run;
  std::set<std::string> allowed;  // the original run's failures (signatures)
};

// What a candidate must still show.  kFailure: the target fails on `fails` (the only side).
// kDifference: it fails on `fails` and not on `passes`.
enum class Property { kFailure, kDifference };

using Step = std::variant<std::string, int>;
using Path = std::vector<Step>;

// yaml-cpp's Node::operator= writes through to the node it refers to; walking and replacing
// therefore rebind with reset(), never with =.
YAML::Node at(YAML::Node root, const Path& path) {
  YAML::Node n;
  n.reset(root);
  for (const auto& s : path) {
    if (std::holds_alternative<std::string>(s)) {
      const YAML::Node& cn = n;
      if (!cn.IsMap() || !cn[std::get<std::string>(s)].IsDefined())
        return YAML::Node(YAML::NodeType::Undefined);
      n.reset(n[std::get<std::string>(s)]);
    } else {
      if (!n.IsSequence() || std::get<int>(s) >= static_cast<int>(n.size()))
        return YAML::Node(YAML::NodeType::Undefined);
      n.reset(n[std::get<int>(s)]);
    }
  }
  return n;
}

std::string emit(const YAML::Node& n) {
  YAML::Emitter e;
  e << n;
  return std::string(e.c_str()) + "\n";
}

std::string substitute(std::string text, const std::map<std::string, std::string>& vars) {
  for (const auto& [k, v] : vars) {
    std::string key = "${" + k + "}";
    for (size_t p = text.find(key); p != std::string::npos; p = text.find(key, p + v.size()))
      text.replace(p, key.size(), v);
  }
  return text;
}

class Reducer {
 public:
  Reducer(const ReduceOptions& o, std::string dir, std::string target, Property property,
          Side fails, Side passes)
      : o_(o),
        dir_(std::move(dir)),
        target_(std::move(target)),
        property_(property),
        fails_(std::move(fails)),
        passes_(std::move(passes)) {}

  int runs() const { return runs_; }

  Result<bool> interesting(const YAML::Node& root) {
    std::string path = dir_ + "/candidate.yaml";
    COWLAB_TRY(sys::write_file_atomic(path, emit(root)));
    auto s = load(path);
    if (!s.ok()) return false;  // not a valid scenario: costs no run
    ++runs_;
    auto results = COWLAB_TRY(run_file(fails_.runner, fails_.run, path));
    if (results.size() != 1) return false;
    // A panic or a timeout is kept as itself: the candidate must end the same way.
    if (target_ == whole_run(Status::kPanic) || target_ == whole_run(Status::kTimeout))
      return whole_run(results[0].status) == target_;
    if (results[0].status != Status::kFail) return false;
    auto sigs = signatures(results[0]);
    if (!sigs.count(target_)) return false;
    for (const auto& sig : sigs)
      if (!fails_.allowed.count(sig)) return false;
    if (property_ == Property::kFailure) return true;
    // The other side runs only for a candidate that still fails on the first: half the runs.
    auto other = COWLAB_TRY(run_file(passes_.runner, passes_.run, path));
    if (other.size() != 1) return false;
    if (other[0].status != Status::kPass && other[0].status != Status::kFail) return false;
    auto osigs = signatures(other[0]);
    if (osigs.count(target_)) return false;
    for (const auto& sig : osigs)
      if (!passes_.allowed.count(sig)) return false;
    return true;
  }

  // ddmin over the sequence at `path`; returns whether anything was removed.
  Result<bool> ddmin(YAML::Node& root, const Path& path, bool may_empty) {
    YAML::Node seq = at(root, path);
    if (!seq.IsDefined() || !seq.IsSequence() || seq.size() == 0) return false;
    std::vector<YAML::Node> items(seq.begin(), seq.end());
    bool changed = false;
    auto candidate = [&](const std::vector<YAML::Node>& keep) {
      YAML::Node c = YAML::Clone(root);
      Path parent(path.begin(), path.end() - 1);
      YAML::Node holder = at(c, parent);
      if (keep.empty() && path.size() == 1) {  // an optional top-level list: drop the key
        holder.remove(std::get<std::string>(path.back()));
        return c;
      }
      YAML::Node ns(YAML::NodeType::Sequence);
      for (const auto& k : keep) ns.push_back(YAML::Clone(k));
      if (std::holds_alternative<std::string>(path.back()))
        holder[std::get<std::string>(path.back())] = ns;
      return c;
    };
    if (may_empty) {
      YAML::Node c = candidate({});
      if (COWLAB_TRY(interesting(c))) {
        root.reset(c);
        return true;
      }
    }
    size_t n = 2;
    while (items.size() >= 2) {
      size_t chunk = (items.size() + n - 1) / n;
      bool reduced = false;
      for (size_t start = 0; start < items.size(); start += chunk) {
        std::vector<YAML::Node> keep;
        for (size_t i = 0; i < items.size(); ++i)
          if (i < start || i >= start + chunk) keep.push_back(items[i]);
        if (keep.empty()) continue;
        YAML::Node c = candidate(keep);
        if (COWLAB_TRY(interesting(c))) {
          root.reset(c);
          items = keep;
          n = std::max<size_t>(n - 1, 2);
          reduced = changed = true;
          if (o_.progress)
            o_.progress("removed " + std::to_string(chunk) + " item(s) of " + describe(path));
          break;
        }
      }
      if (!reduced) {
        if (n >= items.size()) break;
        n = std::min(n * 2, items.size());
      }
    }
    return changed;
  }

  // Sizes: 0 first, then halves while the failure stays.
  Result<bool> sizes(YAML::Node& root, const Path& path) {
    YAML::Node n = at(root, path);
    if (!n.IsDefined() || !n.IsMap() || !n["size"].IsDefined() || !n["size"].IsScalar())
      return false;
    auto cur = parse_size(n["size"].Scalar());
    if (!cur.ok() || *cur == 0) return false;
    bool changed = false;
    std::vector<uint64_t> halves;
    for (uint64_t v = *cur / 2; v > 0 && halves.size() < 11; v /= 2) halves.push_back(v);
    std::vector<uint64_t> tries = {0};
    tries.insert(tries.end(), halves.rbegin(), halves.rend());
    for (uint64_t v : tries) {
      YAML::Node c = YAML::Clone(root);
      at(c, path)["size"] = std::to_string(v);
      if (COWLAB_TRY(interesting(c))) {
        root.reset(c);
        changed = true;
        if (o_.progress) o_.progress("size of " + describe(path) + " -> " + std::to_string(v));
        break;  // the smallest that still fails among the tries, smallest first
      }
    }
    return changed;
  }

  // Removes a layer that something still stands on by re-pointing its dependants (containers'
  // image, later layers' parent) at its own parent: the middle of a chain is rarely part of
  // the core, but ddmin alone cannot remove what is referenced.
  Result<bool> collapse_layers(YAML::Node& root) {
    bool changed = false;
    for (int i = root["layers"].IsSequence() ? static_cast<int>(root["layers"].size()) - 1 : 0;
         i >= 1; --i) {
      YAML::Node c = YAML::Clone(root);
      YAML::Node layers = c["layers"];
      YAML::Node l = layers[i];
      if (!l.IsMap() || !l["id"].IsDefined() || l["generate"].IsDefined()) continue;
      std::string id = l["id"].Scalar();
      std::string parent =
          l["parent"].IsDefined() && !l["parent"].IsNull()
              ? l["parent"].Scalar()
              : (layers[i - 1]["id"].IsDefined() ? layers[i - 1]["id"].Scalar() : "");
      if (parent.empty()) continue;
      YAML::Node ns(YAML::NodeType::Sequence);
      for (int j = 0; j < static_cast<int>(layers.size()); ++j) {
        if (j == i) continue;
        YAML::Node lj = YAML::Clone(layers[j]);
        if (j == i + 1 && !(lj["parent"].IsDefined())) lj["parent"] = parent;
        if (lj["parent"].IsDefined() && lj["parent"].IsScalar() && lj["parent"].Scalar() == id)
          lj["parent"] = parent;
        ns.push_back(lj);
      }
      c["layers"] = ns;
      if (c["containers"].IsSequence())
        for (auto cn : c["containers"])
          if (cn.IsMap() && cn["image"].IsDefined() && cn["image"].Scalar() == id)
            cn["image"] = parent;
      if (COWLAB_TRY(interesting(c))) {
        root.reset(c);
        changed = true;
        if (o_.progress)
          o_.progress("removed layer " + id + " (its dependants now stand on " + parent + ")");
      }
    }
    return changed;
  }

  static std::string describe(const Path& p) {
    std::string s;
    for (const auto& x : p)
      s += std::holds_alternative<std::string>(x)
               ? (s.empty() ? "" : ".") + std::get<std::string>(x)
               : "[" + std::to_string(std::get<int>(x) + 1) + "]";
    return s;
  }

 private:
  const ReduceOptions& o_;
  std::string dir_, target_;
  Property property_;
  Side fails_, passes_;
  int runs_ = 0;
};

}  // namespace

namespace {

std::string describe_run(const std::vector<RunResult>& results) {
  if (results.empty()) return "no result";
  const RunResult& r = results[0];
  std::string s = "status " + std::string(status_name(r.status));
  if (!r.reason.empty()) s += ": " + r.reason;
  if (r.status == Status::kFail)
    s += ", " + std::to_string(r.failures.size()) + " failed check(s), first \"" +
         signature(r.failures.front().expectation) + "\"";
  return s;
}

// The target of a difference: the first check (in A's failure order, then B's) that fails on
// one side and not on the other, at the first sweep point where there is one.
struct DiffTarget {
  size_t point = 0;
  std::string check;
  bool fails_on_this_side = true;
};

Result<DiffTarget> find_difference(const std::string& file, const std::string& a,
                                   const std::vector<RunResult>& ra, const std::string& b,
                                   const std::vector<RunResult>& rb) {
  auto runs_fine = [](const RunResult& r) {
    return r.status == Status::kPass || r.status == Status::kFail;
  };
  if (ra.size() != rb.size() || ra.empty())
    return Error::invalid("scenario reduce: " + file + " gives " + std::to_string(ra.size()) +
                          " result(s) on " + a + " and " + std::to_string(rb.size()) + " on " + b +
                          "; a difference needs the same sweep points on both sides");
  for (size_t i = 0; i < ra.size(); ++i) {
    for (const auto& [r, side] : {std::pair{&ra[i], &a}, std::pair{&rb[i], &b}})
      if (!runs_fine(*r))
        return Error::invalid(
            "scenario reduce: " + file + " does not run to a verdict on " + *side + " (status " +
            status_name(r->status) + (r->reason.empty() ? "" : ": " + r->reason) +
            "); a difference is reduced between runs that pass or fail (a panic or a timeout: "
            "reduce it on its own, without --against-*)");
    auto sa = signatures(ra[i]), sb = signatures(rb[i]);
    for (const auto& f : ra[i].failures)
      if (!sb.count(signature(f.expectation))) return DiffTarget{i, signature(f.expectation), true};
    for (const auto& f : rb[i].failures)
      if (!sa.count(signature(f.expectation)))
        return DiffTarget{i, signature(f.expectation), false};
  }
  return Error::invalid("scenario reduce: " + file + " does not differ between " + a + " (" +
                        describe_run(ra) + ") and " + b + " (" + describe_run(rb) +
                        "); only a check that fails on one side and passes on the other can be "
                        "reduced");
}

}  // namespace

Result<ReduceResult> reduce(const std::string& file, const ReduceOptions& options) {
  auto s = COWLAB_TRY(load(file));
  std::string label = options.label.empty() ? options.run.driver : options.label;
  auto results = COWLAB_TRY(run_file(options.runner, options.run, file));
  Side self{label, options.runner, options.run, {}};
  Property property = Property::kFailure;
  std::string target, difference;
  const RunResult* failing = nullptr;
  Side fails = self, passes;
  if (options.against) {
    property = Property::kDifference;
    const ReduceSide& o = *options.against;
    Side other{o.label.empty() ? o.run.driver : o.label, o.runner, o.run, {}};
    auto theirs = COWLAB_TRY(run_file(other.runner, other.run, file));
    auto d = COWLAB_TRY(find_difference(file, self.label, results, other.label, theirs));
    self.allowed = signatures(results[d.point]);
    other.allowed = signatures(theirs[d.point]);
    fails = d.fails_on_this_side ? self : other;
    passes = d.fails_on_this_side ? other : self;
    failing = &results[d.point];
    target = d.check;
    difference = "fails on " + fails.label + ", passes on " + passes.label;
  } else {
    for (const auto& r : results)
      if (!failing &&
          (r.status == Status::kFail || r.status == Status::kPanic || r.status == Status::kTimeout))
        failing = &r;
    if (!failing)
      return Error::invalid("scenario reduce: " + file + " does not fail on " + label + " (" +
                            describe_run(results) + "); only a failing scenario can be reduced");
    target = failing->status == Status::kFail ? signature(failing->failures.front().expectation)
                                              : whole_run(failing->status);
    fails.allowed = signatures(*failing);
  }

  auto text = COWLAB_TRY(sys::read_file(file));
  text = substitute(text, failing->sweep);
  YAML::Node root = YAML::Load(text);
  root.remove("sweep");
  // Candidates are written to a scratch directory: relative tar/oci paths become absolute.
  if (root["layers"].IsSequence())
    for (auto l : root["layers"])
      for (const char* k : {"tar", "oci"})
        if (l.IsMap() && l[k].IsDefined() && l[k].IsScalar() && l[k].Scalar().rfind('/', 0) != 0)
          l[k] = s->impl().dir + "/" + l[k].Scalar();

  std::string work = options.run.work_dir.empty() ? "/var/tmp" : options.run.work_dir;
  std::string dir = COWLAB_TRY(sys::make_temp_dir(work, "cowlab-reduce-"));
  struct Cleanup {
    std::string d;
    ~Cleanup() { (void)sys::remove_all(d); }
  } cleanup{dir};

  Reducer r(options, dir, target, property, fails, passes);
  if (!COWLAB_TRY(r.interesting(root)))
    return Error::invalid(
        "scenario reduce: the " +
        std::string(property == Property::kDifference ? "difference" : "failure") + " \"" + target +
        "\"" + (difference.empty() ? "" : " (" + difference + ")") + " of " + file +
        " does not reproduce in a second run (flaky?)");
  for (bool changed = true; changed;) {
    changed = false;
    changed |= COWLAB_TRY(r.ddmin(root, {"expect"}, false));
    changed |= COWLAB_TRY(r.ddmin(root, {"steps"}, true));
    changed |= COWLAB_TRY(r.ddmin(root, {"containers"}, true));
    changed |= COWLAB_TRY(r.ddmin(root, {"layers"}, false));
    changed |= COWLAB_TRY(r.collapse_layers(root));
    for (int i = 0; root["layers"].IsSequence() && i < static_cast<int>(root["layers"].size());
         ++i) {
      changed |= COWLAB_TRY(r.ddmin(root, {"layers", i, "entries"}, true));
      changed |= COWLAB_TRY(r.ddmin(root, {"layers", i, "build"}, false));
    }
    for (int i = 0; root["layers"].IsSequence() && i < static_cast<int>(root["layers"].size());
         ++i) {
      YAML::Node es = at(root, {"layers", i, "entries"});
      for (int j = 0; es.IsDefined() && es.IsSequence() && j < static_cast<int>(es.size()); ++j)
        changed |= COWLAB_TRY(r.sizes(root, {"layers", i, "entries", j}));
    }
    YAML::Node st = at(root, {"steps"});
    for (int i = 0; st.IsDefined() && st.IsSequence() && i < static_cast<int>(st.size()); ++i)
      changed |= COWLAB_TRY(r.sizes(root, {"steps", i}));
  }
  return ReduceResult{emit(root), target, difference, r.runs()};
}

}  // namespace cowlab::scenario
