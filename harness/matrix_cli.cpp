// `cowlab matrix ...` and `cowlab matrix merge DIR... --out DIR`: the command line of the matrix
// (harness/src/matrix.cpp runs it), added to the one cowlab app.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>

#include "cowlab/command_line.h"
#include "cowlab/harness/compare.h"
#include "cowlab/harness/matrix.h"
#include "cowlab/harness/stop.h"
#include "cowlab/log.h"
#include "cowlab/registry.h"

namespace fs = std::filesystem;

namespace cowlab::harness {
namespace {

struct MatrixArgs {
  MatrixOptions o;
  std::string profiles, drivers, shard;
  std::string out;
  std::string resume;
  std::vector<std::string> merge_dirs;
  std::string merge_out = "matrix-report";
};

int fail(const std::string& command, const Error& e) {
  spdlog::error("cowlab {}: {}", command, e.message());
  return e.kind() == ErrorKind::kUsage ? kExitUsage : kExitError;
}

int cmd_merge(const MatrixArgs& a) {
  MatrixReport all;
  std::set<std::string> seen_profiles, seen_drivers;
  for (const auto& d : a.merge_dirs) {
    auto r = read_report(d);
    if (!r.ok()) return fail("matrix merge", r.error());
    // The run's facts come from the first shard that has them.
    if (all.cowlab_version.empty()) all.cowlab_version = r->cowlab_version;
    if (all.started_utc.empty()) all.started_utc = r->started_utc;
    if (all.hostname.empty()) all.hostname = r->hostname;
    if (all.host.empty()) all.host = r->host;
    all.interrupted = all.interrupted || r->interrupted;
    for (const auto& p : r->profiles)
      if (seen_profiles.insert(p.name).second) all.profiles.push_back(p);
    for (const auto& dr : r->drivers)
      if (seen_drivers.insert(dr).second) all.drivers.push_back(dr);
    all.results.insert(all.results.end(), r->results.begin(), r->results.end());
    all.wall_seconds = std::max(all.wall_seconds, r->wall_seconds);
  }
  all.command = "cowlab matrix merge";
  for (const auto& d : a.merge_dirs) all.command += " " + d;
  auto w = write_report(all, a.merge_out);
  if (!w.ok()) return fail("matrix merge", w.error());
  for (const auto& [st, n] : status_counts(all)) std::printf("%s=%d ", st.c_str(), n);
  std::printf("\nreport: %s/report.html\n", fs::absolute(a.merge_out).c_str());
  return kExitOk;
}

int cmd_matrix(MatrixArgs& a, const CommandContext& ctx, const std::string& command) {
  MatrixOptions& o = a.o;
  if (o.scenario_args.empty())
    return fail("matrix", Error::usage("give scenario files or directories"));
  o.profiles = split_list(a.profiles);
  // --drivers, or the global --driver; both take Docker's overlay2 for overlay.
  std::string drivers = !a.drivers.empty() ? a.drivers : !ctx.driver.empty() ? ctx.driver : "all";
  auto list = parse_driver_list(drivers);
  if (!list.ok()) return fail("matrix", list.error().with_context("--drivers"));
  o.drivers = *list;
  if (!a.shard.empty()) {
    char extra = 0;
    if (std::sscanf(a.shard.c_str(), "%u/%u%c", &o.shard_index, &o.shard_count, &extra) != 2)
      return fail("matrix",
                  Error::usage("--shard \"" + a.shard + "\": must be I/N (0-based shard I of N)"));
  }
  if (o.aufs_kernel.empty())
    if (const char* k = std::getenv("COWLAB_AUFS_KERNEL")) o.aufs_kernel = k;
  if (o.aufs_modules.empty())
    if (const char* m = std::getenv("COWLAB_AUFS_MODULES")) o.aufs_modules = m;
  o.resume = a.resume;
  o.out = !a.out.empty() ? a.out : !a.resume.empty() ? a.resume : "matrix-report";
  o.command = command;
  MatrixReport rep;
  auto r = run_matrix(o, &rep);
  if (!r.ok()) {
    int rc = fail("matrix", r.error());
    return stop_requested() && stop_signal() ? 128 + stop_signal() : rc;
  }
  std::printf("\nmatrix summary (%.0f s wall):", rep.wall_seconds);
  bool bad = false;
  for (const auto& [st, n] : status_counts(rep)) {
    std::printf(" %s=%d", st.c_str(), n);
    if (st != "pass" && st != "skip" && st != "flaky")
      bad = true;  // flaky: passed at least once (verdict.h)
  }
  std::printf("\nreport: %s/report.html\n", fs::absolute(o.out).c_str());
  if (rep.interrupted) {
    std::printf(
        "interrupted: unfinished cells are marked interrupted; continue with:\n  %s --resume %s\n",
        command.c_str(), o.out.c_str());
    return 128 + (stop_signal() ? stop_signal() : 2);  // 130 for SIGINT, 143 for SIGTERM
  }
  // 3: the matrix ran to the end but some cells did not pass (a finding, not a breakdown).
  return bad ? 3 : kExitOk;
}

}  // namespace

void add_matrix_commands(CLI::App& root, CommandContext& ctx, int argc, char** argv) {
  auto a = std::make_shared<MatrixArgs>();
  std::string command = "cowlab";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];

