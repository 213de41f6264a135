#include "cowlab/harness/profile.h"
#include "cowlab/harness/self_binary.h"

#include <sys/mount.h>
#include <unistd.h>

#include <fstream>

#include <algorithm>
#include <atomic>
#include <optional>
#include <set>
#include <sstream>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <thread>

#include "cowlab/harness/stop.h"
#include "cowlab/log.h"
#include "cowlab/sys.h"
#include "heartbeat.h"
#include "process.h"
#include "resolution.h"
#include "util.h"

namespace fs = std::filesystem;
using nlohmann::json;

#ifndef COWLAB_SOURCE_DIR
#define COWLAB_SOURCE_DIR ""
#endif

namespace cowlab::harness {
namespace {
using detail::parse_key_values;
using detail::read_file;
using detail::sha256_file;
using detail::sha256_hex;

constexpr int kManifestVersion = 1;

std::string getenv_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

void say(const BuildOptions& o, std::string_view line) {
  if (o.progress)
    o.progress(line);
  else
    spdlog::info("{}", line);
}

// One cached build product: a directory under images/ named by kind and input key.
struct Artifact {
  std::string kind;    // "zfs", "kernel", "root"
  std::string key;     // sha256 of every input
  std::string script;  // recipe in vm-images
  std::map<std::string, std::string> env;
  std::string inputs;  // human-readable input list (stored in the manifest)
  std::chrono::seconds timeout{3600};
  fs::path dir() const { return cache_dir() / "images" / (kind + "-" + key.substr(0, 20)); }
};

// Verifies an artifact directory against its manifest.json.
Result<json> verify_artifact(const fs::path& dir, VerifyMode mode) {
  auto text = read_file(dir / "manifest.json");
  if (!text.ok()) return Error::corrupt("cache entry " + dir.string() + ": no manifest");
  json m = json::parse(*text, nullptr, false);
  if (m.is_discarded() || !m.contains("files"))
    return Error::corrupt("cache entry " + dir.string() + ": unreadable manifest");
  for (auto& [name, f] : m["files"].items()) {
    fs::path p = dir / name;
    std::error_code ec;
    auto size = fs::file_size(p, ec);
    if (ec) return Error::corrupt("cache entry " + dir.string() + ": " + name + " missing");
    if (size != f.value("size", uint64_t{0}))
      return Error::corrupt("cache entry " + dir.string() + ": " + name + " changed size");
    if (mode == VerifyMode::kFull) {
      auto sum = COWLAB_TRY(sha256_file(p));
      if (sum != f.value("sha256", ""))
        return Error::corrupt("cache entry " + dir.string() + ": " + name + " checksum mismatch");
    }
  }
  return m;
}

std::string digest_recipes(const fs::path& images, const std::vector<std::string>& files) {
  std::string all;
  for (const auto& f : files) {
    auto t = read_file(images / f);
    all += f + "\n" + (t.ok() ? *t : std::string("<missing>")) + "\n";
  }
  return sha256_hex(all);
}

// Detaches every mount below `dir` (deepest first) before it is deleted: a recipe killed inside
// mmdebstrap can leave its chroot's /proc, /sys or /dev/pts mounted there, and remove_all must
// never descend into those.
void unmount_below(const fs::path& dir) {
  auto mounts = sys::mountinfo();  // libmount's parse (escaped names included)
  if (!mounts.ok()) return;
  std::vector<std::string> below;
  const std::string prefix = fs::absolute(dir).string() + "/";
  for (const auto& m : *mounts)
    if (m.mount_point.rfind(prefix, 0) == 0) below.push_back(m.mount_point);
  std::sort(below.begin(), below.end(), [](auto& x, auto& y) { return x.size() > y.size(); });
  for (const auto& m : below) ::umount2(m.c_str(), MNT_DETACH);
}

void remove_build_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  unmount_below(dir);
  fs::remove_all(dir, ec);
}

Result<void> build_artifact(const Artifact& a, const fs::path& images, const std::string& label,
                            const BuildOptions& o) {
  const fs::path final_dir = a.dir();
  if (!o.force) {
    auto v = verify_artifact(final_dir, o.verify);
    if (v.ok()) {
      say(o, "[" + label + "] " + a.kind + ": cached (" + final_dir.filename().string() + ")");
      return ok();
    }
    if (fs::exists(final_dir)) say(o, "[" + label + "] " + a.kind + ": " + v.error().message() + "; rebuilding");
  }
  fs::path tmp_root = cache_dir() / "tmp";
  fs::create_directories(tmp_root);
  fs::path work = tmp_root / (a.kind + "-" + a.key.substr(0, 20) + "." + std::to_string(::getpid()));
  std::error_code ec;
  remove_build_dir(work);
  fs::create_directories(work);
  fs::path logs = cache_dir() / "logs";
  fs::create_directories(logs);
  fs::path log = logs / ("build-" + a.kind + "-" + a.key.substr(0, 20) + ".log");

  detail::SpawnOptions so;
  so.argv = {"bash", (images / a.script).string(), work.string()};
  for (const auto& [k, v] : a.env) so.env.emplace_back(k, v);
  so.env.emplace_back("COWLAB_CACHE", cache_dir().string());
  so.env.emplace_back("TMPDIR", tmp_root.string());
  so.output_file = log;
  const auto start = std::chrono::steady_clock::now();
  say(o, "[" + label + "] " + a.kind + ": building (log " + log.string() + ")");
  Result<detail::ToolRun> run = Error(ErrorKind::kSystem, "not run");
  {
    // Progress: the recipe's "::step" lines, plus a heartbeat every 30 s during long steps.
    detail::Heartbeat beat("starting", std::chrono::seconds(30),
                           [&](const std::string& line) { say(o, "[" + label + "] " + a.kind + ": " + line); });
    run = detail::run_tool(so, a.timeout, [&](std::string_view line) {
      if (line.rfind("::step ", 0) == 0) beat.step(std::string(line.substr(7)));
    });
  }
  auto fail = [&](Error e) -> Result<void> {
    remove_build_dir(work);
    return std::move(e).with_context("build " + a.kind + " for " + label);
  };
  if (!run.ok()) return fail(run.error());
  if (run->exit_status != 0)
    return fail(Error(ErrorKind::kSystem, a.script + " exited with status " +
                                              std::to_string(run->exit_status) + " (log " +
                                              log.string() + "):\n" + run->output_tail));
  json files = json::object();
  for (const auto& e : fs::directory_iterator(work)) {
    if (!e.is_regular_file() || e.path().filename().string().front() == '.') continue;
    auto sum = sha256_file(e.path());
    if (!sum.ok()) return fail(sum.error());
    files[e.path().filename().string()] = {{"size", e.file_size()}, {"sha256", *sum}};
  }
  json m = {{"version", kManifestVersion}, {"kind", a.kind},        {"key", a.key},
            {"inputs", a.inputs},          {"files", files},        {"built_by", label},
            {"build_seconds", detail::seconds_since(start)}};
  auto w = sys::write_file_atomic((work / "manifest.json").string(), m.dump(2));
  if (!w.ok()) return fail(w.error());
  // Replace a stale entry: move it aside first so the final rename is atomic.
  if (fs::exists(final_dir)) {
    fs::path old = tmp_root / (final_dir.filename().string() + ".old." + std::to_string(::getpid()));
    fs::rename(final_dir, old, ec);
    fs::remove_all(old, ec);
  }
  fs::create_directories(final_dir.parent_path());
  fs::rename(work, final_dir, ec);
  if (ec) return fail(Error::from_errno("rename", final_dir.string(), ec.value()));
  say(o, "[" + label + "] " + a.kind + ": built in " +
             detail::format_duration(std::chrono::steady_clock::now() - start));
  return ok();
}

std::string join_inputs(const std::map<std::string, std::string>& kv,
                        const std::vector<std::string>& keys) {
  std::string s;
  for (const auto& k : keys) {
    auto it = kv.find(k);
    s += k + "=" + (it == kv.end() ? "" : it->second) + "\n";
  }
  return s;
}

Result<std::string> digest_tree(const fs::path& dir) {
  std::vector<std::string> lines;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (ec) break;
    auto st = it->symlink_status(ec);
    std::string rel = fs::relative(it->path(), dir, ec).string();
    uint64_t size = fs::is_regular_file(st) ? it->file_size(ec) : 0;
    auto mtime = fs::is_regular_file(st) ? it->last_write_time(ec).time_since_epoch().count() : 0;
    lines.push_back(rel + " " + std::to_string(size) + " " + std::to_string(mtime));
  }
  if (ec) return Error::from_errno("walk", dir.string(), ec.value());
  std::sort(lines.begin(), lines.end());
  std::string all;
  for (auto& l : lines) all += l + "\n";
  return sha256_hex(all);
}

