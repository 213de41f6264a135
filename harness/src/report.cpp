// Matrix reports.  The HTML report is one self-contained file (inline CSS and SVG charts, no
// scripts), so it can be attached to a release sign-off as is.
#include "cowlab/harness/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cowlab/fs.h"
#include "cowlab/harness/verdict.h"
#include "cowlab/sys.h"

namespace cowlab::harness {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t') o += ' ';
        else o += c;
    }
  }
  return o;
}

int severity(const std::string& status) {
  static const std::map<std::string, int> k = {{"pass", 0}, {"skip", 1}, {"flaky", 2}, {"fail", 3}, {"timeout", 4},
                                               {"error", 5}, {"panic", 6}};
  auto it = k.find(status);
  return it == k.end() ? 5 : it->second;
}

std::string sweep_label(const json& r) {
  std::string s;
  if (r.contains("sweep") && r["sweep"].is_object())
    for (auto& [k, v] : r["sweep"].items()) s += (s.empty() ? "" : ",") + k + "=" + v.get<std::string>();
  return s;
}

std::string cell_id(const json& r) {
  std::string id = r.value("profile", "host") + "__" + r.value("driver", "") + "__" + r.value("scenario", "");
  std::string sw = sweep_label(r);
  if (!sw.empty()) id += "__" + sw;
  for (auto& c : id)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  return id;
}

Result<void> write_text(const fs::path& p, const std::string& text) {
  return sys::write_file_atomic(p.string(), text, 0644);
}

// ---- charts ---------------------------------------------------------------------------------
struct Point {
  double x, y;
};
struct ChartSpec {
  std::string title, scenario, xlabel, ylabel;
  std::function<std::vector<Point>(const json&)> points;  // from one result
};

double meas(const json& r, const std::string& k) {
  if (!r.contains("measurements") || !r["measurements"].contains(k) || !r["measurements"][k].is_number()) return NAN;
  return r["measurements"][k].get<double>();
}

double sweep_size_mib(const json& r, const std::string& k) {
  if (!r.contains("sweep") || !r["sweep"].contains(k)) return NAN;
  auto v = parse_size(r["sweep"][k].get<std::string>());
  return v.ok() ? static_cast<double>(*v) / (1 << 20) : NAN;
}

const std::vector<ChartSpec>& charts() {
  static const std::vector<ChartSpec> k = {
      {"Copy-up bytes vs file size (1-byte write)", "copy-up-file-level", "image file size (MiB)",
       "allocated by the write (MiB)",
       [](const json& r) -> std::vector<Point> {
         return {{sweep_size_mib(r, "size"), meas(r, "copy_up") / (1 << 20)}};
       }},
      {"Copy-up latency vs file size", "copy-up-file-level", "image file size (MiB)", "first write (ms)",
       [](const json& r) -> std::vector<Point> {
         return {{sweep_size_mib(r, "size"), meas(r, "copy_up_time") * 1000}};
       }},
      {"Lookup latency vs layer depth", "lookup-vs-depth", "layers in the image", "µs per negative lookup",
       [](const json& r) -> std::vector<Point> {
         return {{1, meas(r, "lookup_1") / 5000 * 1e6}, {64, meas(r, "lookup_64") / 5000 * 1e6}};
       }},
      {"Page-cache growth vs containers reading one file", "page-cache-sharing", "containers that read the file",
       "page cache growth (MiB)",
       [](const json& r) -> std::vector<Point> {
         std::vector<Point> p;
         double sum = 0;
         for (int i = 1; i <= 4; ++i) {
           sum += meas(r, "cache_" + std::to_string(i));
           p.push_back({static_cast<double>(i), sum / (1 << 20)});
         }
         return p;
       }},
      {"Container create time vs image size", "create-cost-vs-image-size", "image size (MiB)", "create time (ms)",
       [](const json& r) -> std::vector<Point> {
         return {{16, meas(r, "create.c-small.time") * 1000}, {128, meas(r, "create.c-big.time") * 1000}};
       }},
      {"Container create space vs image size", "create-cost-vs-image-size", "image size (MiB)",
       "space allocated by create (MiB)",
       [](const json& r) -> std::vector<Point> {
         return {{16, meas(r, "create.c-small.space") / (1 << 20)}, {128, meas(r, "create.c-big.space") / (1 << 20)}};
       }},
  };
  return k;
}

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};

