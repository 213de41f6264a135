// The reducer's search with a stand-in runner (ReduceOptions::runner): no store, no guest.
// A guest runner reports a panicking kernel as the candidate's status; the reducer must keep
// exactly that, and must not mistake an expectation failure for it.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <yaml-cpp/yaml.h>

#include "core/tar_test_util.h"
#include "cowlab/scenario.h"
#include "cowlab/sys.h"

namespace cowlab::scenario {
namespace {

#ifndef COWLAB_SOURCE_DIR
#define COWLAB_SOURCE_DIR "."
#endif

// Each test's scenario in a directory of its own (testing::TempRoot), removed after the test.
class ScenarioReduce : public ::testing::Test {
 protected:
  // `text` as DIR/s.yaml; returns its path.
  std::string scenario(const std::string& text) {
    EXPECT_TRUE(sys::write_file_atomic(root_.path() + "/s.yaml", text).ok());
    return root_.path() + "/s.yaml";
  }
  // tests/fixtures/NAME, as scenario() does with a text.
  std::string fixture(const std::string& name) {
    auto text = sys::read_file(std::string(COWLAB_SOURCE_DIR) + "/tests/fixtures/" + name);
    EXPECT_TRUE(text.ok()) << text.error().message();
    return scenario(text.ok() ? *text : "");
  }
  const std::string& dir() const { return root_.path(); }