fs::path profile_manifest_path(const std::string& name) {
  return cache_dir() / "profiles" / (name + ".json");
}

// Removes image artifacts that no profile manifest refers to any more and that are older than
// three days (superseded builds; a fresh one may belong to a profile whose build failed later
// and will be reused by the next attempt).  Runs under the build lock; a guest still using a
// removed image keeps its open files.
void prune_images(const BuildOptions& o) {
  std::set<std::string> keep;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(cache_dir() / "profiles", ec)) {
    if (e.path().extension() != ".json") continue;
    auto t = read_file(e.path());
    if (!t.ok()) continue;
    json m = json::parse(*t, nullptr, false);
    if (m.is_discarded() || !m.contains("artifacts")) continue;
    for (auto& [k, v] : m["artifacts"].items())
      if (v.is_string() && !v.get<std::string>().empty()) keep.insert(fs::path(v.get<std::string>()).filename().string());
  }
  for (const auto& e : fs::directory_iterator(cache_dir() / "images", ec)) {
    if (keep.count(e.path().filename().string())) continue;
    auto age = fs::file_time_type::clock::now() - fs::last_write_time(e.path(), ec);
    if (ec || age < std::chrono::hours(72)) continue;
    say(o, "pruning unused cache entry " + e.path().filename().string());
    fs::remove_all(e.path(), ec);
  }
}

}  // namespace

