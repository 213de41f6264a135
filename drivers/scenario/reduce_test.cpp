// The reducer's search with a stand-in runner (ReduceOptions::runner): no store, no guest.
// A guest runner reports a panicking kernel as the candidate's status; the reducer must keep
// exactly that, and must not mistake an expectation failure for it.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <yaml-cpp/yaml.h>

#include "cowlab/scenario.h"
#include "cowlab/sys.h"

namespace cowlab::scenario {
namespace {

const char* kNoisyPanic = R"(scenario: panics-among-noise
description: a panic hidden among parts that do not matter
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
  - {op: crash_kernel}
  - {op: chmod, in: c1, path: f, mode: "0600"}
expect:
  - view: {in: c1, path: f, exists: true}
)";

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

TEST(ScenarioReduce, KeepsAPanicReportedByTheRunner) {
  char tmpl[] = "/tmp/cowlab-reduce-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  ASSERT_TRUE(sys::write_file_atomic(dir + "/s.yaml", kNoisyPanic).ok());
  int runs = 0;
  ReduceOptions o;
  o.run.driver = "vfs";
  o.run.work_dir = dir;
  o.runner = [&](const std::string& f) { return fake_guest(f, &runs); };
  auto r = reduce(dir + "/s.yaml", o);
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
  (void)sys::remove_all(dir);
}

TEST(ScenarioReduce, RefusesWhatTheRunnerSaysPasses) {
  char tmpl[] = "/tmp/cowlab-reduce-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  ASSERT_TRUE(sys::write_file_atomic(dir + "/s.yaml", kNoisyPanic).ok());
  ReduceOptions o;
  o.run.driver = "btrfs";
  o.runner = [](const std::string&) -> Result<std::vector<RunResult>> {
    RunResult r;
    r.status = Status::kPass;
    return std::vector<RunResult>{r};
  };
  auto r = reduce(dir + "/s.yaml", o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("does not fail on btrfs (status pass)"), std::string::npos)
      << r.error().message();
  (void)sys::remove_all(dir);
}

}  // namespace
}  // namespace cowlab::scenario
