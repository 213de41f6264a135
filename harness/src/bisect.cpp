// Bisection over profiles and over git history (the contract is in bisect.h).
#include "cowlab/harness/bisect.h"
#include "cowlab/harness/self_binary.h"
#include "cowlab/log.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "cowlab/harness/kernel_build.h"
#include "cowlab/harness/matrix.h"
#include "cowlab/harness/report.h"
#include "cowlab/sys.h"
#include "src/process.h"
#include "src/util.h"

namespace cowlab::harness {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string two_digits(size_t n) {
  char b[16];
  std::snprintf(b, sizeof b, "%02zu", n);
  return b;
}

json step_json(const BisectStep& s) {
  return {{"point", s.point},
          {"subject", s.subject},
          {"status", s.status},
          {"runs", s.runs},
          {"verdict", step_verdict_name(s.verdict)},
          {"reason", s.reason},
          {"build_seconds", s.build_seconds},
          {"run_seconds", s.run_seconds},
          {"dir", s.dir.string()}};
}

BisectStep step_from_json(const json& j) {
  BisectStep s;
  s.point = j.value("point", "");
  s.subject = j.value("subject", "");
  s.status = j.value("status", "");
  s.runs = j.value("runs", "");
  std::string v = j.value("verdict", "skip");
  s.verdict = v == "old" ? StepVerdict::kOld : v == "new" ? StepVerdict::kNew : StepVerdict::kSkip;
  s.reason = j.value("reason", "");
  s.build_seconds = j.value("build_seconds", 0.0);
  s.run_seconds = j.value("run_seconds", 0.0);
  s.dir = j.value("dir", "");
  return s;
}

Result<void> write_json(const fs::path& p, const json& j) {
  return sys::write_file_atomic(p.string(), j.dump(2) + "\n", 0644);
}

// Runs a command to completion with its output in `log`; returns the exit status.
Result<int> run_logged(const std::vector<std::string>& argv, const fs::path& log,
                       const std::vector<std::pair<std::string, std::string>>& env = {}) {
  detail::SpawnOptions so;
  so.argv = argv;
  so.env = env;
  so.output_file = log;
  auto p = COWLAB_TRY(detail::Subprocess::spawn(so));
  while (!p.wait_for(std::chrono::milliseconds(500))) {
  }
  return p.exit_status().value_or(255);
}

// Runs a command and returns its output (trimmed), failing on a non-zero exit.
Result<std::string> capture(const std::vector<std::string>& argv, const fs::path& scratch) {
  int rc = COWLAB_TRY(run_logged(argv, scratch));
  std::string out = COWLAB_TRY(detail::read_file(scratch));
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  if (rc != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    return Error(ErrorKind::kSystem,
                 cmd + ": exit " + std::to_string(rc) + ": " + out.substr(0, 600));
  }
  return out;
}

Result<void> copy_into(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec)
    return Error(ErrorKind::kSystem,
                 "copy " + from.string() + " -> " + to.string() + ": " + ec.message(), ec.value());
  return {};
}

std::string quote(const std::string& s) {
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return o + "'";
}