std::string fmt(double v) {
  char b[32];
  if (std::fabs(v) >= 100) std::snprintf(b, sizeof b, "%.0f", v);
  else if (std::fabs(v) >= 1) std::snprintf(b, sizeof b, "%.1f", v);
  else std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

std::string svg_chart(const std::string& title, const std::string& xl, const std::string& yl,
                      const std::map<std::string, std::vector<Point>>& series) {
  const double W = 520, H = 300, L = 60, R = 130, T = 30, B = 45;
  double xmin = INFINITY, xmax = -INFINITY, ymin = 0, ymax = -INFINITY;
  for (const auto& [name, pts] : series)
    for (const auto& p : pts) {
      if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
      xmin = std::min(xmin, p.x);
      xmax = std::max(xmax, p.x);
      ymax = std::max(ymax, p.y);
      ymin = std::min(ymin, p.y);
    }
  std::ostringstream o;
  o << "<svg class='chart' width='" << W << "' height='" << H << "' viewBox='0 0 " << W << " " << H << "'>";
  o << "<text x='" << W / 2 << "' y='18' text-anchor='middle' class='ct'>" << esc(title) << "</text>";
  if (!std::isfinite(xmin)) {
    o << "<text x='" << W / 2 << "' y='" << H / 2 << "' text-anchor='middle'>no measurements</text></svg>";
    return o.str();
  }
  if (xmax == xmin) xmax = xmin + 1;
  if (ymax <= ymin) ymax = ymin + 1;
  ymax *= 1.08;
  auto X = [&](double x) { return L + (x - xmin) / (xmax - xmin) * (W - L - R); };
  auto Y = [&](double y) { return H - B - (y - ymin) / (ymax - ymin) * (H - T - B); };
  o << "<line x1='" << L << "' y1='" << H - B << "' x2='" << W - R << "' y2='" << H - B << "' class='ax'/>";
  o << "<line x1='" << L << "' y1='" << T << "' x2='" << L << "' y2='" << H - B << "' class='ax'/>";
  for (int i = 0; i <= 4; ++i) {
    double yv = ymin + (ymax - ymin) * i / 4, xv = xmin + (xmax - xmin) * i / 4;
    o << "<text x='" << L - 5 << "' y='" << Y(yv) + 4 << "' text-anchor='end' class='tk'>" << fmt(yv) << "</text>";
    o << "<line x1='" << L << "' y1='" << Y(yv) << "' x2='" << W - R << "' y2='" << Y(yv) << "' class='gr'/>";
    o << "<text x='" << X(xv) << "' y='" << H - B + 15 << "' text-anchor='middle' class='tk'>" << fmt(xv) << "</text>";
  }
  o << "<text x='" << (L + W - R) / 2 << "' y='" << H - 8 << "' text-anchor='middle' class='al'>" << esc(xl) << "</text>";
  o << "<text x='14' y='" << (T + H - B) / 2 << "' text-anchor='middle' class='al' transform='rotate(-90 14 "
    << (T + H - B) / 2 << ")'>" << esc(yl) << "</text>";
  int i = 0;
  for (const auto& [name, pts0] : series) {
    std::vector<Point> pts;
    for (const auto& p : pts0)
      if (std::isfinite(p.x) && std::isfinite(p.y)) pts.push_back(p);
    std::sort(pts.begin(), pts.end(), [](const Point& a, const Point& b) { return a.x < b.x; });
    const char* c = kColors[i % 8];
    std::string poly;
    for (const auto& p : pts) poly += fmt(X(p.x)) + "," + fmt(Y(p.y)) + " ";
    o << "<polyline fill='none' stroke='" << c << "' stroke-width='2' points='" << poly << "'/>";
    for (const auto& p : pts)
      o << "<circle cx='" << X(p.x) << "' cy='" << Y(p.y) << "' r='3' fill='" << c << "'><title>" << esc(name)
        << ": " << fmt(p.x) << " → " << fmt(p.y) << "</title></circle>";
    o << "<rect x='" << W - R + 10 << "' y='" << T + 16 * i << "' width='10' height='10' fill='" << c << "'/>";
    o << "<text x='" << W - R + 24 << "' y='" << T + 9 + 16 * i << "' class='tk'>" << esc(name) << "</text>";
    ++i;
  }
  o << "</svg>";
  return o.str();
}

// ---- the pieces ---------------------------------------------------------------------------
std::string junit(const MatrixReport& rep, const std::vector<json>& rs) {
  std::map<std::string, std::vector<const json*>> by_profile;
  for (const auto& r : rs) by_profile[r.value("profile", "host")].push_back(&r);
  std::ostringstream o;
  o << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"cowlab matrix\">\n";
  for (const auto& [profile, list] : by_profile) {
    int failures = 0, errors = 0, skipped = 0;
    double time = 0;
    for (const auto* r : list) {
      std::string st = r->value("status", "error");
      if (st == "fail") ++failures;
      else if (st == "skip") ++skipped;
      else if (st != "pass") ++errors;
      time += r->value("duration_s", 0.0);
    }
    o << "  <testsuite name=\"" << esc(profile) << "\" tests=\"" << list.size() << "\" failures=\"" << failures
      << "\" errors=\"" << errors << "\" skipped=\"" << skipped << "\" time=\"" << time << "\">\n";
    for (const auto* r : list) {
      std::string name = r->value("scenario", "?");
      std::string sw = sweep_label(*r);
      if (!sw.empty()) name += "[" + sw + "]";
      o << "    <testcase classname=\"" << esc(profile + "." + r->value("driver", "")) << "\" name=\"" << esc(name)
        << "\" time=\"" << r->value("duration_s", 0.0) << "\">";
      std::string st = r->value("status", "error");
      if (st == "flaky") {
        // A flaky cell is a passing testcase (JUnit has no flaky outcome) carrying a `flaky`
        // property with passes/runs and the failing runs' messages in system-out.
        std::string runs;
        for (const auto& line : r->value("flaky_runs", json::array())) runs += line.get<std::string>() + "\n";
        o << "<properties><property name=\"flaky\" value=\"" << esc(pass_fraction(r->dump()))
          << "\"/></properties><system-out>" << esc(runs) << "</system-out>";
      } else if (st == "fail") {
        std::string text;
        for (const auto& f : (*r)["failures"])
          text += f.value("expectation", "") + ": expected " + f.value("expected", "") + ", observed " +
                  f.value("observed", "") + "\n";
        o << "<failure message=\"" << esc(std::to_string((*r)["failures"].size()) + " expectation(s) failed")
          << "\">" << esc(text) << "</failure>";
      } else if (st == "skip") {
        o << "<skipped message=\"" << esc(r->value("reason", "")) << "\"/>";
      } else if (st != "pass") {
        o << "<error type=\"" << esc(st) << "\" message=\"" << esc(r->value("reason", "")) << "\">"
          << esc(r->value("console_excerpt", "")) << "</error>";
      }
      o << "</testcase>\n";
    }
    o << "  </testsuite>\n";
  }
  o << "</testsuites>\n";
  return o.str();
}

std::string html(const MatrixReport& rep, const std::vector<json>& rs) {
  std::ostringstream o;
  std::set<std::string> scenarios;
  std::map<std::string, std::string> descriptions;
  for (const auto& r : rs) scenarios.insert(r.value("scenario", "?"));
  // worst status per (scenario, profile, driver) over sweep points
  std::map<std::tuple<std::string, std::string, std::string>, const json*> worst;
  for (const auto& r : rs) {
    auto key = std::make_tuple(r.value("scenario", "?"), r.value("profile", "host"), r.value("driver", ""));
    auto it = worst.find(key);
    if (it == worst.end() || severity(r.value("status", "error")) > severity(it->second->value("status", "error")))
      worst[key] = &r;
  }
  std::time_t now = std::time(nullptr);
  char when[64];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  o << "<!DOCTYPE html><html><head><meta charset='utf-8'><title>cowlab matrix report</title><style>"
       "body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse}"
       "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}th{background:#f3f3f3}"
       ".pass{background:#c8efc8}.fail{background:#f7b2b2}.skip{background:#eee;color:#777}"
       ".flaky{background:#fff3a0}.error{background:#f7d39a}.timeout{background:#f0c0f0}.panic{background:#b00;color:#fff}"
       "td.c a{color:inherit;text-decoration:none;display:block}pre{background:#f6f6f6;padding:8px;"
       "overflow:auto;max-height:300px;font-size:12px}.chart{margin:8px;border:1px solid #ddd}"
       ".ax{stroke:#333}.gr{stroke:#eee}.tk{font-size:10px}.al{font-size:11px}.ct{font-size:13px;font-weight:bold}"
       "</style></head><body>";
  o << "<h1>cowlab matrix report</h1><p>Generated " << when << " by <code>" << esc(rep.command) << "</code>; wall time "
    << fmt(rep.wall_seconds) << " s.</p>";
  o << "<table><tr><th>profile</th><th>kernel</th><th>acceleration</th></tr>";
  for (const auto& p : rep.profiles)
    o << "<tr><td>" << esc(p.name) << "</td><td>" << esc(p.kernel_release) << "</td><td>" << esc(p.accel) << "</td></tr>";
  o << "</table><p>";
  for (const auto& [st, n] : status_counts(rep)) o << "<span class='" << esc(st) << "'>&nbsp;" << esc(st) << ": " << n << "&nbsp;</span> ";
  o << "</p><h2>Matrix</h2><table><tr><th rowspan=2>scenario</th>";
  for (const auto& p : rep.profiles) o << "<th colspan=" << rep.drivers.size() << ">" << esc(p.name) << "</th>";
  o << "</tr><tr>";
  for (size_t i = 0; i < rep.profiles.size(); ++i)
    for (const auto& d : rep.drivers) o << "<th>" << esc(d) << "</th>";
  o << "</tr>";
  for (const auto& s : scenarios) {
    o << "<tr><td>" << esc(s) << "</td>";
    for (const auto& p : rep.profiles)
      for (const auto& d : rep.drivers) {
        auto it = worst.find(std::make_tuple(s, p.name, d));
        if (it == worst.end()) {
          o << "<td></td>";
          continue;
        }
        std::string st = it->second->value("status", "error");
        o << "<td class='c " << esc(st) << "' title='" << esc(it->second->value("reason", "")) << "'>";
        std::string label = st == "flaky" ? "flaky " + pass_fraction(it->second->dump()) : st;
        if (st != "pass") o << "<a href='#" << esc(cell_id(*it->second)) << "'>" << esc(label) << "</a>";
        else o << "pass";
        o << "</td>";
      }
    o << "</tr>";
  }
  o << "</table>";

  o << "<h2>Measured curves</h2>";
  for (const auto& spec : charts()) {
    for (const auto& p : rep.profiles) {
      std::map<std::string, std::vector<Point>> series;
      for (const auto& r : rs) {
        if (r.value("scenario", "") != spec.scenario || r.value("profile", "host") != p.name) continue;
        std::string st = r.value("status", "");
        if (st != "pass" && st != "fail" && st != "flaky") continue;
        for (const auto& pt : spec.points(r)) series[r.value("driver", "")].push_back(pt);
      }
      if (series.empty()) continue;
      o << svg_chart(spec.title + " — " + p.name + " (" + p.kernel_release + ")", spec.xlabel, spec.ylabel, series);
    }
  }

  o << "<h2>Measurements</h2><table><tr><th>scenario</th><th>profile</th><th>driver</th><th>sweep</th><th>measurements</th></tr>";
  for (const auto& r : rs) {
    if (!r.contains("measurements") || r["measurements"].empty()) continue;
    std::string m;
    for (auto& [k, v] : r["measurements"].items())
      m += k + "=" + (v.is_number() ? fmt(v.get<double>()) : std::string("n/a")) + "  ";
    o << "<tr><td>" << esc(r.value("scenario", "")) << "</td><td>" << esc(r.value("profile", "host")) << "</td><td>"
      << esc(r.value("driver", "")) << "</td><td>" << esc(sweep_label(r)) << "</td><td><code>" << esc(m)
      << "</code></td></tr>";
  }
  o << "</table>";

  o << "<h2>Details of cells that did not pass</h2>";
  for (const auto& r : rs) {
    std::string st = r.value("status", "error");
    if (st == "pass") continue;
    o << "<div id='" << esc(cell_id(r)) << "'><h3 class='" << esc(st) << "'>" << esc(r.value("scenario", "")) << " — "
      << esc(r.value("driver", "")) << " on " << esc(r.value("profile", "host")) << " (" << esc(r.value("kernel", ""))
      << ")" << (sweep_label(r).empty() ? "" : " [" + esc(sweep_label(r)) + "]") << ": " << esc(st) << "</h3>";
    if (!r.value("reason", "").empty()) o << "<p>" << esc(r.value("reason", "")) << "</p>";
    if (r.contains("failures") && !r["failures"].empty()) {
      o << "<table><tr><th>expectation</th><th>expected</th><th>observed</th></tr>";
      for (const auto& f : r["failures"])
        o << "<tr><td>" << esc(f.value("expectation", "")) << "</td><td>" << esc(f.value("expected", ""))
          << "</td><td>" << esc(f.value("observed", "")) << "</td></tr>";
      o << "</table>";
    }
    if (st == "flaky") {
      o << "<p>Passed " << esc(pass_fraction(r.dump())) << " runs; the others:</p><ul>";
      for (const auto& line : r.value("flaky_runs", json::array())) o << "<li>" << esc(line.get<std::string>()) << "</li>";
      o << "</ul>";
    }
    if (!r.value("console_excerpt", "").empty()) o << "<pre>" << esc(r.value("console_excerpt", "")) << "</pre>";
    if (st != "skip") o << "<p>Reproducer: <code>reproducers/" << esc(cell_id(r)) << "/rerun.sh</code></p>";
    o << "</div>";
  }
  o << "</body></html>\n";
  return o.str();
}

Result<void> copy_into(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return Error(ErrorKind::kSystem, "copy " + from.string() + " -> " + to.string() + ": " + ec.message(), ec.value());
  return {};
}

Result<void> reproducers(const MatrixReport& rep, const std::vector<json>& rs, const fs::path& out) {
  for (const auto& r : rs) {
    std::string st = r.value("status", "error");
    if (st == "pass" || st == "skip") continue;
    fs::path dir = out / "reproducers" / cell_id(r);
    COWLAB_TRY(sys::mkdir_all(dir.string(), 0755));
    std::string src = r.value("host_file", r.value("file", ""));
    std::string scenario_name = fs::path(src).filename().string();
    if (!src.empty() && fs::exists(src)) {
      COWLAB_TRY(copy_into(src, dir / scenario_name));
      fs::path data = fs::path(src).parent_path() / "data";
      if (fs::is_directory(data)) {
        std::error_code ec;
        fs::copy(data, dir / "data", fs::copy_options::recursive | fs::copy_options::overwrite_existing, ec);
      }
    }
    std::string profile = r.value("profile", "host");
    for (const auto& p : rep.profiles)
      if (p.name == profile && !p.manifest.empty() && fs::exists(p.manifest))
        COWLAB_TRY(copy_into(p.manifest, dir / "profile-manifest.json"));
    std::string cmd;
    if (profile == "host")
      cmd = "cowlab scenario run --driver " + r.value("driver", "") + " \"$here/" + scenario_name + "\"";
    else
      cmd = "cowlab matrix --profiles " + profile + " --drivers " + r.value("driver", "") + " --out \"$here/rerun\" \"$here/" +
            scenario_name + "\"";
    std::string script = "#!/bin/sh\n# Reruns exactly this cell: " + r.value("scenario", "") + " on " +
                         r.value("driver", "") + " / " + profile + " (status was " + st + ").\n" +
                         "# The profile's exact package versions are in profile-manifest.json.\n" +
                         "here=$(cd \"$(dirname \"$0\")\" && pwd)\nexec " + cmd + "\n";
    COWLAB_TRY(sys::write_file_atomic((dir / "rerun.sh").string(), script, 0755));
    COWLAB_TRY(write_text(dir / "result.json", r.dump(2) + "\n"));
  }
  return {};
}

}  // namespace

