// aufs branch-option building and page budgeting, without a kernel.
#include "aufs/branches.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

namespace cowlab::aufs {
namespace {

// A 64-hex-digit layer id like a Docker chain id, distinct per index.
std::string layer_id(int i) {
  char buf[65];
  std::snprintf(buf, sizeof buf, "%064x", 0x5eed0000 + i * 7919);
  return buf;
}

// A stack of `n` read-only layers under `root`, nearest first, and its writable top.
BranchRequest stack(const std::string& root, int n) {
  BranchRequest r;
  r.rw = root + "/diff/" + layer_id(n);
  for (int i = n - 1; i >= 0; --i) r.ro.push_back(root + "/diff/" + layer_id(i));
  r.page_size = 4096;
  r.xino = root + "/xino/aufs.xino";
  return r;
}

TEST(AufsBranches, ExactStringsForASmallStack) {
  BranchRequest r;
  r.rw = "/s/aufs/diff/c";
  r.ro = {"/s/aufs/diff/b", "/s/aufs/diff/a"};
  r.xino = "/s/aufs/xino/aufs.xino";
  r.dirperm1 = Dirperm1::kOn;
  auto plan = plan_branch_mounts(r);
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  EXPECT_EQ(plan->first,
            "br:/s/aufs/diff/c=rw:/s/aufs/diff/b=ro+wh:/s/aufs/diff/a=ro+wh,dio,xino=/s/aufs/xino/"
            "aufs.xino,"
            "dirperm1");
  EXPECT_TRUE(plan->appends.empty());
  EXPECT_EQ(plan->branches_in_first, 3u);

  r.dirperm1 = Dirperm1::kOff;
  r.label_option = "context=\"system_u:object_r:container_file_t:s0\"";
  plan = plan_branch_mounts(r);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->first,
            "br:/s/aufs/diff/c=rw:/s/aufs/diff/b=ro+wh:/s/aufs/diff/a=ro+wh,dio,xino=/s/aufs/xino/"
            "aufs.xino,"
            "context=\"system_u:object_r:container_file_t:s0\"");
}

TEST(AufsBranches, NoReadOnlyBranches) {
  BranchRequest r;
  r.rw = "/x/diff/only";
  r.xino = "/x/xino/aufs.xino";
  auto plan = plan_branch_mounts(r);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->first, "br:/x/diff/only=rw,dio,xino=/x/xino/aufs.xino");
  EXPECT_EQ(plan->branches_in_first, 1u);
  EXPECT_TRUE(plan->appends.empty());
}

// Docker's TestMountMoreThan42Layers shape: 126 read-only layers under a realistic root.
TEST(AufsBranches, AHundredAndTwentySixLayersAllPresentNothingTruncated) {
  BranchRequest r = stack("/var/lib/cowlab/aufs", 126);
  r.dirperm1 = Dirperm1::kOn;
  auto plan = plan_branch_mounts(r);
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  // One branch spec is ~90 bytes, so a page cannot hold them all: appends are needed.
  EXPECT_FALSE(plan->appends.empty());
  EXPECT_LE(plan->first.size() + 1, 4096u);
  for (const auto& a : plan->appends) {
    EXPECT_LE(a.size() + 1, 4096u);
    EXPECT_EQ(a.rfind("append:", 0), 0u) << a;
    EXPECT_EQ(a.substr(a.size() - 6), "=ro+wh") << a;
  }
  EXPECT_EQ(plan->branches_in_first + plan->appends.size(), 127u);
  // Every branch exactly once, in order: what the kernel will be handed.
  EXPECT_EQ(plan_branch_specs(*plan), expected_branch_specs(r));
  // The options stay on the first mount, after the branches.
  EXPECT_NE(plan->first.find(",dio,xino=/var/lib/cowlab/aufs/xino/aufs.xino,dirperm1"),
            std::string::npos);
  EXPECT_EQ(plan->first.substr(plan->first.size() - 9), ",dirperm1");
}

// Docker's TestMountMoreThan42LayersMatchingPathLength: vary the root's length so the page
// boundary falls at every position, including inside a branch spec.  Whatever the length, the
// first mount holds whole specs only and the spec that crosses the boundary moves to an append.
TEST(AufsBranches, PageBoundaryInsideABranchSpecMovesTheWholeBranch) {
  int boundary_inside_spec = 0;
  for (int extra = 0; extra < 120; ++extra) {
    std::string root = "/r" + std::string(static_cast<size_t>(extra), 'x');
    BranchRequest r = stack(root, 126);
    auto plan = plan_branch_mounts(r);
    ASSERT_TRUE(plan.ok()) << plan.error().message();
    ASSERT_LE(plan->first.size() + 1, 4096u) << "root length " << root.size();
    ASSERT_EQ(plan_branch_specs(*plan), expected_branch_specs(r)) << "root length " << root.size();

    // Where would a single, unbudgeted "br:" string cross the page?
    std::string tail = ",dio,xino=" + r.xino;
    std::string naive = "br:" + r.rw + "=rw";
    size_t crossing = 0;  // index into ro of the spec holding byte 4095
    for (size_t i = 0; i < r.ro.size(); ++i) {
      std::string piece = ":" + r.ro[i] + "=ro+wh";
      if (naive.size() + piece.size() + tail.size() > 4095) {
        crossing = i;
        if (naive.size() + tail.size() < 4095) ++boundary_inside_spec;
        break;
      }
      naive += piece;
    }
    // Exactly the branches before the crossing one are in the first mount...
    EXPECT_EQ(plan->branches_in_first, crossing + 1) << "root length " << root.size();
    // ...and the crossing one is the first append, whole.
    ASSERT_FALSE(plan->appends.empty());
    EXPECT_EQ(plan->appends.front(), "append:" + r.ro[crossing] + "=ro+wh");
  }
  EXPECT_GT(boundary_inside_spec, 100);  // the interesting case was really exercised
}