// The reproducer bundle: the scenario (and its data/), patches, fragments, config, what was
// found, and a rerun.sh that repeats the confirmation.
Result<void> write_reproducer(const BisectOptions& o, const BisectResult& r,
                              const std::string& rerun_command) {
  fs::path dir = o.out / "reproducer";
  COWLAB_TRY(sys::mkdir_all(dir.string(), 0755));
  COWLAB_TRY(copy_into(o.scenario, dir / o.scenario.filename()));
  fs::path data = o.scenario.parent_path() / "data";
  if (fs::is_directory(data)) {
    std::error_code ec;
    fs::copy(data, dir / "data", fs::copy_options::recursive | fs::copy_options::overwrite_existing,
             ec);
  }
  for (const auto& p : o.patches) COWLAB_TRY(copy_into(p, dir / p.filename()));
  for (const auto& f : o.config_fragments) COWLAB_TRY(copy_into(f, dir / f.filename()));
  if (!o.config.empty()) COWLAB_TRY(copy_into(o.config, dir / "base.config"));
  json info = {{"first_new", r.first_new},
               {"subject", r.first_new_subject},
               {"parent", r.parent},
               {"old_status", r.old_status},
               {"new_status", r.new_status},
               {"confirmed", r.confirmed},
               {"candidates", r.candidates},
               {"driver", o.driver},
               {"scenario", o.scenario.filename().string()},
               {"source", o.source.string()},
               {"profiles", o.profiles}};
  COWLAB_TRY(write_json(dir / "culprit.json", info));
  std::string script = "#!/bin/sh\n# Reruns the confirmation of cowlab bisect: " + r.first_new +
                       " (" + r.first_new_subject + ") against " + r.parent +
                       ".\nhere=$(cd \"$(dirname \"$0\")\" && pwd)\nexec " + rerun_command + "\n";
  return sys::write_file_atomic((dir / "rerun.sh").string(), script, 0755);
}

Result<void> write_summary(const BisectOptions& o, const BisectResult& r) {
  json steps = json::array();
  for (const auto& s : r.steps) steps.push_back(step_json(s));
  json doc = {{"old_status", r.old_status},
              {"new_status", r.new_status},
              {"first_new", r.first_new},
              {"subject", r.first_new_subject},
              {"parent", r.parent},
              {"candidates", r.candidates},
              {"confirmed", r.confirmed},
              {"wall_seconds", r.wall_seconds},
              {"build_seconds", r.build_seconds},
              {"run_seconds", r.run_seconds},
              {"steps", steps}};
  return write_json(o.out / "steps.json", doc);
}

void print_step(const std::string& what, const BisectStep& s) {
  spdlog::info("bisect: {:<8} {:<14} {:<9} {:<5} -> {:<4} {}{} (build {:.0f} s, run {:.0f} s)",
               what, s.point.substr(0, 12), s.status, s.runs, step_verdict_name(s.verdict),
               s.subject.substr(0, 50),
               s.reason.empty() ? "" : "  [" + s.reason.substr(0, 160) + "]", s.build_seconds,
               s.run_seconds);
}

// The ends: both must give a definite outcome, and different ones.
Result<void> check_ends(const BisectStep& good, const BisectStep& bad, const std::string& gname,
                        const std::string& bname) {
  auto definite = [](const BisectStep& s, const std::string& name) -> Result<void> {
    if (s.status.empty() || s.status == "skip" || s.status == "flaky" ||
        s.reason.rfind("guest did not boot", 0) == 0 || s.reason.rfind("does not build", 0) == 0)
      return Error::usage("bisect: " + name + " (" + s.point + ") gives no definite outcome: " +
                          (s.status.empty() ? "" : s.status + " ") + s.reason);
    return {};
  };
  COWLAB_TRY(definite(good, gname));
  COWLAB_TRY(definite(bad, bname));
  if (good.status == bad.status)
    return Error::usage("bisect: " + gname + " (" + good.point + ") and " + bname + " (" +
                        bad.point + ") both give \"" + good.status + "\": nothing to bisect");
  return {};
}

}  // namespace

const char* step_verdict_name(StepVerdict v) {
  switch (v) {
    case StepVerdict::kOld:
      return "old";
    case StepVerdict::kNew:
      return "new";
    case StepVerdict::kSkip:
      return "skip";
  }
  return "skip";
}

