// Scenario files: loading, strict validation and running (docs/scenarios.md is the format).
//
// A scenario is validated as a whole before anything runs; every problem is reported with
// FILE:LINE:COLUMN.  Running a scenario against one driver creates a fresh store on a fresh
// backing store (a temp dir, a loop-mounted btrfs, a file-backed zpool ...), executes the
// steps through the layer store's public API, checks the expectations and tears everything
// down again, leaving nothing mounted.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::scenario {

// A validated scenario file (opaque: the parsed document and its sweep points).
class Scenario {
 public:
  ~Scenario();
  const std::string& name() const;
  const std::string& file() const;
  const std::vector<std::string>& groups() const;
  const std::vector<std::string>& links() const;
  // One entry per sweep point ({} when the scenario has no sweep).
  const std::vector<std::map<std::string, std::string>>& sweep_points() const;
  int timeout_seconds() const;

  struct Impl;
  explicit Scenario(std::unique_ptr<Impl> impl);
  Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// One diagnostic: "FILE:LINE:COLUMN: message".
struct Diagnostic {
  std::string file;
  int line = 0;    // 1-based
  int column = 0;  // 1-based
  std::string message;
  std::string str() const;
};

// Loads and validates one file.  On failure the error message lists every diagnostic, one
// per line; `diagnostics` (if given) receives them individually.
Result<std::unique_ptr<Scenario>> load(const std::string& path,
                                       std::vector<Diagnostic>* diagnostics = nullptr);

// Expands FILE|DIR arguments into scenario files (*.yaml, *.yml under directories, sorted).
Result<std::vector<std::string>> collect_files(const std::vector<std::string>& args);

enum class Status { kPass, kFail, kSkip, kError, kTimeout, kPanic };
const char* status_name(Status s);

struct Failure {
  std::string expectation;  // "view c1:etc/hostname content", "step 3 rename errno"
  std::string expected;
  std::string observed;
};

struct RunResult {
  std::string scenario;
  std::string file;
  std::string driver;
  std::string kernel;
  Status status = Status::kPass;
  std::string reason;  // skip/error reason
  double duration_s = 0;
  std::map<std::string, std::string> sweep;    // this point's sweep values
  std::map<std::string, double> measurements;  // named measurements
  // The unit of each measurement: "bytes" (space, page_cache), "s" (time) or "ratio"; what
  // `cowlab matrix compare` picks its default tolerance by.
  std::map<std::string, std::string> units;
  std::vector<Failure> failures;
  // Which `cases:` branch applied, per step/expectation that has cases ("step 3 rename" →
  // "case 1", "case 2 (default)", "case 1: skip").
  std::map<std::string, std::string> branches;
  std::map<std::string, std::string> options;        // storage options in effect
  std::map<std::string, bool> features;              // probed features (when/requires)
  std::map<std::string, std::string> driver_status;  // the driver's own status lines
  // Where the run's wall time went, in seconds ("phases_s"): backing (making the backing
  // store), open (the store), layers (image layers: tars built and imported), digests (the
  // image's and containers' digests that image_unchanged/unaffected compare against),
  // containers, steps, expect, finish (releasing and wiping the store) and teardown (of the
  // backing store).  Not measurements: `matrix compare` never compares them.
  std::map<std::string, double> phases_s;
  // Where the store's image came from: "import" (this run imported the layers) or
  // "checkpoint" (a copy of the store an earlier run of the cell saved right after its import;
  // RunOptions::checkpoints) — and what became of this run's checkpoint: "saved", "not saved:
  // WHY" (the later runs import the image themselves), "not restored: WHY" (this run imported
  // it instead), or "" (none asked for).  The phases show the difference: a restored run has
  // "restore" instead of "backing" and "layers"; the run that saved one has "checkpoint".
  std::string image_source = "import";
  std::string checkpoint;
  // How the saved checkpoint's backing was held still while it was copied ("quiesce"):
  // "released" (store closed, devices removed, mounts gone, pool exported) or "live" (zfs on a
  // scratch filesystem that clones files: the pool synced and its vdev cloned while imported);
  // "" when none was saved.
  std::string checkpoint_quiesce;
  // Layer tars of `entries:` layers built by this run and taken from RunOptions::layer_tars.
  int layer_tars_built = 0, layer_tars_reused = 0;
  // RunOptions::stop ended the run before its verdict (status error): not a result to report.
  bool interrupted = false;
  // One JSON object on one line.
  std::string to_json_line() const;
};

// What one driver's image checkpoints have cost so far (RunOptions::checkpoint_costs): the
// "checkpoint" phase of the runs that saved one (closing the store, quiescing and copying the
// backing, reopening) and the "restore" phase of the runs that started from one.  A
// checkpoint is worth saving only when restoring it is cheaper than importing the image: a
// zfs pool's restore (its vdev cloned, `zpool import`) took 0.8-1.8 s in the default matrix,
// more than the 0.6-0.9 s a small image's pool takes to create and fill, and such cells cost
// 3.4-4.7x one run with --repeat 3, where importing every time costs 3x.
struct CheckpointCosts {
  // One saved checkpoint: how long its image took to prepare (the backing, layers and digests
  // phases of the run that saved it), to save, and to restore (summed over its restores).
  struct Point {
    double import_s = 0, save_s = 0, restore_s = 0;
    unsigned restores = 0;
  };
  std::vector<Point> points;
  std::map<std::string, size_t> cells;  // scenario + sweep point -> its checkpoint's Point
  // Adds a run that saved a checkpoint (a Point) or restored its cell's (to that Point).
  void add(const RunResult& r);
  // Estimated save and restore seconds for an image that took `import_s` to prepare: linear
  // between the two measured checkpoints whose preparation times bracket it.  Costs grow with
  // the image (a copy on ext4) or have a floor (a zfs pool's import), and one driver's images
  // range from bytes to a GiB: a mean over all of them refused vfs's small images for the
  // cost of its 64 MiB ones, and so did the smallest measured one's costs carried below it
  // (an image refused is never measured).  std::nullopt outside the measured range: nothing
  // is known there yet, so such a checkpoint is saved and measured.
  struct Estimate {
    double save_s = 0, restore_s = 0;
  };
  std::optional<Estimate> estimate(double import_s) const;
  // Whether a checkpoint of an image that took `import_s` seconds to prepare is expected to
  // save time over `later_runs` runs:  later_runs * (import_s - restore) > save.  Where there
  // is no estimate it is saved (its cost has to be measured somewhere); never with no later run.
  bool pays(double import_s, unsigned later_runs) const;
  // The reason a checkpoint that does not pay is not saved, with the numbers it was decided on.
  std::string why_not(double import_s, unsigned later_runs) const;
};

struct RunOptions {
  std::string driver;    // registry name
  std::string work_dir;  // where backing stores are made (default /var/tmp)
  std::map<std::string, std::string> storage_opts;  // extra --storage-opt pairs
  bool keep = false;                                // keep the store after a failure (debugging)
  int run = 1;  // which run of `scenario run --repeat` this is (`when: {runs: [...]}`)
  // A directory (on the work dir's filesystem, owned by the caller, removed by it) where the
  // tars of `entries:` layers are kept between runs: a layer's tar is a pure function of its
  // entries, so the runs of `--repeat` (and the other drivers of one `scenario run`) import the
  // one built by the first run instead of generating its bytes again.  Every run still imports
  // it into a fresh store.  Empty: each run builds its tars and deletes them after the import.
  std::string layer_tars;
  // A directory (on the work dir's filesystem, owned by the caller, removed by it) for image
  // checkpoints, one per sweep point: the first run that imports a point's image saves the
  // store as the import left it (backing store included: the btrfs image, the exported pool,
  // devicemapper's loop files), and every later run given the same directory starts from a
  // copy of it instead of importing — a fresh store no earlier run touched, without repeating
  // the image's import.  Not saved when a build step's cases depend on the run number, nor
  // where it would not pay (checkpoint_costs below).
  // Empty: every run imports its image.
  std::string checkpoints;
  // kConsume: no later run will use `checkpoints` (the last run `--repeat`/`--rerun-failures`
  // may make), so a restore moves the checkpoint into place instead of copying it.
  enum class CheckpointUse { kKeep, kConsume } checkpoint_use = CheckpointUse::kKeep;
  // The costs of this driver's checkpoints so far (the caller adds each result), and how many
  // later runs of the cell the checkpoint this run would save can serve: it is saved only when
  // it pays (CheckpointCosts::pays); otherwise the result says why ("not saved: ...") and the
  // later runs import the image.  Default: nothing measured, so it is saved.
  CheckpointCosts checkpoint_costs;
  unsigned later_runs = 1;
  // Polled while a run's worker works (at least every 100 ms): once it returns true the worker
  // is killed, the backing store torn down, the run's result marked `interrupted` and no
  // further sweep point started (Ctrl-C on `cowlab scenario run`).
  std::function<bool()> stop;
};

// Runs every sweep point of `s` against one driver; one result per point.
std::vector<RunResult> run(const Scenario& s, const RunOptions& options);

// A standalone POSIX shell script reproducing `s` on `driver` (overlay, aufs or btrfs) with
// standard tools only; it prints each check and exits 0 (all passed), 1 (a check failed) or
// 2 (set-up failed).  Steps that need cowlab (reopen, hold_mount, mmap, ...) make the export
// fail naming the step; expectations that need cowlab's store are printed as skipped.
Result<std::string> export_shell(const Scenario& s, const std::string& driver);

// Delta debugging (`cowlab scenario reduce`): shrinks a failing scenario — expectations,
// steps, containers, layers, entries, sizes — to a smaller one that still fails with the
// same failed expectation and no other failure.  A scenario whose result is `panic` or
// `timeout` (a guest runner's verdict) shrinks to one that still ends that way.  Candidates
// run with `runner` (a file → its results), by default run() on this host.
//
// With `against` set, it shrinks a *difference* between two sides (two drivers, or two
// kernels through guest runners) instead: the target is the first check that fails on one
// side and passes on the other (both runs `pass` or `fail`), and a candidate is kept only
// when, on the side that failed it, that check still fails with no failure that side did
// not have, and on the other side the run still passes or fails with no failure it did not
// have and not that check.  Observed values are not compared: inode numbers, sizes and
// times legitimately change as parts are removed; the check itself ("view c1:f content")
// names what differs.  A check that fails on both sides is no difference.
struct ReduceSide {
  std::string label;  // "vfs", "debian-6.1" (messages)
  RunOptions run;     // used when `runner` is unset
  std::function<Result<std::vector<RunResult>>(const std::string& file)> runner;
};
struct ReduceOptions {
  RunOptions run;
  std::function<void(const std::string&)> progress;  // one line per accepted reduction
  std::function<Result<std::vector<RunResult>>(const std::string& file)> runner;
  std::string label;                  // this side's name (default: run.driver)
  std::optional<ReduceSide> against;  // reduce the difference with this side
};
struct ReduceResult {
  std::string yaml;     // the reduced scenario
  std::string failure;  // the failed expectation kept ("view c1:f exists")
  // With `against`: "fails on overlay, passes on vfs" (the direction kept).
  std::string difference;
  int runs = 0;  // candidate runs made (a difference's candidate counts once)
};
Result<ReduceResult> reduce(const std::string& file, const ReduceOptions& options);

// The language reference tables (top-level keys, entry keys, steps, expectations) as
// markdown rows, straight from the definition table; docs/scenarios.md holds the same rows
// (a unit test compares them).  `table` is "top", "entries", "steps" or "expect".
std::vector<std::string> reference_rows(const std::string& table);

// Kernel features the scenario `requires`/`when` blocks can name, as seen by `driver`: the
// generic ones (userns, drop_caches) and that driver's own (overlay.*, btrfs.*, dm.*, zfs, aufs)
// only — probing loads modules, so a vfs run loads none.  Probed once per process and driver.
// Returns name → present; another driver's features are absent from the map.
const std::map<std::string, bool>& probed_features(const std::string& driver);
// True for names of driver-specific features (overlay.metacopy, zfs, ...).
bool is_driver_feature(const std::string& feature);

}  // namespace cowlab::scenario
