#include "html_report.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <functional>
#include <map>
#include <set>
#include <tuple>

#include "cowlab/fs.h"
#include "cowlab/harness/verdict.h"
#include "cowlab/units.h"
#include "html_builder.h"
#include "junit.h"  // sweep_label, measurement_unit

namespace cowlab::harness::detail {

namespace {

using json = nlohmann::json;
using html::el;
using html::Node;
using html::text;

int severity(const std::string& status) {
  static const std::map<std::string, int> k = {{"pass", 0}, {"skip", 1},    {"interrupted", 2},
                                               {"fail", 3}, {"timeout", 4}, {"error", 5},
                                               {"panic", 6}};
  auto it = k.find(status);
  return it == k.end() ? 5 : it->second;
}

std::string anchor(const json& r) {
  std::string id =
      r.value("profile", "host") + "__" + r.value("driver", "") + "__" + r.value("scenario", "");
  std::string sw = sweep_label(r);
  if (!sw.empty()) id += "__" + sw;
  for (auto& c : id)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  return id;
}

// ---- charts ---------------------------------------------------------------------------------
struct Point {
  double x, y;
};
struct ChartSpec {
  std::string title, scenario, xlabel, ylabel;
  bool x_integers;  // the x axis counts things (layers, containers)
  std::function<std::vector<Point>(const json&)> points;
};

double meas(const json& r, const std::string& k) {
  if (!r.contains("measurements") || !r["measurements"].contains(k) ||
      !r["measurements"][k].is_number())
    return NAN;
  return r["measurements"][k].get<double>();
}

double sweep_size_mib(const json& r, const std::string& k) {
  if (!r.contains("sweep") || !r["sweep"].contains(k) || !r["sweep"][k].is_string()) return NAN;
  auto v = parse_size(r["sweep"][k].get<std::string>());
  return v.ok() ? static_cast<double>(*v) / (1 << 20) : NAN;
}

const std::vector<ChartSpec>& charts() {
  static const std::vector<ChartSpec> k = {
      {"Copy-up bytes vs file size (1-byte write)", "copy-up-file-level", "image file size (MiB)",
       "allocated by the write (MiB)", false,
       [](const json& r) -> std::vector<Point> {
         return {{sweep_size_mib(r, "size"), meas(r, "copy_up") / (1 << 20)}};
       }},
      {"Copy-up latency vs file size", "copy-up-file-level", "image file size (MiB)",
       "first write (ms)", false,
       [](const json& r) -> std::vector<Point> {
         return {{sweep_size_mib(r, "size"), meas(r, "copy_up_time") * 1000}};
       }},
      {"Lookup latency vs layer depth", "lookup-vs-depth", "layers in the image",
       "per negative lookup (µs)", true,
       [](const json& r) -> std::vector<Point> {
         return {{1, meas(r, "lookup_1") / 5000 * 1e6}, {64, meas(r, "lookup_64") / 5000 * 1e6}};
       }},
      {"Page-cache growth vs containers reading one file", "page-cache-sharing",
       "containers that read the file", "page cache growth (MiB)", true,
       [](const json& r) -> std::vector<Point> {
         std::vector<Point> p;
         double sum = 0;
         for (int i = 1; i <= 4; ++i) {
           sum += meas(r, "cache_" + std::to_string(i));
           p.push_back({static_cast<double>(i), sum / (1 << 20)});
         }
         return p;
       }},
      {"Container create time vs image size", "create-cost-vs-image-size", "image size (MiB)",
       "create time (ms)", false,
       [](const json& r) -> std::vector<Point> {
         return {{16, meas(r, "create.c-small.time") * 1000},
                 {128, meas(r, "create.c-big.time") * 1000}};
       }},
      {"Container create space vs image size", "create-cost-vs-image-size", "image size (MiB)",
       "space allocated by create (MiB)", false,
       [](const json& r) -> std::vector<Point> {
         return {{16, meas(r, "create.c-small.space") / (1 << 20)},
                 {128, meas(r, "create.c-big.space") / (1 << 20)}};
       }},
  };
  return k;
}

std::string tick_label(double v, double step) {
  char b[32];
  int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  std::snprintf(b, sizeof b, "%.*f", std::min(decimals, 6), v);
  std::string s = b;
  return s == "-0" ? "0" : s;
}

// `series` by name: a driver ("overlay"), or "DRIVER · SIDE" in a comparison, where the series
// named in `dashed` are drawn dashed (same driver, same colour, the other side).
Node chart(const std::string& title, const ChartSpec& spec,
           const std::map<std::string, std::vector<Point>>& series,
           const std::set<std::string>& dashed = {}) {
  const double W = 560, H = 320, L = 64, R = 120, T = 14, B = 46;
  double xmin = INFINITY, xmax = -INFINITY, ymin = 0, ymax = -INFINITY;
  for (const auto& [name, pts] : series)
    for (const auto& p : pts) {
      if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
      xmin = std::min(xmin, p.x);
      xmax = std::max(xmax, p.x);
      ymin = std::min(ymin, p.y);
      ymax = std::max(ymax, p.y);
    }
  auto xt = nice_ticks(xmin, xmax, 5, spec.x_integers);
  auto yt = nice_ticks(ymin, ymax, 5, false);
  double x0 = xt.front(), x1 = xt.back(), y0 = yt.front(), y1 = yt.back();
  double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1, ystep = yt.size() > 1 ? yt[1] - yt[0] : 1;
  auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto Y = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  Node svg = el("svg", {{"class", "chart"},
                        {"width", html::number(W)},
                        {"height", html::number(H)},
                        {"viewBox", "0 0 " + html::number(W) + " " + html::number(H)}});
  svg.add(el("line", {{"x1", html::number(L)},
                      {"y1", html::number(H - B)},
                      {"x2", html::number(W - R)},
                      {"y2", html::number(H - B)},
                      {"class", "ax"}}));
  svg.add(el("line", {{"x1", html::number(L)},
                      {"y1", html::number(T)},
                      {"x2", html::number(L)},
                      {"y2", html::number(H - B)},
                      {"class", "ax"}}));
  for (double v : yt) {
    svg.add(el("line", {{"x1", html::number(L)},
                        {"y1", html::number(Y(v))},
                        {"x2", html::number(W - R)},
                        {"y2", html::number(Y(v))},
                        {"class", "gr"}}));
    svg.add(el("text",
               {{"x", html::number(L - 5)},
                {"y", html::number(Y(v) + 4)},
                {"text-anchor", "end"},
                {"class", "tk"}},
               {text(tick_label(v, ystep))}));
  }
  for (double v : xt)
    svg.add(el("text",
               {{"x", html::number(X(v))},
                {"y", html::number(H - B + 15)},
                {"text-anchor", "middle"},
                {"class", "tk"}},
               {text(tick_label(v, xstep))}));
  svg.add(el("text",
             {{"x", html::number((L + W - R) / 2)},
              {"y", html::number(H - 10)},
              {"text-anchor", "middle"},
              {"class", "al"}},
             {text(spec.xlabel)}));
  double mid = (T + H - B) / 2;
  svg.add(el("text",
             {{"x", "14"},
              {"y", html::number(mid)},
              {"text-anchor", "middle"},
              {"class", "al"},
              {"transform", "rotate(-90 14 " + html::number(mid) + ")"}},
             {text(spec.ylabel)}));
  int i = 0;
  for (const auto& [name, pts0] : series) {
    std::vector<Point> pts;
    for (const auto& p : pts0)
      if (std::isfinite(p.x) && std::isfinite(p.y)) pts.push_back(p);
    std::sort(pts.begin(), pts.end(), [](const Point& a, const Point& b) { return a.x < b.x; });
    std::string c = driver_colour(name.substr(0, name.find(" · "))), poly;
    for (const auto& p : pts) poly += html::number(X(p.x)) + "," + html::number(Y(p.y)) + " ";
    Node line =
        el("polyline", {{"fill", "none"}, {"stroke", c}, {"stroke-width", "2"}, {"points", poly}});
    if (dashed.count(name)) line.attr("stroke-dasharray", "6 3");
    svg.add(std::move(line));
    for (const auto& p : pts)
      svg.add(
          el("circle",
             {{"cx", html::number(X(p.x))}, {"cy", html::number(Y(p.y))}, {"r", "3"}, {"fill", c}},
             {el("title", {},
                 {text(name + ": " + tick_label(p.x, xstep / 10) + " → " +
                       tick_label(p.y, ystep / 10))})}));
    svg.add(el("rect", {{"x", html::number(W - R + 10)},
                        {"y", html::number(T + 16 * i)},
                        {"width", "10"},
                        {"height", "10"},
                        {"fill", c},
                        {"class", "legend"},
                        {"data-driver", name}}));
    svg.add(
        el("text",
           {{"x", html::number(W - R + 24)}, {"y", html::number(T + 9 + 16 * i)}, {"class", "tk"}},
           {text(name)}));
    ++i;
  }
  return el("figure", {{"class", "chartbox"}},
            {el("figcaption", {}, {text(title)}), std::move(svg)});
}

// A cell whose measurements belong in the charts: it ran to the end (a failed expectation still
// measured; a flaky cell's measurements are medians over its runs).
bool charted(const json& r) {
  std::string st = r.value("status", "");
  return st == "pass" || st == "fail" || st == "flaky";
}

std::string measurements_text(const json& r) {
  std::string m;
  for (auto& [k, v] : r["measurements"].items())
    m += (m.empty() ? "" : "; ") + k + " = " +
         format_quantity(v.is_number() ? v.get<double>() : NAN, measurement_unit(r, k));
  return m;
}

const char* kStyle =
    "body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}th{background:#f3f3f3}"
    ".pass{background:#c8efc8}.fail{background:#f7b2b2}.skip{background:#eee;color:#777}"
    ".error{background:#f7d39a}.timeout{background:#f0c0f0}.panic{background:#b00;color:#fff}"
    ".interrupted{background:#ddd;color:#555}.flaky{background:#fff3a0}"
    "td.c a{color:inherit;text-decoration:none;display:block}pre{background:#f6f6f6;padding:8px;"
    "overflow:auto;max-height:300px;font-size:12px}figure.chartbox{display:inline-block;margin:8px;"
    "border:1px solid "
    "#ddd;vertical-align:top;max-width:560px}figcaption{font-weight:bold;font-size:13px;"
    "padding:6px 8px 0 "
    "8px;overflow-wrap:anywhere}.ax{stroke:#333}.gr{stroke:#eee}.tk{font-size:10px}"
    ".al{font-size:11px}"
    // compare.html's kinds of change (compare.h).
    ".regression,.worse{background:#f7b2b2}.fix,.better{background:#c8efc8}"
    ".partial-fix{background:#dff3c0}.became-flaky,.no-longer-flaky{background:#fff3a0}"
    ".moved,.changed{background:#f7d39a}";

}  // namespace

std::string driver_colour(const std::string& driver) {
  // Fixed per driver (Tableau 10), so overlay is blue in every report and every chart.
  static const std::map<std::string, std::string> k = {
      {"aufs", "#8c564b"},    {"btrfs", "#2ca02c"}, {"devicemapper", "#9467bd"},
      {"overlay", "#1f77b4"}, {"vfs", "#ff7f0e"},   {"zfs", "#d62728"}};
  auto it = k.find(driver);
  return it == k.end() ? "#7f7f7f" : it->second;
}

std::vector<double> nice_ticks(double lo, double hi, int target, bool integers) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (hi < lo) std::swap(lo, hi);
  if (hi == lo) hi = lo + (integers ? 1 : std::max(1.0, std::fabs(lo) * 0.1));
  double raw = (hi - lo) / std::max(1, target);
  double mag = std::pow(10, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  if (integers) step = std::max(1.0, std::round(step));
  double start = std::floor(lo / step) * step, end = std::ceil(hi / step) * step;
  std::vector<double> t;
  for (int i = 0; start + i * step <= end + step * 1e-9 && i < 100; ++i)
    t.push_back(start + i * step);
  if (t.size() < 2) t.push_back(start + step);
  return t;
}

std::string html_report(const MatrixReport& rep, const std::vector<json>& rs) {
  std::set<std::string> scenarios;
  for (const auto& r : rs) scenarios.insert(r.value("scenario", "?"));
  // The worst status per (scenario, profile, driver) over its sweep points.
  std::map<std::tuple<std::string, std::string, std::string>, const json*> worst;
  for (const auto& r : rs) {
    auto key = std::make_tuple(r.value("scenario", "?"), r.value("profile", "host"),
                               r.value("driver", ""));
    auto it = worst.find(key);
    if (it == worst.end() ||
        severity(r.value("status", "error")) > severity(it->second->value("status", "error")))
      worst[key] = &r;
  }
  Node body = el("body");
  body.add(el("h1", {}, {text("cowlab matrix report")}));
  body.add(
      el("p", {},
         {text("Started " + rep.started_utc + " on " + rep.hostname + " by "),
          el("code", {}, {text(rep.command)}),
          text(" (" + rep.cowlab_version + "); wall time " + format_duration_s(rep.wall_seconds) +
               (rep.interrupted ? "; INTERRUPTED: unfinished cells are marked interrupted" : "") +
               ".")}));
  Node profiles = el("table", {},
                     {el("tr", {},
                         {el("th", {}, {text("profile")}), el("th", {}, {text("kernel")}),
                          el("th", {}, {text("acceleration")})})});
  for (const auto& p : rep.profiles)
    profiles.add(el("tr", {},
                    {el("td", {}, {text(p.name)}), el("td", {}, {text(p.kernel_release)}),
                     el("td", {}, {text(p.accel)})}));
  body.add(std::move(profiles));
  Node counts = el("p", {{"class", "counts"}});
  for (const auto& [st, n] : status_counts(rep))
    counts.add(el("span", {{"class", st}}, {text(" " + st + ": " + std::to_string(n) + " ")}))
        .add(text(" "));
  body.add(std::move(counts));

  if (!rs.empty()) {
    body.add(el("h2", {}, {text("Matrix")}));
    Node head1 = el("tr", {}, {el("th", {{"rowspan", "2"}}, {text("scenario")})});
    Node head2 = el("tr");
    for (const auto& p : rep.profiles) {
      head1.add(el("th", {{"colspan", std::to_string(rep.drivers.size())}}, {text(p.name)}));
      for (const auto& d : rep.drivers) head2.add(el("th", {}, {text(d)}));
    }
    Node table = el("table", {{"class", "matrix"}}, {std::move(head1), std::move(head2)});
    for (const auto& s : scenarios) {
      Node row = el("tr", {}, {el("td", {}, {text(s)})});
      for (const auto& p : rep.profiles)
        for (const auto& d : rep.drivers) {
          auto it = worst.find(std::make_tuple(s, p.name, d));
          if (it == worst.end()) {
            row.add(el("td"));
            continue;
          }
          std::string st = it->second->value("status", "error");
          Node td = el("td", {{"class", "c " + st}, {"title", it->second->value("reason", "")}});
          std::string label = st == "flaky" ? "flaky " + pass_fraction(it->second->dump()) : st;
          if (st != "pass")
            td.add(el("a", {{"href", "#" + anchor(*it->second)}}, {text(label)}));
          else
            td.add(text("pass"));
          row.add(std::move(td));
        }
      table.add(std::move(row));
    }
    body.add(std::move(table));
  }

  std::vector<Node> figures;
  for (const auto& spec : charts())
    for (const auto& p : rep.profiles) {
      std::map<std::string, std::vector<Point>> series;
      for (const auto& r : rs) {
        if (r.value("scenario", "") != spec.scenario || r.value("profile", "host") != p.name)
          continue;
        if (!charted(r)) continue;
        for (const auto& pt : spec.points(r))
          if (std::isfinite(pt.x) && std::isfinite(pt.y))
            series[r.value("driver", "")].push_back(pt);
      }
      if (series.empty()) continue;
      figures.push_back(
          chart(spec.title + " — " + p.name + " (" + p.kernel_release + ")", spec, series));
    }
  if (!figures.empty()) {
    body.add(el("h2", {}, {text("Measured curves")}));
    body.add(el("div", {{"class", "charts"}}, std::move(figures)));
  }

  Node mtable = el("table", {{"class", "measurements"}},
                   {el("tr", {},
                       {el("th", {}, {text("scenario")}), el("th", {}, {text("profile")}),
                        el("th", {}, {text("driver")}), el("th", {}, {text("sweep")}),
                        el("th", {}, {text("measurements")})})});
  bool any_measurement = false;
  for (const auto& r : rs) {
    if (!r.contains("measurements") || !r["measurements"].is_object() || r["measurements"].empty())
      continue;
    any_measurement = true;
    mtable.add(
        el("tr", {},
           {el("td", {}, {text(r.value("scenario", ""))}),
            el("td", {}, {text(r.value("profile", "host"))}),
            el("td", {}, {text(r.value("driver", ""))}), el("td", {}, {text(sweep_label(r))}),
            el("td", {}, {text(measurements_text(r))})}));
  }
  if (any_measurement) {
    body.add(el("h2", {}, {text("Measurements")}));
    body.add(std::move(mtable));
  }

  std::vector<Node> details;
  for (const auto& r : rs) {
    std::string st = r.value("status", "error");
    if (st == "pass") continue;
    std::string sw = sweep_label(r);
    Node div = el("div", {{"id", anchor(r)}, {"class", "detail"}});
    div.add(el("h3", {{"class", st}},
               {text(r.value("scenario", "") + " — " + r.value("driver", "") + " on " +
                     r.value("profile", "host") + " (" + r.value("kernel", "") + ")" +
                     (sw.empty() ? "" : " [" + sw + "]") + ": " + st)}));
    if (!r.value("reason", "").empty()) div.add(el("p", {}, {text(r.value("reason", ""))}));
    if (r.contains("failures") && r["failures"].is_array() && !r["failures"].empty()) {
      Node t = el("table", {},
                  {el("tr", {},
                      {el("th", {}, {text("expectation")}), el("th", {}, {text("expected")}),
                       el("th", {}, {text("observed")})})});
      for (const auto& f : r["failures"])
        t.add(el("tr", {},
                 {el("td", {}, {text(f.value("expectation", ""))}),
                  el("td", {}, {text(f.value("expected", ""))}),
                  el("td", {}, {text(f.value("observed", ""))})}));
      div.add(std::move(t));
    }
    if (st == "flaky") {
      div.add(el("p", {}, {text("Passed " + pass_fraction(r.dump()) + " runs; the others:")}));
      Node ul = el("ul");
      for (const auto& line : r.value("flaky_runs", json::array()))
        ul.add(el("li", {}, {text(line.is_string() ? line.get<std::string>() : line.dump())}));
      div.add(std::move(ul));
    }
    if (!r.value("console_excerpt", "").empty())
      div.add(el("pre", {}, {text(r.value("console_excerpt", ""))}));
    Node links = el("p");
    if (!r.value("console_log", "").empty())
      links.add(text("Console: "))
          .add(el("a", {{"href", r.value("console_log", "")}}, {text(r.value("console_log", ""))}))
          .add(text(" "));
    if (!r.value("dmesg_log", "").empty())
      links.add(text("Kernel log: "))
          .add(el("a", {{"href", r.value("dmesg_log", "")}}, {text(r.value("dmesg_log", ""))}))
          .add(text(" "));
    if (st != "skip" && st != "interrupted")
      links.add(text("Reproducer: "))
          .add(el("code", {}, {text("reproducers/" + anchor(r) + "/rerun.sh")}));
    if (!links.empty()) div.add(std::move(links));
    details.push_back(std::move(div));
  }
  if (!details.empty()) {
    body.add(el("h2", {}, {text("Details of cells that did not pass")}));
    body.add(std::move(details));
  }

  return html_page("cowlab matrix report", std::move(body));
}

std::string html_page(const std::string& title, Node body) {
  Node page = el("html", {{"lang", "en"}},
                 {el("head", {},
                     {el("meta", {{"charset", "utf-8"}}), el("title", {}, {text(title)}),
                      el("style", {}, {Node::css(kStyle)})}),
                  std::move(body)});
  return "<!DOCTYPE html>\n" + page.render() + "\n";
}

std::vector<Node> comparison_charts(const std::vector<ChartSide>& sides) {
  std::string labels;
  for (const auto& side : sides) labels += (labels.empty() ? "" : " vs ") + side.label;
  std::vector<Node> out;
  for (const auto& spec : charts()) {
    std::map<std::string, std::vector<Point>> series;
    std::set<std::string> dashed;
    for (size_t i = 0; i < sides.size(); ++i)
      for (const auto& line : sides[i].report->results) {
        json r = json::parse(line, nullptr, false);
        if (r.is_discarded() || r.value("scenario", "") != spec.scenario) continue;
        if (!sides[i].profile.empty() && r.value("profile", "host") != sides[i].profile) continue;
        if (!charted(r)) continue;
        std::string name = r.value("driver", "") + " · " + sides[i].label;
        if (i > 0) dashed.insert(name);
        for (const auto& pt : spec.points(r))
          if (std::isfinite(pt.x) && std::isfinite(pt.y)) series[name].push_back(pt);
      }
    if (!series.empty()) out.push_back(chart(spec.title + " — " + labels, spec, series, dashed));
  }
  return out;
}

}  // namespace cowlab::harness::detail