StepVerdict classify_cell(const std::string& cell_json, const std::string& old_status,
                          const std::string& new_status, std::string* reason) {
  json c = json::parse(cell_json, nullptr, false);
  auto why = [&](const std::string& s) {
    if (reason) *reason = s;
    return StepVerdict::kSkip;
  };
  if (c.is_discarded()) return why("unreadable cell result");
  std::string st = c.value("status", "error");
  std::string r = c.value("reason", "");
  int total = c.contains("runs") ? c["runs"].value("total", 1) : 1;
  int same = c.contains("runs") ? c["runs"].value(st, total) : total;
  if (st == "flaky")
    return why("flaky: " + std::to_string(c["runs"].value("pass", 0)) + "/" +
               std::to_string(total) + " runs passed");
  if (st == "skip") return why("the cell does not apply: " + r);
  if (r.rfind("guest failed before this scenario ran", 0) == 0)
    return why("guest did not boot: " + r);
  if (same != total) return why("mixed outcomes: " + c["runs"].dump());
  std::string detail;
  if (c.contains("failures") && c["failures"].is_array() && !c["failures"].empty()) {
    const auto& f = c["failures"][0];
    detail = f.value("expectation", "") + ": expected " + f.value("expected", "") + ", observed " +
             f.value("observed", "");
  } else {
    detail = r;
  }
  if (reason) *reason = detail;
  if (st == old_status) return StepVerdict::kOld;
  if (st == new_status) return StepVerdict::kNew;
  return why("outcome \"" + st + "\" is neither the good end's \"" + old_status +
             "\" nor the bad end's \"" + new_status + "\": " + detail);
}

Result<BisectStep> run_cell_step(const ProfileSpec& profile, const BisectOptions& o,
                                 unsigned repeat, const fs::path& dir) {
  MatrixOptions mo;
  if (profile.kind == ProfileKind::kDebian)
    mo.profiles = {profile.name};
  else
    mo.extra_profiles = {profile};
  mo.drivers = {o.driver};
  mo.scenario_args = {o.scenario.string()};
  mo.repeat = repeat;
  mo.jobs = 1;
  mo.out = dir;
  mo.memory_mb = o.memory_mb;
  mo.cowlab_binary = o.cowlab_binary;
  mo.command = "cowlab bisect (step on " + profile.name + ")";
  auto t0 = Clock::now();
  MatrixReport rep;
  COWLAB_TRY(run_matrix(mo, &rep));
  BisectStep s;
  s.point = profile.name;
  s.dir = dir;
  s.run_seconds = detail::seconds_since(t0);
  if (!rep.profiles.empty()) s.subject = rep.profiles[0].kernel_release;
  std::string cell;
  for (const auto& line : rep.results) {
    json r = json::parse(line, nullptr, false);
    if (!r.is_discarded() && r.value("driver", "") == o.driver &&
        r.value("scenario", "") != "kernel-log")
      cell = line;
  }
  if (cell.empty()) {
    s.reason = "no result for the cell";
    return s;
  }
  json c = json::parse(cell);
  s.status = c.value("status", "error");
  s.runs = std::to_string(c.contains("runs") ? c["runs"].value("pass", 0) : 0) + "/" +
           std::to_string(c.contains("runs") ? c["runs"].value("total", 1) : 1);
  // The verdict is filled in by the caller once the ends are known.
  classify_cell(cell, "\x01", "\x02", &s.reason);
  return s;
}

namespace {

// Re-derives the verdict of a step from its recorded cell (the ends are known only later).
StepVerdict verdict_of(const BisectStep& s, const std::string& old_status,
                       const std::string& new_status, std::string* reason) {
  auto rep = read_report(s.dir);
  if (!rep.ok()) {
    if (reason) *reason = s.reason;
    return StepVerdict::kSkip;
  }
  for (const auto& line : rep->results) {
    json r = json::parse(line, nullptr, false);
    if (!r.is_discarded() && r.value("scenario", "") != "kernel-log")
      return classify_cell(line, old_status, new_status, reason);
  }
  if (reason) *reason = "no result for the cell";
  return StepVerdict::kSkip;
}

// The ends ran before their outcomes were known: check that they differ and are definite, take
// their statuses as old and new, then judge them like every other step (unanimous runs only).
Result<void> settle_ends(BisectStep& good, BisectStep& bad, const std::string& gname,
                         const std::string& bname, BisectResult& res) {
  COWLAB_TRY(check_ends(good, bad, gname, bname));
  res.old_status = good.status;
  res.new_status = bad.status;
  good.verdict = verdict_of(good, res.old_status, res.new_status, &good.reason);
  bad.verdict = verdict_of(bad, res.old_status, res.new_status, &bad.reason);
  if (good.verdict != StepVerdict::kOld || bad.verdict != StepVerdict::kNew)
    return Error::usage("bisect: the ends are not definite: " + good.reason + " / " + bad.reason);
  return {};
}

}  // namespace

