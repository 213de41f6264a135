// `cowlab scenario reduce --profile`: one guest runs the whole reduction (reduce_guest.h).
#include "cowlab/harness/reduce_guest.h"
#include "cowlab/harness/self_binary.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cowlab/harness/accel.h"
#include "cowlab/harness/guest.h"
#include "cowlab/harness/profile.h"
#include "cowlab/registry.h"
#include "cowlab/scenario.h"
#include "cowlab/sys.h"
#include "src/scratch.h"
#include "src/strip.h"

namespace fs = std::filesystem;

namespace cowlab::harness {

namespace {

std::string last_line(const std::string& text) {
  size_t end = text.find_last_not_of('\n');
  if (end == std::string::npos) return "";
  size_t start = text.rfind('\n', end);
  return text.substr(start == std::string::npos ? 0 : start + 1,
                     end - (start == std::string::npos ? 0 : start + 1) + 1);
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t p = text.find(from); p != std::string::npos; p = text.find(from, p + to.size()))
    text.replace(p, from.size(), to);
  return text;
}

// The guest's directory of the payload (vm-images/guest/agent.sh exports it).
constexpr const char* kGuestPayload = "/run/cowlab/payload";

// What the guests of both modes share: the profile, this cowlab, the scenario's directory
// (its tar/oci layers) and a sparse scratch disk for the stores (as the matrix's).
struct Base {
  GuestSpec spec;
  fs::path scenario_dir;
  std::string where;  // "a debian-6.1 guest"
};

std::string format_script(const std::string& driver, const std::string& cowlab_command) {
  return scratch_setup_script(driver) + cowlab_command;
}

scenario::Status status_of(const std::string& name) {
  using scenario::Status;
  for (Status s : {Status::kPass, Status::kFail, Status::kSkip, Status::kError, Status::kTimeout,
                   Status::kPanic})
    if (name == scenario::status_name(s)) return s;
  return Status::kError;
}

// One candidate in a guest of its own: `cowlab scenario run`, its result lines back.  The
// kernel's own verdicts become the candidate's: a panic is `panic`, a hang or a timeout is
// `timeout`, and an oops/BUG/WARNING in the kernel log is one more failure, "kernel splat".
Result<std::vector<scenario::RunResult>> run_candidate(const Base& b, const std::string& driver,
                                                       const GuestReduceOptions& o,
                                                       const std::string& file) {
  // The candidate names tar/oci layers by host paths: in the guest they are in the payload.
  std::string text = COWLAB_TRY(sys::read_file(file));
  text =
      replace_all(text, b.scenario_dir.string() + "/", std::string(kGuestPayload) + "/scenario/");
  fs::path dir = fs::path(file).parent_path() / "guest";
  std::error_code ec;
  fs::create_directories(dir, ec);
  COWLAB_TRY(sys::write_file_atomic((dir / "candidate.yaml").string(), text));
  auto s = COWLAB_TRY(scenario::load(file));

  GuestSpec g = b.spec;
  g.payload.push_back({dir, "candidate"});
  g.command = {
      "/bin/sh",
      "-c",
      format_script(driver,
                    "exec cowlab scenario run --work-dir /run/cowlab/work --out "
                    "\"$COWLAB_RESULTS\" \"$COWLAB_PAYLOAD/candidate/candidate.yaml\" \"$@\""),
      "sh",
      "--driver",
      driver};
  for (const auto& opt : o.storage_opts) {
    g.command.push_back("--storage-opt");
    g.command.push_back(opt);
  }
  g.command_timeout = std::chrono::seconds(s->timeout_seconds() + 120);
  g.hang_timeout = std::chrono::seconds(300);
  auto r = COWLAB_TRY(run_guest(g));
  auto out = candidate_results(r, driver);
  if (!out.ok()) return std::move(out).error().with_context("scenario reduce: " + b.where);
  return out;
}

// The guests of one profile for `file`.
Result<Base> make_base(const std::string& profile, const std::string& driver,
                       const std::string& file) {
  auto spec = COWLAB_TRY_CTX(find_profile(profile), "scenario reduce --profile");
  auto image = COWLAB_TRY_CTX(load_profile_image(spec), "scenario reduce --profile");
  fs::path host = fs::absolute(file);
  Base b;
  b.scenario_dir = host.parent_path();
  b.where = "a " + profile + " guest";
  b.spec.image = image;
  b.spec.accel = choose_accel(image);
  b.spec.payload.push_back({b.scenario_dir, "scenario"});
  // Without its debug information, as `matrix` and `vm run` do (strip.h).
  auto self = COWLAB_TRY(self_binary());
  b.spec.payload.push_back(
      {COWLAB_TRY(stripped_binary(self.readable, self.path)).stripped, "bin/cowlab"});
  b.spec.disks.push_back({COWLAB_TRY(parse_size("24G"))});
  b.spec.label = profile + "/" + driver + " reduce";
  return b;
}

}  // namespace

