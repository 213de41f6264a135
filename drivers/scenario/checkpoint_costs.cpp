// When an image checkpoint pays for itself (CheckpointCosts, scenario.h).
#include <algorithm>
#include <cstdio>
#include <utility>

#include "cowlab/scenario.h"

namespace cowlab::scenario {

namespace {

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}

double phase(const RunResult& r, const char* name) {
  auto it = r.phases_s.find(name);
  return it == r.phases_s.end() ? 0.0 : it->second;
}

std::string cell_key(const RunResult& r) {
  std::string k = r.file + '\0' + r.scenario;
  for (const auto& [name, value] : r.sweep) k += '\0' + name + '=' + value;
  return k;
}

// y at x on the polyline through `xy` (sorted by x here); std::nullopt outside the points'
// range or with none.
std::optional<double> interpolate(std::vector<std::pair<double, double>> xy, double x) {
  if (xy.empty()) return std::nullopt;
  std::sort(xy.begin(), xy.end());
  if (x < xy.front().first || x > xy.back().first) return std::nullopt;
  if (x == xy.front().first) return xy.front().second;
  for (size_t i = 1; i < xy.size(); ++i) {
    const auto& [x0, y0] = xy[i - 1];
    const auto& [x1, y1] = xy[i];
    if (x <= x1) return x1 > x0 ? y0 + (y1 - y0) * (x - x0) / (x1 - x0) : y1;
  }
  return xy.back().second;
}

}  // namespace

void CheckpointCosts::add(const RunResult& r) {
  if (r.phases_s.count("checkpoint")) {
    cells[cell_key(r)] = points.size();
    points.push_back({phase(r, "backing") + phase(r, "layers") + phase(r, "digests"),
                      phase(r, "checkpoint"), 0, 0});
  } else if (r.phases_s.count("restore")) {
    auto it = cells.find(cell_key(r));
    if (it == cells.end()) return;  // its save was not counted (a run killed at its timeout)
    points[it->second].restore_s += phase(r, "restore");
    ++points[it->second].restores;
  }
}

std::optional<CheckpointCosts::Estimate> CheckpointCosts::estimate(double import_s) const {
  std::vector<std::pair<double, double>> saves, restores;
  for (const auto& p : points) {
    saves.emplace_back(p.import_s, p.save_s);
    if (p.restores) restores.emplace_back(p.import_s, p.restore_s / p.restores);
  }
  auto save = interpolate(saves, import_s);
  if (!save) return std::nullopt;
  // Saved but not restored yet: nothing says a restore costs anything.
  auto restore = restores.empty() ? std::optional<double>(0.0) : interpolate(restores, import_s);
  if (!restore) return std::nullopt;
  return Estimate{*save, *restore};
}

bool CheckpointCosts::pays(double import_s, unsigned later_runs) const {
  if (later_runs == 0) return false;
  auto e = estimate(import_s);
  // Each later run restores instead of importing; the save is paid once.  The restored runs'
  // other phases are taken to cost what the first run's do.
  return !e || later_runs * (import_s - e->restore_s) > e->save_s;
}

std::string CheckpointCosts::why_not(double import_s, unsigned later_runs) const {
  if (later_runs == 0) return "no later run would start from it";
  auto e = estimate(import_s).value_or(Estimate{});
  return "preparing the image took " + seconds(import_s) +
         "; a checkpoint would save less than it costs over " + std::to_string(later_runs) +
         " later run(s) (saving one takes " + seconds(e.save_s) + ", restoring one " +
         seconds(e.restore_s) + ", as estimated from this driver's " +
         std::to_string(points.size()) + " checkpoint(s) so far)";
}

}  // namespace cowlab::scenario
