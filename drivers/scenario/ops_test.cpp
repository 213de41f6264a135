// The definition table against its documentation, the new constructs' validation, and runs
// of the new operations and predicates on the host (vfs) — including expectations broken on
// purpose, so each predicate is shown to catch what it checks for.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "cowlab/scenario.h"
#include "cowlab/sys.h"
#include "scenario/model.h"
#include "scenario/ops.h"

namespace cowlab::scenario {
namespace {

class ScenarioFile {
 public:
  explicit ScenarioFile(const std::string& text) {
    char tmpl[] = "/tmp/cowlab-ops-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    path_ = dir_ + "/s.yaml";
    EXPECT_TRUE(sys::write_file_atomic(path_, text).ok());
  }
  ~ScenarioFile() { (void)sys::remove_all(dir_); }
  const std::string& path() const { return path_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, path_;
};

// The rows of the markdown table that follows `heading` in docs/scenarios.md.
std::vector<std::string> documented_rows(const std::string& heading) {
  std::ifstream in(std::string(COWLAB_SOURCE_DIR) + "/docs/scenarios.md");
  EXPECT_TRUE(in.good()) << "docs/scenarios.md not found";
  std::vector<std::string> rows;
  std::string line;
  bool in_section = false;
  while (std::getline(in, line)) {
    if (line.rfind("#", 0) == 0) {
      if (in_section && !rows.empty()) break;
      in_section = line == heading;
      continue;
    }
    if (in_section && line.rfind("| `", 0) == 0) rows.push_back(line);
  }
  return rows;
}

TEST(ScenarioLanguage, DocsListExactlyTheImplementedConstructs) {
  const std::pair<const char*, const char*> tables[] = {
      {"## Top-level keys", "top"},
      {"### Entries", "entries"},
      {"## Steps", "steps"},
      {"## Expectations", "expect"},
      {"### Steps that cannot be exported", "no-export-steps"},
      {"### Expectations an exported script skips", "no-export-expect"}};
  for (const auto& [heading, table] : tables) {
    auto documented = documented_rows(heading);
    auto implemented = doc_rows(table);
    std::string want;
    for (const auto& r : implemented) want += r + "\n";
    EXPECT_EQ(documented, implemented) << "docs/scenarios.md section \"" << heading
                                       << "\" differs from the definition table; it should read:\n"
                                       << want;
  }
}

TEST(ScenarioLanguage, EveryRowRunsAndExportsOrSaysWhyNot) {
  for (const auto& d : op_table()) {
    EXPECT_TRUE(static_cast<bool>(d.run)) << d.name;
    EXPECT_NE(static_cast<bool>(d.to_sh), !d.no_export.empty())
        << d.name << ": to_sh xor no_export";
    EXPECT_FALSE(d.doc.empty()) << d.name;
  }
  for (const auto& d : expect_table()) {
    EXPECT_TRUE(static_cast<bool>(d.check)) << d.name;
    EXPECT_NE(static_cast<bool>(d.to_sh), !d.no_export.empty()) << d.name;
  }
}

struct BadCase {
  const char* name;
  const char* text;
  int line, column;
  const char* message_part;
};

#define HEAD                                                                                       \
  "scenario: x\ndescription: d\nlayers: [{id: a, entries: [{path: f, content: x}]}]\ncontainers: " \
  "[{id: c, image: a}]\n"

const BadCase kBad[] = {
    {"fd used before open", HEAD "steps:\n  - {op: fd_read, fd: r}\n", 6, 23,
     "fd \"r\" is not open here"},
    {"fd used after close",
     HEAD "steps:\n  - {op: open, in: c, path: f, fd: r}\n  - {op: close, fd: r}\n"
          "  - {op: fsync, fd: r}\n",
     8, 21, "fd \"r\" is not open here"},
    {"fd opened twice",
     HEAD "steps:\n  - {op: open, in: c, path: f, fd: r}\n  - {op: open, in: c, path: f, fd: r}\n",
     7, 36, "fd \"r\" is already open"},
    {"unknown open flag",
     HEAD "steps:\n  - {op: open, in: c, path: f, fd: r, flags: [rdwr, sync]}\n", 6, 46,
     "unknown value \"sync\" (expected one of: rdonly, wronly, rdwr, creat, append, trunc, excl)"},
    {"unknown rename flag",
     HEAD "steps:\n  - {op: rename, in: c, from: f, to: g, flags: [atomic]}\n", 6, 48,
     "unknown value \"atomic\""},
    {"unknown event",
     HEAD "steps:\n  - {op: watch, in: c, path: f, watch: w}\n  - {op: events, watch: w, includes: "
          "[changed]}\n",
     7, 38, "unknown event \"changed\""},
    {"bad errno in a set",
     HEAD "steps:\n  - {op: unlink, in: c, path: f, errno: [ENOENT, EWHAT]}\n", 6, 41,
     "unknown errno name \"EWHAT\""},
    {"odd hex in setxattr",
     HEAD "steps:\n  - {op: setxattr, in: c, path: f, name: user.k, value: \"hex:abc\"}\n", 6, 57,
     "even number of hex digits"},
    {"bad hex in view xattr",
     HEAD "expect:\n  - view: {in: c, path: f, xattr: {user.k: \"hex:zz\"}}\n", 6, 35,
     "even number of hex digits"},
    {"since without a stat step",
     HEAD "expect:\n  - view: {in: c, path: f, since: before, same: [ino]}\n", 6, 35,
     "is not recorded by a stat step"},
    {"unknown stat field",
     HEAD "steps:\n  - {op: stat, in: c, path: f, as: b}\nexpect:\n"
          "  - view: {in: c, path: f, since: b, same: [inode]}\n",
     8, 44, "unknown value \"inode\""},
    {"expectation on a removed container",
     HEAD "steps:\n  - {op: remove, in: c}\nexpect:\n  - view: {in: c, path: f}\n", 8, 16,
     "container \"c\" was removed by step 1"},
    {"step on a removed container",
     HEAD "steps:\n  - {op: remove, in: c}\n  - {op: unlink, in: c, path: f}\n", 7, 22,
     "container \"c\" was removed by step 1"},
    {"unknown feature lists the valid ones", HEAD "requires: {features: [overlay.metacopyy]}\n", 5,
     22, "expected one of: aufs, btrfs.quota, dm.deferred_remove"},
    {"option of no driver", HEAD "options: {metacopy: \"on\"}\n", 5, 10,
     "is not a driver's storage option"},
    {"sparse without size",
     "scenario: x\ndescription: d\nlayers: [{id: a, entries: [{path: f, sparse: true}]}]\n", 3, 46,
     "a sparse entry is a file with a size"},
    {"mknod device without rdev", HEAD "steps:\n  - {op: mknod, in: c, path: d, type: char}\n", 6,
     39, "a device needs rdev"},
    {"mmap of an unopened fd", HEAD "steps:\n  - {op: mmap, fd: m, map: x, length: 4096}\n", 6, 20,
     "fd \"m\" is not open here"},
    {"lookup repeat out of range",
     HEAD "steps:\n  - {op: lookup, in: c, path: f, repeat: 99999999999}\n", 6, 42,
     "repeat: must be 1..10000000"},
    {"commit in a build step",
     "scenario: x\ndescription: d\nlayers:\n  - id: a\n    build:\n      - {op: commit, as: z}\n",
     6, 14, "cannot be used in build steps"},
};

TEST(ScenarioLanguage, MisusesAreReportedWithTheirPositions) {
  for (const auto& c : kBad) {
    ScenarioFile f(c.text);
    std::vector<Diagnostic> diags;
    auto s = load(f.path(), &diags);
    ASSERT_FALSE(s.ok()) << c.name;
    bool found = false;
    for (const auto& d : diags) {
      if (d.message.find(c.message_part) == std::string::npos) continue;
      found = true;
      EXPECT_EQ(d.line, c.line) << c.name << ": " << d.str();
      EXPECT_EQ(d.column, c.column) << c.name << ": " << d.str();
    }
    EXPECT_TRUE(found) << c.name << ": got " << s.error().message();
  }
}

TEST(ScenarioLanguage, ErrnoSetsHexAndOptionsParse) {
  ScenarioFile f(HEAD
                 "options: {overlay.mountopt: \"metacopy=on\", dm.basesize: 20G}\n"
                 "steps:\n  - {op: unlink, in: c, path: g, errno: [ENOENT, ESTALE]}\n"
                 "  - {op: setxattr, in: c, path: f, name: user.k, value: \"hex:00ff\"}\n");
  auto s = load(f.path());
  ASSERT_TRUE(s.ok()) << s.error().message();
  const Doc& doc = (*s)->impl().docs[0];
  EXPECT_EQ(doc.steps[0].fields.at("errno").list, (std::vector<std::string>{"ENOENT", "ESTALE"}));
  EXPECT_EQ(decode_bytes(doc.steps[1].fields.at("value").scalar), std::string("\0\xff", 2));
  EXPECT_EQ(options_for(doc.options, "overlay"),
            (std::map<std::string, std::string>{{"overlay.mountopt", "metacopy=on"}}));
  EXPECT_EQ(options_for(doc.options, "devicemapper"),
            (std::map<std::string, std::string>{{"dm.basesize", "20G"}}));
  EXPECT_TRUE(options_for(doc.options, "vfs").empty());
}

// ---- runs on the host (vfs: a plain directory tree) --------------------------------------------

std::vector<RunResult> run_text(const std::string& text, const std::string& driver = "vfs") {
  ScenarioFile f(text);
  auto s = load(f.path());
  EXPECT_TRUE(s.ok()) << s.error().message();
  if (!s.ok()) return {};
  RunOptions o;
  o.driver = driver;
  return run(**s, o);
}

// Like run_text, with the layer tars kept in `tars` between runs (RunOptions::layer_tars).
std::vector<RunResult> run_text_sharing(const std::string& text, const std::string& tars) {
  ScenarioFile f(text);
  auto s = load(f.path());
  EXPECT_TRUE(s.ok()) << s.error().message();
  if (!s.ok()) return {};
  RunOptions o;
  o.driver = "vfs";
  o.layer_tars = tars;
  return run(**s, o);
}

std::set<std::string> failed(const RunResult& r) {
  std::set<std::string> out;
  for (const auto& f : r.failures) out.insert(f.expectation);
  return out;
}

const char* kNewOps = R"(scenario: new-ops
description: every new operation and predicate, with right expectations
layers:
  - id: base
    entries:
      - {path: d, type: dir}
      - {path: d/a, content: "a"}
      - {path: d/b, content: "b"}
      - {path: f, content: "hello world"}
      - {path: x, content: "x", xattrs: {user.k: "hex:00ff"}}
      - {path: sparse, size: 64MiB, sparse: true, content: "head"}
      - {path: zeros, size: 8MiB, pattern: zero}
containers: [{id: c, image: base}]
steps:
  - {op: stat, in: c, path: f, as: before}
  - {op: open, in: c, path: f, fd: r}
  - {op: open, in: c, path: f, fd: w, flags: [rdwr]}
  - {op: fd_write, fd: w, data: "HELLO", offset: 0}
  - {op: fd_read, fd: r, size: 5, content: "HELLO"}
  - {op: fsync, fd: w}
  - {op: mmap, fd: w, map: m, length: 11}
  - {op: map_write, map: m, offset: 6, data: "WORLD"}
  - {op: msync, map: m}
  - {op: fd_read, fd: r, offset: 6, content: "WORLD"}
  - {op: map_read, map: m, content: "HELLO"}
  - {op: munmap, map: m}
  - {op: close, fd: w}
  - {op: watch, in: c, path: f, watch: tail}
  - {op: append, in: c, path: f, data: "!"}
  - {op: events, watch: tail, includes: [modify], excludes: [delete_self]}
  - {op: touch, in: c, path: f, mtime: 1600000000, atime: 1600000000}
  - {op: fallocate, in: c, path: zeros, offset: 0, length: 1MiB}
  - {op: fallocate, in: c, path: zeros, offset: 0, length: 1MiB, mode: [keep_size, punch_hole]}
  - {op: removexattr, in: c, path: x, name: user.k}
  - {op: setxattr, in: c, path: x, name: user.bin, value: "hex:0001"}
  - {op: rename, in: c, from: d/a, to: d/b, flags: [noreplace], errno: EEXIST}
  - {op: rename, in: c, from: d/a, to: d/b, flags: [exchange]}
  - {op: mknod, in: c, path: p, type: fifo}
  - {op: unlink, in: c, path: nothing, errno: [ENOENT, ESTALE]}
  - {op: commit, in: c, as: snap}
expect:
  - view: {in: c, path: f, content: "HELLO WORLD!", since: before, same: [ino, dev, nlink], changed: [mtime, size]}
  - view: {in: c, path: f, mtime: 1600000000, nlink: 1}
  - view: {in: c, path: sparse, size: 64MiB, allocated_max: 1MiB}
  - view: {in: c, path: zeros, allocated_max: 512KiB}
  - view: {in: c, path: x, xattr_absent: [user.k], xattr: {user.bin: "hex:0001"}}
  - view: {in: c, path: d/a, content: "b"}
  - view: {in: c, path: d, listing: [a, b]}
  - view: {in: c, path: ., listing_includes: [p, f], listing_excludes: [nothing]}
  - view: {in: c, path: p, type: fifo}
  - measure: commit.snap.size
    min: 1
  - measure: stat.before.ino
    min: 1
)";

TEST(ScenarioRun, NewOperationsAndPredicatesPassWhereTheyHold) {
  auto r = run_text(kNewOps);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, Status::kPass) << r[0].reason << " " << r[0].to_json_line();
  EXPECT_GT(r[0].measurements.at("commit.snap.size"), 0);
  EXPECT_FALSE(r[0].features.empty());
}

TEST(ScenarioRun, BrokenExpectationsAreCaught) {
  // Each line expects the opposite of what happens: every predicate must report it.
  auto r = run_text(R"(scenario: broken
description: wrong on purpose
layers:
  - id: base
    entries:
      - {path: d, type: dir}
      - {path: d/a, content: "a"}
      - {path: f, content: "hello"}
      - {path: sparse, size: 16MiB, sparse: true}
containers: [{id: c, image: base}]
steps:
  - {op: stat, in: c, path: f, as: before}
  - {op: open, in: c, path: f, fd: r}
  - {op: fd_read, fd: r, content: "other"}
  - {op: watch, in: c, path: f, watch: w}
  - {op: events, watch: w, includes: [modify]}
  - {op: unlink, in: c, path: f, errno: [EXDEV, EPERM]}
  - {op: write, in: c, path: g, data: "g"}
expect:
  - view: {in: c, path: d, listing: [a, b]}
  - view: {in: c, path: d, listing_excludes: [a]}
  - view: {in: c, path: sparse, allocated_min: 1MiB}
  - view: {in: c, path: g, nlink: 2, mtime: 5}
  - view: {in: c, path: d/a, xattr: {user.k: "hex:00"}}
  - view: {in: c, path: d, since: before, same: [ino]}
  - measure: stat.before.size
    max: 1
)");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, Status::kFail);
  auto f = failed(r[0]);
  for (const char* want :
       {"step 3 fd_read content", "step 5 events includes modify", "step 6 unlink in c errno",
        "expect 1 view c:d listing", "expect 2 view c:d listing_excludes",
        "expect 3 view c:sparse allocated", "expect 4 view c:g nlink", "expect 4 view c:g mtime",
        "expect 5 view c:d/a xattr user.k", "expect 6 view c:d ino same since before",
        "expect 7 measure stat.before.size"})
    EXPECT_TRUE(f.count(want)) << want << " not reported; got " << r[0].to_json_line();
}

TEST(ScenarioRun, ResultsRecordTheCaseTakenAndTheOptions) {
  auto r = run_text(R"(scenario: branches
description: which case applied is in the result
options: {btrfs.min_space: 10M, overlay.mountopt: "metacopy=on"}
layers: [{id: base, entries: [{path: f, content: "x"}]}]
containers: [{id: c, image: base}]
steps:
  - op: unlink
    in: c
    path: f
    cases:
      - when: {drivers: [overlay]}
        errno: EXDEV
      - errno: 0
expect:
  - view: {in: c, path: f, exists: false}
)");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, Status::kPass) << r[0].to_json_line();
  EXPECT_EQ(r[0].branches.at("step 1 unlink"), "case 2 (default)");
  EXPECT_TRUE(r[0].options.empty()) << "options of other drivers leaked into the vfs run";
  EXPECT_NE(r[0].to_json_line().find("\"cases\":{\"step 1 unlink\":\"case 2 (default)\"}"),
            std::string::npos);
}

// ---- what a run shares with the next (issue 10: --repeat), and what it computes lazily -------

const char* kTarOne = R"(scenario: tar-one
description: one layer, reused by a second run
layers:
  - id: base
    entries:
      - {path: f, content: "one"}
      - {path: blob, size: 1MiB, pattern: random, seed: 7}
  - id: top
    parent: base
    entries:
      - {path: g, content: "top"}
containers: [{id: c, image: top}]
expect:
  - view: {in: c, path: g, content: "top"}
)";