std::vector<std::pair<std::string, int>> status_counts(const MatrixReport& report) {
  std::map<std::string, int> m;
  for (const auto& line : report.results) {
    try {
      m[json::parse(line).value("status", "error")]++;
    } catch (...) {
      m["error"]++;
    }
  }
  std::vector<std::pair<std::string, int>> out(m.begin(), m.end());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return severity(a.first) < severity(b.first); });
  return out;
}

Result<void> write_report(const MatrixReport& report, const fs::path& out) {
  COWLAB_TRY(sys::mkdir_all(out.string(), 0755));
  std::vector<json> rs;
  for (const auto& line : report.results) {
    try {
      rs.push_back(json::parse(line));
    } catch (const std::exception& e) {
      return Error::invalid(std::string("matrix report: malformed result line: ") + e.what());
    }
  }
  std::stable_sort(rs.begin(), rs.end(), [](const json& a, const json& b) {
    return std::make_tuple(a.value("scenario", ""), a.value("profile", ""), a.value("driver", ""), sweep_label(a)) <
           std::make_tuple(b.value("scenario", ""), b.value("profile", ""), b.value("driver", ""), sweep_label(b));
  });
  json profiles = json::array();
  for (const auto& p : report.profiles)
    profiles.push_back({{"name", p.name}, {"kernel_release", p.kernel_release}, {"manifest", p.manifest.string()},
                        {"accel", p.accel}});
  json doc = {{"command", report.command}, {"wall_seconds", report.wall_seconds}, {"profiles", profiles},
              {"drivers", report.drivers}, {"results", rs}};
  COWLAB_TRY(write_text(out / "results.json", doc.dump(2) + "\n"));
  COWLAB_TRY(write_text(out / "junit.xml", junit(report, rs)));
  COWLAB_TRY(write_text(out / "report.html", html(report, rs)));
  COWLAB_TRY(reproducers(report, rs, out));
  return {};
}

