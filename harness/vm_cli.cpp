// `cowlab vm ...`: build kernel profiles, run commands and shells in disposable guests, list
// profiles with their probed capabilities, benchmark boots.  See docs/vm.md.
#include "cowlab/harness/vm_cli.h"
#include "cowlab/harness/self_binary.h"

#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "cowlab/harness/accel.h"
#include "cowlab/harness/applicability.h"
#include "cowlab/log.h"
#include "cowlab/harness/guest.h"
#include "cowlab/harness/kconfig.h"
#include "cowlab/harness/profile.h"
#include "cowlab/harness/stop.h"
#include "cowlab/sys.h"
#include "src/guest_logs.h"
#include "src/strip.h"
#include "src/util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace cowlab::harness {
namespace {

int fail(const Error& e) {
  spdlog::error("cowlab vm: {}", e.message());
  if (stop_requested() && stop_signal()) return 128 + stop_signal();
  return e.kind() == ErrorKind::kUsage ? 2 : 1;
}

struct ProfileArgs {
  std::vector<std::string> names;
  bool all = false;
  std::string kernel, modules, kernel_config;
  void add(CLI::App* app, bool multi) {
    if (multi) {
      app->add_option("--profile,-p", names, "kernel profile (repeatable; default debian-6.1)")->allow_extra_args(false);
      app->add_flag("--all", all, "every Debian profile");
    } else {
      app->add_option("--profile,-p", names, "kernel profile (default debian-6.1)")->expected(1);
    }
    app->add_option("--kernel", kernel, "bring-your-own kernel image (bzImage)");
    app->add_option("--modules", modules, "modules directory of that kernel (lib/modules/RELEASE)");
    app->add_option("--kernel-config", kernel_config, "config of that kernel, if not found beside it");
  }
  Result<std::vector<ProfileSpec>> resolve() const {
    std::vector<ProfileSpec> out;
    if (!kernel.empty()) {
      std::string name = names.size() == 1 ? names[0] : "";
      if (name.rfind("debian-", 0) == 0) return Error::usage("--kernel: choose a name other than " + name + " for your own kernel");
      out.push_back(COWLAB_TRY(byo_profile(kernel, modules, kernel_config, name)));
      return out;
    }
    if (!modules.empty() || !kernel_config.empty()) return Error::usage("--modules/--kernel-config need --kernel");
    if (all) return debian_profiles();
    for (const auto& n : names) out.push_back(COWLAB_TRY(find_profile(n)));
    if (out.empty()) out.push_back(COWLAB_TRY(find_profile(kDefaultProfile)));
    return out;
  }
};

std::string fmt_secs(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1fs", s);
  return b;
}

json result_json(const std::string& profile, const GuestResult& r, const Accel& accel) {
  return {{"profile", profile},
          {"status", std::string(guest_status_name(r.status))},
          {"exit_code", r.exit_code},
          {"vm_exit_status", exit_code_for(r.status, r.exit_code)},
          {"reason", r.reason},
          {"kernel_release", r.kernel_release},
          {"accel", std::string(accel_name(accel.kind))},
          {"accel_reason", accel.reason},
          {"boot_seconds", r.boot_seconds},
          {"initrd_bytes", r.initrd_bytes},
          {"command_seconds", r.command_seconds},
          {"total_seconds", r.total_seconds},
          {"stdout", r.stdout_text},
          {"stderr", r.stderr_text},
          {"records", r.records},
          {"splats", r.splats},
          {"console_excerpt", r.console_excerpt},
          {"console_log", r.console_log.string()}};
}

struct GuestArgs {
  std::vector<std::string> disks;
  std::vector<std::string> payload;
  bool with_cowlab = false;
  bool udev = false;
  unsigned memory = 1024;
  unsigned timeout = 600, boot_timeout = 180, hang_timeout = 60, guest_timeout = 0;
  void add(CLI::App* app, bool timeouts) {
    app->add_option("--disk", disks, "scratch disk of SIZE (e.g. 4G), repeatable; /dev/cowlab/scratchN in the guest")
        ->allow_extra_args(false);
    app->add_option("--payload", payload, "HOST[:GUEST] file or directory copied to $COWLAB_PAYLOAD/GUEST")
        ->allow_extra_args(false);
    app->add_flag("--with-cowlab", with_cowlab, "copy this cowlab binary to $COWLAB_PAYLOAD/bin/cowlab");
    app->add_flag("--udev", udev, "run udevd in the guest (ZFS on whole disks needs it)");
    app->add_option("--memory,-m", memory, "guest memory in MiB (default 1024)");
    if (timeouts) {
      app->add_option("--timeout,-t", timeout, "command timeout in seconds (default 600)");
      app->add_option("--boot-timeout", boot_timeout, "seconds from QEMU start to the command (default 180)");
      app->add_option("--hang-timeout", hang_timeout, "seconds of guest silence that count as a hang (default 60)");
      app->add_option("--guest-timeout", guest_timeout, "whole-guest limit in seconds (default boot+timeout+60)");
    }
  }
  Result<void> fill(GuestSpec& s) const {
    for (const auto& d : disks) s.disks.push_back({COWLAB_TRY(parse_size(d))});
    for (const auto& p : payload) {
      auto colon = p.find(':');
      fs::path host = p.substr(0, colon);
      std::string guest = colon == std::string::npos ? host.filename().string() : p.substr(colon + 1);
      std::error_code ec;
      if (!fs::exists(host, ec)) return Error::not_found("--payload " + p + ": '" + host.string() + "' not found");
      s.payload.push_back({fs::absolute(host), guest});
    }
    // Without its debug information (kept on the host, strip.h): a fraction of the initrd.
    if (with_cowlab) {
      auto self = COWLAB_TRY(self_binary());
      s.payload.push_back({COWLAB_TRY(stripped_binary(self.readable, self.path)).stripped, "bin/cowlab"});
    }
    s.udev = udev ? UdevMode::kOn : UdevMode::kOff;
    if (memory < 256 || memory > 65536) return Error::usage("--memory " + std::to_string(memory) + ": between 256 and 65536 MiB");
    s.memory_mb = memory;
    if (timeout == 0 || boot_timeout == 0 || hang_timeout == 0) return Error::usage("timeouts must be positive");
    s.command_timeout = std::chrono::seconds(timeout);
    s.boot_timeout = std::chrono::seconds(boot_timeout);
    s.hang_timeout = std::chrono::seconds(hang_timeout);
    s.guest_timeout = std::chrono::seconds(guest_timeout);
    return ok();
  }
};

int cmd_build(const ProfileArgs& pa, bool force, bool quick, bool refresh) {
  auto profiles = pa.resolve();
  if (!profiles.ok()) return fail(profiles.error());
  BuildOptions o;
  o.force = force;
  o.resolve = refresh ? ResolveMode::kRefresh : ResolveMode::kCached;
  o.verify = quick ? VerifyMode::kQuick : VerifyMode::kFull;
  for (const auto& p : *profiles) {
    auto t0 = std::chrono::steady_clock::now();
    auto img = build_profile(p, o);
    if (!img.ok()) return fail(img.error());
    spdlog::info("cowlab vm: [{}] ready in {}: kernel {}, hash {}", p.name,
                 detail::format_duration(std::chrono::steady_clock::now() - t0), img->kernel_release,
                 img->hash.substr(0, 16));
  }
  return 0;
}

int cmd_run(const ProfileArgs& pa, const GuestArgs& ga, std::vector<std::string> command, unsigned jobs,
            const std::string& console_log, const std::string& result_json_path, bool quiet) {
  if (command.empty()) return fail(Error::usage("vm run: no command (cowlab vm run [options] -- CMD...)"));
  auto profiles = pa.resolve();
  if (!profiles.ok()) return fail(profiles.error());
  std::vector<GuestSpec> specs;
  for (const auto& p : *profiles) {
    auto img = load_profile_image(p);
    if (!img.ok()) return fail(img.error());
    GuestSpec s;
    s.image = *img;
    s.command = command;
    s.label = p.name;
    if (auto r = ga.fill(s); !r.ok()) return fail(r.error());
    s.console_log = console_log.empty() || profiles->size() > 1 ? new_guest_console_log(p.name) : fs::path(console_log);
    specs.push_back(std::move(s));
  }
  Accel accel = choose_accel(specs.front().image);
  for (auto& s : specs) s.accel = accel;
  spdlog::info("cowlab vm: accel {} ({})", accel_name(accel.kind), accel.reason);

  const bool multi = specs.size() > 1;
  std::mutex out_mu;
  std::vector<GuestObserver> observers(specs.size());
  std::vector<std::string> pending_out(specs.size()), pending_err(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    auto emit = [&, i](std::string_view bytes, FILE* f, std::string& pend) {
      std::lock_guard<std::mutex> g(out_mu);
      if (!multi) {
        std::fwrite(bytes.data(), 1, bytes.size(), f);
        std::fflush(f);
        return;
      }
      pend.append(bytes);
      for (size_t nl; (nl = pend.find('\n')) != std::string::npos; pend.erase(0, nl + 1))
        std::fprintf(f, "[%s] %s\n", specs[i].label.c_str(), pend.substr(0, nl).c_str());
      std::fflush(f);
    };
    observers[i].on_stdout = [emit, &pending_out, i](std::string_view b) { emit(b, stdout, pending_out[i]); };
    observers[i].on_stderr = [emit, &pending_err, i](std::string_view b) { emit(b, stderr, pending_err[i]); };
  }
  auto results = run_guests(specs, jobs, observers);
  int rc = 0;
  json all = json::array();
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& s = specs[i];
    if (!results[i].ok()) {
      spdlog::error("cowlab vm: [{}] {}", s.label, results[i].error().message());
      rc = rc ? rc : kExitInfra;
      all.push_back({{"profile", s.label}, {"status", "infra-error"}, {"reason", results[i].error().message()}, {"vm_exit_status", kExitInfra}});
      continue;
    }
    const GuestResult& r = *results[i];
    int code = exit_code_for(r.status, r.exit_code);
    if (!rc) rc = code;
    if (multi && !rc && code) rc = code;
    bool bad = r.status != GuestStatus::kPass && r.status != GuestStatus::kFail;
    if (bad || !quiet) {
      spdlog::log(bad ? spdlog::level::warn : spdlog::level::info,
                  "cowlab vm: [{}] {}: {} (boot {}, command {}, total {}, kernel {}, exit {})", s.label,
                  guest_status_name(r.status), r.reason, r.boot_seconds >= 0 ? fmt_secs(r.boot_seconds) : "-",
                  r.command_seconds >= 0 ? fmt_secs(r.command_seconds) : "-", fmt_secs(r.total_seconds),
                  r.kernel_release.empty() ? "?" : r.kernel_release, code);
    }
    if (bad) {
      spdlog::warn("--- console excerpt ---\n{}--- end (full console: {}) ---", r.console_excerpt,
                   r.console_log.string());
    }
    all.push_back(result_json(s.label, r, accel));
  }
  if (!result_json_path.empty()) {
    auto w = sys::write_file_atomic(fs::path(result_json_path).string(), (multi ? all : all.at(0)).dump(2));
    if (!w.ok()) return fail(w.error());
  }
  if (stop_requested() && stop_signal()) return 128 + stop_signal();
  return rc;
}

