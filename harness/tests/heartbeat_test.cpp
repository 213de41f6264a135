// Built twice (harness/CMakeLists.txt) with ThreadSanitizer: heartbeat_tsan_test must pass, and
// heartbeat_tsan_unlocked — the old unsynchronised variant — must be reported as a data race
// (the ctest entry expects that failure), which shows the sanitizer catches the fault.
#include "src/heartbeat.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

namespace cowlab::harness::detail {
namespace {

TEST(Heartbeat, StepsAndTicksFromTwoThreads) {
  std::mutex mu;
  std::vector<std::string> lines;
  {
    Heartbeat hb("starting", std::chrono::milliseconds(2), [&](const std::string& l) {
      std::lock_guard<std::mutex> lock(mu);
      lines.push_back(l);
    });
    for (int i = 0; i < 200; ++i) {
      hb.step("step " + std::to_string(i));
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let a heartbeat fire
  }
  std::lock_guard<std::mutex> lock(mu);
  size_t steps = 0, beats = 0;
  for (const auto& l : lines) (l.rfind("... ", 0) == 0 ? beats : steps)++;
  EXPECT_EQ(steps, 200u);
  EXPECT_GE(beats, 1u);
  // A heartbeat may come before the first step (the interval is 2 ms): the first step line counts.
  for (const auto& l : lines)
    if (l.rfind("... ", 0) != 0) {
      EXPECT_EQ(l, "step 0 (0s)");
      break;
    }
}

}  // namespace
}  // namespace cowlab::harness::detail