std::string comparison_charts(const std::vector<ChartSide>& sides) {
  std::string labels;
  for (const auto& side : sides) labels += (labels.empty() ? "" : " vs ") + side.label;
  std::string o;
  for (const auto& spec : charts()) {
    std::map<std::string, std::vector<Point>> series;
    for (const auto& side : sides)
      for (const auto& line : side.report->results) {
        json r = json::parse(line, nullptr, false);
        if (r.is_discarded() || r.value("scenario", "") != spec.scenario) continue;
        if (!side.profile.empty() && r.value("profile", "host") != side.profile) continue;
        std::string st = r.value("status", "");
        if (st != "pass" && st != "fail" && st != "flaky") continue;
        for (const auto& pt : spec.points(r)) series[r.value("driver", "") + " · " + side.label].push_back(pt);
      }
    if (!series.empty()) o += svg_chart(spec.title + " — " + labels, spec.xlabel, spec.ylabel, series);
  }
  return o;
}

Result<MatrixReport> read_report(const fs::path& dir) {
  auto text = COWLAB_TRY(sys::read_file((dir / "results.json").string()));
  MatrixReport rep;
  try {
    json doc = json::parse(text);
    rep.command = doc.value("command", "");
    rep.wall_seconds = doc.value("wall_seconds", 0.0);
    for (const auto& p : doc.at("profiles"))
      rep.profiles.push_back({p.value("name", ""), p.value("kernel_release", ""), p.value("manifest", ""), p.value("accel", "")});
    for (const auto& d : doc.at("drivers")) rep.drivers.push_back(d);
    for (const auto& r : doc.at("results")) rep.results.push_back(r.dump());
  } catch (const std::exception& e) {
    return Error::invalid((dir / "results.json").string() + ": not a cowlab matrix result: " + e.what());
  }
  return rep;
}

}  // namespace cowlab::harness