int cmd_shell(const ProfileArgs& pa, const GuestArgs& ga) {
  auto profiles = pa.resolve();
  if (!profiles.ok()) return fail(profiles.error());
  auto img = load_profile_image(profiles->front());
  if (!img.ok()) return fail(img.error());
  GuestSpec s;
  s.image = *img;
  s.mode = GuestMode::kShell;
  s.label = profiles->front().name;
  if (auto r = ga.fill(s); !r.ok()) return fail(r.error());
  s.command_timeout = std::chrono::hours(24);
  s.guest_timeout = std::chrono::hours(24);
  s.console_log = new_guest_console_log(s.label);
  s.accel = choose_accel(s.image);
  spdlog::info("cowlab vm: shell on {} ({}), accel {}; console log {}", s.label, img->kernel_release,
               accel_name(s.accel.kind), s.console_log.string());
  auto r = run_guest(s);
  if (!r.ok()) return fail(r.error());
  if (r->status != GuestStatus::kPass && r->status != GuestStatus::kFail)
    spdlog::warn("cowlab vm: shell ended: {}: {}", guest_status_name(r->status), r->reason);
  return exit_code_for(r->status, r->exit_code);
}

// Capabilities of a built profile: probed in a guest once per image hash, then cached.
Result<json> profile_caps(const ProfileImage& img, const Accel& accel, bool probe, unsigned jobs_unused) {
  auto images = COWLAB_TRY(vm_images_dir());
  // Keyed by the image and the probe script: a changed probe re-probes.
  std::string probe_text = detail::read_file(images / "guest" / "probe.sh").value_or("");
  fs::path cache = cache_dir() / "caps" / (detail::sha256_hex(img.hash + "\n" + probe_text).substr(0, 32) + ".json");
  if (auto t = detail::read_file(cache); t.ok()) {
    json j = json::parse(*t, nullptr, false);
    if (!j.is_discarded()) return j;
  }
  if (!probe) return json(nullptr);
  GuestSpec s;
  s.image = img;
  s.accel = accel;
  s.label = img.profile + " probe";
  s.payload.push_back({images / "guest" / "probe.sh", "probe.sh"});
  s.command = {"bash", "probe.sh"};
  s.command_timeout = std::chrono::seconds(300);
  auto r = COWLAB_TRY(run_guest(s));
  if (r.status != GuestStatus::kPass)
    return Error(ErrorKind::kSystem, "capability probe of " + img.profile + ": " + std::string(guest_status_name(r.status)) +
                                         ": " + r.reason + "\n" + r.console_excerpt);
  json caps = json::object();
  for (const auto& rec : r.records) {
    json j = json::parse(rec, nullptr, false);
    if (j.is_discarded() || !j.contains("cap")) continue;
    caps[j["cap"].get<std::string>()] = {{"ok", j.value("ok", false)}, {"detail", j.value("detail", "")}};
  }
  std::error_code ec;
  fs::create_directories(cache.parent_path(), ec);
  COWLAB_TRY(sys::write_file_atomic(fs::path(cache).string(), caps.dump(2)));
  return caps;
}

