// The validated form of a scenario file, shared by the parser and the runner.  Internal.
//
// Every value has been type-checked by the parser against the schema of its context, so the
// runner's accessors only convert (a size string is known to parse, an errno name is known).
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cowlab/scenario.h"

namespace cowlab::scenario {

struct Mark {
  int line = 0;  // 1-based
  int column = 0;
};

// A checked scalar, list or string map from the document.
struct Value {
  enum class Kind { kScalar, kList, kMap } kind = Kind::kScalar;
  std::string scalar;
  std::vector<std::string> list;
  std::map<std::string, std::string> map;
  Mark mark;
};
using Fields = std::map<std::string, Value>;

// A `when:` block.
struct Condition {
  std::vector<std::string> drivers, not_drivers, features, without;
  std::string kernel;  // "" = any
  std::vector<int> runs;  // only on these runs of `scenario run --repeat` (1-based); empty = all
  Mark mark;
};

// One `cases:` entry: a condition (none = default) and the fields it overrides.
struct Case {
  std::optional<Condition> when;
  Fields fields;
};

// A step or an expectation: its kind (op name / expectation kind), fields and cases.
struct Item {
  std::string kind;
  Fields fields;
  std::vector<Case> cases;
  Mark mark;
  int index = 0;  // position in its list, 1-based
};

struct Entry {
  Fields fields;  // path, type, content, size, pattern, seed, target, mode, owner, mtime, xattrs, rdev
  Mark mark;
};

enum class LayerSource { kEntries, kTar, kOci, kBuild };

struct LayerDef {
  std::string id;
  std::string parent;  // "" = base layer
  LayerSource source = LayerSource::kEntries;
  std::vector<Entry> entries;
  std::string path;          // tar / oci path, resolved against the scenario's directory
  std::vector<Item> build;   // steps for kBuild
  Mark mark;
};

struct ContainerDef {
  std::string id;
  std::string image;
  std::string size;  // "" = no quota
  // How many times the creation is timed (1..32).  create.<id>.time is the fastest of them:
  // the container itself, then samples-1 siblings on the same image, each created after a
  // sync and removed once all are timed.  Delays that come from outside the driver (a host
  // disk's cache flush under a loop device's fsync, the scheduler) only ever add time, so the
  // minimum is the driver's own cost.
  int samples = 1;
  Mark mark;
};

struct Requirements {
  std::vector<std::string> drivers, not_drivers, features;
  std::string kernel;
};

// One sweep point's fully expanded document.
struct Doc {
  std::map<std::string, std::string> sweep;
  std::map<std::string, std::string> options;  // `options:` storage-opt key → value
  std::vector<LayerDef> layers;
  std::vector<ContainerDef> containers;
  std::vector<Item> steps;
  std::vector<Item> expect;
};

// `crash:` — power-cut testing of the scenario's phases (drivers/crash, docs/crash.md).
struct CrashSpec {
  bool all = false;                // steps: all
  std::vector<std::string> steps;  // phase names ("import base", "create c1", "write c1", "step 3")
  std::string points = "flush";    // flush | all_flushes_and_random
  int random = 0;                  // non-flush points (all_flushes_and_random)
  Mark mark;
};

struct Scenario::Impl {
  std::string file;
  std::string dir;  // directory of the file (relative paths resolve against it)
  std::string name;
  std::string description;
  std::vector<std::string> groups;
  std::vector<std::string> links;
  Requirements requires_;
  int timeout = 300;
  std::vector<std::map<std::string, std::string>> points;
  std::vector<Doc> docs;  // one per point
  std::optional<CrashSpec> crash;
};

// What a condition is evaluated against.
struct Context {
  std::string driver;
  int kernel_major = 0, kernel_minor = 0;
  const std::map<std::string, bool>* features = nullptr;
  int run = 1;  // which run of `--repeat` this is
};

bool matches(const Condition& c, const Context& ctx);
// Parses "<op><major>.<minor>" constraints separated by spaces (">=5.11 <6.7").
bool kernel_satisfies(const std::string& constraint, int major, int minor);
bool valid_kernel_constraint(const std::string& constraint);
// The item's fields with the first matching case applied.  `skip` receives a case's
// `skip:` reason, if the matching case has one.
// `branch` (if given) receives which case applied: "case N" (1-based) or "" when none did.
Fields resolve(const Item& item, const Context& ctx, std::string* skip = nullptr,
               std::string* branch = nullptr);
// The storage options of `options` that belong to `driver` (by key prefix).
std::map<std::string, std::string> options_for(const std::map<std::string, std::string>& options,
                                               const std::string& driver);

// A decimal integer that fits int64_t; nullopt if malformed or out of range.
std::optional<int64_t> int_of(const std::string& s);

// errno by name ("EXDEV" → 18); 0 for "0"/"ok"; -1 if unknown.
int errno_from_name(const std::string& name);

}  // namespace cowlab::scenario