Result<SearchResult> search_first_new(size_t n,
                                      const std::function<Result<StepVerdict>(size_t)>& evaluate) {
  if (n < 2) return Error::usage("bisect: nothing to search between fewer than two points");
  size_t lo = 0, hi = n - 1;
  std::set<size_t> skipped;
  for (;;) {
    std::vector<size_t> open;
    for (size_t i = lo + 1; i < hi; ++i)
      if (!skipped.count(i)) open.push_back(i);
    if (open.empty()) break;
    double mid = (static_cast<double>(lo) + static_cast<double>(hi)) / 2;
    size_t pick = *std::min_element(open.begin(), open.end(), [&](size_t a, size_t b) {
      return std::abs(static_cast<double>(a) - mid) < std::abs(static_cast<double>(b) - mid);
    });
    StepVerdict v = COWLAB_TRY(evaluate(pick));
    if (v == StepVerdict::kOld)
      lo = pick;
    else if (v == StepVerdict::kNew)
      hi = pick;
    else
      skipped.insert(pick);
  }
  return SearchResult{lo, hi, hi - lo > 1};  // only skipped points can be left between them
}

Result<BisectResult> bisect_profiles(const BisectOptions& o) {
  auto t0 = Clock::now();
  if (o.profiles.size() < 2)
    return Error::usage("bisect: --profiles needs at least two profiles, oldest first");
  std::set<std::string> seen;
  for (const auto& p : o.profiles)
    if (!seen.insert(p).second)
      return Error::usage("bisect: profile \"" + p + "\" is listed twice");
  std::vector<ProfileSpec> specs;
  for (const auto& p : o.profiles) specs.push_back(COWLAB_TRY(find_profile(p)));
  COWLAB_TRY(sys::mkdir_all((o.out / "steps").string(), 0755));
  BisectResult res;
  std::vector<std::string> log;
  size_t n = 0;
  auto run = [&](size_t i, unsigned repeat, const std::string& what) -> Result<BisectStep> {
    fs::path dir = o.out / "steps" / (two_digits(++n) + "-" + specs[i].name);
    auto s = COWLAB_TRY(run_cell_step(specs[i], o, repeat, dir));
    if (!res.old_status.empty())
      s.verdict = verdict_of(s, res.old_status, res.new_status, &s.reason);
    res.run_seconds += s.run_seconds;
    return s;
  };
  auto record = [&](const std::string& what, const BisectStep& s) {
    print_step(what, s);
    log.push_back(what + " " + s.point + " (" + s.subject + "): " + s.status + " " + s.runs +
                  " -> " + step_verdict_name(s.verdict) +
                  (s.reason.empty() ? "" : " [" + s.reason + "]"));
    res.steps.push_back(s);
  };
  auto good = COWLAB_TRY(run(0, o.repeat, "good"));
  auto bad = COWLAB_TRY(run(specs.size() - 1, o.repeat, "bad"));
  COWLAB_TRY(settle_ends(good, bad, "the first profile", "the last profile", res));
  record("good", good);
  record("bad", bad);

  auto found = COWLAB_TRY(search_first_new(specs.size(), [&](size_t i) -> Result<StepVerdict> {
    auto s = COWLAB_TRY(run(i, o.repeat, "step"));
    record("step", s);
    return s.verdict;
  }));
  size_t lo = found.last_old, hi = found.first_new;
  if (found.ambiguous) {
    for (size_t i = lo + 1; i <= hi; ++i) res.candidates.push_back(specs[i].name);
    log.push_back("ambiguous: the first new profile is one of the skipped ones or " +
                  specs[hi].name);
  } else {
    res.first_new = specs[hi].name;
    res.parent = specs[lo].name;
    for (const auto& s : res.steps)
      if (s.point == res.first_new) res.first_new_subject = s.subject;
    unsigned confirm = o.confirm ? o.confirm : o.repeat;
    auto c1 = COWLAB_TRY(run(hi, confirm, "confirm"));
    record("confirm", c1);
    auto c0 = COWLAB_TRY(run(lo, confirm, "confirm"));
    record("confirm", c0);
    res.confirmed = c1.verdict == StepVerdict::kNew && c0.verdict == StepVerdict::kOld;
    log.push_back(std::string("first new profile: ") + res.first_new + " (" +
                  res.first_new_subject + "), after " + res.parent +
                  (res.confirmed ? ", confirmed" : ", NOT confirmed by the reruns"));
  }
  res.wall_seconds = detail::seconds_since(t0);
  std::string text;
  for (const auto& l : log) text += l + "\n";
  COWLAB_TRY(sys::write_file_atomic((o.out / "bisect.log").string(), text, 0644));
  COWLAB_TRY(write_summary(o, res));
  if (!res.first_new.empty())
    COWLAB_TRY(write_reproducer(
        o, res,
        "cowlab matrix --profiles " + res.parent + "," + res.first_new + " --drivers " + o.driver +
            " --repeat " + std::to_string(o.confirm ? o.confirm : o.repeat) +
            " --out \"$here/rerun\" \"$here/" + o.scenario.filename().string() + "\""));
  return res;
}