int cmd_profiles(const ProfileArgs& pa, bool probe, bool as_json) {
  std::vector<ProfileSpec> profiles;
  if (pa.names.empty() && pa.kernel.empty()) {
    auto all = debian_profiles();
    if (!all.ok()) return fail(all.error());
    profiles = *all;
    // Kernels built by `cowlab kernel build` or brought with `vm build --kernel` are profiles
    // like any other (issue 9): listed after the Debian ones, newest first, with what they can
    // run and why not.
    auto stored = stored_profiles();
    if (!stored.ok()) return fail(stored.error());
    profiles.insert(profiles.end(), stored->begin(), stored->end());
  } else {
    auto p = pa.resolve();
    if (!p.ok()) return fail(p.error());
    profiles = *p;
  }
  json out = json::array();
  std::optional<Accel> accel;
  int rc = 0;
  for (const auto& p : profiles) {
    json j = {{"name", p.name}, {"kind", std::string(profile_kind_name(p.kind))}, {"description", p.description}};
    auto img = load_profile_image(p);
    j["built"] = img.ok();
    fs::path kernel = p.kernel, modules = p.modules;
    if (img.ok()) {
      j["hash"] = img->hash;
      j["kernel_release"] = img->kernel_release;
      j["versions"] = img->versions;
      kernel = img->kernel;
      if (!accel) accel = choose_accel(*img);
      j["accel"] = {{"kind", std::string(accel_name(accel->kind))}, {"reason", accel->reason}};
      auto caps = profile_caps(*img, *accel, probe, 0);
      if (caps.ok()) j["capabilities"] = *caps;
      else {
        j["capabilities_error"] = caps.error().message();
        rc = 1;
      }
    } else {
      j["not_built"] = img.error().message();
    }
    {
      // Which drivers this profile can run, and why not (applicability.h): what the matrix skips.
      KernelConfig config;
      const ProfileFacts facts = profile_facts(p, img.ok() ? &*img : nullptr, &config);
      json drivers = json::object();
      for (const auto& fit : driver_fits(facts, {"aufs", "btrfs", "devicemapper", "overlay", "vfs", "zfs"}))
        drivers[fit.driver] = {{"runnable", fit.runnable}, {"reason", fit.reason}};
      // An unbuilt Debian profile has no config or ZFS module yet: nothing to tell.
      if (img.ok() || facts.config) j["drivers"] = drivers;
    }
    if (!kernel.empty()) {
      auto cfg = read_kernel_config(kernel, modules, img.ok() ? img->kernel_config : p.kernel_config);
      if (cfg.ok()) {
        j["config_source"] = cfg->source;
        json miss = json::array();
        bool has_modules = img.ok() ? !img->modules_disk.empty() : !modules.empty();
        for (const auto& m : missing_options(*cfg, has_modules))
          miss.push_back({{"option", std::string(m.requirement->option)},
                          {"need", m.requirement->need == Need::kBoot ? "boot" : m.requirement->need == Need::kStorage ? "storage" : "nice"},
                          {"purpose", std::string(m.requirement->purpose)},
                          {"why", m.why}});
        j["missing_options"] = miss;
      } else {
        j["config_error"] = cfg.error().message();
      }
    }
    out.push_back(j);
  }
  if (as_json) {
    std::cout << out.dump(2) << "\n";
    return rc;
  }
  for (const auto& j : out) {
    std::cout << j["name"].get<std::string>() << "  " << j["description"].get<std::string>() << "\n";
    if (!j["built"].get<bool>()) {
      std::cout << "  not built: " << j.value("not_built", "") << "\n";
    } else {
      std::cout << "  hash " << j["hash"].get<std::string>().substr(0, 16) << ", accel " << j["accel"]["kind"].get<std::string>()
                << " (" << j["accel"]["reason"].get<std::string>() << ")\n";
      for (auto& [k, v] : j["versions"].items())
        if (!v.get<std::string>().empty()) std::cout << "  " << k << ": " << v.get<std::string>() << "\n";
      if (j.contains("capabilities") && j["capabilities"].is_object()) {
        std::cout << "  capabilities:";
        for (auto& [k, v] : j["capabilities"].items())
          if (k != "kernel") std::cout << " " << k << (v["ok"].get<bool>() ? "=yes" : "=no");
        std::cout << "\n";
      } else if (j.contains("capabilities_error")) {
        std::cout << "  capabilities: probe failed: " << j["capabilities_error"].get<std::string>() << "\n";
      } else {
        std::cout << "  capabilities: not probed yet (run without --no-probe)\n";
      }
    }
    if (j.contains("drivers")) {
      std::string can, cannot;
      for (auto& [d, f] : j["drivers"].items()) {
        if (f["runnable"].get<bool>()) can += " " + d;
        else cannot += "\n    " + f["reason"].get<std::string>();
      }
      std::cout << "  drivers:" << can << "\n";
      if (!cannot.empty()) std::cout << "  cannot run:" << cannot << "\n";
    }
    if (j.contains("config_source")) {
      std::cout << "  kernel config: " << j["config_source"].get<std::string>() << "\n";
      if (j["missing_options"].empty()) std::cout << "  kernel options: all the harness looks for are present\n";
      for (const auto& m : j["missing_options"])
        std::cout << "  lacks " << m["option"].get<std::string>() << " (" << m["need"].get<std::string>() << ": "
                  << m["purpose"].get<std::string>() << "): " << m["why"].get<std::string>() << "\n";
    } else if (j.contains("config_error")) {
      std::cout << "  kernel config: " << j["config_error"].get<std::string>() << "\n";
    }
  }
  return rc;
}