Result<std::vector<scenario::RunResult>> candidate_results(const GuestResult& r,
                                                           const std::string& driver) {
  scenario::RunResult whole;
  whole.driver = driver;
  whole.kernel = r.kernel_release;
  whole.reason = r.reason;
  switch (r.status) {
    case GuestStatus::kPanic:
      whole.status = scenario::Status::kPanic;
      return std::vector<scenario::RunResult>{whole};
    case GuestStatus::kTimeout:
    case GuestStatus::kHang:
      whole.status = scenario::Status::kTimeout;
      return std::vector<scenario::RunResult>{whole};
    case GuestStatus::kQemuDied:
    case GuestStatus::kInfraError:
      return Error(ErrorKind::kSystem, "the guest ended with " +
                                           std::string(guest_status_name(r.status)) + ": " +
                                           r.reason + "\n" + r.console_excerpt);
    default:
      break;
  }
  std::vector<scenario::RunResult> out;
  for (const auto& rec : r.records) {
    auto j = nlohmann::json::parse(rec, nullptr, false);
    if (!j.is_object() || !j.contains("status") || j.contains("event")) continue;
    scenario::RunResult rr;
    rr.driver = driver;
    rr.kernel = r.kernel_release;
    rr.status = status_of(j.value("status", ""));
    rr.reason = j.value("reason", "");
    // The failing point's sweep values are substituted into the file the reducer shrinks.
    if (j.contains("sweep") && j["sweep"].is_object())
      for (const auto& [k, v] : j["sweep"].items())
        if (v.is_string()) rr.sweep[k] = v.get<std::string>();
    if (j.contains("failures") && j["failures"].is_array())
      for (const auto& f : j["failures"])
        rr.failures.push_back(
            {f.value("expectation", ""), f.value("expected", ""), f.value("observed", "")});
    out.push_back(std::move(rr));
  }
  if (out.empty())
    return Error(ErrorKind::kSystem, "no result came back (" +
                                         std::string(guest_status_name(r.status)) + ": " +
                                         r.reason + "): " + last_line(r.stderr_text));
  if (r.status == GuestStatus::kSplat)
    for (auto& rr : out) {
      if (rr.status != scenario::Status::kPass && rr.status != scenario::Status::kFail) continue;
      rr.status = scenario::Status::kFail;
      rr.failures.push_back(
          {"kernel splat", "a clean kernel log", r.splats.empty() ? r.reason : r.splats.front()});
    }
  return out;
}