fs::path cache_dir() {
  std::string c = getenv_str("COWLAB_CACHE");
  fs::path p = !c.empty() ? fs::path(c) : fs::path(getenv_str("HOME").empty() ? "/root" : getenv_str("HOME")) / ".cache" / "cowlab";
  std::error_code ec;
  fs::create_directories(p, ec);
  return fs::absolute(p, ec);
}

Result<fs::path> vm_images_dir() {
  std::vector<fs::path> candidates;
  if (auto e = getenv_str("COWLAB_VM_IMAGES"); !e.empty()) candidates.emplace_back(e);
  if (std::string(COWLAB_SOURCE_DIR).size()) candidates.emplace_back(fs::path(COWLAB_SOURCE_DIR) / "vm-images");
  for (const auto& c : candidates)
    if (fs::exists(c / "resolve.sh")) return fs::absolute(c);
  return Error::not_found("vm-images recipes: not found (set COWLAB_VM_IMAGES to the vm-images directory)");
}

Result<std::vector<ProfileSpec>> debian_profiles() {
  auto images = COWLAB_TRY(vm_images_dir());
  std::vector<ProfileSpec> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(images / "profiles", ec)) {
    if (e.path().extension() != ".conf") continue;
    auto text = COWLAB_TRY(read_file(e.path()));
    auto kv = parse_key_values(text);
    ProfileSpec p;
    p.name = e.path().stem().string();
    p.kind = ProfileKind::kDebian;
    p.description = kv["DESCRIPTION"];
    p.recipe = e.path();
    if (!kv["QEMU_CPU"].empty()) p.qemu_cpu = kv["QEMU_CPU"];
    out.push_back(std::move(p));
  }
  if (ec) return Error::from_errno("readdir", (images / "profiles").string(), ec.value());
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name < b.name; });
  return out;
}

