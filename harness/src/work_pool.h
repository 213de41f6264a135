// The scenarios one (profile, driver) still has to run, handed out one at a time to the guests
// that serve it (docs/matrix.md, "Scheduling").
//
// A guest used to get its driver's whole list when it booted.  Drivers differ by 7x in work
// (zfs 704 s, overlay 93 s for the default matrix's --repeat 3 under TCG), so whole lists on
// two slots left one slot idle for the last 89 s of a 797 s run while zfs's guest finished
// alone.  Handed out one at a time, the scenarios still waiting when a slot falls idle can go
// to a second guest of the same driver — a helper — and the slots finish together.
#pragma once

#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <string>

namespace cowlab::harness {

// Thread-safe: the guests' threads take and return scenarios, the scheduler asks whether a
// helper pays.
class WorkPool {
 public:
  enum class GuestOutcome { kRanSome, kRanNothing };  // did the guest finish any scenario?

  WorkPool(std::string profile, std::string driver, std::deque<size_t> scenarios)
      : profile_(std::move(profile)), driver_(std::move(driver)), todo_(std::move(scenarios)) {}

  const std::string& profile() const { return profile_; }
  const std::string& driver() const { return driver_; }

  // The next scenario (an index into the matrix's list), or nullopt when none is left.
  std::optional<size_t> take();
  // Puts scenarios a guest took but never started back at the front, in their order.
  void give_back(const std::deque<size_t>& scenarios);
  // Everything still waiting, removed from the pool (for an interrupted or abandoned pool).
  std::deque<size_t> drain();
  size_t waiting() const;
  std::deque<size_t> waiting_list() const;  // a copy, in order

  // A guest of this pool started (its QEMU did), or ended having finished some scenario or none.
  void guest_started();
  void guest_ended(GuestOutcome outcome);
  size_t guests() const;
  // How many of the pool's guests, the last ones to end, finished nothing.  A guest that
  // finishes nothing after one that did the same gives up on the pool's rest: a third boot
  // would fail the same way (a kernel that does not boot, a runner that fails before asking).
  size_t fruitless_in_a_row() const;
  // The seconds a guest of this pool took from its start to its first request for work: the
  // price of one more guest (a wait for a machine-wide guest slot, boot, agent, scratch disk,
  // driver set-up).
  void add_overhead(double seconds);
  // The seconds a scenario took in its guest, from the request that handed it out to the next
  // request: all its cells, sweep points, repeats and reruns.
  void add_scenario(double seconds);

  // Whether starting one more guest for this pool pays: it needs a scenario of its own and
  // must save more than it costs.  With g guests on n waiting scenarios of mean duration m,
  // the pool's tail takes about n·m/g; one more guest makes it n·m/(g+1) plus the overhead o
  // it pays before its first scenario, so it pays when n·m/g − n·m/(g+1) > o, that is when
  // n·m > o·g·(g+1).  Nothing is guessed: until a scenario of the pool has finished and a
  // guest's overhead is measured, the answer is no.
  bool helper_pays() const;

 private:
  mutable std::mutex mu_;
  const std::string profile_, driver_;
  std::deque<size_t> todo_;
  size_t guests_ = 0, fruitless_ = 0;
  double overhead_sum_ = 0, scenario_sum_ = 0;
  size_t overheads_ = 0, scenarios_ = 0;
};

}  // namespace cowlab::harness