double median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

int cmd_bench(const ProfileArgs& pa, unsigned runs, bool as_json) {
  auto profiles = pa.resolve();
  if (!profiles.ok()) return fail(profiles.error());
  json out = json::array();
  for (const auto& p : *profiles) {
    auto img = load_profile_image(p);
    if (!img.ok()) return fail(img.error());
    Accel accel = choose_accel(*img);
    std::vector<double> bare, full, total;
    for (unsigned i = 0; i < runs; ++i) {
      GuestSpec s;
      // Same machine for both boots (RAM size changes the kernel's memory init under TCG).
      auto b = boot_bare(*img, accel, std::chrono::seconds(120), s.memory_mb);
      if (!b.ok()) return fail(b.error());
      if (!b->reached_userspace) return fail(Error(ErrorKind::kSystem, "bare boot of " + p.name + ": " + b->reason));
      bare.push_back(b->seconds);
      s.image = *img;
      s.accel = accel;
      s.command = {"true"};
      s.label = p.name;
      auto r = run_guest(s);
      if (!r.ok()) return fail(r.error());
      if (r->status != GuestStatus::kPass)
        return fail(Error(ErrorKind::kSystem, "guest boot of " + p.name + ": " + r->reason + "\n" + r->console_excerpt));
      full.push_back(r->boot_seconds);
      total.push_back(r->total_seconds);
      if (stop_requested()) return 128 + stop_signal();
    }
    json j = {{"profile", p.name}, {"kernel_release", img->kernel_release}, {"accel", std::string(accel_name(accel.kind))},
              {"runs", runs}, {"bare_boot_seconds", bare}, {"first_command_seconds", full}, {"guest_total_seconds", total},
              {"bare_median", median(bare)}, {"first_command_median", median(full)},
              {"ratio", median(full) / median(bare)}};
    if (!as_json)
      std::printf("%-12s %-28s bare %.2fs  first command %.2fs  ratio %.2f  (guest total %.2fs, %u runs, %s)\n", p.name.c_str(),
                  img->kernel_release.c_str(), median(bare), median(full), median(full) / median(bare), median(total), runs,
                  std::string(accel_name(accel.kind)).c_str());
    out.push_back(j);
  }
  if (as_json) std::cout << out.dump(2) << "\n";
  return 0;
}

