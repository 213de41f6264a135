#include "progress.h"

#include "cowlab/log.h"
#include "cowlab/units.h"

namespace cowlab::harness {

using json = nlohmann::json;

MatrixProgress::MatrixProgress(size_t total, Clock::time_point start)
    : total_(total), start_(start) {}

void MatrixProgress::guest_booting(const std::string& label, size_t scenarios) {
  std::lock_guard<std::mutex> lock(mu_);
  spdlog::info("matrix: guest {} booting ({} scenario{})", label, scenarios,
               scenarios == 1 ? "" : "s");
}

void MatrixProgress::guest_running(const std::string& label, double boot_seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  spdlog::info("matrix: guest {} up after {:.1f} s, running scenarios", label, boot_seconds);
}

std::string MatrixProgress::why(const json& r) {
  std::string reason = r.value("reason", "");
  if (!reason.empty()) return reason;
  if (r.contains("failures") && r["failures"].is_array() && !r["failures"].empty()) {
    const json& f = r["failures"][0];
    return f.value("expectation", "") + ": expected " + f.value("expected", "") + ", observed " +
           f.value("observed", "");
  }
  return "";
}

std::string MatrixProgress::eta(size_t done, size_t total, double elapsed_s) {
  if (done == 0 || done >= total) return "";
  return "ETA " + format_duration_s(elapsed_s / static_cast<double>(done) *
                                    static_cast<double>(total - done));
}

std::string MatrixProgress::cell_done(const json& r, const std::string& profile,
                                      Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  ++done_;
  // A guest may report more points than planned (a scenario file changed under us): never
  // print a counter past its total.
  if (done_ > total_) total_ = done_;
  std::string sweep;
  if (r.contains("sweep") && r["sweep"].is_object())
    for (auto& [k, v] : r["sweep"].items())
      sweep += " " + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  std::string status = r.value("status", "");
  double elapsed = std::chrono::duration<double>(now - start_).count();
  char head[400];
  std::snprintf(head, sizeof head, "[%zu/%zu] %-12s %-13s %-40s %-7s %6.1fs%s", done_, total_,
                profile.c_str(), r.value("driver", "").c_str(), r.value("scenario", "").c_str(),
                status.c_str(), r.value("duration_s", 0.0), sweep.c_str());
  std::string line = head;
  std::string e = eta(done_, total_, elapsed);
  if (!e.empty()) line += "  (" + e + ")";
  if (status != "pass") {
    std::string w = why(r);
    if (!w.empty()) line += "\n      " + w;
  }
  spdlog::info("{}", line);
  return line;
}

void MatrixProgress::cell_dropped() {
  std::lock_guard<std::mutex> lock(mu_);
  ++done_;
}

size_t MatrixProgress::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

}  // namespace cowlab::harness
