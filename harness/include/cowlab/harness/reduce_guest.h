// `cowlab scenario reduce FILE --driver D --profile P`: the reduction of a scenario that fails
// on a kernel other than the host's, run in a guest of profile P.
//
// One disposable guest (run_guest(), guest.h) boots the profile and runs `cowlab scenario
// reduce` inside it, on a fresh ext4 scratch disk: every candidate is run on the guest's
// kernel, the same way `cowlab matrix` runs scenarios there, and the guest boots once for the
// whole reduction rather than once per candidate (tens to hundreds of candidates, each boot
// 10-30 s under TCG).  The payload is this cowlab binary and the scenario file's directory
// (its tar/oci layers).  The reduced scenario comes back on the guest's stdout with the
// guest's paths of tar/oci layers turned back into the host's.
//
// When that guest panics, hangs, times out or logs a kernel splat (an oops, BUG or WARNING)
// — what one guest cannot survive or cannot see — the reduction starts again on the host
// with one guest per candidate (run_guest() each, a boot each): a candidate's result is then
// the kernel's verdict too (`panic`, `timeout`, or the extra failure "kernel splat"), so a
// scenario that brings the kernel down reduces to one that still does.  QEMU dying or the
// harness failing is an error with the console excerpt.
//
// A difference (scenario::ReduceOptions::against) between two drivers on one kernel
// (`against_driver`) is reduced in the one guest too (`cowlab scenario reduce --driver A
// --against-driver B` inside it).  A difference between two kernels (`against_profile`)
// cannot be: every candidate then runs in a guest of each profile (two boots a candidate,
// the second only when the first still shows its side of the difference).
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "cowlab/harness/guest.h"
#include "cowlab/result.h"
#include "cowlab/scenario.h"

namespace cowlab::harness {

struct GuestReduceOptions {
  std::string file;             // the scenario (host path)
  std::string driver;           // the driver it fails on
  std::string profile;          // a built profile (`cowlab vm build --profile P`)
  std::string against_driver;   // reduce the difference with this driver (same kernel), or
  std::string against_profile;  // with this profile's kernel (same driver); at most one
  std::vector<std::string> storage_opts;            // --storage-opt KEY=VALUE, passed on
  std::chrono::seconds timeout{4 * 3600};           // the whole reduction in the guest
  std::function<void(std::string_view)> on_stderr;  // the guest reducer's progress, raw
};

struct GuestReduceResult {
  std::string yaml;            // the reduced scenario
  std::string kernel_release;  // the guest's
  double seconds = 0;          // the guests' whole runs (boots included)
  int guests = 0;              // guests booted
};

Result<GuestReduceResult> reduce_in_guest(const GuestReduceOptions& options);

// One candidate's results from the guest that ran `cowlab scenario run` on it: the result
// lines from $COWLAB_RESULTS (status, failures, sweep values), with the kernel's verdict
// applied — a panic is one result `panic`, a hang or timeout one result `timeout`, a splat
// one more failure "kernel splat" (expected "a clean kernel log", observed its first line).
// QEMU dying, the harness failing or no result line is an error.
Result<std::vector<scenario::RunResult>> candidate_results(const GuestResult& guest,
                                                           const std::string& driver);

}  // namespace cowlab::harness