struct VmArgs {
  ProfileArgs build_pa;
  bool force = false, quick = false, refresh = false;
  ProfileArgs run_pa;
  GuestArgs run_ga;
  std::vector<std::string> command;
  unsigned jobs = 0;
  std::string console_log, result_json_path;
  ProfileArgs shell_pa;
  GuestArgs shell_ga;
  ProfileArgs prof_pa;
  bool no_probe = false;
  ProfileArgs bench_pa;
  unsigned runs = 3;
};

}  // namespace

void add_vm_commands(CLI::App& root, CommandContext& ctx) {
  auto a = std::make_shared<VmArgs>();
  CLI::App* vm = root.add_subcommand("vm", "disposable QEMU guests over kernel profiles: build, run, shell, profiles, bench");
  vm->footer("See docs/vm.md.");

  auto* build = vm->add_subcommand("build", "build (or verify the cache of) kernel profile images");
  a->build_pa.add(build, true);
  build->add_flag("--force", a->force, "rebuild even if cached");
  build->add_flag("--quick-verify", a->quick, "check cached files by size only (default: sha256)");
  build->add_flag("--refresh", a->refresh,
                  "resolve package versions against the archive again (default: the cached "
                  "resolution of the same recipe)");
  build->callback([a, &ctx] {
    install_stop_signal_handlers();
    ctx.status = cmd_build(a->build_pa, a->force, a->quick, a->refresh);
  });

  auto* run = vm->add_subcommand("run", "run a command in a throwaway guest; exit with its status");
  a->run_pa.add(run, true);
  a->run_ga.add(run, true);
  run->add_option("-j,--jobs", a->jobs, "guests at once when several profiles are given (default: machine slots)");
  run->add_option("--console-log", a->console_log, "keep the guest console here");
  run->add_option("--result-json", a->result_json_path, "write the guest result (status, output, excerpt) as JSON");
  run->add_option("command", a->command, "the command and its arguments (after --)")->expected(-1);
  run->footer(
      "With -q (cowlab -q vm run ...) no summary line unless the guest failed.\n"
      "Exit status: the command's own, or 124 timeout, 125 harness/infrastructure error, 251 kernel\n"
      "splat (oops/BUG/WARNING) after the command, 252 guest hang, 253 QEMU died, 254 kernel panic.");
  run->callback([a, &ctx] {
    install_stop_signal_handlers();
    ctx.status = cmd_run(a->run_pa, a->run_ga, a->command, a->jobs, a->console_log, a->result_json_path,
                         ctx.verbosity == Verbosity::kQuiet);
  });

  auto* shell = vm->add_subcommand("shell", "interactive shell in a throwaway guest (Ctrl-A x kills it)");
  a->shell_pa.add(shell, false);
  a->shell_ga.add(shell, false);
  shell->callback([a, &ctx] {
    install_stop_signal_handlers();
    ctx.status = cmd_shell(a->shell_pa, a->shell_ga);
  });

  auto* profiles = vm->add_subcommand("profiles", "list profiles: versions, probed capabilities, missing kernel options");
  a->prof_pa.add(profiles, true);
  profiles->add_flag("--no-probe", a->no_probe, "do not boot a guest to probe capabilities (show cached ones)");
  profiles->callback([a, &ctx] {
    install_stop_signal_handlers();
    ctx.status = cmd_profiles(a->prof_pa, !a->no_probe, ctx.json);
  });

  auto* bench = vm->add_subcommand("bench", "boot-to-first-command vs a bare busybox boot of the same kernel");
  a->bench_pa.add(bench, true);
  bench->add_option("--runs", a->runs, "boots of each kind (default 3)")->check(CLI::Range(1, 50));
  bench->callback([a, &ctx] {
    install_stop_signal_handlers();
    ctx.status = cmd_bench(a->bench_pa, a->runs, ctx.json);
  });
}

}  // namespace cowlab::harness
