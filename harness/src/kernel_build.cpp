// `cowlab kernel build`: configure, build and register a kernel from source (kernel_build.h).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "cowlab/harness/kernel_build.h"
#include "cowlab/harness/stop.h"
#include "cowlab/log.h"
#include "cowlab/sys.h"
#include "kernel_build_internal.h"
#include "process.h"
#include "util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace cowlab::harness {
namespace {
using detail::read_file;
using detail::sha256_hex;
using Say = std::function<void(std::string_view)>;

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string getenv_or(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

fs::path kernel_cache() {
  return cache_dir() / "kernel";
}

// A directory being assembled beside its final place: removed when the scope is left without
// publish() (a failed step, an interrupted build), so the cache never keeps a partial entry.
class Staging {
 public:
  explicit Staging(fs::path dir) : dir_(std::move(dir)) {}
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  ~Staging() {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  // Renames the directory to `final_dir` (replacing what is there); from then on it is kept.
  Result<void> publish(const fs::path& final_dir) {
    std::error_code ec;
    fs::remove_all(final_dir, ec);
    fs::create_directories(final_dir.parent_path(), ec);
    fs::rename(dir_, final_dir, ec);
    if (ec) return Error::from_errno("rename", final_dir.string(), ec.value());
    dir_.clear();
    return {};
  }

 private:
  fs::path dir_;
};

// The environment of every kernel make: ccache (paths are relative because O= sits inside the
// tree, so hits carry across work trees) and a fixed build user/host/time, which would otherwise
// make init/version.o differ on every build.
std::vector<std::pair<std::string, std::string>> make_env() {
  return {{"CCACHE_DIR", getenv_or("CCACHE_DIR", (cache_dir() / "ccache").string())},
          {"CCACHE_NOHASHDIR", "1"},
          {"KBUILD_BUILD_TIMESTAMP", "2026-01-01 00:00:00 UTC"},
          {"KBUILD_BUILD_USER", "cowlab"},
          {"KBUILD_BUILD_HOST", "cowlab"},
          {"LC_ALL", "C"}};
}

std::vector<std::string> make_argv(const KernelBuildRequest& rq, const fs::path& work,
                                   const fs::path& obj, std::vector<std::string> targets) {
  unsigned jobs =
      rq.jobs ? rq.jobs : std::max(1u, static_cast<unsigned>(::sysconf(_SC_NPROCESSORS_ONLN)));
  std::vector<std::string> a = {"nice",
                                "-n",
                                std::to_string(rq.nice),
                                "make",
                                "-C",
                                work.string(),
                                "O=" + obj.string(),
                                "CC=ccache gcc",
                                "-j" + std::to_string(jobs)};
  a.insert(a.end(), targets.begin(), targets.end());
  return a;
}

// A make run whose output goes to `log`, with progress: the phase (config, compile, link,
// bzImage, modules) and the last object, at most every 20 s, plus every phase change.
struct MakeRun {
  int exit_status = 0;
  unsigned compiled = 0;
  std::string tail;
};

Result<MakeRun> run_make(const KernelBuildRequest& rq, const std::vector<std::string>& argv,
                         const fs::path& log, const std::string& what, const Say& say) {
  detail::SpawnOptions so;
  so.argv = argv;
  so.env = make_env();
  so.output_file = log;
  MakeRun r;
  static const std::regex kObj("^\\s+(CC|AS|CC \\[M\\])\\s+(\\S+)");
  const auto start = std::chrono::steady_clock::now();
  auto last = start;
  std::string phase = what, last_obj;
  auto tick = [&](bool force) {
    auto now = std::chrono::steady_clock::now();
    if (!force && now - last < std::chrono::seconds(20)) return;
    last = now;
    say("make " + phase + ": " + std::to_string(r.compiled) + " objects" +
        (last_obj.empty() ? "" : ", " + last_obj) + " (" + detail::format_duration(now - start) +
        ")");
  };
  auto run = COWLAB_TRY(detail::run_tool(so, rq.timeout, [&](std::string_view line) {
    std::string l(line);
    std::smatch m;
    std::string next = phase;
    if (std::regex_search(l, m, kObj)) {
      ++r.compiled;
      last_obj = m[2].str();
      if (phase != "compile" && what == "kernel") next = "compile";
    } else if (l.find(" LD      vmlinux") != std::string::npos &&
               l.find(".o") == std::string::npos) {
      next = "link vmlinux";
    } else if (l.find("BUILD   arch/x86/boot/bzImage") != std::string::npos) {
      next = "bzImage";
    } else if (l.find(" MODPOST") != std::string::npos) {
      next = "modpost";
    }
    if (next != phase) {
      phase = next;
      tick(true);
    } else {
      tick(false);
    }
  }));
  r.exit_status = run.exit_status;
  r.tail = run.output_tail;
  say("make " + what + ": done, " + std::to_string(r.compiled) + " objects compiled (" +
      detail::format_duration(std::chrono::steady_clock::now() - start) + ")");
  return r;
}

// The lines of a failed build worth showing: the compiler's errors first, then the log's tail.
std::string failure_excerpt(const fs::path& log) {
  auto text = read_file(log);
  if (!text.ok()) return "";
  std::istringstream in(*text);
  std::vector<std::string> lines, errors;
  for (std::string l; std::getline(in, l);) {
    lines.push_back(l);
    if ((l.find("error:") != std::string::npos || l.find("Error ") != std::string::npos) &&
        errors.size() < 12)
      errors.push_back(l);
  }
  std::string out;
  for (const auto& e : errors) out += "  " + e + "\n";
  out += "  --- last lines of the log ---\n";
  for (size_t i = lines.size() > 25 ? lines.size() - 25 : 0; i < lines.size(); ++i)
    out += "  " + lines[i] + "\n";
  return out;
}

std::string utc_now() {
  char b[32];
  std::time_t t = std::time(nullptr);
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return b;
}

Result<std::string> compiler_version() {
  auto out = COWLAB_TRY(detail::capture({"gcc", "--version"}, detail::scratch_file("gcc")));
  return trim(out.substr(0, out.find('\n')));
}

json record_of(const KernelBuildResult& r, const std::vector<fs::path>& fragments,
               const fs::path& config) {
  json patches = json::array();
  for (const auto& p : r.patches)
    patches.push_back({{"file", p.file.string()},
                       {"sha256", p.sha256},
                       {"format", std::string(patch_format_name(p.format))}});
  json frags = json::array();
  for (const auto& f : fragments) frags.push_back(f.string());
  return {{"source",
           {{"spec", r.source.spec},
            {"kind", r.source.kind == SourceKind::kDebianPackage ? "debian-package" : "directory"},
            {"tree", r.source.tree.string()},
            {"identity", r.source.identity},
            {"package", r.source.package},
            {"kernel_version", r.source.kernel_version}}},
          {"patches", patches},
          {"config",
           {{"base", config.empty() ? "tinyconfig" : config.string()},
            {"fragments", frags},
            {"hash", r.config_hash},
            {"dropped", r.dropped}}},
          {"kernel_release", r.kernel_release},
          {"compiler", r.compiler},
          {"build_seconds", r.build_seconds},
          {"objects_compiled", r.objects_compiled},
          {"build_dir_reused", r.build_dir_reused},
          {"built_at", utc_now()},
          {"zfs", r.zfs},
          {"work_dir", r.work_dir.string()},
          {"build_dir", r.build_dir.string()}};
}

}  // namespace

namespace detail {

Result<fs::path> fetch_debian_source(const std::string& series, const Say& say) {
  const fs::path images = COWLAB_TRY(vm_images_dir());
  const fs::path root = kernel_cache() / "src";
  std::error_code ec;
  fs::create_directories(root, ec);
  auto lock = COWLAB_TRY(
      FileLock::acquire(cache_dir() / "locks" / ("kernel-source-" + series + ".lock"),
                        [&] { say("debian:" + series + ": waiting for another fetch"); }));
  // Resolve into a fresh directory; when the version is already unpacked, keep the old one.
  fs::path tmp = root / (".fetch-" + series + "." + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  Staging fetched(tmp);
  // The version first (cheap), so an unpacked tree of the same version is reused without download.
  SpawnOptions so;
  so.argv = {"bash", (images / "kbuild" / "debian-source.sh").string(), series, tmp.string()};
  so.env = {{"COWLAB_CACHE", cache_dir().string()}, {"COWLAB_SOURCE_ONLY_RESOLVE", "1"}};
  fs::create_directories(kernel_cache() / "logs", ec);
  so.output_file = kernel_cache() / "logs" / ("debian-source-" + series + ".log");
  std::string version_line;
  auto run = COWLAB_TRY(run_tool(so, std::chrono::seconds(1800), [&](std::string_view l) {
    if (l.rfind("::step ", 0) == 0) say("debian:" + series + ": " + std::string(l.substr(7)));
    if (l.rfind("PACKAGE=", 0) == 0) version_line = std::string(l.substr(8));
  }));
  if (run.exit_status != 0) {
    std::string why = run.output_tail;
    auto pos = why.rfind("vm-images: ");
    return Error::not_found("--source debian:" + series + ": " +
                            (pos == std::string::npos ? why : trim(why.substr(pos + 11))));
  }
  if (version_line.empty())
    return Error(ErrorKind::kSystem, "debian-source.sh printed no PACKAGE= line");
  // linux-source-6.1=6.1.192-3 -> linux-source-6.1_6.1.192-3
  std::string dirname = version_line;
  std::replace(dirname.begin(), dirname.end(), '=', '_');
  fs::path final_dir = root / dirname;
  if (fs::exists(final_dir / "package") && fs::exists(final_dir / "linux" / "Makefile"))
    return final_dir;
  so.env = {{"COWLAB_CACHE", cache_dir().string()}};
  run = COWLAB_TRY(run_tool(so, std::chrono::seconds(3600), [&](std::string_view l) {
    if (l.rfind("::step ", 0) == 0) say("debian:" + series + ": " + std::string(l.substr(7)));
  }));
  if (run.exit_status != 0)
    return Error(ErrorKind::kSystem, "--source debian:" + series +
                                         ": fetching the package failed:\n" + run.output_tail);
  COWLAB_TRY(fetched.publish(final_dir));
  return final_dir;
}

}  // namespace detail

Result<KernelBuildResult> build_kernel(const KernelBuildRequest& rq) {
  Say say = [&](std::string_view line) {
    if (rq.progress)
      rq.progress(line);
    else
      spdlog::info("[kernel] {}", line);
  };
  std::error_code ec;
  // Every input is checked before anything is fetched or built.
  if (rq.source.empty())
    return Error::usage("--source: required (a kernel tree directory or debian:SERIES)");
  if (!rq.config.empty() && !fs::is_regular_file(rq.config, ec))
    return Error::not_found("--config " + rq.config.string() + ": not found or not a file");
  std::vector<fs::path> fragments;
  if (rq.config.empty()) fragments = COWLAB_TRY(default_config_fragments());
  const size_t own_fragments = fragments.size();
  for (const auto& f : rq.fragments) {
    if (!fs::is_regular_file(f, ec))
      return Error::not_found("--config-fragment " + f.string() + ": not found or not a file");
    fragments.push_back(fs::absolute(f));
  }
  std::vector<RequestedOption> requested;
  std::string config_inputs = "config-v1\n";
  if (rq.config.empty())
    config_inputs += "base tinyconfig\n";
  else
    config_inputs += "base file\n" + COWLAB_TRY(read_file(rq.config)) + "\n";
  for (size_t i = 0; i < fragments.size(); ++i) {
    const auto& f = fragments[i];
    auto text = COWLAB_TRY_CTX(read_file(f), "config fragment " + f.string());
    auto opts = COWLAB_TRY(
        parse_config_fragment(text, f.filename().string(),
                              i < own_fragments ? FragmentOwner::kCowlab : FragmentOwner::kUser));
    requested.insert(requested.end(), opts.begin(), opts.end());
    config_inputs += "fragment " + f.filename().string() + "\n" + text + "\n";
  }
  KernelBuildResult r;
  r.patches = COWLAB_TRY(detail::read_patches(rq.patches));
  r.source = COWLAB_TRY(resolve_kernel_source(rq.source, say));
  r.compiler = COWLAB_TRY(compiler_version());

  const std::string location =
      r.source.kind == SourceKind::kDebianPackage ? rq.source : r.source.tree.string();
  r.work_dir = rq.work_dir.empty()
                   ? kernel_cache() / "work" / sha256_hex("work-v1\n" + location).substr(0, 16)
                   : fs::absolute(rq.work_dir);
  if (fs::exists(r.work_dir, ec) && !fs::is_directory(r.work_dir, ec))
    return Error::invalid("work directory " + r.work_dir.string() + ": not a directory");
  if (r.work_dir == r.source.tree)
    return Error::usage("work directory: must not be the source tree itself");
  auto lock = COWLAB_TRY(detail::FileLock::acquire(
      cache_dir() / "locks" / ("kernel-" + sha256_hex(r.work_dir.string()).substr(0, 16) + ".lock"),
      [&] { say("waiting for another build in " + r.work_dir.string()); }));

  COWLAB_TRY(detail::sync_work_tree(r.source, r.patches, r.work_dir, say));

  // Unknown options are refused before anything is built: the patched tree's Kconfig decides
  // (an aufs patch declares CONFIG_AUFS_FS).
  auto symbols = COWLAB_TRY(kconfig_symbols(r.work_dir));
  auto unknown = sort_out_unknown_options(requested, symbols);
  if (!unknown.refused.empty()) {
    std::string msg = "config fragment: unknown option" +
                      std::string(unknown.refused.size() > 1 ? "s" : "") + " for Linux " +
                      r.source.kernel_version + ":";
    for (const auto& u : unknown.refused) msg += "\n  " + u;
    return Error::invalid(msg);
  }
  for (const auto& u : unknown.skipped)
    say("config: cowlab's fragment option not in Linux " + r.source.kernel_version +
        ", left out: " + u);

  const std::string config_key = sha256_hex(config_inputs).substr(0, 12);
  r.build_dir = r.work_dir / ("o-" + config_key);
  fs::create_directories(r.build_dir, ec);
  fs::create_directories(kernel_cache() / "logs", ec);
  const fs::path cfg = r.build_dir / ".config";
  const fs::path cfg_state = r.build_dir / ".cowlab-config";
  auto current = read_file(cfg);
  auto state = read_file(cfg_state);
  const bool config_current =
      current.ok() && state.ok() && *state == config_key + " " + sha256_hex(*current) + "\n";
  if (!config_current) {
    say("config: " + std::string(rq.config.empty() ? "tinyconfig" : rq.config.string()) + " + " +
        std::to_string(fragments.size()) + " fragment(s)");
    const fs::path log = kernel_cache() / "logs" / ("config-" + config_key + ".log");
    if (rq.config.empty()) {
      auto m = COWLAB_TRY(run_make(rq, make_argv(rq, r.work_dir, r.build_dir, {"tinyconfig"}), log,
                                   "tinyconfig", say));
      if (m.exit_status != 0)
        return Error(ErrorKind::kSystem,
                     "make tinyconfig failed (log " + log.string() + "):\n" + failure_excerpt(log));
    } else {
      fs::copy_file(rq.config, cfg, fs::copy_options::overwrite_existing, ec);
      if (ec) return Error::from_errno("copy", rq.config.string(), ec.value());
    }
    auto base = COWLAB_TRY(read_file(cfg));
    COWLAB_TRY(sys::write_file_atomic(cfg.string(), merge_config_text(base, requested)));
    auto m = COWLAB_TRY(run_make(rq, make_argv(rq, r.work_dir, r.build_dir, {"olddefconfig"}), log,
                                 "olddefconfig", say));
    if (m.exit_status != 0)
      return Error(ErrorKind::kSystem,
                   "make olddefconfig failed (log " + log.string() + "):\n" + failure_excerpt(log));
    current = read_file(cfg);
    if (!current.ok()) return current.error();
    COWLAB_TRY(
        sys::write_file_atomic(cfg_state.string(), config_key + " " + sha256_hex(*current) + "\n"));
  }
  r.config_hash = sha256_hex(*current);
  r.dropped = dropped_options(requested, *current);
  for (const auto& d : r.dropped)
    say("config: requested option did not survive olddefconfig: " + d);
  // An option the user asked for that olddefconfig turned off would make a kernel without the
  // very thing under test (an aufs fragment without CONFIG_MISC_FILESYSTEMS built a 6.12 kernel
  // for 77 minutes, without aufs): refuse before make runs, naming the unmet condition.
  // cowlab's own fragments only warn (test_kernel_build asserts they survive on its series).
  std::vector<RequestedOption> users;
  for (const auto& o : requested)
    if (o.owner == FragmentOwner::kUser) users.push_back(o);
  if (auto lost = dropped_options(users, *current); !lost.empty()) {
    std::string msg = "config fragment: requested option" +
                      std::string(lost.size() > 1 ? "s" : "") +
                      " did not survive olddefconfig for Linux " + r.source.kernel_version + ":";
    for (const auto& l : lost) {
      msg += "\n  " + l;
      const std::string name = l.substr(0, l.find_first_of("= "));
      for (const auto& g : kconfig_unmet_guards(r.work_dir, name, *current))
        msg += "\n    needs " + g;
    }
    msg += "\n(the .config is " + cfg.string() + ")";
    return Error::invalid(msg);
  }

  std::string product_inputs = "product-v1\n" + r.source.identity + "\n" + r.config_hash + "\n" +
                               r.compiler + "\nzfs " +
                               (rq.zfs == ZfsMode::kAuto ? "auto" : "skip") + "\n";
  for (const auto& p : r.patches) product_inputs += "patch " + p.sha256 + "\n";
  const std::string product_key = sha256_hex(product_inputs).substr(0, 20);
  r.product_dir = kernel_cache() / "out" / product_key;
  r.log = r.product_dir / "build.log";

  auto cached = read_file(r.product_dir / "record.json");
  json rec;
  if (cached.ok() && !rq.force) {
    rec = json::parse(*cached, nullptr, false);
    if (!rec.is_discarded() && fs::exists(r.product_dir / "bzImage")) {
      r.cached = true;
      r.kernel_release = rec.value("kernel_release", "");
      r.zfs = rec.value("zfs", "");
      r.build_seconds = 0;
      say("cached: " + r.product_dir.string() + " (Linux " + r.kernel_release + ")");
    }
  }
  if (!r.cached) {
    r.build_dir_reused = fs::exists(r.build_dir / "vmlinux", ec);
    const fs::path log = kernel_cache() / "logs" / ("build-" + product_key + ".log");
    say(std::string(r.build_dir_reused ? "incremental build in " : "full build in ") +
        r.build_dir.string() + " (log " + log.string() + ")");
    const auto start = std::chrono::steady_clock::now();
    auto m = COWLAB_TRY(run_make(rq, make_argv(rq, r.work_dir, r.build_dir, {"bzImage", "modules"}),
                                 log, "kernel", say));
    if (m.exit_status != 0)
      return Error(ErrorKind::kSystem, "kernel build of " + rq.source +
                                           " failed: make exited with status " +
                                           std::to_string(m.exit_status) + " (log " + log.string() +
                                           "):\n" + failure_excerpt(log));
    r.build_seconds = detail::seconds_since(start);
    r.objects_compiled = m.compiled;
    r.kernel_release =
        trim(COWLAB_TRY(read_file(r.build_dir / "include" / "config" / "kernel.release")));

    // The product, assembled aside and renamed into place.
    fs::path tmp =
        kernel_cache() / "out" / (".tmp-" + product_key + "." + std::to_string(::getpid()));
    fs::remove_all(tmp, ec);
    Staging product(tmp);
    fs::create_directories(tmp / "modules", ec);
    fs::copy_file(r.build_dir / "arch" / "x86" / "boot" / "bzImage", tmp / "bzImage", ec);
    if (ec)
      return Error::from_errno("copy", (r.build_dir / "arch/x86/boot/bzImage").string(),
                               ec.value());
    fs::copy_file(cfg, tmp / "config", ec);
    fs::path staging = tmp / "modules-install";
    auto mi =
        COWLAB_TRY(run_make(rq,
                            make_argv(rq, r.work_dir, r.build_dir,
                                      {"INSTALL_MOD_PATH=" + staging.string(), "modules_install"}),
                            tmp / "modules_install.log", "modules_install", say));
    if (mi.exit_status != 0)
      return Error(ErrorKind::kSystem,
                   "make modules_install failed:\n" + failure_excerpt(tmp / "modules_install.log"));
    fs::path installed;
    for (const auto& base : {staging / "lib" / "modules" / r.kernel_release,
                             staging / "usr" / "lib" / "modules" / r.kernel_release})
      if (fs::is_directory(base, ec)) installed = base;
    if (installed.empty())
      return Error::not_found("modules_install put nothing under lib/modules/" + r.kernel_release);
    fs::remove(installed / "build", ec);
    fs::remove(installed / "source", ec);
    fs::rename(installed, tmp / "modules" / r.kernel_release, ec);
    if (ec) return Error::from_errno("rename", installed.string(), ec.value());
    fs::remove_all(staging, ec);

    if (rq.zfs == ZfsMode::kSkip) {
      r.zfs = "zfs: not built (--zfs no)";
    } else {
      const fs::path images = COWLAB_TRY(vm_images_dir());
      say("zfs: module for " + r.source.kernel_version + " from Debian's zfs-dkms");
      detail::SpawnOptions so;
      so.argv = {"nice",
                 "-n",
                 std::to_string(rq.nice),
                 "bash",
                 (images / "kbuild" / "zfs-module.sh").string(),
                 r.source.kernel_version,
                 r.work_dir.string(),
                 r.build_dir.string(),
                 (tmp / "zfs").string()};
      so.env = make_env();
      so.env.emplace_back("COWLAB_CACHE", cache_dir().string());
      so.output_file = tmp / "zfs.log";
      const auto zstart = std::chrono::steady_clock::now();
      auto z = COWLAB_TRY(detail::run_tool(so, std::chrono::seconds(3600), [&](std::string_view l) {
        if (l.rfind("::step ", 0) == 0)
          say("zfs: " + std::string(l.substr(7)) + " (" +
              detail::format_duration(std::chrono::steady_clock::now() - zstart) + ")");
      }));
      if (z.exit_status != 0)
        return Error(ErrorKind::kSystem, "ZFS module build failed (log " +
                                             (tmp / "zfs.log").string() + "):\n" + z.output_tail);
      if (auto why = read_file(tmp / "zfs" / "unsupported"); why.ok()) {
        r.zfs = trim(*why);
      } else {
        fs::path dest = tmp / "modules" / r.kernel_release / "updates" / "zfs";
        fs::create_directories(dest, ec);
        for (const auto& e : fs::directory_iterator(tmp / "zfs", ec))
          if (e.path().extension() == ".ko")
            fs::copy_file(e.path(), dest / e.path().filename(), ec);
        r.zfs = trim(read_file(tmp / "zfs" / "package").value_or("zfs-dkms")) + " built for " +
                r.kernel_release;
      }
      say(r.zfs);
    }
    fs::copy_file(log, tmp / "build.log", fs::copy_options::overwrite_existing, ec);
    rec = record_of(r, fragments, rq.config);
    COWLAB_TRY(sys::write_file_atomic((tmp / "record.json").string(), rec.dump(2)));
    COWLAB_TRY(product.publish(r.product_dir));
  }

  // Register the profile: a bring-your-own kernel with the build's record in its manifest.
  ProfileSpec spec =
      COWLAB_TRY(byo_profile(r.product_dir / "bzImage",
                             r.product_dir / "modules" / r.kernel_release, r.product_dir / "config",
                             rq.profile.empty() ? "src-" + product_key.substr(0, 12) : rq.profile));
  spec.kind = ProfileKind::kSourceBuilt;
  spec.build_record = r.product_dir / "record.json";
  spec.description =
      "Linux " + r.kernel_release + " built from " + rq.source +
      (r.patches.empty() ? "" : " + " + std::to_string(r.patches.size()) + " patch(es)");
  r.profile = spec;
  if (rq.build_images) {
    BuildOptions bo;
    bo.progress = rq.progress;
    r.image = COWLAB_TRY_CTX(build_profile(spec, bo), "profile " + spec.name);
  }
  return r;
}

Result<std::vector<std::string>> source_built_profiles() {
  std::vector<std::pair<fs::file_time_type, std::string>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(cache_dir() / "profiles", ec)) {
    if (e.path().extension() != ".json") continue;
    auto t = read_file(e.path());
    if (!t.ok()) continue;
    json j = json::parse(*t, nullptr, false);
    if (j.is_discarded() || j.value("kind", "") != "source") continue;
    found.emplace_back(e.last_write_time(ec), e.path().stem().string());
  }
  std::sort(found.begin(), found.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

}  // namespace cowlab::harness
