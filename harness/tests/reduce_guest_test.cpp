// What `scenario reduce --profile` makes of one candidate's guest (candidate_results): the
// kernel's verdict and the scenario's result lines, without booting anything.
#include <gtest/gtest.h>

#include "cowlab/harness/reduce_guest.h"

namespace cowlab::harness {
namespace {

GuestResult guest(GuestStatus status, std::vector<std::string> records) {
  GuestResult g;
  g.status = status;
  g.kernel_release = "6.1.0-50-cloud-amd64";
  g.reason = "why";
  g.records = std::move(records);
  return g;
}

const char* kFailedPoint =
    R"({"scenario":"s","driver":"vfs","status":"fail","sweep":{"size":"4MiB"},)"
    R"("failures":[{"expectation":"expect 1 view c1:f exists","expected":"true","observed":"false"}]})";

TEST(CandidateResults, ResultLinesCarryStatusFailuresAndSweep) {
  auto r = candidate_results(
      guest(GuestStatus::kFail, {R"({"event":"start","file":"x"})", kFailedPoint}), "vfs");
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].status, scenario::Status::kFail);
  ASSERT_EQ((*r)[0].failures.size(), 1u);
  EXPECT_EQ((*r)[0].failures[0].expectation, "expect 1 view c1:f exists");
  // The reducer substitutes the failing point's sweep values into the file it shrinks.
  EXPECT_EQ((*r)[0].sweep.at("size"), "4MiB");
  EXPECT_EQ((*r)[0].kernel, "6.1.0-50-cloud-amd64");
}

TEST(CandidateResults, TheKernelsVerdictIsTheCandidates) {
  auto panic = candidate_results(guest(GuestStatus::kPanic, {}), "vfs");
  ASSERT_TRUE(panic.ok());
  ASSERT_EQ(panic->size(), 1u);
  EXPECT_EQ((*panic)[0].status, scenario::Status::kPanic);
  for (auto st : {GuestStatus::kHang, GuestStatus::kTimeout}) {
    auto t = candidate_results(guest(st, {kFailedPoint}), "vfs");
    ASSERT_TRUE(t.ok());
    EXPECT_EQ((*t)[0].status, scenario::Status::kTimeout) << guest_status_name(st);
  }
  GuestResult splat = guest(GuestStatus::kSplat, {R"({"status":"pass","failures":[]})"});
  splat.splats = {"WARNING: CPU: 0 PID: 1 at fs/overlayfs/copy_up.c:1 ovl_copy_up"};
  auto s = candidate_results(splat, "overlay");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)[0].status, scenario::Status::kFail);
  ASSERT_EQ((*s)[0].failures.size(), 1u);
  EXPECT_EQ((*s)[0].failures[0].expectation, "kernel splat");
  EXPECT_EQ((*s)[0].failures[0].observed, splat.splats[0]);
}

TEST(CandidateResults, NoResultOrADeadQemuIsAnError) {
  auto none = candidate_results(guest(GuestStatus::kFail, {R"({"event":"start"})"}), "vfs");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message().find("no result came back"), std::string::npos);
  auto died = candidate_results(guest(GuestStatus::kQemuDied, {kFailedPoint}), "vfs");
  ASSERT_FALSE(died.ok());
  EXPECT_NE(died.error().message().find("qemu"), std::string::npos) << died.error().message();
}

}  // namespace
}  // namespace cowlab::harness