TEST(LayerTars, ALaterRunImportsTheTarsTheFirstRunBuilt) {
  char tmpl[] = "/tmp/cowlab-tars-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  auto first = run_text_sharing(kTarOne, dir);
  auto second = run_text_sharing(kTarOne, dir);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(first[0].status, Status::kPass) << first[0].reason;
  EXPECT_EQ(second[0].status, Status::kPass) << second[0].reason;
  EXPECT_EQ(first[0].layer_tars_built, 2);
  EXPECT_EQ(first[0].layer_tars_reused, 0);
  EXPECT_EQ(second[0].layer_tars_built, 0);
  EXPECT_EQ(second[0].layer_tars_reused, 2);
  // Two tars, named by their entries' digest; no temporary left.
  auto names = sys::read_dir(dir);
  ASSERT_TRUE(names.ok());
  ASSERT_EQ(names->size(), 2u);
  for (const auto& e : *names) EXPECT_EQ(e.name.size(), 64u + 4u) << e.name;
  (void)sys::remove_all(dir);
}

TEST(LayerTars, EntriesThatDifferInAnyFieldGetTheirOwnTar) {
  // A tar chosen by anything less than every field of every entry (content, seed, mode, an
  // xattr) would give the second scenario the first one's bytes, and its views would fail.
  char tmpl[] = "/tmp/cowlab-tars-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  ASSERT_EQ(run_text_sharing(kTarOne, dir)[0].status, Status::kPass);
  const std::string base = kTarOne;  // the same layers, one field changed below
  struct Variant {
    std::string from, to, view;
  } variants[] = {
      {R"({path: f, content: "one"})", R"({path: f, content: "two"})", R"({in: c, path: f, content: "two"})"},
      {"seed: 7}", "seed: 8}", R"({in: c, path: f, content: "one"})"},  // base's tar, rebuilt
      {R"({path: f, content: "one"})", R"({path: f, content: "one", mode: "0600"})", R"({in: c, path: f, mode: "0600"})"},
      {R"({path: f, content: "one"})", R"({path: f, content: "one", xattrs: {user.k: "v"}})",
       R"({in: c, path: f, xattr: {user.k: "v"}})"},
  };
  for (const auto& v : variants) {
    std::string text = base;
    text.replace(text.find(v.from), v.from.size(), v.to);
    text += "  - view: " + v.view + "\n";
    auto r = run_text_sharing(text, dir);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, Status::kPass) << v.to << ": " << r[0].reason
                                          << (r[0].failures.empty() ? "" : r[0].failures[0].observed);
    EXPECT_EQ(r[0].layer_tars_built, 1) << v.to;  // base differs
    EXPECT_EQ(r[0].layer_tars_reused, 1) << v.to;  // top is the same
  }
  (void)sys::remove_all(dir);
}

