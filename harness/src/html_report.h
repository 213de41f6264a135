// report.html: one self-contained page (inline CSS and SVG, no scripts) built with the HTML
// builder (html_builder.h), so every name and message is escaped.  What it promises, checked by
// tests/host/test_reports.py in headless Chromium:
//  - chart titles are HTML captions above the charts (they wrap, never clip), and every SVG
//    label lies inside its chart;
//  - each driver has one fixed colour in every report (driver_colour());
//  - axis ticks are "nice" numbers (1, 2, 5 × 10^k), integers on axes that count things;
//  - axis labels and measurement values carry units;
//  - a section with nothing to show is left out (no empty "Measured curves").
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cowlab/harness/report.h"
#include "html_builder.h"

namespace cowlab::harness::detail {

std::string html_report(const MatrixReport& report, const std::vector<nlohmann::json>& results);

// A whole page: <!DOCTYPE html>, <head> with `title` and the one style sheet of report.html and
// compare.html (status and change colours, tables, charts), then `body`.
std::string html_page(const std::string& title, html::Node body);

// report.html's charts with several runs drawn together (`cowlab matrix compare`): one chart
// per chart kind that has data, series named "DRIVER · LABEL"; `profile` picks one profile of
// that report (empty: all of them).  Empty when nothing is charted.
struct ChartSide {
  std::string label;
  const MatrixReport* report = nullptr;
  std::string profile;
};
std::vector<html::Node> comparison_charts(const std::vector<ChartSide>& sides);

// The colour of a driver in every chart ("#1f77b4" for overlay, ...); unknown names get grey.
std::string driver_colour(const std::string& driver);

// Tick values for an axis over [lo, hi]: about `target` steps of 1, 2 or 5 × 10^k, starting at
// or below lo and ending at or above hi; with `integers` the step is at least 1.
std::vector<double> nice_ticks(double lo, double hi, int target, bool integers);

}  // namespace cowlab::harness::detail
