// `cowlab crash`: power-cut testing (docs/crash.md).
//   cowlab crash run --driver D --device DEV [--crash-random N] [--seed S] FILE|DIR...
//   cowlab crash log LOG                     entries, flush points and marks of a dm-log-writes log
//   cowlab crash replay LOG TARGET [--from I] --to J|--to-mark NAME
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "cowlab/crash.h"
#include "cowlab/log.h"
#include "cowlab/log_writes.h"
#include "cowlab/scenario.h"

namespace cowlab::cli {

namespace {

int report(const Error& e) {
  spdlog::error("cowlab crash: {}", e.message());
  return e.kind() == ErrorKind::kUsage ? kExitUsage : kExitError;
}

struct CrashArgs {
  crash::Options ro;
  std::optional<int> random;
  std::vector<std::string> files;
  std::string log_path, target, to_mark;
  std::optional<uint64_t> from, to;
};

int cmd_run(CrashArgs& a) {
  crash::Options& ro = a.ro;
  ro.random = a.random;
  auto list = scenario::collect_files(a.files);
  if (!list.ok()) return report(list.error());
  bool bad = false;
  for (const auto& f : *list) {
    auto r = crash::run(f, ro);
    std::printf("%s\n", r.to_json_line().c_str());
    std::fflush(stdout);
    const bool failed = r.status != "pass" && r.status != "skip";
    if (failed) bad = true;
    // The result is the JSON line on stdout; this is its summary for people (a warning when the
    // run did not pass, so -q still shows it).
    spdlog::log(failed ? spdlog::level::warn : spdlog::level::info,
                "cowlab crash: {} on {}: {}, {} states checked ({} flush, {} random points){}{}",
                r.scenario, r.driver, r.status, static_cast<unsigned long long>(r.states_checked),
                static_cast<unsigned long long>(r.flush_points),
                static_cast<unsigned long long>(r.random_points), r.reason.empty() ? "" : ": ",
                r.reason);
    for (const auto& x : r.findings)
      spdlog::warn("  point {}, phase \"{}\": {}: {}", static_cast<unsigned long long>(x.point),
                   x.phase, x.invariant, x.observed);
  }
  return bad ? kExitError : kExitOk;
}

int cmd_log_or_replay(CrashArgs& a, bool log_only) {
  auto opened = logwrites::LogWrites::open(a.log_path);
  if (!opened.ok()) return report(opened.error());
  if (log_only) {
    for (const auto& e : opened->entries()) {
      nlohmann::json j{{"index", e.index}, {"sector", e.sector}, {"nr_sectors", e.nr_sectors}, {"flags", e.flags}};
      if (e.is_mark()) j["mark"] = e.mark;
      std::printf("%s\n", j.dump().c_str());
    }
    return kExitOk;
  }
  uint64_t end = opened->entries().size();
  if (a.to) end = *a.to;
  if (!a.to_mark.empty()) {
    auto m = opened->find_mark(a.to_mark, a.from.value_or(0));
    if (!m) return report(Error::usage("replay: log " + a.log_path + " has no mark \"" + a.to_mark + "\""));
    end = *m + 1;
  }
  auto r = opened->replay(a.target, a.from.value_or(0), end);
  if (!r.ok()) return report(r.error());
  return kExitOk;
}

}  // namespace

void add_crash_commands(CLI::App& root, CommandContext& ctx) {
  auto a = std::make_shared<CrashArgs>();
  CLI::App* app = root.add_subcommand("crash", "power-cut testing with dm-log-writes: run, log, replay (docs/crash.md)");
  crash::Options& ro = a->ro;
  auto* run =
      app->add_subcommand("run",
                         "record crash scenarios on dm-log-writes and check every crash point "
                         "(root; wipes --device); one JSON line per scenario");
  run->add_option("--driver", ro.driver, "driver to test")->required();
  run->add_option("--device", ro.device, "scratch block device (everything on it is destroyed)")
      ->required();
  run->add_option("--crash-random", a->random,
                  "random non-flush points per crashed phase (overrides the scenario)")
      ->check(CLI::Range(0, 100000));
  run->add_option("--seed", ro.seed, "seed of the random points (default 1)");
  run->add_option("--work-dir", ro.work_dir, "mount points and tars (default /run/cowlab-crash)");
  run->add_option("files", a->files, "crash scenario files or directories")->required();
  run->callback([a, &ctx] { ctx.status = cmd_run(*a); });

  auto* log = app->add_subcommand("log", "print a dm-log-writes log's entries as JSON lines");
  log->add_option("log", a->log_path, "the log device or file")->required();
  log->callback([a, &ctx] { ctx.status = cmd_log_or_replay(*a, true); });
  auto* replay = app->add_subcommand("replay", "replay a dm-log-writes log onto a device or file");
  replay->add_option("log", a->log_path, "the log device or file")->required();
  replay->add_option("target", a->target, "device or file holding the starting state")->required();
  replay->add_option("--from", a->from, "first entry (default 0)");
  auto* to_opt = replay->add_option("--to", a->to, "replay entries before this index");
  replay->add_option("--to-mark", a->to_mark, "replay up to and including this mark")->excludes(to_opt);
  replay->callback([a, &ctx] { ctx.status = cmd_log_or_replay(*a, false); });
}

}  // namespace cowlab::cli
