// Matrix reports: results.json, JUnit XML, a self-contained HTML report with charts, and a
// reproducer bundle per failed cell.  Input is the list of cell results (one JSON object per
// scenario × driver × profile × sweep point, as `cowlab scenario run` writes them, plus
// "profile" and, for crashed guests, "console_excerpt").
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::harness {

struct ProfileInfo {
  std::string name;
  std::string kernel_release;
  std::filesystem::path manifest;  // the profile manifest (copied into reproducers)
  std::string accel;               // "tcg" / "kvm" and why
};

// results.json's schema_version (docs/results.schema.json): bumped when a field is removed or
// changes meaning.  1: the unversioned files before it.
inline constexpr int kResultsSchemaVersion = 2;

struct MatrixReport {
  std::vector<ProfileInfo> profiles;
  std::vector<std::string> drivers;
  std::vector<std::string> results;  // JSON objects, one per cell
  double wall_seconds = 0;
  std::string command;         // the command line that produced it
  std::string started_utc;     // "2026-12-01T23:38:24Z"; empty: now, when written
  std::string hostname;        // empty: this host's, when written
  std::string cowlab_version;  // cowlab_version() of the run; empty: this binary's
  std::string host;            // JSON object {kernel, cpus, memory_bytes}; empty: this host's
  bool interrupted = false;    // SIGINT/SIGTERM stopped the run; unfinished cells say "interrupted"
};

// Writes results.json, junit.xml, report.html and reproducers/ into `out` (created).
Result<void> write_report(const MatrixReport& report, const std::filesystem::path& out);

// Reads the results.json of an earlier run (for `cowlab matrix merge`).
Result<MatrixReport> read_report(const std::filesystem::path& dir);

// Counts per status ("pass" → 12, ...).
std::vector<std::pair<std::string, int>> status_counts(const MatrixReport& report);

}  // namespace cowlab::harness