 private:
  testing::TempRoot root_;
};

// A panic (crash_kernel) among parts that do not matter; tests/vm/test_reduce_panic.py reduces
// it in a guest whose kernel really panics.
constexpr const char* kNoisyPanic = "panics-among-noise.yaml";

// As a guest would end: a panic if the candidate still has its crash_kernel step, else a
// failed expectation (so that "fails" alone is not enough to be kept).
Result<std::vector<RunResult>> fake_guest(const std::string& file, int* runs) {
  ++*runs;
  YAML::Node n = YAML::LoadFile(file);
  RunResult r;
  r.status = Status::kFail;
  r.failures.push_back({"expect 1 view c1:f exists", "true", "false"});
  if (n["steps"].IsSequence())
    for (const auto& st : n["steps"])
      if (st["op"].Scalar() == "crash_kernel") {
        r.status = Status::kPanic;
        r.failures.clear();
      }
  return std::vector<RunResult>{r};
}

TEST_F(ScenarioReduce, KeepsAPanicReportedByTheRunner) {
  const std::string file = fixture(kNoisyPanic);
  int runs = 0;
  ReduceOptions o;
  o.run.driver = "vfs";
  o.run.work_dir = dir();
  o.runner = [&](const std::string& f) { return fake_guest(f, &runs); };
  auto r = reduce(file, o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->failure, "run ends in panic");
  YAML::Node got = YAML::Load(r->yaml);
  ASSERT_EQ(got["steps"].size(), 1u) << r->yaml;
  EXPECT_EQ(got["steps"][0]["op"].Scalar(), "crash_kernel");
  ASSERT_EQ(got["containers"].size(), 1u) << r->yaml;
  EXPECT_EQ(got["containers"][0]["id"].Scalar(), "c1");
  EXPECT_FALSE(got["layers"][0]["entries"].IsDefined() && got["layers"][0]["entries"].size() > 0)
      << r->yaml;
  EXPECT_EQ(r->runs + 1, runs);  // every run went through the runner (+1: the original)
}

TEST_F(ScenarioReduce, RefusesWhatTheRunnerSaysPasses) {
  const std::string file = fixture(kNoisyPanic);
  ReduceOptions o;
  o.run.driver = "btrfs";
  o.runner = [](const std::string&) -> Result<std::vector<RunResult>> {
    RunResult r;
    r.status = Status::kPass;
    return std::vector<RunResult>{r};
  };
  auto r = reduce(file, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("does not fail on btrfs (status pass)"), std::string::npos)
      << r.error().message();
}

// A difference between two sides (ReduceOptions::against), with stand-in runners: side A
// fails "view c1:f content" exactly while the candidate still writes c1:f; side B
// passes it, and both fail "view c1:g exists" (no difference: never the target).  Side B
// fails the target too once the chmod of c1:f is gone — a candidate without it loses the
// difference and must not be kept, even though side A still fails.
const char* kDiffering = R"(scenario: differs
description: a difference among parts that do not matter
layers:
  - id: base
    entries:
      - {path: f, content: "x"}
      - {path: g, content: "y"}
containers:
  - {id: c1, image: base}
  - {id: c2, image: base}
steps:
  - {op: write, in: c2, path: g, data: "changed"}
  - {op: chmod, in: c1, path: f, mode: "0600"}
  - {op: write, in: c1, path: f, data: "z"}
  - {op: mkdir, in: c2, path: d}
expect:
  - view: {in: c1, path: g, exists: false}
  - view: {in: c1, path: f, content: "z"}
)";

bool has_step(YAML::Node n, const std::string& op) {  // `op` on c1:f
  if (n["steps"].IsSequence())
    for (const auto& st : n["steps"])
      if (st["op"].Scalar() == op && st["in"].Scalar() == "c1" && st["path"].Scalar() == "f")
        return true;
  return false;
}

Result<std::vector<RunResult>> fake_side(const std::string& file, bool side_a, int* runs) {
  ++*runs;
  YAML::Node n = YAML::LoadFile(file);
  RunResult r;
  r.status = Status::kPass;
  bool has_g = false, has_f = false;
  if (n["expect"].IsSequence())
    for (const auto& e : n["expect"]) {
      has_g |= e["view"]["path"].Scalar() == "g";
      has_f |= e["view"]["path"].Scalar() == "f";
    }
  if (has_g) r.failures.push_back({"expect 1 view c1:g exists", "false", "true"});
  bool differs = side_a ? has_step(n, "write") : !has_step(n, "chmod");
  if (has_f && differs) r.failures.push_back({"expect 2 view c1:f content", "z", "x"});
  if (!r.failures.empty()) r.status = Status::kFail;
  return std::vector<RunResult>{r};
}

// A reduction of the difference between side A (on overlay) and side B (labelled `b_label`),
// each a fake_side() counting its runs.
ReduceOptions two_sides(bool b_like_a, const std::string& b_label, int* runs_a, int* runs_b) {
  ReduceOptions o;
  o.run.driver = "overlay";
  o.runner = [=](const std::string& f) { return fake_side(f, true, runs_a); };
  ReduceSide b;
  b.label = b_label;
  b.runner = [=](const std::string& f) { return fake_side(f, b_like_a, runs_b); };
  o.against = b;
  return o;
}

TEST_F(ScenarioReduce, KeepsADifferenceBetweenTwoSides) {
  const std::string file = scenario(kDiffering);
  int runs_a = 0, runs_b = 0;
  ReduceOptions o = two_sides(false, "vfs", &runs_a, &runs_b);
  o.run.work_dir = dir();
  auto r = reduce(file, o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->failure, "expect view c1:f content");
  EXPECT_EQ(r->difference, "fails on overlay, passes on vfs");
  YAML::Node got = YAML::Load(r->yaml);
  // The check failing on both sides went; the chmod stays (without it side B fails too).
  ASSERT_EQ(got["expect"].size(), 1u) << r->yaml;
  EXPECT_EQ(got["expect"][0]["view"]["path"].Scalar(), "f");
  ASSERT_EQ(got["steps"].size(), 2u) << r->yaml;
  EXPECT_EQ(got["steps"][0]["op"].Scalar(), "chmod");
  EXPECT_EQ(got["steps"][1]["op"].Scalar(), "write");
  EXPECT_EQ(got["containers"].size(), 1u) << r->yaml;
  // Side B runs only for candidates that side A keeps: fewer runs there.
  EXPECT_LT(runs_b, runs_a);
}

TEST_F(ScenarioReduce, RefusesSidesThatDoNotDiffer) {
  const std::string file = scenario(kDiffering);
  int runs = 0;
  auto r = reduce(file, two_sides(true, "overlay-again", &runs, &runs));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("does not differ between overlay (status fail, 2 failed "
                                     "check(s), first \"expect view c1:g exists\") and "
                                     "overlay-again"),
            std::string::npos)
      << r.error().message();
}

}  // namespace
}  // namespace cowlab::scenario
