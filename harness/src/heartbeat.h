// Progress of a long, silent job (an image build): the current step is printed when it
// starts and again every `interval` while it runs, so a user sees it is alive.
//
// step() is called from the job's output thread while the heartbeat thread reads the step and
// the time of the last line: both live under one mutex (they were plain variables shared by two
// threads before — a data race; heartbeat_tsan_test checks this under ThreadSanitizer).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace cowlab::harness::detail {

class Heartbeat {
 public:
  using Clock = std::chrono::steady_clock;
  // `say` gets "STEP (ELAPSED)" lines for new steps and "... STEP (ELAPSED)" as heartbeats; it
  // is called from both threads, never at the same time.
  Heartbeat(std::string first_step, std::chrono::milliseconds interval,
            std::function<void(const std::string&)> say);
  ~Heartbeat();  // stops and joins the heartbeat thread
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  // A new step started: prints it and restarts the interval.
  void step(const std::string& name);

 private:
  void run();
  std::string elapsed() const;  // with mu_ held

  std::mutex mu_;
  std::condition_variable cv_;
  std::string current_;
  Clock::time_point start_, last_tick_;
  std::chrono::milliseconds interval_;
  std::function<void(const std::string&)> say_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace cowlab::harness::detail