// ---- git mode -----------------------------------------------------------------------------

KernelBuilder make_kernel_builder() {
  return [](const BisectOptions& o, const fs::path& work_dir,
            const std::string& name) -> Result<ProfileSpec> {
    // The one kernel build of cowlab (kernel_build.h): the tree as checked out, hard-linked into
    // one work tree kept across steps, so each step's make rebuilds only what the commit changed
    // (and ccache serves the rest); patches go into that work tree, never into the user's tree.
    KernelBuildRequest rq;
    rq.source = fs::absolute(o.source).string();
    rq.patches = o.patches;
    rq.config = o.config;
    rq.fragments = o.config_fragments;
    rq.profile = name;
    // Building the ZFS module costs minutes a step; only a zfs cell needs it.
    rq.zfs = o.driver == "zfs" ? ZfsMode::kAuto : ZfsMode::kSkip;
    rq.work_dir = work_dir;
    // The step's matrix builds the profile's boot images itself (run_matrix): building them
    // here too resolved the root's packages twice a step (minutes under load).
    rq.build_images = false;
    rq.progress = [](std::string_view line) { spdlog::info("[kernel] {}", line); };
    auto built = build_kernel(rq);
    if (!built.ok()) return built.error();
    return built->profile;
  };
}

namespace {

struct GitState {
  BisectOptions o;
  std::string old_status, new_status;
};

json options_json(const BisectOptions& o) {
  auto paths = [](const std::vector<fs::path>& v) {
    json a = json::array();
    for (const auto& p : v) a.push_back(fs::absolute(p).string());
    return a;
  };
  return {{"scenario", fs::absolute(o.scenario).string()},
          {"driver", o.driver},
          {"repeat", o.repeat},
          {"confirm", o.confirm},
          {"out", fs::absolute(o.out).string()},
          {"memory_mb", o.memory_mb},
          {"cowlab_binary", o.cowlab_binary.string()},
          {"source", fs::absolute(o.source).string()},
          {"good", o.good},
          {"bad", o.bad},
          {"patches", paths(o.patches)},
          {"config_fragments", paths(o.config_fragments)},
          {"config", o.config.empty() ? std::string() : fs::absolute(o.config).string()},
          {"work_dir", o.work_dir.empty() ? std::string() : fs::absolute(o.work_dir).string()}};
}

BisectOptions options_from_json(const json& j) {
  BisectOptions o;
  o.scenario = j.value("scenario", "");
  o.driver = j.value("driver", "");
  o.repeat = j.value("repeat", 3u);
  o.confirm = j.value("confirm", 0u);
  o.out = j.value("out", "");
  o.memory_mb = j.value("memory_mb", 1024u);
  o.cowlab_binary = j.value("cowlab_binary", "");
  o.source = j.value("source", "");
  o.good = j.value("good", "");
  o.bad = j.value("bad", "");
  for (const auto& p : j.value("patches", json::array())) o.patches.push_back(p.get<std::string>());
  for (const auto& p : j.value("config_fragments", json::array()))
    o.config_fragments.push_back(p.get<std::string>());
  o.config = j.value("config", "");
  o.work_dir = j.value("work_dir", "");
  return o;
}

std::vector<std::string> git(const BisectOptions& o, std::vector<std::string> args) {
  args.insert(args.begin(), {"git", "-C", fs::absolute(o.source).string()});
  return args;
}

// Builds and runs the commit checked out now (the builder applies the patches in its own work
// tree: git bisect always sees the tree it checked out).
Result<BisectStep> git_step(const BisectOptions& o, const KernelBuilder& build,
                            const std::string& what, unsigned repeat, const std::string& old_status,
                            const std::string& new_status) {
  fs::path scratch = o.out / "git.out";
  BisectStep s;
  s.point = COWLAB_TRY(capture(git(o, {"rev-parse", "HEAD"}), scratch));
  s.subject = COWLAB_TRY(capture(git(o, {"log", "-1", "--format=%s", "HEAD"}), scratch));
  size_t n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator(o.out / "steps", ec); !ec && it != fs::directory_iterator();
       ++it)
    ++n;
  s.dir = o.out / "steps" / (two_digits(n + 1) + "-" + s.point.substr(0, 12));
  COWLAB_TRY(sys::mkdir_all(s.dir.string(), 0755));
  auto t0 = Clock::now();
  Result<ProfileSpec> spec = build(o, o.work_dir, "bisect-" + s.point.substr(0, 12));
  s.build_seconds = detail::seconds_since(t0);
  if (!spec.ok()) {
    s.verdict = StepVerdict::kSkip;
    s.reason = spec.error().message();
    if (s.reason.rfind("does not build", 0) != 0) s.reason = "does not build: " + s.reason;
    (void)write_json(s.dir / "step.json", step_json(s));
    print_step(what, s);
    return s;
  }
  // The profile boots the image straight from the shared build directory: steps run one at a
  // time, and each step's manifest records what it booted.
  auto cell = run_cell_step(*spec, o, repeat, s.dir);
  if (!cell.ok()) {
    s.verdict = StepVerdict::kSkip;
    s.reason = "guest did not boot: " + cell.error().message();
  } else {
    BisectStep c = *cell;
    s.status = c.status;
    s.runs = c.runs;
    s.run_seconds = c.run_seconds;
    s.reason = c.reason;
    if (!old_status.empty()) s.verdict = verdict_of(c, old_status, new_status, &s.reason);
  }
  (void)write_json(s.dir / "step.json", step_json(s));
  print_step(what, s);
  return s;
}

