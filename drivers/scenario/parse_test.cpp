// The scenario parser and validator: good files load, every kind of mistake is reported
// with its exact FILE:LINE:COLUMN.
#include <gtest/gtest.h>
#include <stdlib.h>

#include "cowlab/scenario.h"
#include "cowlab/sys.h"
#include "scenario/model.h"

namespace cowlab::scenario {
namespace {

class ScenarioFile {
 public:
  explicit ScenarioFile(const std::string& text) {
    char tmpl[] = "/tmp/cowlab-scn-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    path_ = dir_ + "/s.yaml";
    EXPECT_TRUE(sys::write_file_atomic(path_, text).ok());
  }
  ~ScenarioFile() { (void)sys::remove_all(dir_); }
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
};

const char* kGood = R"(scenario: good-one
description: a valid scenario
groups: [quick]
sweep:
  size: [1MiB, 4MiB]
layers:
  - id: base
    entries:
      - {path: etc, type: dir}
      - {path: etc/hostname, content: "x\n", mode: "0644", owner: "0:0"}
      - {path: big, size: "${size}", pattern: random, seed: 3}
      - {path: link, type: symlink, target: etc/hostname}
  - generate: {count: 3, id: "l${i}", entries: [{path: "f${i}", content: "${i}"}]}
containers:
  - {id: c1, image: l3}
  - generate: {count: 2, id: "d${i}", image: base}
steps:
  - op: write
    in: c1
    path: big
    data: "y"
    measure: {space: copy_up}
  - op: rename
    in: [d1, d2]
    from: etc
    to: etc2
    cases:
      - when: {drivers: [overlay], without: [overlay.redirect_dir]}
        errno: EXDEV
expect:
  - view: {in: c1, path: f2, content: "2"}
  - measure: copy_up
    cases:
      - when: {drivers: [overlay, aufs]}
        min: "${size}"
      - max: 1MiB
  - changes: {in: c1, includes: ["C /big"]}
  - image_unchanged: true
  - unaffected: [d1]
)";

TEST(ScenarioParse, GoodFileLoadsWithSweepAndGenerators) {
  ScenarioFile f(kGood);
  std::vector<Diagnostic> diags;
  auto s = load(f.path(), &diags);
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ((*s)->name(), "good-one");
  ASSERT_EQ((*s)->sweep_points().size(), 2u);
  EXPECT_EQ((*s)->sweep_points()[1].at("size"), "4MiB");
  const Doc& doc = (*s)->impl().docs[1];
  ASSERT_EQ(doc.layers.size(), 4u);
  EXPECT_EQ(doc.layers[3].id, "l3");
  EXPECT_EQ(doc.layers[3].parent, "l2");
  EXPECT_EQ(doc.layers[1].parent, "base");
  EXPECT_EQ(doc.layers[0].entries[2].fields.at("size").scalar, "4MiB");
  EXPECT_EQ(doc.containers.size(), 3u);
  EXPECT_EQ(doc.containers[2].id, "d2");
  ASSERT_EQ(doc.steps.size(), 2u);
  EXPECT_EQ(doc.steps[1].fields.at("in").list, (std::vector<std::string>{"d1", "d2"}));
}

// Steps, build steps and expectations are numbered from 1 in file order: results and the
// exported script name them so ("build step 1 write").  The build-step number was once taken
// in the same call that incremented it, so GCC passed the old value (0 for the first step).
TEST(ScenarioParse, StepsAndBuildStepsAreNumberedFromOne) {
  ScenarioFile f(R"(scenario: numbered
description: numbering
layers:
  - id: base
    entries: [{path: f, content: x}]
  - id: built
    build:
      - {op: write, path: a, data: "1"}
      - {op: write, path: b, data: "2"}
containers: [{id: c1, image: built}]
steps:
  - {op: unlink, in: c1, path: a}
  - {op: unlink, in: c1, path: b}
expect:
  - view: {in: c1, path: a, exists: false}
  - view: {in: c1, path: b, exists: false}
)");
  auto s = load(f.path());
  ASSERT_TRUE(s.ok()) << s.error().message();
  const Doc& doc = (*s)->impl().docs[0];
  ASSERT_EQ(doc.layers[1].build.size(), 2u);
  EXPECT_EQ(doc.layers[1].build[0].index, 1);
  EXPECT_EQ(doc.layers[1].build[1].index, 2);
  EXPECT_EQ(doc.steps[0].index, 1);
  EXPECT_EQ(doc.steps[1].index, 2);
  EXPECT_EQ(doc.expect[0].index, 1);
  EXPECT_EQ(doc.expect[1].index, 2);
}

TEST(ScenarioParse, CasesResolvePerDriverAndFeature) {
  ScenarioFile f(kGood);
  auto s = load(f.path());
  ASSERT_TRUE(s.ok());
  const Doc& doc = (*s)->impl().docs[0];
  std::map<std::string, bool> feats = {{"overlay.redirect_dir", false}};
  Context overlay{"overlay", 6, 1, &feats};
  Context vfs{"vfs", 6, 1, &feats};
  EXPECT_EQ(resolve(doc.steps[1], overlay).at("errno").scalar, "EXDEV");
  EXPECT_EQ(resolve(doc.steps[1], vfs).count("errno"), 0u);
  feats["overlay.redirect_dir"] = true;
  EXPECT_EQ(resolve(doc.steps[1], overlay).count("errno"), 0u);
  EXPECT_EQ(resolve(doc.expect[1], overlay).at("min").scalar, "1MiB");
  EXPECT_EQ(resolve(doc.expect[1], vfs).at("max").scalar, "1MiB");
}

TEST(ScenarioParse, KernelConstraints) {
  EXPECT_TRUE(kernel_satisfies(">=5.11 <6.7", 6, 1));
  EXPECT_FALSE(kernel_satisfies(">=5.11 <6.7", 6, 7));
  EXPECT_FALSE(kernel_satisfies(">=5.11", 5, 10));
  EXPECT_TRUE(kernel_satisfies("==6.12", 6, 12));
  EXPECT_TRUE(valid_kernel_constraint(">=4.10"));
  EXPECT_FALSE(valid_kernel_constraint("4.10"));
  EXPECT_FALSE(valid_kernel_constraint(">=4"));
}

struct BadCase {
  const char* name;
  const char* text;
  int line, column;
  const char* message_part;
};

const BadCase kBad[] = {
    {"unknown top-level key", "scenario: x\ndescription: d\nlayerz: []\n", 3, 1,
     "unknown key \"layerz\""},
    {"missing layers", "scenario: x\ndescription: d\n", 1, 1, "missing required key \"layers\""},
    {"wrong type", "scenario: x\ndescription: d\ntimeout: soon\nlayers: [{id: a, entries: []}]\n",
     3, 10, "expected an integer"},
    {"bad size",
     "scenario: x\ndescription: d\nlayers:\n  - id: a\n    entries:\n      - {path: f, size: "
     "12Q}\n",
     6, 25, "expected a size"},
    {"bad mode",
     "scenario: x\ndescription: d\nlayers:\n  - id: a\n    entries:\n      - {path: f, mode: "
     "\"0999\"}\n",
     6, 25, "octal mode"},
    {"unknown entry key",
     "scenario: x\ndescription: d\nlayers:\n  - id: a\n    entries:\n      - {path: f, colour: "
     "red}\n",
     6, 19, "unknown key \"colour\""},
    {"unknown op",
     "scenario: x\ndescription: d\nlayers: [{id: a, entries: []}]\ncontainers: [{id: c, image: "
     "a}]\n"
     "steps:\n  - op: explode\n    in: c\n",
     6, 9, "unknown op \"explode\""},
    {"unknown errno",
     "scenario: x\ndescription: d\nlayers: [{id: a, entries: []}]\ncontainers: [{id: c, image: "
     "a}]\n"
     "steps:\n  - {op: unlink, in: c, path: f, errno: EWHATEVER}\n",
     6, 41, "unknown errno"},
    {"dangling container",
     "scenario: x\ndescription: d\nlayers: [{id: a, entries: []}]\n"
     "steps:\n  - {op: unlink, in: ghost, path: f}\n",
     5, 22, "matches no container"},
    {"dangling image",
     "scenario: x\ndescription: d\nlayers: [{id: a, entries: []}]\ncontainers:\n  - {id: c, image: "
     "b}\n",
     5, 5, "image \"b\" is not a layer"},
    {"unknown driver in when",
     "scenario: x\ndescription: d\nrequires:\n  drivers: [overlay, ntfs]\n"
     "layers: [{id: a, entries: []}]\n",
     4, 12, "unknown driver \"ntfs\""},
    {"yaml syntax", "scenario: x\ndescription: d\nlayers: [{id: a\n", 4, 1, "YAML syntax"},
    {"duplicate key", "scenario: x\ndescription: d\nscenario: y\nlayers: [{id: a, entries: []}]\n",
     3, 1, "duplicate key \"scenario\""},
    {"unrecorded measurement",
     "scenario: x\ndescription: d\nlayers: [{id: a, entries: []}]\nexpect:\n"
     "  - measure: nothing\n    max: 1\n",
     5, 14, "never recorded"},
    {"escaping entry path",
     "scenario: x\ndescription: d\nlayers:\n  - id: a\n    entries:\n      - {path: ../x}\n", 6, 16,
     "stay inside the layer"},
    {"regression without link",
     "scenario: x\ndescription: d\ngroups: [regression]\nlayers: [{id: a, entries: []}]\n", 3, 9,
     "must link"},
    // issue 11 item 10: these aborted `scenario check` (uncaught std::out_of_range from stoi).
    {"timeout out of range",
     "scenario: x\ndescription: d\ntimeout: 99999999999999999999\nlayers: [{id: a, entries: []}]\n",
     3, 10, "integer out of range"},
    {"timeout beyond int",
     "scenario: x\ndescription: d\ntimeout: 99999999999\nlayers: [{id: a, entries: []}]\n", 3, 10,
     "must be 1..86400"},
    {"generate count beyond int",
     "scenario: x\ndescription: d\nlayers:\n  - generate: {count: 99999999999, id: \"l${i}\"}\n", 4,
     23, "must be 1..1000"},
    {"container count out of range",
     "scenario: x\ndescription: d\nlayers: [{id: a, entries: []}]\ncontainers:\n"
     "  - generate: {count: 99999999999999999999999, id: \"c${i}\", image: a}\n",
     5, 23, "integer out of range"},
};

TEST(ScenarioParse, MistakesAreReportedWithTheirPositions) {
  for (const auto& c : kBad) {
    ScenarioFile f(c.text);
    std::vector<Diagnostic> diags;
    auto s = load(f.path(), &diags);
    ASSERT_FALSE(s.ok()) << c.name;
    ASSERT_FALSE(diags.empty()) << c.name;
    bool found = false;
    for (const auto& d : diags) {
      if (d.message.find(c.message_part) == std::string::npos) continue;
      found = true;
      EXPECT_EQ(d.line, c.line) << c.name << ": " << d.str();
      EXPECT_EQ(d.column, c.column) << c.name << ": " << d.str();
      EXPECT_EQ(d.file, f.path());
    }
    EXPECT_TRUE(found) << c.name << ": got " << s.error().message();
    // The error message is one "FILE:LINE:COLUMN: message" line per diagnostic.
    EXPECT_EQ(s.error().message().rfind(f.path() + ":", 0), 0u) << c.name;
  }
}

// issue 11 item 10: five variables of 100 values (10^10 points) were expanded until memory
// ran out; the bound is checked on the product before anything is expanded.
TEST(ScenarioParse, HugeSweepIsRefusedBeforeExpansion) {
  std::string text = "scenario: x\ndescription: d\nsweep:\n";
  std::string uses;
  for (const char* v : {"a", "b", "c", "d", "e"}) {
    text += std::string("  ") + v + ": [";
    for (int i = 0; i < 100; ++i) text += (i ? ", " : "") + std::to_string(i);
    text += "]\n";
    uses += std::string("${") + v + "}";
  }
  text += "layers: [{id: a, entries: [{path: f, content: \"" + uses + "\"}]}]\n";
  ScenarioFile f(text);
  std::vector<Diagnostic> diags;
  auto s = load(f.path(), &diags);
  ASSERT_FALSE(s.ok());
  ASSERT_EQ(diags.size(), 1u) << s.error().message();
  EXPECT_EQ(diags[0].line, 4);
  EXPECT_NE(diags[0].message.find("100 x 100 x 100 x 100 x 100 values make more than 64 points"),
            std::string::npos)
      << diags[0].message;
}

}  // namespace
}  // namespace cowlab::scenario
