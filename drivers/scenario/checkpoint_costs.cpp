// When an image checkpoint pays for itself (CheckpointCosts, scenario.h).
#include <cstdio>

#include "cowlab/scenario.h"

namespace cowlab::scenario {

namespace {
double mean(double sum, unsigned n) {
  return n ? sum / n : 0.0;
}
std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}
}  // namespace

void CheckpointCosts::add(const RunResult& r) {
  if (auto it = r.phases_s.find("checkpoint"); it != r.phases_s.end()) {
    save_s += it->second;
    ++saves;
  }
  if (auto it = r.phases_s.find("restore"); it != r.phases_s.end()) {
    restore_s += it->second;
    ++restores;
  }
}

bool CheckpointCosts::pays(double import_s, unsigned later_runs) const {
  // Each later run restores instead of importing; the save is paid once.  The restored runs'
  // other phases are taken to cost what the first run's do.
  return later_runs > 0 &&
         later_runs * (import_s - mean(restore_s, restores)) > mean(save_s, saves);
}

std::string CheckpointCosts::why_not(double import_s, unsigned later_runs) const {
  if (later_runs == 0) return "no later run would start from it";
  return "preparing the image took " + seconds(import_s) +
         "; a checkpoint would save less than it costs over " + std::to_string(later_runs) +
         " later run(s) (saving one takes " + seconds(mean(save_s, saves)) + ", restoring one " +
         seconds(mean(restore_s, restores)) + ": this driver's means over " +
         std::to_string(saves) + " save(s) and " + std::to_string(restores) + " restore(s))";
}

}  // namespace cowlab::scenario
