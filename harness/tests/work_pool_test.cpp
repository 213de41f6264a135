// WorkPool: what a matrix pool hands out, takes back, and when a helper guest pays.
#include "src/work_pool.h"

#include <gtest/gtest.h>

namespace cowlab::harness {
namespace {

TEST(WorkPool, HandsOutInOrderAndTakesBackAtTheFront) {
  WorkPool p("debian-6.1", "zfs", {3, 1, 4, 5});
  EXPECT_EQ(p.take(), 3u);
  EXPECT_EQ(p.take(), 1u);
  p.give_back({1});  // taken, never started: it runs next
  EXPECT_EQ(p.waiting_list(), (std::deque<size_t>{1, 4, 5}));
  EXPECT_EQ(p.drain(), (std::deque<size_t>{1, 4, 5}));
  EXPECT_EQ(p.take(), std::nullopt);
  EXPECT_EQ(p.waiting(), 0u);
}

TEST(WorkPool, NoHelperBeforeAnythingIsMeasured) {
  WorkPool p("debian-6.1", "zfs", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  p.guest_started();
  EXPECT_FALSE(p.helper_pays());  // no overhead, no scenario measured yet
  p.add_overhead(5);
  EXPECT_FALSE(p.helper_pays());  // no scenario finished yet
  p.add_scenario(20);
  EXPECT_TRUE(p.helper_pays());
}

TEST(WorkPool, AHelperPaysOnlyWhereItSavesMoreThanItsOverhead) {
  // The default matrix's --repeat 3 under TCG: zfs's guest took ~12 s to its first request and
  // ran 56 scenarios in 690 s (12.3 s each).
  WorkPool zfs("debian-6.1", "zfs", {});
  zfs.guest_started();
  zfs.add_overhead(12);
  zfs.add_scenario(12.3);
  std::deque<size_t> waiting;
  for (size_t i = 0; i < 7; ++i) waiting.push_back(i);
  zfs.give_back(waiting);
  // 7 x 12.3 = 86 s left: a second guest finishes it in 43 s + 12 s; it pays (86 > 12·1·2).
  EXPECT_TRUE(zfs.helper_pays());
  zfs.guest_started();
  // A third would save 86/2 - 86/3 = 14 s for its 12 s: 86 > 12·2·3 = 72 — still pays ...
  EXPECT_TRUE(zfs.helper_pays());
  zfs.guest_started();
  // ... a fourth would not: 86 < 12·3·4 = 144.
  EXPECT_FALSE(zfs.helper_pays());

  // One scenario left never gets a helper: it cannot be split.
  WorkPool one("debian-6.1", "vfs", {0});
  one.guest_started();
  one.add_overhead(1);
  one.add_scenario(1000);
  EXPECT_FALSE(one.helper_pays());

  // Short scenarios on an expensive boot: 2 x 1 s left, 5 s to boot.
  WorkPool cheap("debian-6.1", "overlay", {0, 1});
  cheap.guest_started();
  cheap.add_overhead(5);
  cheap.add_scenario(1);
  EXPECT_FALSE(cheap.helper_pays());
  // A pool no guest serves needs a first guest, not a helper.
  WorkPool idle("debian-6.1", "btrfs", {0, 1, 2});
  idle.add_overhead(1);
  idle.add_scenario(100);
  EXPECT_FALSE(idle.helper_pays());
  idle.guest_started();
  idle.guest_ended(WorkPool::GuestOutcome::kRanSome);
  EXPECT_FALSE(idle.helper_pays());
}

TEST(WorkPool, CountsTheGuestsInARowThatFinishedNothing) {
  // The matrix gives up on a pool's rest when a guest finishes nothing right after another that
  // finished nothing; without the count, a runner that fails before asking for work had its
  // guest restarted forever (caught by hand before it landed: 200 guests in 10 minutes).
  WorkPool p("debian-6.1", "vfs", {0, 1, 2});
  EXPECT_EQ(p.fruitless_in_a_row(), 0u);
  p.guest_started();
  p.guest_ended(WorkPool::GuestOutcome::kRanNothing);
  EXPECT_EQ(p.fruitless_in_a_row(), 1u);
  p.guest_started();
  p.guest_ended(WorkPool::GuestOutcome::kRanSome);  // a guest that got somewhere starts over
  EXPECT_EQ(p.fruitless_in_a_row(), 0u);
  p.guest_started();
  p.guest_ended(WorkPool::GuestOutcome::kRanNothing);
  p.guest_started();
  p.guest_ended(WorkPool::GuestOutcome::kRanNothing);
  EXPECT_EQ(p.fruitless_in_a_row(), 2u);
  EXPECT_EQ(p.guests(), 0u);
}

}  // namespace
}  // namespace cowlab::harness
