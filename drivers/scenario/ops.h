// The scenario language's definition table (issue 13).  Internal.
//
// Every step operation and every expectation is ONE row here: its fields (the schema the
// parser checks), how it runs (the runner calls the row), how it exports to a shell script
// (`cowlab scenario export`) and its line in docs/scenarios.md (a unit test compares the
// documented tables with these rows).  Parser, runner, exporter and docs therefore cannot
// drift apart: a new construct — e.g. a `crash:` key — is a new row, nothing else.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cowlab/result.h"
#include "scenario/model.h"

namespace cowlab::scenario {

// Value types of fields.
enum class T {
  kStr,
  kInt,
  kSize,
  kMode,
  kOwner,
  kBool,
  kList,
  kMap,
  kErrno,  // one errno name, or a list of them (any of the set is accepted)
  kNumber,
  kRdev,
  kStrOrList,
  kBytes,     // a string; "hex:..." is decoded (binary xattr values)
  kBytesMap,  // a mapping whose values are kBytes
};

struct FieldSpec {
  T type = T::kStr;
  bool required = false;
  std::vector<std::string> choices;  // allowed values of a kStr / items of a kList
};
using Schema = std::map<std::string, FieldSpec>;

// Decodes a kBytes value ("hex:00ff" → two bytes; anything else as is).
std::string decode_bytes(const std::string& v);
// Whether a "hex:" value is well-formed (even count of hex digits); true for plain strings.
bool valid_bytes(const std::string& v);

// ---- steps -----------------------------------------------------------------------------------

// Runner state that outlives one step: named file descriptors, mappings and watches.
struct OpenFile {
  int fd = -1;
  std::string container, path;
  int flags = 0;
};
struct Mapping {
  void* addr = nullptr;
  size_t length = 0;
};

// What a running step can use.  Implemented by the runner; rows call it for store-level work.
class StepEnv {
 public:
  virtual ~StepEnv() = default;
  virtual std::map<std::string, OpenFile>& fds() = 0;
  virtual std::map<std::string, Mapping>& maps() = 0;
  virtual std::map<std::string, int>& watches() = 0;  // name → inotify fd (one watch each)
  virtual void record(const std::string& measurement, double value) = 0;
  // A mismatch a step observed itself (fd_read content, events), as a failed expectation.
  virtual void fail(const std::string& what, const std::string& expected,
                    const std::string& observed) = 0;
  // Store-level operations (return the errno they ended with; 0 = success).
  virtual Result<int> drop_caches() = 0;
  virtual Result<int> reopen() = 0;
  virtual Result<int> hold_mount(const std::string& container) = 0;
  virtual Result<int> remove(const std::string& container, std::string* detail) = 0;
  virtual Result<int> commit(const std::string& container, const std::string& as) = 0;
  virtual Result<int> crash_kernel() = 0;
};

// One invocation: the resolved fields, the target container ("" for ops without `in`) and
// its mounted root.
struct StepCall {
  const Fields& f;
  std::string container;
  std::string root;
  StepEnv& env;
  std::string what;  // "step 3 fd_read" (for failures the step records itself)
  std::string path(const char* key) const;
};

// Shell export: the script defines helper functions (see export.cpp), `$ROOT_<id>` for
// every container's mounted root, `$W` (its directory; a container's own directories are
// `$W/c/<id>/`) and `$HOLDERS` (processes the cleanup kills).
struct ShellCall {
  const Fields& f;
  std::string root;  // shell expression of the container root ("$ROOT_c1"), "" for no `in`
  std::string driver;
  std::string what;
  std::string container;                    // the target container's id ("" for no `in`)
  std::string path(const char* key) const;  // quoted "$ROOT_c1/rel"
};

enum class Target { kContainers, kNone };

struct OpDef {
  std::string name;
  Target target = Target::kContainers;
  Schema fields;
  std::string doc;  // the "fields" cell of its row in docs/scenarios.md's Steps table
  std::function<Result<int>(StepCall&)> run;
  // Shell lines performing the op; they leave its errno in $got (0 = success).  Unset where
  // the op has no meaning outside cowlab: `no_export` says why.
  std::function<std::string(const ShellCall&)> to_sh;
  std::string no_export;
  // Extra validation beyond the schema: report(mark, message).
  std::function<void(const Fields&, const std::function<void(const Mark&, const std::string&)>&)>
      check;
  // Measurements the step records besides `measure:` (stat → stat.NAME.ino, ...).
  std::function<std::vector<std::string>(const Fields&)> records;
  bool in_build = true;  // usable in a layer's `build:` steps
};

const std::vector<OpDef>& op_table();
const OpDef* find_op(const std::string& name);

// ---- expectations ----------------------------------------------------------------------------

// How an expectation's value is written: `view: {mapping}`, `measure: NAME` + min/max beside
// it, `image_unchanged: BOOL`, `unaffected: [LIST]`.
enum class Shape { kMapping, kNamed, kBool, kList };

class ExpectEnv {
 public:
  virtual ~ExpectEnv() = default;
  virtual Result<void> view(const Fields& f, const std::string& what) = 0;
  virtual Result<void> changes(const Fields& f, const std::string& what) = 0;
  virtual Result<void> diff(const Fields& f, const std::string& what) = 0;
  virtual Result<void> measure(const Fields& f, const std::string& what) = 0;
  virtual Result<void> ratio(const Fields& f, const std::string& what) = 0;
  virtual Result<void> image_unchanged(const Fields& f, const std::string& what) = 0;
  virtual Result<void> unaffected(const Fields& f, const std::string& what) = 0;
};

struct ExpectDef {
  std::string name;
  Shape shape = Shape::kMapping;
  Schema fields;  // kNamed: "name" + siblings; kBool: "value"; kList: "containers"
  std::string doc;
  std::function<Result<void>(ExpectEnv&, const Fields&, const std::string& what)> check;
  std::function<std::string(const ShellCall&)> to_sh;
  std::string no_export;
};

const std::vector<ExpectDef>& expect_table();
// The shell form of `view` (export.cpp).
std::string view_to_sh(const ShellCall& c);
const ExpectDef* find_expect(const std::string& name);

// ---- layer entries and top-level keys (documented from the same rows) -----------------------
struct KeyDoc {
  std::string key;
  FieldSpec spec;
  std::string doc;
};
const std::vector<KeyDoc>& entry_table();
const std::vector<KeyDoc>& top_level_table();
Schema schema_of(const std::vector<KeyDoc>& table);

// The stat fields `stat` records and `view` compares (since/same/changed).
const std::vector<std::string>& stat_fields();
// inotify event names `events` accepts.
const std::vector<std::string>& event_names();
// Feature names `requires`/`when` accept.
const std::vector<std::string>& feature_names();

// The markdown rows docs/scenarios.md must contain for a table ("steps", "expect", "entries",
// "top"; "no-export-steps" and "no-export-expect": the rows without a shell form and why),
// in table order.
std::vector<std::string> doc_rows(const std::string& table);

}  // namespace cowlab::scenario