Result<BisectStep> checkout_and_step(const BisectOptions& o, const KernelBuilder& build,
                                     const std::string& rev, const std::string& what,
                                     unsigned repeat, const std::string& old_status,
                                     const std::string& new_status) {
  COWLAB_TRY(capture(git(o, {"checkout", "-q", "--detach", rev}), o.out / "git.out"));
  return git_step(o, build, what, repeat, old_status, new_status);
}

}  // namespace

int bisect_step_main(const fs::path& state_file, const KernelBuilder& build) {
  // Exit statuses for `git bisect run`: 0 old ("good"), 1 new ("bad"), 125 skip; 128 aborts the
  // bisection (a harness error, not a property of the commit).
  auto text = detail::read_file(state_file);
  if (!text.ok()) {
    spdlog::error("cowlab bisect --step-state: {}", text.error().message());
    return 128;
  }
  json st = json::parse(*text, nullptr, false);
  if (st.is_discarded()) {
    spdlog::error("cowlab bisect --step-state: {}: not a bisect state file", state_file.string());
    return 128;
  }
  BisectOptions o = options_from_json(st["options"]);
  auto s =
      git_step(o, build, "step", o.repeat, st.value("old_status", ""), st.value("new_status", ""));
  if (!s.ok()) {
    spdlog::error("cowlab bisect --step-state: {}", s.error().message());
    return 128;
  }
  switch (s->verdict) {
    case StepVerdict::kOld:
      return 0;
    case StepVerdict::kNew:
      return 1;
    case StepVerdict::kSkip:
      return 125;
  }
  return 125;
}