  CLI::App* m = root.add_subcommand(
      "matrix", "run scenarios across kernel profiles and drivers in guests; merge shards");
  m->add_option("--profiles", a->profiles,
                "comma-separated kernel profiles (default debian-6.1; own kernels: "
                "build one with `cowlab vm build --kernel PATH --profile NAME` first)");
  m->add_option("--drivers", a->drivers,
                "comma-separated drivers or all (default: the global --driver, else all)");
  m->add_option("-j,--jobs", a->o.jobs, "parallel guests (default: by cores and memory)");
  m->add_option("--shard", a->shard, "I/N: run the I-th of N shards (0-based)");
  m->add_option("--out", a->out, "report directory (default matrix-report, or the --resume DIR)");
  m->add_option("--memory", a->o.memory_mb, "guest memory in MiB (default 1024)");
  m->add_option("--aufs-kernel", a->o.aufs_kernel, "an aufs kernel image (env COWLAB_AUFS_KERNEL)");
  m->add_option("--aufs-modules", a->o.aufs_modules,
                "its modules directory (env COWLAB_AUFS_MODULES)");
  m->add_option("--group,-g", a->o.groups,
                "only scenarios in this group (repeatable; any of them)");
  m->add_option("-k", a->o.name_patterns,
                "only scenarios whose name contains PATTERN, or matches it as a glob (repeatable; "
                "any of them)");
  m->add_option("--resume", a->resume,
                "continue the interrupted run in DIR: keep its finished cells, run the rest, write "
                "the report "
                "there (unless --out is given)");
  m->add_option(
      "--expect-manifest", a->o.expect_manifest,
      "the profile manifest a reproducer bundles: refuse to run on a kernel that differs from it");
  m->add_flag_function(
      "--refresh", [a](int64_t) { a->o.resolve = ResolveMode::kRefresh; },
      "resolve the profiles' package versions against the archive again (default: cached)");
  m->add_flag("--any-kernel", a->o.any_kernel,
              "with --expect-manifest: warn about a different kernel, run anyway");
  m->add_option("SCENARIOS", a->o.scenario_args, "scenario files or directories");
  m->add_option(
       "--repeat", a->o.repeat,
       "run every cell N times in the same guest, a fresh store each time; mixed outcomes are "
       "\"flaky\" (docs/regressions.md)")
      ->check(CLI::Range(1u, 100u));
  m->add_option(
       "--repeat-from",
       "where the later runs of a cell get the image: \"checkpoint\" (default: a copy of the "
       "store saved right after the first run's import) or \"import\" (every run imports it)")
      ->check(CLI::IsMember({"checkpoint", "import"}))
      ->each([a](const std::string& v) {
        a->o.repeat_from = v == "import" ? MatrixOptions::RepeatFrom::kImport
                                         : MatrixOptions::RepeatFrom::kCheckpoint;
      });
  m->add_option("--rerun-failures", a->o.rerun_failures,
                "rerun a cell that did not pass up to K times (until it passes once) before "
                "calling it failed")
      ->check(CLI::Range(0u, 100u));
  m->footer(
      "Exit status: 0 every cell passed or was skipped, 3 some cells did not pass (see the "
      "report),\n"
      "1 the matrix could not run, 2 usage error, 130/143 interrupted by SIGINT/SIGTERM (the "
      "report of\n"
      "the finished cells is written; --resume DIR continues).  See docs/matrix.md.");
  m->callback([a, &ctx, m, command] {
    if (m->get_subcommands().empty()) {
      install_stop_signal_handlers();
      ctx.status = cmd_matrix(*a, ctx, command);
    }
  });

  auto* merge = m->add_subcommand("merge", "merge sharded results into one report");
  merge->add_option("DIRS", a->merge_dirs, "report directories of the shards")->required();
  merge->add_option("--out", a->merge_out, "report directory (default matrix-report)");
  merge->callback([a, &ctx] { ctx.status = cmd_merge(*a); });
  add_compare_command(*m, ctx);
}

}  // namespace cowlab::harness
