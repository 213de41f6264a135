// `cowlab matrix compare`: cell transitions and measurement moves between two matrix results
// (the rules are in compare.h).
#include "cowlab/harness/compare.h"
#include "cowlab/log.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cowlab/fs.h"
#include "cowlab/harness/verdict.h"
#include "cowlab/registry.h"  // split_list
#include "cowlab/sys.h"
#include "html_builder.h"
#include "html_report.h"

namespace cowlab::harness {

namespace {

using njson = nlohmann::json;
namespace fs = std::filesystem;

bool is_bad(const std::string& s) {
  return s == "fail" || s == "timeout" || s == "error" || s == "panic";
}

int bad_rank(const std::string& s) {
  static const std::map<std::string, int> k = {
      {"fail", 1}, {"timeout", 2}, {"error", 3}, {"panic", 4}};
  auto it = k.find(s);
  return it == k.end() ? 0 : it->second;
}

std::string sweep_of(const njson& r) {
  std::string s;
  if (r.contains("sweep") && r["sweep"].is_object())
    for (auto& [k, v] : r["sweep"].items())
      s += (s.empty() ? "" : ",") + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  return s;
}

std::string first_problem(const njson& r) {
  if (r.contains("failures") && r["failures"].is_array() && !r["failures"].empty()) {
    const auto& f = r["failures"][0];
    return f.value("expectation", "") + ": expected " + f.value("expected", "") + ", observed " +
           f.value("observed", "");
  }
  return r.value("reason", "");
}

std::string human(double v, const std::string& unit) {
  char b[64];
  if (unit == "bytes") {
    double a = std::fabs(v);
    if (a >= 1 << 30)
      std::snprintf(b, sizeof b, "%.2f GiB", v / (1 << 30));
    else if (a >= 1 << 20)
      std::snprintf(b, sizeof b, "%.2f MiB", v / (1 << 20));
    else if (a >= 1 << 10)
      std::snprintf(b, sizeof b, "%.1f KiB", v / (1 << 10));
    else
      std::snprintf(b, sizeof b, "%.0f B", v);
  } else if (unit == "s") {
    if (std::fabs(v) < 1)
      std::snprintf(b, sizeof b, "%.1f ms", v * 1000);
    else
      std::snprintf(b, sizeof b, "%.2f s", v);
  } else {
    std::snprintf(b, sizeof b, "%.3g", v);
  }
  return b;
}

struct Side {
  std::map<std::string, njson> cells;  // key -> cell
  std::vector<std::string> order;
};

Side index(const MatrixReport& rep, const std::string& only_profile, bool key_profile) {
  Side s;
  for (const auto& line : rep.results) {
    njson r = njson::parse(line, nullptr, false);
    if (r.is_discarded()) continue;
    if (!only_profile.empty() && r.value("profile", "host") != only_profile) continue;
    std::string key = (key_profile ? r.value("profile", "host") + "\x1f" : "") +
                      r.value("driver", "") + "\x1f" + r.value("scenario", "") + "\x1f" +
                      sweep_of(r);
    if (!s.cells.count(key)) s.order.push_back(key);
    s.cells[key] = r;
  }
  return s;
}

Tolerance default_tolerance(const std::string& unit) {
  Tolerance t;
  if (unit == "bytes") {
    t.relative = 0.10;
    t.absolute = 64 * 1024;
  } else if (unit == "s") {
    t.factor = 2;
    t.absolute = 0.05;
  } else {
    t.factor = 2;
  }
  return t;
}

struct Stat {
  double median, min, max;
  int n;  // runs behind the median (1 for an unrepeated cell)
};

Stat stat_of(const njson& r, const std::string& name) {
  double v = r["measurements"][name].get<double>();
  Stat s{v, v, v, 1};
  if (r.contains("measurement_stats") && r["measurement_stats"].contains(name)) {
    const auto& st = r["measurement_stats"][name];
    s.min = st.value("min", v);
    s.max = st.value("max", v);
    s.n = st.value("n", 1);
  }
  return s;
}

// Whether `b` moved from `a` beyond `t` (compare.h states the rules).
bool beyond(const Stat& a, const Stat& b, const Tolerance& t) {
  if (t.ignore) return false;
  double d = std::fabs(b.median - a.median);
  if (d <= t.absolute) return false;
  if (t.relative > 0) return d > t.relative * std::fabs(a.median);
  if (t.factor > 0) {
    double lo = std::min(std::fabs(a.median), std::fabs(b.median)),
           hi = std::max(std::fabs(a.median), std::fabs(b.median));
    if (!(hi > t.factor * lo)) return false;
    // Outside both runs' min–max: each median outside the other side's range.
    bool b_out = b.median < a.min || b.median > a.max;
    bool a_out = a.median < b.min || a.median > b.max;
    return a_out && b_out;
  }
  return d > 0;
}

Result<double> parse_number(const std::string& text, const std::string& whole) {
  // Sizes with suffixes go through parse_size; plain numbers (seconds, bytes) through stod.
  if (!text.empty() && (std::isalpha(static_cast<unsigned char>(text.back())))) {
    auto v = parse_size(text);
    if (!v.ok()) return Error::usage("tolerance \"" + whole + "\": \"" + text + "\" is not a size");
    return static_cast<double>(*v);
  }
  try {
    size_t used = 0;
    double v = std::stod(text, &used);
    if (used != text.size() || v < 0) throw std::invalid_argument(text);
    return v;
  } catch (const std::exception&) {
    return Error::usage("tolerance \"" + whole + "\": \"" + text +
                        "\" is not a non-negative number");
  }
}

}  // namespace

std::string Tolerance::str() const {
  if (ignore) return "ignored";
  char b[96];
  if (relative > 0)
    std::snprintf(b, sizeof b, "±%g%%", relative * 100);
  else
    std::snprintf(b, sizeof b, "%gx, outside both min–max", factor);
  std::string s = b;
  if (absolute > 0) {
    std::snprintf(b, sizeof b, " and more than %g", absolute);
    s += b;
  }
  return s;
}

Result<Tolerance> parse_tolerance(const std::string& text) {
  Tolerance t;
  if (text == "ignore") {
    t.ignore = true;
    return t;
  }
  auto parts = split_list(text);
  if (parts.empty() || parts.size() > 2)
    return Error::usage("tolerance \"" + text + "\": expected N%, N%,ABS, Nx, Nx,ABS or ignore");
  const std::string& main = parts[0];
  if (main.size() >= 2 && main.back() == '%') {
    t.relative = COWLAB_TRY(parse_number(main.substr(0, main.size() - 1), text)) / 100;
    if (t.relative <= 0)
      return Error::usage("tolerance \"" + text + "\": the percentage must be above 0");
  } else if (main.size() >= 2 && (main.back() == 'x' || main.back() == 'X')) {
    t.factor = COWLAB_TRY(parse_number(main.substr(0, main.size() - 1), text));
    if (t.factor < 1)
      return Error::usage("tolerance \"" + text + "\": the factor must be at least 1");
  } else {
    return Error::usage("tolerance \"" + text + "\": expected N%, N%,ABS, Nx, Nx,ABS or ignore");
  }
  if (parts.size() == 2) t.absolute = COWLAB_TRY(parse_number(parts[1], text));
  return t;
}

int Comparison::regressions() const {
  int n = 0;
  for (const auto& c : cells) n += c.regression;
  for (const auto& m : measurements) n += m.regression;
  return n;
}

Result<Comparison> compare_reports(const MatrixReport& base, const MatrixReport& cand,
                                   const CompareOptions& o) {
  auto has = [](const MatrixReport& r, const std::string& p) {
    for (const auto& x : r.profiles)
      if (x.name == p) return true;
    return false;
  };
  auto names = [](const MatrixReport& r) {
    std::string s;
    for (const auto& x : r.profiles) s += (s.empty() ? "" : ",") + x.name;
    return s.empty() ? std::string("none") : s;
  };
  if (!o.base_profile.empty() && !has(base, o.base_profile))
    return Error::usage("compare: profile \"" + o.base_profile + "\" is not in " +
                        o.base_dir.string() + " (it has " + names(base) + ")");
  if (!o.new_profile.empty() && !has(cand, o.new_profile))
    return Error::usage("compare: profile \"" + o.new_profile + "\" is not in " +
                        o.new_dir.string() + " (it has " + names(cand) + ")");
  bool chosen = !o.base_profile.empty() || !o.new_profile.empty();
  bool key_profile = false;
  if (!chosen && (base.profiles.size() > 1 || cand.profiles.size() > 1)) {
    std::set<std::string> a, b;
    for (const auto& x : base.profiles) a.insert(x.name);
    for (const auto& x : cand.profiles) b.insert(x.name);
    if (a != b)
      return Error::usage("compare: " + o.base_dir.string() + " has profiles " + names(base) +
                          " and " + o.new_dir.string() + " has " + names(cand) +
                          ": choose one each with --profiles A,B");
    key_profile = true;
  }
  Side a = index(base, o.base_profile, key_profile), b = index(cand, o.new_profile, key_profile);

  Comparison c;
  c.base_label = o.base_label;
  c.new_label = o.new_label;
  for (const auto& p : base.profiles)
    if (o.base_profile.empty() || p.name == o.base_profile) c.base_profiles.push_back(p);
  for (const auto& p : cand.profiles)
    if (o.new_profile.empty() || p.name == o.new_profile) c.new_profiles.push_back(p);

  std::vector<std::string> keys = a.order;
  for (const auto& k : b.order)
    if (!a.cells.count(k)) keys.push_back(k);
  for (const auto& k : keys) {
    const njson* x = a.cells.count(k) ? &a.cells[k] : nullptr;
    const njson* y = b.cells.count(k) ? &b.cells[k] : nullptr;
    const njson& any = y ? *y : *x;
    CellChange ch;
    ch.driver = any.value("driver", "");
    ch.scenario = any.value("scenario", "");
    ch.sweep = sweep_of(any);
    ch.profile_base = x ? x->value("profile", "host") : "";
    ch.profile_new = y ? y->value("profile", "host") : "";
    ch.base_status = x ? x->value("status", "error") : "";
    ch.new_status = y ? y->value("status", "error") : "";
    if (x) ch.base_runs = pass_fraction(x->dump());
    if (y) ch.new_runs = pass_fraction(y->dump());
    if (y) ch.detail = first_problem(*y);
    const std::string &s0 = ch.base_status, &s1 = ch.new_status;
    if (!x) {
      ch.kind = is_bad(s1) ? "regression" : "appeared";
      if (is_bad(s1)) ch.detail = "new failure (the cell is not in the baseline): " + ch.detail;
    } else if (!y) {
      ch.kind = "disappeared";
      ch.detail = "";
    } else if (s0 == s1) {
      if (!is_bad(s0) || first_problem(*x) == first_problem(*y))
        ch.kind = "unchanged";
      else
        ch.kind = "changed";  // still failing, for another reason
    } else if ((s0 == "pass" || s0 == "flaky") && is_bad(s1)) {
      ch.kind = "regression";
    } else if (s0 == "skip" && is_bad(s1)) {
      ch.kind = "regression";
      ch.detail = "new failure (skipped in the baseline): " + ch.detail;
    } else if (is_bad(s0) && is_bad(s1)) {
      ch.kind = bad_rank(s1) > bad_rank(s0) ? "regression" : "changed";
    } else if (is_bad(s0) && s1 == "pass") {
      ch.kind = "fix";
    } else if (is_bad(s0) && s1 == "flaky") {
      ch.kind = "partial-fix";
    } else if (s0 == "pass" && s1 == "flaky") {
      ch.kind = "became-flaky";
    } else if (s0 == "flaky" && s1 == "pass") {
      ch.kind = "no-longer-flaky";
    } else if (s1 == "skip") {
      ch.kind = "now-skipped";
      ch.detail = y->value("reason", "");
    } else if (s0 == "skip") {
      ch.kind = "no-longer-skipped";
    } else {
      ch.kind = "changed";
    }
    ch.regression = ch.kind == "regression";
    if (ch.kind == "unchanged")
      ++c.unchanged_cells;
    else
      c.cells.push_back(ch);

    // Measurements of cells that ran on both sides.
    if (!x || !y || !x->contains("measurements") || !y->contains("measurements")) continue;
    for (auto& [name, v0] : (*x)["measurements"].items()) {
      if (!v0.is_number() || !(*y)["measurements"].contains(name) ||
          !(*y)["measurements"][name].is_number())
        continue;
      std::string unit = "ratio";
      if (x->contains("units") && (*x)["units"].contains(name))
        unit = (*x)["units"][name];
      else if (y->contains("units") && (*y)["units"].contains(name))
        unit = (*y)["units"][name];
      Tolerance t = default_tolerance(unit);
      if (auto it = o.tolerances.find(unit); it != o.tolerances.end()) t = it->second;
      if (auto it = o.tolerances.find(name); it != o.tolerances.end()) t = it->second;
      ++c.compared_measurements;
      Stat p = stat_of(*x, name), q = stat_of(*y, name);
      if (!std::isfinite(p.median) || !std::isfinite(q.median) || !beyond(p, q, t)) continue;
      MeasurementChange m;
      m.driver = ch.driver;
      m.scenario = ch.scenario;
      m.sweep = ch.sweep;
      m.profile_base = ch.profile_base;
      m.profile_new = ch.profile_new;
      m.name = name;
      m.unit = unit;
      m.base = p.median, m.base_min = p.min, m.base_max = p.max;
      m.cand = q.median, m.cand_min = q.min, m.cand_max = q.max;
      m.tolerance = t.str();
      if (unit == "bytes" || unit == "s") {
        m.kind = q.median > p.median ? "worse" : "better";
        m.regression = m.kind == "worse";
        if (m.regression && unit == "s" &&
            (p.n < kMinRunsToJudgeTime || q.n < kMinRunsToJudgeTime)) {
          m.regression = false;
          m.note = "not counted: a time is judged on at least " +
                   std::to_string(kMinRunsToJudgeTime) + " runs per side (runs: base " +
                   std::to_string(p.n) + ", candidate " + std::to_string(q.n) + "; use --repeat " +
                   std::to_string(kMinRunsToJudgeTime) + ")";
        }
      } else {
        m.kind = "moved";
      }
      c.measurements.push_back(m);
    }
  }
  return c;
}

std::string Comparison::text() const {
  std::ostringstream o;
  auto side = [](const std::vector<ProfileInfo>& ps) {
    std::string s;
    for (const auto& p : ps) s += (s.empty() ? "" : ", ") + p.name + " (" + p.kernel_release + ")";
    return s;
  };
  o << "compare: " << base_label << " [" << side(base_profiles) << "] -> " << new_label << " ["
    << side(new_profiles) << "]\n";
  static const std::vector<std::pair<std::string, std::string>> kGroups = {
      {"regression", "REGRESSIONS"},
      {"fix", "fixes"},
      {"partial-fix", "partial fixes (fail -> flaky)"},
      {"became-flaky", "became flaky"},
      {"no-longer-flaky", "no longer flaky"},
      {"changed", "changed"},
      {"now-skipped", "now skipped"},
      {"no-longer-skipped", "no longer skipped"},
      {"appeared", "appeared"},
      {"disappeared", "disappeared"}};
  for (const auto& [kind, title] : kGroups) {
    std::vector<const CellChange*> list;
    for (const auto& ch : cells)
      if (ch.kind == kind) list.push_back(&ch);
    if (list.empty()) continue;
    o << "\n" << title << " (" << list.size() << "):\n";
    for (const auto* ch : list) {
      auto st = [](const std::string& s, const std::string& runs) {
        if (s.empty()) return std::string("-");
        return s == "flaky" ? s + " " + runs : s;
      };
      o << "  " << st(ch->base_status, ch->base_runs) << " -> " << st(ch->new_status, ch->new_runs)
        << "  " << ch->driver << "  " << ch->scenario
        << (ch->sweep.empty() ? "" : "[" + ch->sweep + "]");
      if (ch->profile_base != ch->profile_new && !ch->profile_base.empty() &&
          !ch->profile_new.empty())
        o << "  (" << ch->profile_base << " -> " << ch->profile_new << ")";
      if (!ch->detail.empty()) o << "\n      " << ch->detail;
      o << "\n";
    }
  }
  if (!measurements.empty()) {
    o << "\nmeasurements beyond tolerance (" << measurements.size() << "):\n";
    for (const auto& m : measurements) {
      char pct[32] = "";
      if (m.base != 0)
        std::snprintf(pct, sizeof pct, " (%+.0f%%)", (m.cand - m.base) / std::fabs(m.base) * 100);
      o << "  "
        << (m.kind == "worse"    ? "WORSE "
            : m.kind == "better" ? "better"
                                 : "moved ")
        << "  " << m.driver << "  " << m.scenario << (m.sweep.empty() ? "" : "[" + m.sweep + "]")
        << "  " << m.name << ": " << human(m.base, m.unit) << " -> " << human(m.cand, m.unit) << pct
        << "  [tolerance " << m.tolerance << "]" << (m.note.empty() ? "" : "  " + m.note) << "\n";
    }
  }
  o << "\n"
    << unchanged_cells << " cells unchanged, " << cells.size() << " changed, "
    << compared_measurements << " measurements compared\n";
  int r = regressions();
  o << "verdict: " << (r ? std::to_string(r) + " regression(s)" : std::string("no regression"))
    << "\n";
  return o.str();
}

std::string Comparison::json() const {
  auto profiles = [](const std::vector<ProfileInfo>& ps) {
    njson a = njson::array();
    for (const auto& p : ps) a.push_back({{"name", p.name}, {"kernel_release", p.kernel_release}});
    return a;
  };
  njson cs = njson::array(), ms = njson::array();
  for (const auto& ch : cells)
    cs.push_back({{"kind", ch.kind},
                  {"regression", ch.regression},
                  {"driver", ch.driver},
                  {"scenario", ch.scenario},
                  {"sweep", ch.sweep},
                  {"profile_base", ch.profile_base},
                  {"profile_new", ch.profile_new},
                  {"base_status", ch.base_status},
                  {"new_status", ch.new_status},
                  {"base_runs", ch.base_runs},
                  {"new_runs", ch.new_runs},
                  {"detail", ch.detail}});
  for (const auto& m : measurements)
    ms.push_back({{"kind", m.kind},
                  {"regression", m.regression},
                  {"driver", m.driver},
                  {"scenario", m.scenario},
                  {"sweep", m.sweep},
                  {"name", m.name},
                  {"unit", m.unit},
                  {"profile_base", m.profile_base},
                  {"profile_new", m.profile_new},
                  {"base", {{"median", m.base}, {"min", m.base_min}, {"max", m.base_max}}},
                  {"new", {{"median", m.cand}, {"min", m.cand_min}, {"max", m.cand_max}}},
                  {"tolerance", m.tolerance},
                  {"note", m.note}});
  njson doc = {{"base", {{"label", base_label}, {"profiles", profiles(base_profiles)}}},
               {"new", {{"label", new_label}, {"profiles", profiles(new_profiles)}}},
               {"regressions", regressions()},
               {"unchanged_cells", unchanged_cells},
               {"compared_measurements", compared_measurements},
               {"cells", cs},
               {"measurements", ms}};
  return doc.dump(2) + "\n";
}

Result<void> write_comparison(const Comparison& c, const MatrixReport& base,
                              const MatrixReport& cand, const fs::path& out) {
  using html::el;
  using html::Node;
  using html::text;
  COWLAB_TRY(sys::mkdir_all(out.string(), 0755));
  COWLAB_TRY(sys::write_file_atomic((out / "compare.json").string(), c.json(), 0644));
  auto cell = [](std::string s) { return el("td", {}, {text(std::move(s))}); };
  auto head = [](std::vector<std::string> names) {
    Node tr = el("tr");
    for (auto& n : names) tr.add(el("th", {}, {text(std::move(n))}));
    return tr;
  };
  auto with_sweep = [](const std::string& scenario, const std::string& sweep) {
    return sweep.empty() ? scenario : scenario + " [" + sweep + "]";
  };
  auto status = [](const std::string& st, const std::string& runs) {
    return st == "flaky" ? st + " " + runs : st;
  };
  auto range = [](double median, double lo, double hi, const std::string& unit) {
    return human(median, unit) + " [" + human(lo, unit) + "–" + human(hi, unit) + "]";
  };

  Node section = el("section", {{"id", "comparison"}});
  std::string verdict =
      c.regressions() ? std::to_string(c.regressions()) + " regression(s)" : "no regression";
  section.add(
      el("p", {{"class", "verdict"}},
         {el("b", {}, {text(c.base_label)}), text(" vs "), el("b", {}, {text(c.new_label)}),
          text(": " + verdict + "; " + std::to_string(c.unchanged_cells) + " cells unchanged, " +
               std::to_string(c.compared_measurements) + " measurements compared.")}));
  Node profiles = el("table", {{"class", "profiles"}}, {head({"side", "profile", "kernel"})});
  for (const auto& [label, list] :
       {std::pair{&c.base_label, &c.base_profiles}, std::pair{&c.new_label, &c.new_profiles}})
    for (const auto& p : *list)
      profiles.add(el("tr", {}, {cell(*label), cell(p.name), cell(p.kernel_release)}));
  section.add(std::move(profiles));

  section.add(el("h2", {}, {text("Cells that changed")}));
  if (c.cells.empty()) {
    section.add(el("p", {}, {text("None.")}));
  } else {
    Node t = el("table", {{"class", "cells"}},
                {head({"change", "driver", "scenario", c.base_label, c.new_label, "detail"})});
    for (const auto& ch : c.cells)
      t.add(el("tr", {{"class", ch.kind}},
               {cell(ch.kind), cell(ch.driver), cell(with_sweep(ch.scenario, ch.sweep)),
                cell(status(ch.base_status, ch.base_runs)),
                cell(status(ch.new_status, ch.new_runs)), cell(ch.detail)}));
    section.add(std::move(t));
  }

  section.add(el("h2", {}, {text("Measurements beyond tolerance")}));
  if (c.measurements.empty()) {
    section.add(el("p", {}, {text("None.")}));
  } else {
    Node t =
        el("table", {{"class", "measurements"}},
           {head({"change", "driver", "scenario", "measurement", c.base_label + " median [min–max]",
                  c.new_label + " median [min–max]", "tolerance"})});
    for (const auto& m : c.measurements) {
      Node tol = el("td", {}, {text(m.tolerance)});
      if (!m.note.empty()) tol.add(el("br")).add(text(m.note));
      t.add(el("tr", {{"class", m.kind}},
               {cell(m.kind), cell(m.driver), cell(with_sweep(m.scenario, m.sweep)), cell(m.name),
                cell(range(m.base, m.base_min, m.base_max, m.unit)),
                cell(range(m.cand, m.cand_min, m.cand_max, m.unit)), std::move(tol)}));
    }
    section.add(std::move(t));
  }

  // Like report.html: no heading over nothing.
  std::string bp = c.base_profiles.size() == 1 ? c.base_profiles[0].name : "";
  std::string np = c.new_profiles.size() == 1 ? c.new_profiles[0].name : "";
  auto charts = detail::comparison_charts({{c.base_label, &base, bp}, {c.new_label, &cand, np}});
  if (!charts.empty()) {
    section.add(el("h2", {}, {text("Measured curves, both sides")}));
    section.add(std::move(charts));
  }
  Node body = el("body", {}, {el("h1", {}, {text("cowlab matrix compare")}), std::move(section)});
  COWLAB_TRY(sys::write_file_atomic((out / "compare.html").string(),
                                    detail::html_page("cowlab matrix compare", std::move(body)),
                                    0644));
  return {};
}

namespace {

struct CompareArgs {
  std::vector<std::string> dirs;
  std::string out, profiles;
  std::vector<std::string> tolerances;
};

int compare_command(const CompareArgs& a) {
  const auto& dirs = a.dirs;
  const auto& out = a.out;
  const auto& profiles = a.profiles;
  const auto& tolerances = a.tolerances;
  auto usage = [](const std::string& m) {
    spdlog::error("cowlab matrix compare: {}", m);
    return 2;
  };
  CompareOptions o;
  if (!profiles.empty()) {
    auto p = split_list(profiles);
    if (p.size() != 2)
      return usage("--profiles takes two profile names A,B, got \"" + profiles + "\"");
    o.base_profile = p[0];
    o.new_profile = p[1];
  }
  if (dirs.size() == 1 && profiles.empty())
    return usage("one directory needs --profiles A,B (or give BASE NEW)");
  if (dirs.size() > 2) return usage("give BASE NEW, or one directory with --profiles A,B");
  for (const auto& t : tolerances) {
    size_t eq = t.find('=');
    if (eq == std::string::npos || eq == 0)
      return usage("--tolerance \"" + t + "\": expected NAME=T");
    auto tol = parse_tolerance(t.substr(eq + 1));
    if (!tol.ok()) return usage("--tolerance " + tol.error().message());
    o.tolerances[t.substr(0, eq)] = *tol;
  }
  o.base_dir = dirs[0];
  o.new_dir = dirs.size() == 2 ? dirs[1] : dirs[0];
  auto base = read_report(o.base_dir);
  if (!base.ok()) {
    spdlog::error("cowlab matrix compare: {}", base.error().message());
    return 1;
  }
  auto cand = read_report(o.new_dir);
  if (!cand.ok()) {
    spdlog::error("cowlab matrix compare: {}", cand.error().message());
    return 1;
  }
  if (dirs.size() == 2) {
    o.base_label = o.base_dir.filename().empty() ? o.base_dir.parent_path().filename().string()
                                                 : o.base_dir.filename().string();
    o.new_label = o.new_dir.filename().empty() ? o.new_dir.parent_path().filename().string()
                                               : o.new_dir.filename().string();
    if (o.base_label == o.new_label) o.base_label = "baseline", o.new_label = "candidate";
  } else {
    o.base_label = o.base_profile;
    o.new_label = o.new_profile;
  }
  auto c = compare_reports(*base, *cand, o);
  if (!c.ok()) {
    spdlog::error("cowlab matrix compare: {}", c.error().message());
    return c.error().kind() == ErrorKind::kUsage ? 2 : 1;
  }
  std::fputs(c->text().c_str(), stdout);
  if (!out.empty()) {
    auto w = write_comparison(*c, *base, *cand, out);
    if (!w.ok()) {
      spdlog::error("cowlab matrix compare: {}", w.error().message());
      return 1;
    }
    std::printf("report: %s/compare.html\n", fs::absolute(out).c_str());
  }
  return c->regressions() ? 3 : 0;
}

}  // namespace

void add_compare_command(CLI::App& matrix, CommandContext& ctx) {
  auto a = std::make_shared<CompareArgs>();
  auto* c = matrix.add_subcommand("compare",
                                  "regression report between two matrix result directories "
                                  "(or two profiles of one); exit 3 when something regressed");
  c->add_option("DIRS", a->dirs,
                "BASE NEW result directories, or one directory with --profiles A,B")
      ->required();
  c->add_option("--out", a->out, "write compare.json and compare.html here");
  c->add_option("--profiles", a->profiles, "A,B: baseline profile A against candidate profile B");
  c->add_option("--tolerance", a->tolerances,
                "NAME=T (T: N%, N%,ABS, Nx, Nx,ABS, ignore; NAME may be a unit: bytes, s, ratio)");
  c->footer("See docs/regressions.md for the transitions and the default tolerances.");
  c->callback([a, &ctx] { ctx.status = compare_command(*a); });
}

}  // namespace cowlab::harness