std::string_view profile_kind_name(ProfileKind kind) {
  switch (kind) {
    case ProfileKind::kDebian: return "debian";
    case ProfileKind::kBringYourOwn: return "byo";
    case ProfileKind::kSourceBuilt: return "source";
  }
  return "unknown";
}

Result<ProfileSpec> find_profile(std::string_view name) {
  auto all = COWLAB_TRY(debian_profiles());
  std::string names;
  for (auto& p : all) {
    if (p.name == name) return p;
    names += (names.empty() ? "" : ", ") + p.name;
  }
  // A BYO profile built earlier is known by its manifest.
  auto m = read_file(profile_manifest_path(std::string(name)));
  if (m.ok()) {
    json j = json::parse(*m, nullptr, false);
    if (!j.is_discarded() && j.value("kind", "") == "byo")
      return byo_profile(j.value("byo_kernel", ""), j.value("byo_modules", ""),
                         j.value("byo_config", ""), std::string(name));
    if (!j.is_discarded() && j.value("kind", "") == "source") {
      auto p = COWLAB_TRY_CTX(byo_profile(j.value("byo_kernel", ""), j.value("byo_modules", ""),
                                          j.value("byo_config", ""), std::string(name)),
                              "source-built profile " + std::string(name));
      p.kind = ProfileKind::kSourceBuilt;
      p.build_record = j.value("source_record", "");
      p.description = j.value("description", p.description);
      return p;
    }
  }
  return Error::not_found("profile '" + std::string(name) + "': unknown (known: " + names +
                          "; or make your own kernel a profile: cowlab vm build --kernel PATH --profile NAME)");
}

Result<std::vector<ProfileSpec>> stored_profiles() {
  std::vector<std::pair<fs::file_time_type, std::string>> found;
  std::error_code ec;
  const fs::path dir = profile_manifest_path("x").parent_path();
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".json") continue;
    auto t = read_file(e.path());
    if (!t.ok()) continue;
    json j = json::parse(*t, nullptr, false);
    if (j.is_discarded()) continue;
    const std::string kind = j.value("kind", "");
    if (kind != "byo" && kind != "source") continue;
    found.emplace_back(e.last_write_time(ec), e.path().stem().string());
  }
  std::sort(found.begin(), found.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::vector<ProfileSpec> out;
  for (auto& f : found) {
    // A manifest whose kernel has since been removed from the cache is not a usable profile.
    auto p = find_profile(f.second);
    if (p.ok()) out.push_back(std::move(*p));
  }
  return out;
}

Result<ProfileSpec> byo_profile(const fs::path& kernel, const fs::path& modules,
                                const fs::path& kernel_config, std::string name) {
  std::error_code ec;
  if (kernel.empty()) return Error::usage("bring-your-own profile: no kernel image given");
  if (!fs::is_regular_file(kernel, ec))
    return Error::not_found("kernel image '" + kernel.string() + "': not found or not a file");
  if (::access(kernel.c_str(), R_OK) != 0) return Error::from_errno("open", kernel.string(), errno);
  if (!modules.empty() && !fs::is_directory(modules, ec))
    return Error::not_found("modules directory '" + modules.string() + "': not found or not a directory");
  if (!kernel_config.empty() && !fs::is_regular_file(kernel_config, ec))
    return Error::not_found("kernel config '" + kernel_config.string() + "': not found");
  ProfileSpec p;
  p.kind = ProfileKind::kBringYourOwn;
  p.kernel = fs::absolute(kernel);
  if (!modules.empty()) p.modules = fs::absolute(modules);
  if (!kernel_config.empty()) p.kernel_config = fs::absolute(kernel_config);
  p.name = name.empty() ? "byo-" + sha256_hex(p.kernel.string()).substr(0, 8) : std::move(name);
  p.description = "bring-your-own kernel " + p.kernel.string();
  return p;
}

