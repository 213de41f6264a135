// The matrix scheduler: guests per profile × driver, restarted after crashes, sharded, with
// live progress, then reports.
#include "cowlab/harness/matrix.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <nlohmann/json.hpp>
#include <set>

#include "cowlab/harness/accel.h"
#include "cowlab/harness/guest.h"
#include "cowlab/harness/profile.h"
#include "cowlab/harness/stop.h"
#include "cowlab/scenario.h"
#include "cowlab/sys.h"

namespace cowlab::harness {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const std::vector<std::string> kAllDrivers = {"aufs", "btrfs", "devicemapper", "overlay", "vfs", "zfs"};

struct ScenarioFile {
  std::string host;   // path on the host
  std::string guest;  // path inside the guest payload (relative to $COWLAB_PAYLOAD)
  std::string name;   // scenario name
  int timeout = 300;
  size_t points = 1;
};

// A unit of guest work: some scenarios for one driver on one profile.
struct Batch {
  std::string profile;
  std::string driver;
  std::vector<size_t> scenarios;  // indexes into the scenario list
  int attempts = 0;
};

std::string guest_status_to_cell(GuestStatus s) {
  switch (s) {
    case GuestStatus::kPanic: return "panic";
    case GuestStatus::kTimeout:
    case GuestStatus::kHang: return "timeout";
    default: return "error";
  }
}

}  // namespace

