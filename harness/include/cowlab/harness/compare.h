// Regression reports between two matrix results (`cowlab matrix compare`).
//
// The two sides are matrix result directories (results.json as report.h writes it; cells
// folded as verdict.h describes) — two kernels, two cowlab versions, two dates — or two
// profiles of one matrix.  Cells are matched by driver, scenario and sweep point, plus the
// profile when both sides hold several profiles (each pair is compared profile by profile).
//
// Cell transitions (statuses: pass, flaky, skip, and the "bad" ones fail < timeout < error <
// panic):
//   regression     pass or flaky -> bad; skip or absent -> bad ("new failure"); bad -> worse bad
//   fix            bad -> pass
//   partial-fix    bad -> flaky
//   became-flaky   pass -> flaky        (never a regression: it still passed at least once)
//   no-longer-flaky flaky -> pass
//   now-skipped / no-longer-skipped, appeared / disappeared, changed (any other difference)
// Measurements present on both sides are compared with a tolerance chosen by name, else by
// unit (the result's "units"; unknown units are treated as "ratio"):
//   bytes  moved by more than 10 % of the baseline AND by more than 64 KiB
//   s      more than 2x (either way) AND each side's median outside the other side's min–max
//          AND more than 0.05 s apart (below that, scheduling under TCG dominates)
//   ratio  more than 2x and outside both min–max ranges
// A bytes or s measurement that grew beyond its tolerance is a regression ("worse"); one that
// shrank is an improvement ("better"); a ratio that moved is reported as "moved".  A time is
// counted as a regression only when both sides have at least kMinRunsToJudgeTime runs of it
// (`--repeat 3`): a single run has no spread, and under TCG on a shared host one run's times
// move 3x with the load; it is then reported as worse with a note saying why it is not counted.
inline constexpr int kMinRunsToJudgeTime = 3;
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cowlab/command_line.h"
#include "cowlab/harness/report.h"
#include "cowlab/result.h"

namespace cowlab::harness {

// A tolerance: `relative` (fraction of the baseline, e.g. 0.10) or `factor` (e.g. 2.0), plus an
// absolute floor the change must also exceed; `ignore` never reports the measurement.
struct Tolerance {
  double relative = 0;  // > 0: relative mode
  double factor = 0;    // > 0: factor mode (also requires the ranges not to overlap)
  double absolute = 0;  // the change must exceed this too (in the measurement's unit)
  bool ignore = false;
  std::string str() const;
};

// Parses "10%", "10%,64KiB", "2x", "2x,0.05", "ignore".  Sizes take KiB/MiB/GiB suffixes.
Result<Tolerance> parse_tolerance(const std::string& text);

struct CompareOptions {
  // When set, only that profile's cells are taken from each side (kernel vs kernel); the
  // profile is then not part of the cell key.
  std::string base_profile, new_profile;
  // Overrides by measurement name, or by unit ("bytes", "s", "ratio") for all of that unit.
  std::map<std::string, Tolerance> tolerances;
  std::string base_label = "baseline", new_label = "candidate";
  std::filesystem::path base_dir, new_dir;  // recorded in the report
};

struct CellChange {
  std::string kind;  // see above; "unchanged" is not listed
  std::string profile_base, profile_new, driver, scenario, sweep;
  std::string base_status, new_status;  // "" when absent
  std::string base_runs, new_runs;      // "3/5" pass fractions when known
  std::string detail;                   // the new side's first failure or reason
  bool regression = false;
};

struct MeasurementChange {
  std::string kind;  // "worse", "better", "moved"
  std::string profile_base, profile_new, driver, scenario, sweep, name, unit;
  double base = 0, base_min = 0, base_max = 0, cand = 0, cand_min = 0, cand_max = 0;
  std::string tolerance;
  std::string note;  // why a "worse" is not counted as a regression; "" otherwise
  bool regression = false;
};

struct Comparison {
  std::string base_label, new_label;
  std::vector<ProfileInfo> base_profiles, new_profiles;
  std::vector<CellChange> cells;
  std::vector<MeasurementChange> measurements;
  int unchanged_cells = 0, compared_measurements = 0;
  int regressions() const;
  std::string text() const;  // the stdout report
  std::string json() const;  // compare.json
};

// Compares; fails (kUsage) when a requested profile is missing from its side, or when both
// sides hold several profiles that do not match and no profiles were chosen.
Result<Comparison> compare_reports(const MatrixReport& base, const MatrixReport& cand,
                                   const CompareOptions& options);

// Writes compare.json and compare.html (the changes, then report.html's charts with both sides
// drawn together) into `out` (created).
Result<void> write_comparison(const Comparison& c, const MatrixReport& base,
                              const MatrixReport& cand, const std::filesystem::path& out);

// Adds `cowlab matrix compare BASE NEW [--out DIR] [--tolerance NAME=T]... [--profiles A,B]`
// and `cowlab matrix compare DIR --profiles A,B` to the matrix command (cowlab/command_line.h).
// Exit 0: no regression; 3: regressions; 2: usage; 1: unreadable input.
void add_compare_command(CLI::App& matrix, CommandContext& ctx);

}  // namespace cowlab::harness
