// The matrix's live progress on stderr: one line per finished cell (every sweep point counts,
// so the counter ends at N/N), with the reason of a cell that did not pass and an ETA from the
// pace so far; a line when a guest starts booting and when its command starts (boot time), so a
// long boot under TCG is visible.  Lines go to the log (info: hidden by -q).  Thread-safe:
// workers call it concurrently.
#pragma once

#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

namespace cowlab::harness {

class MatrixProgress {
 public:
  using Clock = std::chrono::steady_clock;
  // `total` cells (scenario × driver × profile × sweep point) in this run.
  explicit MatrixProgress(size_t total, Clock::time_point start = Clock::now());

  void guest_booting(const std::string& label, size_t scenarios);
  void guest_running(const std::string& label, double boot_seconds);
  // A cell finished; returns the line printed (without newline).
  std::string cell_done(const nlohmann::json& result, const std::string& profile,
                        Clock::time_point now = Clock::now());
  // A cell will not run (interrupted): counts it without printing.
  void cell_dropped();

  size_t done() const;
  size_t total() const { return total_; }

  // Why a cell did not pass, in one line: its reason, else its first failed expectation.
  static std::string why(const nlohmann::json& result);
  // "ETA 3 min 05 s" from the pace so far; "" before the first cell.
  static std::string eta(size_t done, size_t total, double elapsed_s);

 private:
  mutable std::mutex mu_;
  size_t total_, done_ = 0;
  Clock::time_point start_;
};

}  // namespace cowlab::harness
