#include "work_pool.h"

namespace cowlab::harness {

std::optional<size_t> WorkPool::take() {
  std::lock_guard<std::mutex> lock(mu_);
  if (todo_.empty()) return std::nullopt;
  size_t i = todo_.front();
  todo_.pop_front();
  return i;
}

void WorkPool::give_back(const std::deque<size_t>& scenarios) {
  std::lock_guard<std::mutex> lock(mu_);
  todo_.insert(todo_.begin(), scenarios.begin(), scenarios.end());
}

std::deque<size_t> WorkPool::drain() {
  std::lock_guard<std::mutex> lock(mu_);
  std::deque<size_t> all;
  all.swap(todo_);
  return all;
}

size_t WorkPool::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return todo_.size();
}

std::deque<size_t> WorkPool::waiting_list() const {
  std::lock_guard<std::mutex> lock(mu_);
  return todo_;
}

void WorkPool::guest_started() {
  std::lock_guard<std::mutex> lock(mu_);
  ++guests_;
}

void WorkPool::guest_ended(GuestOutcome outcome) {
  std::lock_guard<std::mutex> lock(mu_);
  if (guests_) --guests_;
  fruitless_ = outcome == GuestOutcome::kRanNothing ? fruitless_ + 1 : 0;
}

size_t WorkPool::fruitless_in_a_row() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fruitless_;
}

size_t WorkPool::guests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return guests_;
}

void WorkPool::add_overhead(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  overhead_sum_ += seconds;
  ++overheads_;
}

void WorkPool::add_scenario(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  scenario_sum_ += seconds;
  ++scenarios_;
}

bool WorkPool::helper_pays() const {
  std::lock_guard<std::mutex> lock(mu_);
  // A helper with nothing left to take would boot for nothing; one more guest than scenarios
  // waiting would too (each guest takes at least one).
  if (todo_.size() < 2 || guests_ == 0 || scenarios_ == 0 || overheads_ == 0) return false;
  const double g = static_cast<double>(guests_);
  const double work =
      static_cast<double>(todo_.size()) * (scenario_sum_ / static_cast<double>(scenarios_));
  const double overhead = overhead_sum_ / static_cast<double>(overheads_);
  return work > overhead * g * (g + 1);
}

}  // namespace cowlab::harness
