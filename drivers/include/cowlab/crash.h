// Power-cut testing of a driver's store (docs/crash.md): a scenario with a `crash:` key is run
// with the store's backing device recorded by dm-log-writes, and the log is replayed to every
// flush/FUA point (and, on request, to random points between flushes) inside the phases the
// scenario names.  At each crash state the filesystem is mounted as a reboot would (journal
// replay), the store is opened (its recovery runs) and invariants are checked:
//
//   store-opens         LayerStore::open succeeds
//   layer-content       every listed layer that the scenario imported has exactly the regular
//                       files (size and digest), symlinks and whiteouts of its tar: no missing,
//                       short or zero-byte file
//   no-unknown-layer    no layer is listed that the scenario never created
//   committed-present   a layer (or container) whose phase had finished is listed
//   removed-gone        a layer whose removal had finished is not listed
//   container-content   a listed container mounts and shows its image's files; writes of
//                       finished write phases (each fsync()ed) are present
//   no-leftovers        after recovery: nothing in tmp/, no incomplete layer, no temp metadata
//                       file, no mount below the root once the checker released its own
//
// A crash state the kernel cannot mount is a failure of the kernel facility, reported apart
// from cowlab's own failures (kernel_failures).
//
// Runs only as root on a kernel with dm-thin-pool and dm-log-writes (the cowlab guests), on a
// whole scratch block device it owns: everything on it is destroyed.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::crash {

struct Options {
  std::string driver;                          // registry name
  std::string device;                          // scratch block device, wiped
  std::optional<int> random;                   // --crash-random: overrides the scenario's `random`
  uint64_t seed = 1;                           // for the random points
  std::string work_dir = "/run/cowlab-crash";  // mount points (not on `device`)
};

struct Finding {
  uint64_t point = 0;     // replayed entries [0, point)
  std::string phase;      // the phase in progress ("" between phases)
  std::string invariant;  // see above, or "mount" for a kernel-facility failure
  std::string observed;
};

struct CrashResult {
  std::string scenario;
  std::string file;
  std::string driver;
  std::string status = "pass";  // pass | fail | kernel-failure | skip | error
  std::string reason;           // skip/error reason
  uint64_t log_entries = 0;
  uint64_t flush_points = 0;
  uint64_t random_points = 0;
  uint64_t states_checked = 0;
  uint64_t kernel_failures = 0;
  double record_s = 0, check_s = 0;
  std::vector<std::string> phases;   // all phase names, in order
  std::vector<std::string> crashed;  // the crashed ones
  std::vector<Finding> findings;
  std::string to_json_line() const;
};
// Runs one crash scenario against one driver.  Errors (bad scenario, missing kernel facility,
// device too small) come back as status "error" with the reason; the result is always filled.
CrashResult run(const std::string& scenario_file, const Options& options);

}  // namespace cowlab::crash