Result<void> run_matrix(const MatrixOptions& o, MatrixReport* report_out) {
  auto started = std::chrono::steady_clock::now();
  std::vector<std::string> drivers = o.drivers.empty() ? kAllDrivers : o.drivers;
  for (const auto& d : drivers)
    if (std::find(kAllDrivers.begin(), kAllDrivers.end(), d) == kAllDrivers.end())
      return Error::usage("matrix: unknown driver \"" + d + "\"");
  if (o.shard_count == 0 || o.shard_index >= o.shard_count)
    return Error::usage("matrix: --shard must be I/N with 0 <= I < N");

  // Scenarios: validated on the host first, so a broken file fails before any guest boots.
  auto files = COWLAB_TRY(scenario::collect_files(o.scenario_args));
  std::vector<ScenarioFile> scenarios;
  std::map<std::string, std::string> dir_slot;  // host dir -> payload dir
  std::vector<PayloadFile> payload;
  for (const auto& f : files) {
    auto s = scenario::load(f);
    if (!s.ok()) return std::move(s).error();
    fs::path host = fs::absolute(f);
    std::string dir = host.parent_path().string();
    if (!dir_slot.count(dir)) {
      std::string slot = "scenarios/" + std::to_string(dir_slot.size());
      dir_slot[dir] = slot;
      payload.push_back({dir, slot});
    }
    scenarios.push_back({host.string(), dir_slot[dir] + "/" + host.filename().string(), (*s)->name(),
                         (*s)->timeout_seconds(), (*s)->sweep_points().size()});
  }
  fs::path binary = o.cowlab_binary.empty() ? fs::read_symlink("/proc/self/exe") : o.cowlab_binary;
  payload.push_back({binary, "bin/cowlab"});

  // Profiles.
  std::vector<ProfileSpec> specs;
  std::vector<std::string> profile_names = o.profiles.empty() ? std::vector<std::string>{std::string(kDefaultProfile)} : o.profiles;
  for (const auto& p : profile_names) specs.push_back(COWLAB_TRY(find_profile(p)));
  if (!o.aufs_kernel.empty()) specs.push_back(COWLAB_TRY(byo_profile(o.aufs_kernel, o.aufs_modules, {}, "aufs")));
  std::map<std::string, ProfileImage> images;
  std::map<std::string, Accel> accels;
  MatrixReport report;
  for (const auto& spec : specs) {
    BuildOptions bo;
    bo.runtime_binary = binary;
    auto img = COWLAB_TRY(build_profile(spec, bo));
    Accel a = choose_accel(img);
    std::fprintf(stderr, "matrix: profile %s (kernel %s), %s: %s\n", spec.name.c_str(), img.kernel_release.c_str(),
                 std::string(accel_name(a.kind)).c_str(), a.reason.c_str());
    report.profiles.push_back({spec.name, img.kernel_release, img.manifest,
                               std::string(accel_name(a.kind)) + (a.reason.empty() ? "" : " (" + a.reason + ")")});
    accels[spec.name] = a;
    images[spec.name] = img;
  }
  report.drivers = drivers;
  report.command = o.command;

  // Cells, sharded by a stable order: (profile, driver, scenario).
  std::vector<Batch> queue;
  size_t cell = 0;
  for (const auto& spec : specs) {
    for (const auto& d : drivers) {
      // The aufs profile exists for the aufs driver only.
      if (spec.name == "aufs" && d != "aufs") continue;
      Batch b{spec.name, d, {}, 0};
      for (size_t i = 0; i < scenarios.size(); ++i, ++cell)
        if (cell % o.shard_count == o.shard_index) b.scenarios.push_back(i);
      if (!b.scenarios.empty()) queue.push_back(b);
    }
  }
  size_t total_cells = 0;
  for (const auto& b : queue) total_cells += b.scenarios.size();
  std::fprintf(stderr, "matrix: %zu scenarios x %zu drivers x %zu profiles: %zu cells in this shard (%u/%u)\n",
               scenarios.size(), drivers.size(), specs.size(), total_cells, o.shard_index, o.shard_count);

  std::mutex mu;
  size_t done_cells = 0;
  auto progress = [&](const json& r, const std::string& profile) {
    std::lock_guard<std::mutex> lock(mu);
    ++done_cells;
    std::string sweep;
    if (r.contains("sweep"))
      for (auto& [k, v] : r["sweep"].items()) sweep += " " + k + "=" + v.get<std::string>();
    std::fprintf(stderr, "[%zu/%zu] %-12s %-13s %-40s %-7s %6.1fs%s%s\n", done_cells, total_cells, profile.c_str(),
                 r.value("driver", "").c_str(), r.value("scenario", "").c_str(), r.value("status", "").c_str(),
                 r.value("duration_s", 0.0), sweep.c_str(),
                 r.value("reason", "").empty() ? "" : ("  " + r.value("reason", "")).c_str());
  };

  unsigned jobs = o.jobs ? o.jobs : guest_slots(o.memory_mb);
  // The slowest drivers first (devicemapper and zfs do the most work under emulation), so the
  // pool does not end with one long guest running alone.
  static const std::map<std::string, int> kWeight = {{"zfs", 6}, {"devicemapper", 5}, {"btrfs", 4},
                                                      {"vfs", 3}, {"overlay", 2}, {"aufs", 1}};
  std::stable_sort(queue.begin(), queue.end(), [](const Batch& a, const Batch& b) {
    auto w = [](const Batch& x) { auto it = kWeight.find(x.driver); return it == kWeight.end() ? 0 : it->second; };
    return w(a) > w(b);
  });

  // A pool of `jobs` workers: each takes the next batch as soon as its guest is done, and a
  // guest that crashed puts its unstarted scenarios back on the queue.
  auto make_spec = [&](const Batch& b) -> Result<GuestSpec> {
    GuestSpec g;
    g.image = images[b.profile];
    g.accel = accels[b.profile];
    g.payload = payload;
    g.memory_mb = o.memory_mb;
    g.disks.push_back({COWLAB_TRY(parse_size(o.scratch_size))});
    std::string cmd =
        "set -e; mkfs.ext4 -q -F /dev/cowlab/scratch0; mkdir -p /run/cowlab/work; "
        "mount /dev/cowlab/scratch0 /run/cowlab/work; "
        "exec cowlab scenario run --events --driver " + b.driver +
        " --work-dir /run/cowlab/work --out \"$COWLAB_RESULTS\"";
    long budget = 120;
    for (size_t i : b.scenarios) {
      cmd += " " + scenarios[i].guest;
      budget += static_cast<long>(scenarios[i].timeout) * static_cast<long>(scenarios[i].points);
    }
    g.command = {"/bin/sh", "-c", cmd};
    g.command_timeout = std::chrono::seconds(budget);
    g.hang_timeout = std::chrono::seconds(300);
    g.label = b.profile + "/" + b.driver;
    return g;
  };
  // Turns one guest's outcome into cell results; returns what must run again.
  auto process = [&](Batch& b, const GuestResult& result) -> std::vector<Batch> {
    std::vector<Batch> requeue;
    const GuestResult& gr = result;
    std::set<std::string> finished;
    std::string last_started;
    for (const auto& line : gr.records) {
      json r;
      try {
        r = json::parse(line);
      } catch (const std::exception& e) {
        continue;  // a torn line from a guest that died mid-write
      }
      if (r.contains("event")) {
        if (r["event"] == "start") last_started = r.value("file", "");
        continue;
      }
      std::string gfile = r.value("file", "");
      for (const auto& s : scenarios)
        if (gfile.size() >= s.guest.size() && gfile.compare(gfile.size() - s.guest.size(), s.guest.size(), s.guest) == 0)
          r["host_file"] = s.host;
      r["profile"] = b.profile;
      finished.insert(gfile);
      report.results.push_back(r.dump());
    }
    bool guest_ok = gr.status == GuestStatus::kPass || gr.status == GuestStatus::kFail;
    if (gr.status == GuestStatus::kSplat) {
      // The command finished but the kernel complained: keep the results, and record the
      // splat against the guest's last scenario so the report shows it.
      guest_ok = true;
      json r = {{"scenario", "kernel-log"}, {"driver", b.driver}, {"profile", b.profile},
                {"kernel", gr.kernel_release}, {"status", "error"},
                {"reason", "kernel splat after " + last_started + ": " + gr.reason},
                {"console_excerpt", gr.console_excerpt}, {"failures", json::array()},
                {"measurements", json::object()}, {"sweep", json::object()}};
      report.results.push_back(r.dump());
    }
    std::vector<size_t> rest;
    for (size_t i : b.scenarios) {
      bool done = false;
      for (const auto& f : finished)
        if (f.size() >= scenarios[i].guest.size() &&
            f.compare(f.size() - scenarios[i].guest.size(), scenarios[i].guest.size(), scenarios[i].guest) == 0)
          done = true;
      if (done) continue;
      bool was_running = !last_started.empty() && last_started.size() >= scenarios[i].guest.size() &&
                         last_started.compare(last_started.size() - scenarios[i].guest.size(),
                                              scenarios[i].guest.size(), scenarios[i].guest) == 0;
      if (!guest_ok && (was_running || b.attempts >= 1)) {
        json r = {{"scenario", scenarios[i].name}, {"file", scenarios[i].guest}, {"host_file", scenarios[i].host},
                  {"driver", b.driver}, {"profile", b.profile}, {"kernel", gr.kernel_release},
                  {"status", was_running ? guest_status_to_cell(gr.status) : "error"},
                  {"reason", std::string(was_running ? "guest " : "guest failed before this scenario ran: ") +
                                 std::string(guest_status_name(gr.status)) + ": " + gr.reason},
                  {"console_excerpt", gr.console_excerpt}, {"failures", json::array()},
                  {"measurements", json::object()}, {"sweep", json::object()}, {"duration_s", gr.total_seconds}};
        progress(r, b.profile);
        report.results.push_back(r.dump());
        continue;
      }
      rest.push_back(i);
    }
    if (!rest.empty()) {
      // A fresh guest carries on with what had not started (the matrix goes on).
      Batch again{b.profile, b.driver, rest, b.attempts + (finished.empty() ? 1 : 0)};
      if (guest_ok) {
        // The command ended without reporting these: the runner itself failed.
        for (size_t i : rest) {
          json r = {{"scenario", scenarios[i].name}, {"driver", b.driver}, {"profile", b.profile},
                    {"host_file", scenarios[i].host}, {"kernel", gr.kernel_release}, {"status", "error"},
                    {"reason", "no result from the guest runner (exit " + std::to_string(gr.exit_code) + "): " +
                                   gr.stderr_text.substr(gr.stderr_text.size() > 400 ? gr.stderr_text.size() - 400 : 0)},
                    {"failures", json::array()}, {"measurements", json::object()}, {"sweep", json::object()}};
          progress(r, b.profile);
          report.results.push_back(r.dump());
        }
      } else {
        std::fprintf(stderr, "matrix: guest %s/%s ended with %s (%s); restarting for %zu remaining scenarios\n",
                     b.profile.c_str(), b.driver.c_str(), std::string(guest_status_name(gr.status)).c_str(),
                     gr.reason.c_str(), rest.size());
        requeue.push_back(again);
      }
    }
    return requeue;
  };

  std::mutex qmu, report_mu;
  std::condition_variable qcv;
  size_t in_flight = 0;
  std::optional<Error> fatal;
  auto worker = [&] {
    for (;;) {
      Batch b;
      {
        std::unique_lock<std::mutex> lock(qmu);
        qcv.wait(lock, [&] { return fatal || !queue.empty() || in_flight == 0; });
        if (fatal || queue.empty()) return;
        b = queue.front();
        queue.erase(queue.begin());
        ++in_flight;
      }
      std::vector<Batch> again;
      Result<void> outcome;
      auto spec = make_spec(b);
      if (!spec.ok()) {
        outcome = std::move(spec).error();
      } else if (stop_requested()) {
        outcome = Error(ErrorKind::kTimeout, "matrix: interrupted");
      } else {
        GuestObserver obs;
        std::string profile = b.profile;
        obs.on_record = [&, profile](std::string_view line) {
          try {
            json r = json::parse(line);
            if (!r.contains("event")) progress(r, profile);
          } catch (...) {
          }
        };
        auto result = run_guest(*spec, obs);
        if (!result.ok()) {
          outcome = std::move(result).error().with_context("matrix guest " + b.profile + "/" + b.driver);
        } else {
          std::lock_guard<std::mutex> lock(report_mu);  // `progress` takes `mu` itself
          again = process(b, *result);
        }
      }
      std::lock_guard<std::mutex> lock(qmu);
      --in_flight;
      if (!outcome.ok() && !fatal) fatal = outcome.error();
      for (auto& a : again) queue.push_back(std::move(a));
      qcv.notify_all();
    }
  };
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < std::max(1u, jobs); ++w) workers.emplace_back(worker);
  for (auto& t : workers) t.join();
  if (fatal) return *fatal;

  report.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  COWLAB_TRY(write_report(report, o.out));
  if (report_out) *report_out = report;
  return {};
}