TEST(LayerTars, APartialTarIsNeverTaken) {
  // What a run killed while writing a tar leaves: a temporary name, never the real one.
  char tmpl[] = "/tmp/cowlab-tars-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  ASSERT_EQ(run_text_sharing(kTarOne, dir)[0].status, Status::kPass);
  auto names = sys::read_dir(dir);
  ASSERT_TRUE(names.ok());
  for (const auto& e : *names) {
    std::string full = dir + "/" + e.name;
    ASSERT_TRUE(sys::rename(full, full + ".partial-1").ok());
    ASSERT_TRUE(sys::write_file_atomic(full + ".partial-2", "short").ok());
  }
  auto r = run_text_sharing(kTarOne, dir);
  EXPECT_EQ(r[0].status, Status::kPass) << r[0].reason;
  EXPECT_EQ(r[0].layer_tars_built, 2);
  EXPECT_EQ(r[0].layer_tars_reused, 0);
  (void)sys::remove_all(dir);
}

TEST(LazyDigests, TakenOnlyForTheExpectationsThatCompareThem) {
  const std::string head = R"(scenario: lazy
description: which digests a run takes
layers:
  - id: base
    entries:
      - {path: f, content: "x"}
containers: [{id: c1, image: base}, {id: c2, image: base}]
steps:
  - {op: write, in: c2, path: f, data: "changed"}
expect:
  - view: {in: c2, path: f, content: "changed"}
)";
  // No expectation compares a digest: none is taken.
  auto none = run_text(head);
  ASSERT_EQ(none.size(), 1u);
  EXPECT_EQ(none[0].status, Status::kPass) << none[0].reason;
  EXPECT_EQ(none[0].phases_s.count("digests"), 0u);
  EXPECT_EQ(none[0].phases_s.count("steps"), 1u);
  // unaffected names c2 only in a case: c2's digest is taken before the steps, so the write
  // shows (a digest missed there would be compared as "" and named wrongly).
  auto in_case = run_text(head + R"(  - unaffected: [c1]
    cases:
      - when: {drivers: [vfs]}
        containers: [c2]
)");
  ASSERT_EQ(in_case.size(), 1u);
  EXPECT_EQ(in_case[0].phases_s.count("digests"), 1u);
  ASSERT_EQ(in_case[0].failures.size(), 1u) << in_case[0].reason;
  EXPECT_EQ(in_case[0].failures[0].expectation, "expect 2 unaffected c2");
  EXPECT_EQ(in_case[0].failures[0].expected.rfind("sha256:", 0), 0u) << in_case[0].failures[0].expected;
  // image_unchanged set only in a case: the image's digests are taken (a missing one would
  // compare "" with the layer's digest and fail).
  auto image = run_text(head + R"(  - image_unchanged: false
    cases:
      - when: {drivers: [vfs]}
        value: true
)");
  ASSERT_EQ(image.size(), 1u);
  EXPECT_EQ(image[0].status, Status::kPass) << image[0].reason
                                            << (image[0].failures.empty() ? "" : image[0].failures[0].expected);
  EXPECT_EQ(image[0].phases_s.count("digests"), 1u);
}

}  // namespace
}  // namespace cowlab::scenario
