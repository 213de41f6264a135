// Bisection: the first commit, or the first profile in an ordered list, where a matrix cell's
// outcome changes (`cowlab bisect`, docs/regressions.md).
//
// A step runs one cell — one scenario file on one driver — `repeat` times in one guest (a
// fresh store each time, matrix.h) and folds the runs into one verdict (verdict.h).  The two
// ends are run first and give the "old" and the "new" outcome (a status such as pass and
// fail; they must differ).  A step is
//   old   when every run gave the old outcome,
//   new   when every run gave the new outcome,
//   skip  otherwise, with the reason: mixed outcomes (flaky k/n), a third outcome, a cell that
//         does not apply (skip), a guest that did not boot, or (git) a commit that does not
//         build.
// A bad commit is therefore never blamed on a flaky run or a build break.  The first "new"
// point found is confirmed by running the cell `confirm` more times on it and on its parent
// (the previous commit or profile); `confirmed` says whether both behaved.
//
// Everything goes into `out`: bisect.log (git's own log in git mode, the search in profile
// mode), steps.json with every step's verdict and timings, steps/NN-POINT/ (each step's
// matrix report), and reproducer/ (the scenario, patches, config fragments, the commit or
// profiles and a rerun.sh).
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cowlab/command_line.h"
#include "cowlab/harness/profile.h"
#include "cowlab/result.h"

namespace cowlab::harness {

enum class StepVerdict { kOld, kNew, kSkip };
const char* step_verdict_name(StepVerdict v);  // "old", "new", "skip"

struct BisectOptions {
  std::filesystem::path scenario;  // one scenario file
  std::string driver;
  unsigned repeat = 3;   // runs per step
  unsigned confirm = 0;  // runs on the culprit and its parent (0: same as repeat)
  std::filesystem::path out;
  unsigned memory_mb = 1024;
  std::filesystem::path cowlab_binary;  // the binary run in guests (default: this one)
  // Profile mode: ordered oldest → newest.
  std::vector<std::string> profiles;
  // Git mode: a kernel tree (a git work tree, clean), good and bad revisions.
  std::filesystem::path source;
  std::string good, bad;
  std::vector<std::filesystem::path> patches;           // applied on top of every commit
  std::vector<std::filesystem::path> config_fragments;  // merged on top of `config`
  std::filesystem::path config;  // a base .config; empty: tinyconfig + cowlab's fragments
  // The kernel work tree kept across steps and bisections (KernelBuildRequest::work_dir);
  // empty: build_kernel's own, one per source tree.
  std::filesystem::path work_dir;
};

struct BisectStep {
  std::string point;    // commit hash or profile name
  std::string subject;  // commit subject or kernel release
  std::string status;   // the folded cell status ("pass", "fail", "flaky", ...), "" if it never ran
  std::string runs;     // "2/3" passing runs
  StepVerdict verdict = StepVerdict::kSkip;
  std::string reason;  // why skip, or the cell's first failure
  double build_seconds = 0, run_seconds = 0;
  std::filesystem::path dir;
};

struct BisectResult {
  std::string old_status, new_status;
  std::string first_new;                // commit hash or profile name; "" when ambiguous
  std::string first_new_subject;        // commit subject or kernel release
  std::string parent;                   // the last old point before it
  std::vector<std::string> candidates;  // when skips leave several possible culprits
  std::vector<BisectStep> steps;        // ends first, then the search, then the confirmations
  bool confirmed = false;
  double wall_seconds = 0, build_seconds = 0, run_seconds = 0;
};

// The verdict of one folded cell (a results.json entry) against the two end outcomes.
StepVerdict classify_cell(const std::string& cell_json, const std::string& old_status,
                          const std::string& new_status, std::string* reason);

// Runs the cell on one profile `repeat` times into `dir`; returns the step (never fails for a
// cell outcome; fails for harness errors such as an unbuildable profile image).
Result<BisectStep> run_cell_step(const ProfileSpec& profile, const BisectOptions& o,
                                 unsigned repeat, const std::filesystem::path& dir);

// The search over points 0..n-1 whose ends are known (0 old, n-1 new): binary search where a
// skipped point is passed over and the open point nearest the middle is tried next.
// `evaluate(i)` is called once per point at most.  Returns the last old and first new point;
// `ambiguous` when only skipped points separate them (the first new is then one of
// last_old+1 .. first_new).
struct SearchResult {
  size_t last_old = 0, first_new = 0;
  bool ambiguous = false;
};
Result<SearchResult> search_first_new(size_t n,
                                      const std::function<Result<StepVerdict>(size_t)>& evaluate);

// Profile mode.  Fails (kUsage) for fewer than two profiles or ends that give the same
// outcome, naming them.
Result<BisectResult> bisect_profiles(const BisectOptions& o);

// Builds the tree as checked out now (patches, config and fragments from `o`) incrementally in
// `work_dir` (kept across steps; empty: the builder's default) and returns a bootable profile
// named `profile_name`.  Any error means "this commit does not build" to the bisection (the
// step is skipped).
using KernelBuilder =
    std::function<Result<ProfileSpec>(const BisectOptions& o, const std::filesystem::path& work_dir,
                                      const std::string& profile_name)>;

// The builder used by `cowlab bisect --source`: build_kernel() (kernel_build.h, the same build as
// `cowlab kernel build`) with the step's work tree, patches, config and fragments, the ZFS
// module only for a zfs cell, and the boot images; the kernel boots as a source-built profile.
KernelBuilder make_kernel_builder();

// Git mode: drives `git bisect run` in `o.source` with `cowlab bisect --step-state FILE` as the
// command (exit 0 old, 1 new, 125 skip), then confirms and writes the bundle.  The tree must be
// clean; it is returned to its original HEAD (`git bisect reset`) whatever happens.
Result<BisectResult> bisect_git(const BisectOptions& o, const KernelBuilder& build);

// One git-bisect step (what `git bisect run` calls): reads the state `bisect_git` wrote,
// builds and runs the checked-out commit, records the step and returns the exit status for git.
int bisect_step_main(const std::filesystem::path& state_file, const KernelBuilder& build);

// Adds `cowlab bisect ...` (and its internal `cowlab bisect --step-state FILE`) to the cowlab
// command line (exit 0: a first new point found and confirmed; 1: not found or not confirmed;
// 2: usage).
void add_bisect_commands(CLI::App& root, CommandContext& ctx);

}  // namespace cowlab::harness