Result<BisectResult> bisect_git(const BisectOptions& o, const KernelBuilder& build) {
  auto t0 = Clock::now();
  COWLAB_TRY(sys::mkdir_all((o.out / "steps").string(), 0755));
  fs::path scratch = o.out / "git.out";
  auto top = capture(git(o, {"rev-parse", "--show-toplevel"}), scratch);
  if (!top.ok())
    return Error::usage("bisect: --source " + o.source.string() + " is not a git work tree");
  auto dirty =
      COWLAB_TRY(capture(git(o, {"status", "--porcelain", "--untracked-files=no"}), scratch));
  if (!dirty.empty())
    return Error::usage("bisect: --source " + o.source.string() +
                        " has uncommitted changes; commit or stash them first");
  auto good = capture(git(o, {"rev-parse", "--verify", o.good + "^{commit}"}), scratch);
  if (!good.ok())
    return Error::usage("bisect: --good " + o.good + " is not a commit of " + o.source.string());
  auto bad = capture(git(o, {"rev-parse", "--verify", o.bad + "^{commit}"}), scratch);
  if (!bad.ok())
    return Error::usage("bisect: --bad " + o.bad + " is not a commit of " + o.source.string());
  auto anc = run_logged(git(o, {"merge-base", "--is-ancestor", *good, *bad}), scratch);
  if (!anc.ok() || *anc != 0)
    return Error::usage("bisect: --good " + o.good + " is not an ancestor of --bad " + o.bad);
  std::string head = COWLAB_TRY(capture(git(o, {"rev-parse", "--abbrev-ref", "HEAD"}), scratch));
  if (head == "HEAD") head = COWLAB_TRY(capture(git(o, {"rev-parse", "HEAD"}), scratch));

  BisectResult res;
  auto finish = [&]() { (void)run_logged(git(o, {"checkout", "-q", head}), scratch); };
  auto body = [&]() -> Result<void> {
    auto g = COWLAB_TRY(checkout_and_step(o, build, *good, "good", o.repeat, "", ""));
    auto b = COWLAB_TRY(checkout_and_step(o, build, *bad, "bad", o.repeat, "", ""));
    // Judged now, their records are rewritten with that verdict and reason.
    COWLAB_TRY(settle_ends(g, b, "--good", "--bad", res));
    COWLAB_TRY(write_json(g.dir / "step.json", step_json(g)));
    COWLAB_TRY(write_json(b.dir / "step.json", step_json(b)));
    res.steps = {g, b};
    json state = {{"options", options_json(o)},
                  {"old_status", res.old_status},
                  {"new_status", res.new_status}};
    fs::path state_file = fs::absolute(o.out / "bisect-state.json");
    COWLAB_TRY(write_json(state_file, state));
    // Every step runs this very binary, even once its file is rebuilt (self_binary.h).
    fs::path self = COWLAB_TRY(self_binary()).readable;
    (void)run_logged(git(o, {"bisect", "reset"}), scratch);
    COWLAB_TRY(capture(git(o, {"bisect", "start", *bad, *good}), scratch));
    fs::path run_log = o.out / "bisect-run.log";
    int rc = COWLAB_TRY(run_logged(
        git(o, {"bisect", "run", self.string(), "bisect", "--step-state", state_file.string()}),
        run_log));
    std::string out = detail::read_file(run_log).value_or("");
    // git's own account of the run (one line per step): progress, like the steps themselves.
    if (!out.empty() && out.back() == '\n') out.pop_back();
    spdlog::info("{}", out);
    auto blog = capture(git(o, {"bisect", "log"}), scratch);
    COWLAB_TRY(sys::write_file_atomic((o.out / "bisect.log").string(),
                                      blog.ok() ? *blog + "\n" : out, 0644));
    (void)run_logged(git(o, {"bisect", "reset", head}), scratch);
    // The steps git ran, in order.
    std::vector<fs::path> dirs;
    for (const auto& e : fs::directory_iterator(o.out / "steps")) dirs.push_back(e.path());
    std::sort(dirs.begin(), dirs.end());
    for (size_t i = 2; i < dirs.size(); ++i) {
      auto t = detail::read_file(dirs[i] / "step.json");
      if (t.ok()) res.steps.push_back(step_from_json(json::parse(*t, nullptr, false)));
    }
    size_t pos = out.find(" is the first bad commit");
    if (rc != 0 || pos == std::string::npos) {
      size_t amb = out.find("The first bad commit could be any of:");
      if (amb != std::string::npos) {
        std::string rest = out.substr(amb);
        size_t p = rest.find('\n');
        while (p != std::string::npos) {
          size_t q = rest.find('\n', p + 1);
          std::string line =
              rest.substr(p + 1, q == std::string::npos ? std::string::npos : q - p - 1);
          if (line.size() == 40 && line.find_first_not_of("0123456789abcdef") == std::string::npos)
            res.candidates.push_back(line);
          p = q;
        }
      }
      if (res.candidates.empty())
        return Error(ErrorKind::kSystem,
                     "bisect: git bisect run did not name a first bad commit (exit " +
                         std::to_string(rc) + "); see " + run_log.string());
      return {};
    }
    size_t line_start = out.rfind('\n', pos);
    res.first_new = out.substr(line_start == std::string::npos ? 0 : line_start + 1,
                               pos - (line_start == std::string::npos ? 0 : line_start + 1));
    res.first_new_subject =
        COWLAB_TRY(capture(git(o, {"log", "-1", "--format=%s", res.first_new}), scratch));
    res.parent = COWLAB_TRY(capture(git(o, {"rev-parse", res.first_new + "^"}), scratch));
    unsigned confirm = o.confirm ? o.confirm : o.repeat;
    auto c1 = COWLAB_TRY(checkout_and_step(o, build, res.first_new, "confirm", confirm,
                                           res.old_status, res.new_status));
    auto c0 = COWLAB_TRY(checkout_and_step(o, build, res.parent, "confirm", confirm, res.old_status,
                                           res.new_status));
    res.steps.push_back(c1);
    res.steps.push_back(c0);
    res.confirmed = c1.verdict == StepVerdict::kNew && c0.verdict == StepVerdict::kOld;
    return {};
  };
  auto r = body();
  finish();
  if (!r.ok()) return r.error();
  for (const auto& s : res.steps) {
    res.build_seconds += s.build_seconds;
    res.run_seconds += s.run_seconds;
  }
  res.wall_seconds = detail::seconds_since(t0);
  COWLAB_TRY(write_summary(o, res));
  if (!res.first_new.empty()) {
    std::string cmd = "cowlab bisect --source " + quote(fs::absolute(o.source).string()) +
                      " --good " + res.parent + " --bad " + res.first_new + " --scenario \"$here/" +
                      o.scenario.filename().string() + "\" --driver " + o.driver + " --repeat " +
                      std::to_string(o.confirm ? o.confirm : o.repeat);
    if (!o.config.empty()) cmd += " --config \"$here/base.config\"";
    for (const auto& p : o.patches) cmd += " --patch \"$here/" + p.filename().string() + "\"";
    for (const auto& f : o.config_fragments)
      cmd += " --config-fragment \"$here/" + f.filename().string() + "\"";
    cmd += " --out \"$here/rerun\"";
    COWLAB_TRY(write_reproducer(o, res, cmd));
  }
  return res;
}

}  // namespace cowlab::harness
