// The matrix: scenarios × drivers × kernel profiles, run in guests.
//
// One guest per profile × driver runs every scenario of the shard for that driver with
// `cowlab scenario run --events`, streaming one JSON result per cell back over the guest's
// result port.  A guest that panics, hangs, times out or dies is reported against the scenario
// it was running (with the console excerpt), and a fresh guest carries on with the scenarios
// that had not started, so the matrix always completes.  No scenario logic lives here: the
// harness moves the cowlab binary, the scenario files and the results.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cowlab/command_line.h"
#include "cowlab/harness/profile.h"
#include "cowlab/harness/report.h"
#include "cowlab/result.h"

namespace cowlab::harness {

struct MatrixOptions {
  std::vector<std::string> profiles;        // empty: the default profile
  std::vector<std::string> drivers;         // empty: all six
  std::vector<std::string> scenario_args;   // files or directories
  unsigned jobs = 0;                        // parallel guests; 0: guest_slots()
  unsigned shard_index = 0, shard_count = 1;
  std::filesystem::path out;                // report directory
  std::filesystem::path cowlab_binary;      // the binary to run in guests (default: this one)
  unsigned memory_mb = 1024;
  std::string scratch_size = "24G";         // sparse work disk per guest
  // A bring-your-own aufs kernel (and optional modules dir): adds a profile "aufs" that runs
  // the aufs driver; without it aufs cells are skipped by the guests' own probe.
  std::filesystem::path aufs_kernel, aufs_modules;
  std::string command;  // recorded in the report
  // Flake-aware verdicts (verdict.h): every cell runs `repeat` times in the same guest, each on
  // a fresh store, and a cell that did not pass reruns up to `rerun_failures` times.
  unsigned repeat = 1, rerun_failures = 0;
  // Where the later runs of a cell get their image (`scenario run --repeat-from`): a copy of
  // the store saved right after the first run's import (kCheckpoint), or an import of their own.
  enum class RepeatFrom { kCheckpoint, kImport } repeat_from = RepeatFrom::kCheckpoint;
  // Profiles given as specs (a bisection's freshly built kernel), run after `profiles`.
  std::vector<ProfileSpec> extra_profiles;
  // Selection: scenarios in any of `groups` (their `groups:` list), and whose name matches any
  // of `name_patterns` (a glob, or a substring without glob characters); empty = all.
  std::vector<std::string> groups, name_patterns;
  // Continue the interrupted run whose report is in this directory: its finished cells are
  // kept, the scenarios with unfinished cells run again.
  std::filesystem::path resume;
  // A reproducer's bundled profile manifest: the profile's kernel (package and release) must
  // match it; any_kernel turns a mismatch into a warning.
  std::filesystem::path expect_manifest;
  bool any_kernel = false;
  // Package versions of the profiles: the cached resolution, or the archive's (--refresh).
  ResolveMode resolve = ResolveMode::kCached;
};

// Runs the matrix and writes the reports; `report` receives what was written.  On SIGINT/SIGTERM
// (stop_requested()) the guests shut down and clean up, the cells that finished are reported,
// the rest are marked "interrupted", report->interrupted is set and the result is ok.
Result<void> run_matrix(const MatrixOptions& options, MatrixReport* report);

// Adds `cowlab matrix ...` and `cowlab matrix merge DIR... --out DIR` to the cowlab command line
// (cowlab/command_line.h); argv is recorded in the report as the command that made it.
void add_matrix_commands(CLI::App& root, CommandContext& ctx, int argc, char** argv);

}  // namespace cowlab::harness