TEST(AufsBranches, ExactFitIsKeptOneByteMoreIsAppended) {
  // Build a request whose first mount data is exactly 4095 bytes with two ro branches.
  BranchRequest r;
  r.rw = "/w";
  r.xino = "";
  const std::string fixed = "br:/w=rw:/a=ro+wh:" + std::string("=ro+wh") + ",dio";
  std::string second = "/" + std::string(4095 - fixed.size() - 1, 'b');
  r.ro = {"/a", second};
  auto plan = plan_branch_mounts(r);
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  EXPECT_EQ(plan->first.size(), 4095u);
  EXPECT_TRUE(plan->appends.empty());
  EXPECT_EQ(plan->branches_in_first, 3u);

  r.ro[1] += "b";  // 4096 bytes + NUL: must not be sent in one mount
  plan = plan_branch_mounts(r);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->first, "br:/w=rw:/a=ro+wh,dio");
  ASSERT_EQ(plan->appends.size(), 1u);
  EXPECT_EQ(plan->appends[0], "append:" + r.ro[1] + "=ro+wh");
}

TEST(AufsBranches, LabelIsRepeatedOnAppendsAndCounted) {
  BranchRequest r = stack("/var/lib/cowlab/aufs", 60);
  r.label_option = "context=\"system_u:object_r:container_file_t:s0:c1,c2\"";
  auto plan = plan_branch_mounts(r);
  ASSERT_TRUE(plan.ok());
  ASSERT_FALSE(plan->appends.empty());
  for (const auto& a : plan->appends)
    EXPECT_NE(a.find("," + r.label_option), std::string::npos) << a;
  EXPECT_LE(plan->first.size() + 1, 4096u);
  // The label's comma-separated categories do not confuse the re-parse.
  EXPECT_EQ(plan_branch_specs(*plan), expected_branch_specs(r));
}

TEST(AufsBranches, BiggerPagesTakeEverythingAtOnce) {
  BranchRequest r = stack("/var/lib/cowlab/aufs", 126);
  r.page_size = 65536;  // arm64/ppc64 64 KiB pages
  auto plan = plan_branch_mounts(r);
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->appends.empty());
  EXPECT_EQ(plan->branches_in_first, 127u);
}

TEST(AufsBranches, UnrepresentablePathsAreRefused) {
  for (const char* bad : {"/a:b", "/a,b", "/a=b", "relative", ""}) {
    BranchRequest r;
    r.rw = "/w";
    r.ro = {bad};
    auto plan = plan_branch_mounts(r);
    ASSERT_FALSE(plan.ok()) << bad;
    EXPECT_EQ(plan.error().kind(), ErrorKind::kInvalid) << bad;
  }
  BranchRequest r;
  r.rw = "/w";
  r.ro = {"/" + std::string(5000, 'z')};
  auto plan = plan_branch_mounts(r);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(plan.error().message().find("does not fit in one page"), std::string::npos);

  r.rw = "/" + std::string(5000, 'w');
  r.ro.clear();
  plan = plan_branch_mounts(r);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.error().message().find("writable branch"), std::string::npos);
}

TEST(AufsBranches, VerifyBranchesCatchesSilentTruncation) {
  std::vector<std::string> expected = {"/d/c=rw", "/d/b=ro+wh", "/d/a=ro+wh"};
  EXPECT_TRUE(verify_branches(expected, {"/d/c=rw\n", "/d/b=ro+wh\n", "/d/a=ro+wh\n"}).ok());

  auto missing = verify_branches(expected, {"/d/c=rw\n", "/d/b=ro+wh\n"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind(), ErrorKind::kCorrupt);
  EXPECT_NE(missing.error().message().find("2 branches, expected 3"), std::string::npos);
  EXPECT_NE(missing.error().message().find("moby#9151"), std::string::npos);

  auto wrong = verify_branches(expected, {"/d/c=rw", "/d/a=ro+wh", "/d/b=ro+wh"});
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().message().find("branch 1"), std::string::npos);

  auto extra = verify_branches(expected, {"/d/c=rw", "/d/b=ro+wh", "/d/a=ro+wh", "/d/z=ro"});
  ASSERT_FALSE(extra.ok());
  EXPECT_NE(extra.error().message().find("unexpected branch 3"), std::string::npos);
}

}  // namespace
}  // namespace cowlab::aufs