int matrix_main(int argc, char** argv) {
  CLI::App app{"run scenarios across kernel profiles and drivers in guests", "cowlab matrix"};
  MatrixOptions o;
  std::string profiles, drivers = "all", shard;
  std::string out = "matrix-report";
  app.add_option("--profiles", profiles, "comma-separated kernel profiles (default debian-6.1)");
  app.add_option("--drivers", drivers, "comma-separated drivers or all");
  app.add_option("-j,--jobs", o.jobs, "parallel guests (default: by cores and memory)");
  app.add_option("--shard", shard, "I/N: run the I-th of N shards (0-based)");
  app.add_option("--out", out, "report directory");
  app.add_option("--memory", o.memory_mb, "guest memory in MiB");
  app.add_option("--aufs-kernel", o.aufs_kernel, "an aufs kernel image (env COWLAB_AUFS_KERNEL)");
  app.add_option("--aufs-modules", o.aufs_modules, "its modules directory (env COWLAB_AUFS_MODULES)");
  app.add_option("SCENARIOS", o.scenario_args, "scenario files or directories");
  std::vector<std::string> merge_dirs;
  std::string merge_out = "matrix-report";
  auto* merge = app.add_subcommand("merge", "merge sharded results into one report");
  merge->add_option("DIRS", merge_dirs)->required();
  merge->add_option("--out", merge_out, "report directory");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  auto split = [](const std::string& s) {
    std::vector<std::string> v;
    size_t i = 0;
    while (i <= s.size()) {
      size_t j = s.find(',', i);
      if (j == std::string::npos) j = s.size();
      if (j > i) v.push_back(s.substr(i, j - i));
      i = j + 1;
    }
    return v;
  };
  if (merge->parsed()) {
    MatrixReport all;
    std::set<std::string> seen_profiles, seen_drivers;
    for (const auto& d : merge_dirs) {
      auto r = read_report(d);
      if (!r.ok()) {
        std::fprintf(stderr, "cowlab matrix merge: %s\n", r.error().message().c_str());
        return 1;
      }
      for (const auto& p : r->profiles)
        if (seen_profiles.insert(p.name).second) all.profiles.push_back(p);
      for (const auto& dr : r->drivers)
        if (seen_drivers.insert(dr).second) all.drivers.push_back(dr);
      all.results.insert(all.results.end(), r->results.begin(), r->results.end());
      all.wall_seconds = std::max(all.wall_seconds, r->wall_seconds);
    }
    all.command = "cowlab matrix merge";
    for (const auto& d : merge_dirs) all.command += " " + d;
    auto w = write_report(all, merge_out);
    if (!w.ok()) {
      std::fprintf(stderr, "cowlab matrix merge: %s\n", w.error().message().c_str());
      return 1;
    }
    for (const auto& [st, n] : status_counts(all)) std::printf("%s=%d ", st.c_str(), n);
    std::printf("\nreport: %s/report.html\n", fs::absolute(merge_out).c_str());
    return 0;
  }
  if (o.scenario_args.empty()) {
    std::fprintf(stderr, "cowlab matrix: give scenario files or directories\n");
    return 2;
  }
  o.profiles = split(profiles);
  if (drivers != "all") o.drivers = split(drivers);
  if (!shard.empty()) {
    if (std::sscanf(shard.c_str(), "%u/%u", &o.shard_index, &o.shard_count) != 2) {
      std::fprintf(stderr, "cowlab matrix: --shard must be I/N, got \"%s\"\n", shard.c_str());
      return 2;
    }
  }
  if (o.aufs_kernel.empty())
    if (const char* k = std::getenv("COWLAB_AUFS_KERNEL")) o.aufs_kernel = k;
  if (o.aufs_modules.empty())
    if (const char* m = std::getenv("COWLAB_AUFS_MODULES")) o.aufs_modules = m;
  o.out = out;
  std::string command = "cowlab matrix";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  o.command = command;
  MatrixReport rep;
  auto r = run_matrix(o, &rep);
  if (!r.ok()) {
    std::fprintf(stderr, "cowlab matrix: %s\n", r.error().message().c_str());
    return r.error().kind() == ErrorKind::kUsage ? 2 : 1;
  }
  std::printf("\nmatrix summary (%.0f s wall):", rep.wall_seconds);
  bool bad = false;
  for (const auto& [st, n] : status_counts(rep)) {
    std::printf(" %s=%d", st.c_str(), n);
    if (st != "pass" && st != "skip") bad = true;
  }
  std::printf("\nreport: %s/report.html\n", fs::absolute(o.out).c_str());
  // 3: the matrix ran to the end but some cells did not pass (a finding, not a breakdown).
  return bad ? 3 : 0;
}

}  // namespace cowlab::harness
