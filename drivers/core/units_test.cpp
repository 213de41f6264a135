#include "cowlab/units.h"

#include <gtest/gtest.h>

#include <cmath>

namespace cowlab {
namespace {

TEST(Units, BytesShowBinaryPrefixAndExactCount) {
  EXPECT_EQ(format_quantity(67108864, "bytes"), "64.0 MiB (67108864 B)");
  EXPECT_EQ(format_quantity(66678784, "bytes"), "63.6 MiB (66678784 B)");
  EXPECT_EQ(format_quantity(4096, "bytes"), "4.0 KiB (4096 B)");
  EXPECT_EQ(format_quantity(512, "bytes"), "512 B");
  EXPECT_EQ(format_quantity(-8192, "bytes"), "-8.0 KiB (-8192 B)");
  EXPECT_EQ(format_bytes_short(1.5 * (1 << 30)), "1.5 GiB");
}

TEST(Units, SecondsAndPlainNumbers) {
  EXPECT_EQ(format_quantity(0.0123, "s"), "12.3 ms");
  EXPECT_EQ(format_quantity(2.5, "s"), "2.50 s");
  EXPECT_EQ(format_quantity(125.25, "s"), "125.2 s");
  EXPECT_EQ(format_quantity(1.5, ""), "1.5");
  EXPECT_EQ(format_quantity(1.5, "ratio"), "1.5");
  EXPECT_EQ(format_quantity(NAN, "bytes"), "n/a");
  EXPECT_EQ(format_quantity(INFINITY, "s"), "n/a");
}

TEST(Units, Durations) {
  EXPECT_EQ(format_duration_s(42.4), "42 s");
  EXPECT_EQ(format_duration_s(185), "3 min 05 s");
  EXPECT_EQ(format_duration_s(3720), "1 h 02 min");
  EXPECT_EQ(format_duration_s(-1), "?");
}

}  // namespace
}  // namespace cowlab
