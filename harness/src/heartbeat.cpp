#include "heartbeat.h"

#include <cstdio>

namespace cowlab::harness::detail {

// COWLAB_HEARTBEAT_UNLOCKED builds the old, racy variant for the test that shows
// ThreadSanitizer catches it; nothing else defines it.
#ifdef COWLAB_HEARTBEAT_UNLOCKED
#define COWLAB_HEARTBEAT_LOCK(m) \
  do {                           \
  } while (0)
#else
#define COWLAB_HEARTBEAT_LOCK(m) std::lock_guard<std::mutex> heartbeat_lock(m)
#endif

Heartbeat::Heartbeat(std::string first_step, std::chrono::milliseconds interval,
                     std::function<void(const std::string&)> say)
    : current_(std::move(first_step)),
      start_(Clock::now()),
      last_tick_(start_),
      interval_(interval),
      say_(std::move(say)),
      thread_([this] { run(); }) {}

Heartbeat::~Heartbeat() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::string Heartbeat::elapsed() const {
  double s = std::chrono::duration<double>(Clock::now() - start_).count();
  char b[32];
  std::snprintf(b, sizeof b, "%.0fs", s);
  return b;
}

void Heartbeat::step(const std::string& name) {
  COWLAB_HEARTBEAT_LOCK(mu_);
  current_ = name;
  last_tick_ = Clock::now();
  say_(current_ + " (" + elapsed() + ")");
}

void Heartbeat::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
#ifdef COWLAB_HEARTBEAT_UNLOCKED
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (Clock::now() - last_tick_ >= interval_) {
      last_tick_ = Clock::now();
      say_("... " + current_ + " (" + elapsed() + ")");
    }
    lock.lock();
#else
    // Wake at the next due time (or on stop); step() moves the due time by updating last_tick_.
    cv_.wait_until(lock, last_tick_ + interval_,
                   [&] { return stop_ || Clock::now() - last_tick_ >= interval_; });
    if (stop_) break;
    if (Clock::now() - last_tick_ < interval_) continue;  // a step() moved the due time
    last_tick_ = Clock::now();
    say_("... " + current_ + " (" + elapsed() + ")");
#endif
  }
}

}  // namespace cowlab::harness::detail