Result<ProfileImage> build_profile(const ProfileSpec& spec, const BuildOptions& options) {
  BuildOptions o = options;
  const fs::path images = COWLAB_TRY(vm_images_dir());
  const fs::path bin = o.runtime_binary.empty() ? COWLAB_TRY(self_binary()).readable : o.runtime_binary;
  const std::string label = spec.name;
  auto lock = COWLAB_TRY(detail::FileLock::acquire(cache_dir() / "locks" / "build.lock", [&] {
    say(o, "[" + label + "] waiting for another image build to finish");
  }));
  // Only builds use $COWLAB_CACHE/tmp, and we hold the build lock: anything there is left over
  // from a build that was killed (partial entries are never renamed into images/).
  {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(cache_dir() / "tmp", ec)) remove_build_dir(e.path());
  }

  // Root inputs come from the profile's own recipe; a BYO kernel runs with the default root.
  ProfileSpec root_spec = spec;
  if (spec.kind != ProfileKind::kDebian) root_spec = COWLAB_TRY(find_profile(kDefaultProfile));
  detail::ResolveRequest rq{images, root_spec.recipe, bin, label, o.resolve,
                            [&o](std::string_view l) { say(o, l); }};
  auto resolution = COWLAB_TRY(detail::resolve_packages(rq));
  auto& kv = resolution.values;
  const std::string lib_digest = digest_recipes(images, {"lib.sh", "apt-sources.sh"});

  Artifact root;
  root.kind = "root";
  root.script = "build-root.sh";
  root.inputs = join_inputs(kv, {"ROOT_REALM", "ROOT_SUITES", "BASE_PKGS", "RUNTIME_PKGS", "ZFS_USERLAND", "ROOT_CLOSURE"});
  root.key = sha256_hex("root-v1\n" + root.inputs + digest_recipes(images, {"build-root.sh", "packages/base.txt", "packages/runtime.txt"}) + lib_digest);
  root.env = kv;
  root.env["COWLAB_BIN"] = bin.string();
  root.timeout = std::chrono::seconds(1800);

  Artifact kernel;
  kernel.kind = "kernel";
  kernel.script = "build-kernel.sh";
  kernel.timeout = std::chrono::seconds(900);
  std::optional<Artifact> zfs;
  std::map<std::string, std::string> versions;
  if (spec.kind == ProfileKind::kDebian && kv["ZFS_SUPPORT"] == "no") {
    // zfs-dkms does not declare this kernel (resolve.sh): no module; zfs cells skip with this.
    kernel.inputs = join_inputs(kv, {"KERNEL_REALM", "KERNEL_PKG", "KERNEL_PARTS", "KERNEL_RELEASE", "BUSYBOX"}) + "ZFS=none\n";
    kernel.env = kv;
    versions = {{"kernel", kv["KERNEL_PKG"]},
                {"kernel_release", kv["KERNEL_RELEASE"]},
                {"zfs_unsupported", kv["ZFS_UNSUPPORTED"]},
                {"zfs_userland", kv["ZFS_USERLAND"]},
                {"headers", kv["HEADER_PKGS"]}};
  } else if (spec.kind == ProfileKind::kDebian) {
    zfs.emplace();
    zfs->kind = "zfs";
    zfs->script = "build-zfs.sh";
    zfs->inputs = join_inputs(kv, {"KERNEL_REALM", "KERNEL_RELEASE", "HEADER_PKGS", "COMPILER_PKGS", "ZFS_DKMS_PKG", "ZFS_UPSTREAM", "BUILDER_SUITES"});
    zfs->key = sha256_hex("zfs-v1\n" + zfs->inputs + digest_recipes(images, {"build-zfs.sh"}) + lib_digest);
    zfs->env = kv;
    zfs->timeout = std::chrono::seconds(3600);
    kernel.inputs = join_inputs(kv, {"KERNEL_REALM", "KERNEL_PKG", "KERNEL_PARTS", "KERNEL_RELEASE", "BUSYBOX"}) + "ZFS=" + zfs->key + "\n";
    kernel.env = kv;
    kernel.env["ZFS_KO_DIR"] = zfs->dir().string();
    versions = {{"kernel", kv["KERNEL_PKG"]},       {"kernel_release", kv["KERNEL_RELEASE"]},
                {"zfs_module", kv["ZFS_DKMS_PKG"]}, {"zfs_userland", kv["ZFS_USERLAND"]},
                {"headers", kv["HEADER_PKGS"]},     {"compiler", kv["COMPILER_PKGS"]}};
  } else {
    std::string tree = "none";
    if (!spec.modules.empty()) tree = COWLAB_TRY(digest_tree(spec.modules));
    std::string ksum = COWLAB_TRY(sha256_file(spec.kernel));
    std::string csum = spec.kernel_config.empty() ? "none" : COWLAB_TRY(sha256_file(spec.kernel_config));
    kernel.inputs = "BYO_KERNEL=" + spec.kernel.string() + " sha256:" + ksum + "\nBYO_MODULES=" +
                    spec.modules.string() + " tree:" + tree + "\nBYO_CONFIG=" + csum + "\n" +
                    join_inputs(kv, {"BUSYBOX"});
    kernel.env = {{"BYO_KERNEL", spec.kernel.string()}, {"BYO_MODULES", spec.modules.string()},
                  {"BYO_CONFIG", spec.kernel_config.string()}};
    versions = {{"kernel", "bring-your-own " + spec.kernel.string()},
                {"zfs_userland", kv["ZFS_USERLAND"]}};
  }
  kernel.key = sha256_hex("kernel-v1\n" + kernel.inputs + digest_recipes(images, {"build-kernel.sh", "boot/init.sh"}) + lib_digest);

  // A build from a cached resolution can fail because the archive has moved on (a superseded
  // version is no longer downloadable): say how to resolve again.
  auto build = [&](const Artifact& a) -> Result<void> {
    auto r = build_artifact(a, images, label, o);
    if (r.ok() || !resolution.from_cache || stop_requested()) return r;
    return Error(r.error().kind(),
                 r.error().message() + "\n(package versions as resolved " + resolution.resolved_at +
                     "; if the archive no longer has them: cowlab vm build --profile " + spec.name +
                     " --refresh)",
                 r.error().err());
  };
  if (zfs) COWLAB_TRY(build(*zfs));
  COWLAB_TRY(build(kernel));
  COWLAB_TRY(build(root));

  // The profile manifest: exact versions and the hash of all inputs.
  auto release = read_file(kernel.dir() / "release");
  std::string rel = release.ok() ? *release : "unknown";
  while (!rel.empty() && (rel.back() == '\n' || rel.back() == ' ')) rel.pop_back();
  versions["kernel_release"] = rel;
  json pkgs = json::object();
  if (auto p = read_file(root.dir() / "packages.txt"); p.ok()) {
    std::istringstream in(*p);
    for (std::string line; std::getline(in, line);)
      if (auto eq = line.find('='); eq != std::string::npos) pkgs[line.substr(0, eq)] = line.substr(eq + 1);
  }
  const std::string hash = sha256_hex("profile-v1\n" + (zfs ? zfs->key : "-") + "\n" + kernel.key + "\n" + root.key + "\n" + spec.qemu_cpu);
  json m = {{"name", spec.name},
            {"kind", std::string(profile_kind_name(spec.kind))},
            {"description", spec.description},
            {"hash", hash},
            {"qemu_cpu", spec.qemu_cpu},
            {"versions", versions},
            {"inputs", {{"kernel", kernel.inputs}, {"root", root.inputs}, {"zfs", zfs ? zfs->inputs : ""}}},
            // Names under $COWLAB_CACHE/images: the cache can move without invalidating manifests.
            {"artifacts", {{"kernel", kernel.dir().filename().string()}, {"root", root.dir().filename().string()},
                           {"zfs", zfs ? zfs->dir().filename().string() : ""}}},
            {"root_packages", pkgs}};
  if (spec.kind != ProfileKind::kDebian) {
    m["byo_kernel"] = spec.kernel.string();
    m["byo_modules"] = spec.modules.string();
    m["byo_config"] = spec.kernel_config.string();
  }
  if (spec.kind == ProfileKind::kSourceBuilt) {
    // The build's record (source identity, patches, config hash, compiler, build time) and what
    // the kernel cannot run: zfs without a module names the zfs-dkms range that excluded it.
    json rec = json::parse(read_file(spec.build_record).value_or("{}"), nullptr, false);
    m["source_record"] = spec.build_record.string();
    m["source_build"] = rec;
    std::string zfs = rec.is_object() ? rec.value("zfs", "") : "";
    m["versions"]["kernel"] = "source-built " + (rec.is_object() ? rec["source"].value("identity", "") : "");
    m["versions"]["zfs_module"] = zfs;
    if (zfs.rfind("zfs: ", 0) == 0) {
      m["unsupported"] = {{"zfs", zfs}};
      // The key the matrix's applicability check reads (it adds the "zfs: " itself).
      m["versions"]["zfs_unsupported"] = zfs.substr(5);
    }
  }
  fs::create_directories(cache_dir() / "profiles");
  COWLAB_TRY(sys::write_file_atomic(profile_manifest_path(spec.name).string(), m.dump(2)));
  prune_images(o);
  return load_profile_image(spec);
}

