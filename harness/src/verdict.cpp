// Folding repeated runs into one verdict per cell (see verdict.h).
#include "cowlab/harness/verdict.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

namespace cowlab::harness {

namespace {

using json = nlohmann::json;

int severity(const std::string& status) {
  static const std::map<std::string, int> k = {{"pass", 0},    {"skip", 1},  {"fail", 3},
                                               {"timeout", 4}, {"error", 5}, {"panic", 6}};
  auto it = k.find(status);
  return it == k.end() ? 5 : it->second;
}

std::string cell_key(const json& r) {
  std::string k = r.value("profile", "host") + "\x1f" + r.value("driver", "") + "\x1f" +
                  r.value("scenario", "");
  if (r.contains("sweep") && r["sweep"].is_object())
    for (auto& [n, v] : r["sweep"].items())
      k += "\x1f" + n + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  return k;
}

// One line saying why a run did not pass: its first failures, else its reason.
std::string run_summary(const json& r) {
  std::string s = "run " + std::to_string(r.value("run", 1)) +
                  (r.value("rerun", false) ? " (rerun)" : "") + ": " + r.value("status", "error");
  if (r.contains("failures") && r["failures"].is_array() && !r["failures"].empty()) {
    for (const auto& f : r["failures"])
      s += "; " + f.value("expectation", "") + ": expected " + f.value("expected", "") +
           ", observed " + f.value("observed", "");
  } else if (!r.value("reason", "").empty()) {
    s += ": " + r.value("reason", "");
  }
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

json fold(const std::vector<json>& runs) {
  std::map<std::string, int> counts;
  for (const auto& r : runs) counts[r.value("status", "error")]++;
  // find, not operator[]: the counts list only the outcomes that occurred.
  auto count = [&](const char* st) {
    auto it = counts.find(st);
    return it == counts.end() ? 0 : it->second;
  };
  int total = static_cast<int>(runs.size()), passes = count("pass"), skips = count("skip");
  std::string status;
  const json* representative = &runs.front();
  if (passes == total) {
    status = "pass";
  } else if (skips == total) {
    status = "skip";
  } else {
    // The first run that did not pass or skip explains the cell.
    for (const auto& r : runs)
      if (r.value("status", "error") != "pass" && r.value("status", "error") != "skip") {
        representative = &r;
        break;
      }
    if (passes > 0) {
      status = "flaky";
    } else {
      status = "skip";
      for (const auto& r : runs)
        if (severity(r.value("status", "error")) > severity(status))
          status = r.value("status", "error");
    }
  }
  json cell = *representative;
  cell.erase("run");
  cell.erase("rerun");
  cell["status"] = status;
  json rc = json::object();
  rc["total"] = total;
  for (const auto& [st, n] : counts) rc[st] = n;
  cell["runs"] = rc;
  if (total == 1) return cell;

  double duration = 0;
  std::map<std::string, std::vector<double>> values;
  json phases = json::object(), tars = {{"built", 0}, {"reused", 0}};
  // Where the runs' images came from, counted, and what became of the checkpoint (distinct
  // notes in run order): one run's "image" would say "import" for a cell whose later runs were
  // all restored.
  json sources = json::object();
  std::vector<std::string> notes, quiesced;
  auto add_distinct = [](std::vector<std::string>& v, const std::string& s) {
    if (!s.empty() && std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
  };
  auto joined = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : "; ") + s;
    return out;
  };
  for (const auto& r : runs) {
    if (r.contains("image") && r["image"].is_object()) {
      const json& im = r["image"];
      std::string src = im.value("source", "");
      if (!src.empty()) sources[src] = sources.value(src, 0) + 1;
      add_distinct(notes, im.value("checkpoint", ""));
      add_distinct(quiesced, im.value("quiesce", ""));
    }
    duration += r.value("duration_s", 0.0);
    // Where the cell's time went, summed over its runs like its duration.
    if (r.contains("phases_s") && r["phases_s"].is_object())
      for (auto& [k, v] : r["phases_s"].items())
        if (v.is_number()) phases[k] = phases.value(k, 0.0) + v.get<double>();
    if (r.contains("layer_tars") && r["layer_tars"].is_object())
      for (const char* k : {"built", "reused"}) tars[k] = tars.value(k, 0) + r["layer_tars"].value(k, 0);
    if (r.contains("measurements") && r["measurements"].is_object())
      for (auto& [k, v] : r["measurements"].items())
        if (v.is_number()) values[k].push_back(v.get<double>());
    if (r.contains("units") && r["units"].is_object())
      for (auto& [k, v] : r["units"].items()) cell["units"][k] = v;
  }
  cell["duration_s"] = duration;
  if (!phases.empty()) cell["phases_s"] = phases;
  if (cell.contains("layer_tars")) cell["layer_tars"] = tars;
  if (cell.contains("image"))
    cell["image"] = {
        {"sources", sources}, {"checkpoint", joined(notes)}, {"quiesce", joined(quiesced)}};
  json m = json::object(), stats = json::object();
  for (const auto& [k, v] : values) {
    m[k] = median(v);
    stats[k] = {{"median", median(v)},
                {"min", *std::min_element(v.begin(), v.end())},
                {"max", *std::max_element(v.begin(), v.end())},
                {"n", v.size()}};
  }
  cell["measurements"] = m;
  cell["measurement_stats"] = stats;
  if (status == "flaky") {
    json lines = json::array();
    for (const auto& r : runs)
      if (r.value("status", "error") != "pass") lines.push_back(run_summary(r));
    cell["flaky_runs"] = lines;
  }
  return cell;
}

}  // namespace

std::vector<std::string> fold_runs(const std::vector<std::string>& results) {
  std::vector<std::string> order;
  std::map<std::string, std::vector<json>> groups;
  std::vector<std::string> out;
  std::vector<std::pair<size_t, std::string>> passthrough;  // unparsable lines stay as they are
  for (const auto& line : results) {
    json r;
    try {
      r = json::parse(line);
    } catch (const std::exception&) {
      passthrough.push_back({order.size(), line});
      continue;
    }
    // Not runs to fold: a cell folded before (a resumed report keeps its finished cells as they
    // were, "runs" and all) and a cell that never ran (interrupted: one per sweep point, so
    // --resume and the report know what is missing).
    if ((r.contains("runs") && !r.contains("run")) || r.value("status", "") == "interrupted") {
      passthrough.push_back({order.size(), line});
      continue;
    }
    std::string k = cell_key(r);
    if (!groups.count(k)) order.push_back(k);
    groups[k].push_back(std::move(r));
  }
  size_t p = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    while (p < passthrough.size() && passthrough[p].first == i)
      out.push_back(passthrough[p++].second);
    out.push_back(fold(groups[order[i]]).dump());
  }
  while (p < passthrough.size()) out.push_back(passthrough[p++].second);
  return out;
}

std::string pass_fraction(const std::string& result_json) {
  try {
    json r = json::parse(result_json);
    if (!r.contains("runs")) return "";
    return std::to_string(r["runs"].value("pass", 0)) + "/" +
           std::to_string(r["runs"].value("total", 0));
  } catch (const std::exception&) {
    return "";
  }
}

}  // namespace cowlab::harness
