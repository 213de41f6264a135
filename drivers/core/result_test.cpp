#include "cowlab/result.h"

#include <gtest/gtest.h>

namespace cowlab {
namespace {

Result<int> parse_positive(int v) {
  if (v < 0) return Error::invalid("negative value " + std::to_string(v));
  return v;
}

Result<int> doubled(int v) {
  int x = COWLAB_TRY_CTX(parse_positive(v), "double");
  return 2 * x;
}

TEST(Result, CarriesValueOrError) {
  auto ok = doubled(4);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 8);
  auto bad = doubled(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind(), ErrorKind::kInvalid);
  EXPECT_EQ(bad.error().message(), "double: negative value -1");
}

TEST(Result, ErrnoMessageNamesCallPathAndErrno) {
  Error e = Error::from_errno("mknod", "a/.wh.b", EEXIST);
  e.with_context("apply-diff layer 3f2a");
  EXPECT_EQ(e.message(), "apply-diff layer 3f2a: mknod a/.wh.b: EEXIST (File exists)");
  EXPECT_EQ(e.err(), EEXIST);
  EXPECT_EQ(e.kind(), ErrorKind::kExists);
}

}  // namespace
}  // namespace cowlab
