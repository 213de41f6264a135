// `cowlab bisect`: the command line of bisect.h.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cowlab/harness/bisect.h"
#include "cowlab/log.h"
#include "cowlab/registry.h"  // split_list
#include "cowlab/scenario.h"

namespace cowlab::harness {

namespace {

namespace fs = std::filesystem;

struct BisectArgs {
  BisectOptions o;
  std::string profiles, scenario, out = "bisect-report", state;
  std::vector<std::string> patches, fragments;
};

int bisect_command(BisectArgs& a) {
  BisectOptions& o = a.o;
  const std::string& profiles = a.profiles;
  const std::string& scenario = a.scenario;
  const std::string& out = a.out;
  const auto& patches = a.patches;
  const auto& fragments = a.fragments;
  auto usage = [](const std::string& m) {
    spdlog::error("cowlab bisect: {}", m);
    return 2;
  };
  if (scenario.empty()) return usage("--scenario FILE is required (the cell's scenario)");
  if (o.driver.empty()) return usage("--driver D is required (the cell's driver)");
  bool git_mode = !o.source.empty();
  if (git_mode == !profiles.empty())
    return usage("give either --profiles P1,...,Pn or --source DIR --good REV --bad REV");
  if (git_mode && (o.good.empty() || o.bad.empty()))
    return usage("--source needs --good REV and --bad REV");
  if (!git_mode && (!o.good.empty() || !o.bad.empty() || !patches.empty() || !fragments.empty() ||
                    !o.config.empty()))
    return usage("--good, --bad, --patch, --config and --config-fragment belong to --source");
  auto loaded = scenario::load(scenario);
  if (!loaded.ok()) return usage("--scenario " + scenario + ": " + loaded.error().message());
  static const std::vector<std::string> kDrivers = {"aufs",    "btrfs", "devicemapper",
                                                    "overlay", "vfs",   "zfs"};
  if (std::find(kDrivers.begin(), kDrivers.end(), o.driver) == kDrivers.end())
    return usage("--driver \"" + o.driver +
                 "\" is not a driver (aufs, btrfs, devicemapper, overlay, vfs, zfs)");
  for (const auto& p : patches)
    if (!fs::is_regular_file(p)) return usage("--patch " + p + ": no such file");
  for (const auto& f : fragments)
    if (!fs::is_regular_file(f)) return usage("--config-fragment " + f + ": no such file");
  if (!o.config.empty() && !fs::is_regular_file(o.config))
    return usage("--config " + o.config.string() + ": no such file");
  o.scenario = scenario;
  o.patches.assign(patches.begin(), patches.end());
  o.config_fragments.assign(fragments.begin(), fragments.end());
  o.profiles = split_list(profiles);
  o.out = out;

  auto r = git_mode ? bisect_git(o, make_kernel_builder()) : bisect_profiles(o);
  if (!r.ok()) {
    spdlog::error("cowlab bisect: {}", r.error().message());
    return r.error().kind() == ErrorKind::kUsage ? 2 : 1;
  }
  std::printf("cell: %s on %s; outcome %s -> %s\n",
              r->steps.empty() ? "" : (*loaded)->name().c_str(), o.driver.c_str(),
              r->old_status.c_str(), r->new_status.c_str());
  size_t searched = 0, skipped = 0;
  for (const auto& s : r->steps) {
    ++searched;
    skipped += s.verdict == StepVerdict::kSkip;
  }
  if (r->first_new.empty()) {
    std::printf("no single first %s: skipped steps leave these candidates:\n",
                git_mode ? "commit" : "profile");
    for (const auto& c : r->candidates) std::printf("  %s\n", c.c_str());
  } else {
    std::printf("first %s: %s %s\n", git_mode ? "bad commit" : "new profile", r->first_new.c_str(),
                r->first_new_subject.c_str());
    std::printf("parent: %s\nconfirmed: %s (%u runs each on it and its parent)\n",
                r->parent.c_str(), r->confirmed ? "yes" : "NO", o.confirm ? o.confirm : o.repeat);
  }
  std::printf("%zu steps (%zu skipped), %.0f s wall: build %.0f s, run %.0f s\n", searched, skipped,
              r->wall_seconds, r->build_seconds, r->run_seconds);
  std::printf("log: %s/bisect.log  steps: %s/steps.json  reproducer: %s/reproducer\n",
              fs::absolute(o.out).c_str(), fs::absolute(o.out).c_str(),
              fs::absolute(o.out).c_str());
  return !r->first_new.empty() && r->confirmed ? 0 : 1;
}

}  // namespace

void add_bisect_commands(CLI::App& root, CommandContext& ctx) {
  auto a = std::make_shared<BisectArgs>();
  BisectOptions& o = a->o;
  CLI::App* b = root.add_subcommand(
      "bisect", "find the first commit or profile where a cell's outcome changes");
  b->add_option("--profiles", a->profiles, "P1,P2,...,Pn: profiles oldest first (no builds)");
  b->add_option("--source", o.source, "a git kernel work tree (clean)");
  b->add_option("--good", o.good, "a revision with the old outcome");
  b->add_option("--bad", o.bad, "a revision with the new outcome");
  b->add_option(
      "--config", o.config,
      "the base kernel .config of every step (with --source; default: tinyconfig + cowlab's "
      "fragments, as cowlab kernel build)");
  b->add_option("--config-fragment", a->fragments, "a config fragment merged on top (repeatable)");
  b->add_option("--patch", a->patches,
                "a patch applied on top of every commit for its build (repeatable)");
  b->add_option("--scenario", a->scenario, "the scenario file of the cell (required)");
  b->add_option("--driver", o.driver, "the driver of the cell (required)");
  b->add_option("--repeat", o.repeat,
                "runs per step (old/new only when every run agrees; default 3)")
      ->check(CLI::Range(1u, 50u));
  b->add_option("--confirm", o.confirm, "runs on the culprit and its parent (default: --repeat)")
      ->check(CLI::Range(0u, 50u));
  b->add_option("--out", a->out,
                "directory for the log, steps and reproducer (default bisect-report)");
  b->add_option("--work-dir", o.work_dir,
                "the kernel work tree kept across steps and runs (default: cowlab kernel build's, "
                "one per source tree)");
  b->add_option("--memory", o.memory_mb, "guest memory in MiB");
  b->footer(
      "Exit status: 0 a first new commit/profile found and confirmed, 1 none found or not "
      "confirmed,\n"
      "2 usage error.  See docs/regressions.md.");
  // One git-bisect step, what `git bisect run` calls: internal, so not in --help.
  b->add_option("--step-state", a->state, "")->group("");
  b->callback([a, &ctx] {
    ctx.status =
        a->state.empty() ? bisect_command(*a) : bisect_step_main(a->state, make_kernel_builder());
  });
}

}  // namespace cowlab::harness
