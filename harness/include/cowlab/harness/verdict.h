// Flake-aware verdicts: folding repeated runs of one matrix cell into one verdict.
//
// `cowlab matrix --repeat N` runs every cell N times in the same guest (each run on a fresh
// store), and `--rerun-failures K` reruns a cell that did not pass up to K times, stopping at
// its first pass.  The guest reports one result per run ("run": 1..N, reruns with
// "rerun": true); fold_runs() turns them into one result per cell:
//   - status: "pass" when every run passed, "skip" when every run skipped, "flaky" when some
//     runs passed and others did not, otherwise the worst status seen (fail < timeout < error
//     < panic);
//   - "runs": {"total": n, "pass": p, "fail": f, ...} (counts by status);
//   - "measurements": the median of each measurement over the runs that recorded it, and
//     "measurement_stats": {NAME: {"median", "min", "max", "n"}};
//   - "duration_s", "phases_s" and "layer_tars": summed over the runs;
//   - "image" (runs that report one): {"sources": {"import": i, "checkpoint": c} (counts of
//     where the runs' images came from), "checkpoint": the runs' distinct checkpoint notes in
//     run order, joined by "; " ("saved"; "saved; not restored: WHY"), "quiesce": likewise};
//   - "flaky_runs" (flaky cells): one line per run that did not pass, with its failures or
//     reason, so the report can show them.
// A cell's failures/reason are those of its first failing run (fail/flaky) or its first run.
// Results without a "run" field (a plain single run) pass through unchanged except for "runs".
// Cells folded before (they have "runs" and no "run": a resumed report's finished cells) and
// "interrupted" cells pass through as they are.
#pragma once

#include <string>
#include <vector>

namespace cowlab::harness {

// `results`: JSON objects, one per run (MatrixReport::results).  Returns one JSON object per
// (profile, driver, scenario, sweep point), in the order the cells first appear.
std::vector<std::string> fold_runs(const std::vector<std::string>& results);

// "3/5" for a flaky cell: passing runs / all runs; empty for a result without "runs".
std::string pass_fraction(const std::string& result_json);

}  // namespace cowlab::harness