Result<ProfileImage> load_profile_image(const ProfileSpec& spec) {
  auto text = read_file(profile_manifest_path(spec.name));
  if (!text.ok())
    return Error::not_found(
        "profile " + spec.name + ": not built (run: cowlab vm build " +
        (spec.kind == ProfileKind::kBringYourOwn
             ? "--profile " + spec.name + " --kernel " + spec.kernel.string() +
                   (spec.modules.empty() ? "" : " --modules " + spec.modules.string())
             : spec.kind == ProfileKind::kSourceBuilt ? "--profile " + spec.name + "; or cowlab kernel build --profile " + spec.name
                                                      : "--profile " + spec.name) +
        ")");
  json m = json::parse(*text, nullptr, false);
  if (m.is_discarded()) return Error::corrupt("profile manifest " + profile_manifest_path(spec.name).string() + ": unreadable");
  ProfileImage img;
  img.profile = spec.name;
  img.hash = m.value("hash", "");
  img.qemu_cpu = m.value("qemu_cpu", spec.qemu_cpu);
  img.manifest = profile_manifest_path(spec.name);
  for (auto& [k, v] : m["versions"].items()) img.versions[k] = v.get<std::string>();
  img.kernel_release = img.versions["kernel_release"];
  fs::path kdir = cache_dir() / "images" / fs::path(m["artifacts"].value("kernel", "")).filename();
  fs::path rdir = cache_dir() / "images" / fs::path(m["artifacts"].value("root", "")).filename();
  for (const auto& d : {kdir, rdir}) {
    auto v = verify_artifact(d, VerifyMode::kQuick);
    if (!v.ok())
      return Error::corrupt("profile " + spec.name + ": " + v.error().message() +
                            " (run: cowlab vm build --profile " + spec.name + ")");
  }
  img.kernel = kdir / "vmlinuz";
  img.boot_initrd = kdir / "boot.cpio";
  if (fs::exists(kdir / "modules.ext4")) img.modules_disk = kdir / "modules.ext4";
  if (fs::exists(kdir / "config")) img.kernel_config = kdir / "config";
  img.root_disk = rdir / "root.ext4";
  return img;
}

}  // namespace cowlab::harness