Result<GuestReduceResult> reduce_in_guest(const GuestReduceOptions& o) {
  if (!find_driver(o.driver))
    return Error::usage("scenario reduce: unknown driver \"" + o.driver + "\"");
  if (!o.against_driver.empty() && !find_driver(o.against_driver))
    return Error::usage("scenario reduce: unknown driver \"" + o.against_driver +
                        "\" (--against-driver)");
  if (!o.against_driver.empty() && !o.against_profile.empty())
    return Error::usage(
        "scenario reduce: --against-driver and --against-profile together; a difference is "
        "between two drivers or two kernels, not both");
  // Validated here first: a broken file fails before a guest boots (as in the matrix).
  COWLAB_TRY(scenario::load(o.file));
  auto say = [&](const std::string& line) {
    if (o.on_stderr) o.on_stderr("reduce: " + line + "\n");
  };
  Base b = COWLAB_TRY(make_base(o.profile, o.driver, o.file));
  fs::path host = fs::absolute(o.file);
  // A reduction with one guest of `b` per candidate, counting the guests in *guests and
  // keeping the kernel release the last one reported in *kernel.
  auto one_guest_per_candidate = [&](int* guests, std::string* kernel) {
    scenario::ReduceOptions ro;
    ro.run.driver = o.driver;
    ro.progress = [&](const std::string& line) { say(line); };
    ro.runner = [&, guests,
                 kernel](const std::string& file) -> Result<std::vector<scenario::RunResult>> {
      ++*guests;
      auto res = COWLAB_TRY(run_candidate(b, o.driver, o, file));
      if (!res.empty()) *kernel = res[0].kernel;
      return res;
    };
    return ro;
  };
  // The other side of a difference: one guest of `base` per candidate, running `driver`.
  auto other_side = [&o](const std::string& label, const Base& base, const std::string& driver,
                         int* guests) {
    scenario::ReduceSide side;
    side.label = label;
    side.run.driver = driver;
    side.runner = [&o, &base, driver, guests](const std::string& file) {
      ++*guests;
      return run_candidate(base, driver, o, file);
    };
    return side;
  };

  // Two kernels: one guest of each profile per candidate (reduce_guest.h).
  if (!o.against_profile.empty()) {
    Base other = COWLAB_TRY(make_base(o.against_profile, o.driver, o.file));
    auto t0 = std::chrono::steady_clock::now();
    int guests = 0;
    std::string kernel;
    scenario::ReduceOptions ro = one_guest_per_candidate(&guests, &kernel);
    ro.label = o.profile;
    ro.against = other_side(o.against_profile, other, o.driver, &guests);
    say("a difference between the kernels of " + o.profile + " and " + o.against_profile +
        ": one guest of each per candidate");
    auto red = COWLAB_TRY_CTX(scenario::reduce(o.file, ro),
                              "scenario reduce in " + b.where + " and " + other.where);
    say("kept difference \"" + red.failure + "\" (" + red.difference + ") after " +
        std::to_string(red.runs) + " runs");
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return GuestReduceResult{red.yaml, kernel, secs, guests};
  }

  // First the fast way: the whole reduction in one guest.  The scenario's name and the
  // reducer's arguments go in as positional parameters: nothing of them is parsed by the
  // guest's shell.  The first record tells where the payload is, so the reduced file's
  // absolute tar/oci paths can be turned back into the host's.
  GuestSpec g = b.spec;
  g.command = {
      "/bin/sh",
      "-c",
      "printf '{\"payload\": \"%s\"}\\n' \"$COWLAB_PAYLOAD\" > \"$COWLAB_RESULTS\"; " +
          format_script(o.driver,
                        "f=$1; shift; exec cowlab scenario reduce "
                        "\"$COWLAB_PAYLOAD/scenario/$f\" --work-dir /run/cowlab/work \"$@\""),
      "sh",
      host.filename().string(),
      "--driver",
      o.driver};
  if (!o.against_driver.empty()) {
    g.command.push_back("--against-driver");
    g.command.push_back(o.against_driver);
  }
  for (const auto& opt : o.storage_opts) {
    g.command.push_back("--storage-opt");
    g.command.push_back(opt);
  }
  g.command_timeout = o.timeout;
  g.hang_timeout = std::chrono::seconds(300);  // a candidate's step may be silent for long
  GuestObserver observer;
  if (o.on_stderr) observer.on_stderr = o.on_stderr;
  auto r = COWLAB_TRY(run_guest(g, observer));
  std::string where = "scenario reduce in a " + o.profile + " guest (kernel " +
                      (r.kernel_release.empty() ? "?" : r.kernel_release) + ")";
  if (r.status == GuestStatus::kFail)
    return Error(ErrorKind::kInvalid, where + ": " + last_line(r.stderr_text));
  if (r.status == GuestStatus::kPass) {
    std::string payload;
    for (const auto& rec : r.records) {
      auto j = nlohmann::json::parse(rec, nullptr, false);
      if (j.is_object() && j.contains("payload")) payload = j["payload"].get<std::string>();
    }
    GuestReduceResult out{r.stdout_text, r.kernel_release, r.total_seconds, 1};
    if (!payload.empty())
      out.yaml = replace_all(out.yaml, payload + "/scenario/", b.scenario_dir.string() + "/");
    return out;
  }
  if (r.status == GuestStatus::kQemuDied || r.status == GuestStatus::kInfraError)
    return Error(ErrorKind::kSystem, where + ": the guest ended with " +
                                         std::string(guest_status_name(r.status)) + ": " +
                                         r.reason + "\n" + r.console_excerpt);

  // The kernel went down (panic, hang, timeout) or logged a splat while candidates ran: what
  // one guest cannot survive or see, one guest per candidate can.  Slower (a boot each).
  say(where + " ended with " + std::string(guest_status_name(r.status)) + " (" + r.reason +
      "); reducing again with one guest per candidate, the kernel's verdict included");
  auto t0 = std::chrono::steady_clock::now();
  int guests = 1;
  std::string kernel = r.kernel_release;
  scenario::ReduceOptions ro = one_guest_per_candidate(&guests, &kernel);
  if (!o.against_driver.empty())
    ro.against = other_side(o.against_driver, b, o.against_driver, &guests);
  auto red = COWLAB_TRY_CTX(scenario::reduce(o.file, ro), where);
  say("kept " + std::string(red.difference.empty() ? "failure" : "difference") + " \"" +
      red.failure + "\"" + (red.difference.empty() ? "" : " (" + red.difference + ")") + " after " +
      std::to_string(red.runs) + " runs");
  double secs = r.total_seconds +
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return GuestReduceResult{red.yaml, kernel, secs, guests};
}

}  // namespace cowlab::harness
