// `cowlab kernel build|list`: the command line of kernel_build.h.  See docs/kernels.md.
#include "cowlab/harness/kernel_cli.h"
#include "cowlab/log.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cowlab/harness/kernel_build.h"
#include "cowlab/harness/profile.h"
#include "cowlab/harness/stop.h"
#include "cowlab/sys.h"
#include "src/util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace cowlab::harness {
namespace {

void on_signal(int signo) {
  request_stop_by_signal(signo);
}

int fail(const Error& e) {
  spdlog::error("cowlab kernel: {}", e.message());
  if (stop_requested() && stop_signal()) return 128 + stop_signal();
  return e.kind() == ErrorKind::kUsage ? 2 : 1;
}

int cmd_build(KernelBuildRequest rq, const std::string& zfs, const std::string& json_out) {
  if (zfs == "no") rq.zfs = ZfsMode::kSkip;
  auto r = build_kernel(rq);
  if (!r.ok()) return fail(r.error());
  json j = {{"profile", r->profile.name},
            {"kernel_release", r->kernel_release},
            {"source", r->source.spec},
            {"identity", r->source.identity},
            {"config_hash", r->config_hash},
            {"cached", r->cached},
            {"build_dir", r->build_dir.string()},
            {"build_dir_reused", r->build_dir_reused},
            {"objects_compiled", r->objects_compiled},
            {"build_seconds", r->build_seconds},
            {"dropped", r->dropped},
            {"zfs", r->zfs},
            {"product", r->product_dir.string()},
            {"log", r->cached ? (r->product_dir / "build.log").string() : r->log.string()}};
  if (!json_out.empty()) {
    auto w = sys::write_file_atomic(json_out, j.dump(2));
    if (!w.ok()) return fail(w.error());
  }
  std::printf("profile %s: Linux %s from %s (%s)\n", r->profile.name.c_str(),
              r->kernel_release.c_str(), r->source.spec.c_str(), r->source.identity.c_str());
  if (r->cached)
    std::printf("  cached build (same source, patches and config)\n");
  else
    std::printf(
        "  built in %s, %u objects compiled%s\n",
        detail::format_duration(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                    std::chrono::duration<double>(r->build_seconds)))
            .c_str(),
        r->objects_compiled, r->build_dir_reused ? " (incremental: build directory reused)" : "");
  for (const auto& d : r->dropped) std::printf("  warning: %s\n", d.c_str());
  std::printf("  %s\n", r->zfs.c_str());
  std::printf("  run: cowlab vm run --profile %s -- uname -a\n", r->profile.name.c_str());
  return 0;
}

int cmd_list(bool as_json) {
  auto names = source_built_profiles();
  if (!names.ok()) return fail(names.error());
  json all = json::array();
  for (const auto& n : *names) {
    auto t = detail::read_file(cache_dir() / "profiles" / (n + ".json"));
    json m = json::parse(t.value_or("{}"), nullptr, false);
    if (m.is_discarded()) continue;
    json b = m.value("source_build", json::object());
    json row = {{"profile", n},
                {"kernel_release", b.value("kernel_release", "")},
                {"source", b.contains("source") ? b["source"].value("spec", "") : ""},
                {"identity", b.contains("source") ? b["source"].value("identity", "") : ""},
                {"patches", b.value("patches", json::array()).size()},
                {"config_hash", b.contains("config") ? b["config"].value("hash", "") : ""},
                {"built_at", b.value("built_at", "")},
                {"zfs", b.value("zfs", "")}};
    all.push_back(row);
    if (!as_json)
      std::printf("%-20s %-22s %-16s %s, %zu patch(es), %s\n", n.c_str(),
                  row["kernel_release"].get<std::string>().c_str(),
                  row["source"].get<std::string>().c_str(),
                  row["identity"].get<std::string>().c_str(), row["patches"].get<size_t>(),
                  row["zfs"].get<std::string>().c_str());
  }
  if (as_json)
    std::printf("%s\n", all.dump(2).c_str());
  else if (all.empty())
    std::printf("no source-built kernels (build one: cowlab kernel build --source debian:6.1)\n");
  return 0;
}

}  // namespace

void add_kernel_commands(CLI::App& root, CommandContext& ctx) {
  struct Args {
    KernelBuildRequest rq;
    std::vector<std::string> patches, fragments;
    std::string config, work_dir, zfs = "auto", result_json, source_spec;
    bool no_images = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* kernel =
      root.add_subcommand("kernel", "kernels built from source as profiles: build, list, source");
  kernel->footer("See docs/kernels.md.");

  auto* build = kernel->add_subcommand(
      "build", "build a kernel from a source tree or Debian's linux-source package");
  build
      ->add_option("--source", a->rq.source,
                   "kernel tree directory (git or not), or debian:SERIES (e.g. debian:6.1)")
      ->required();
  build
      ->add_option("--patch", a->patches,
                   "patch applied with patch -p1 (mail format: git apply), repeatable, in order")
      ->allow_extra_args(false);
  build->add_option("--config", a->config,
                    "full .config (default: tinyconfig + cowlab's harness and storage fragments)");
  build
      ->add_option("--config-fragment", a->fragments,
                   "fragment merged on top (merge_config.sh + olddefconfig), repeatable")
      ->allow_extra_args(false);
  build->add_option("--profile,-p", a->rq.profile, "profile name (default src-<digest>)");
  build
      ->add_option("--zfs", a->zfs,
                   "auto: build the ZFS module when zfs-dkms supports the kernel; no: skip")
      ->check(CLI::IsMember({"auto", "no"}));
  build->add_option("-j,--jobs", a->rq.jobs, "make -j (default: CPUs)");
  build->add_option("--work-dir", a->work_dir,
                    "the tree to build in (default: one per source in the cache)");
  build->add_flag("--force", a->rq.force, "rebuild even if this exact build is cached");
  build->add_flag("--no-images", a->no_images, "do not build the profile's boot images");
  build->add_option("--result-json", a->result_json, "write the result as JSON to this file");
  build->callback([a, &ctx] {
    install_stop_signal_handlers();
    KernelBuildRequest rq = a->rq;
    for (const auto& p : a->patches) rq.patches.emplace_back(p);
    for (const auto& f : a->fragments) rq.fragments.emplace_back(f);
    rq.config = a->config;
    rq.work_dir = a->work_dir;
    rq.build_images = !a->no_images;
    if (!rq.profile.empty() && rq.profile.rfind("debian-", 0) == 0) {
      ctx.status = fail(Error::usage("--profile " + rq.profile +
                                     ": debian-* names belong to the Debian profiles"));
      return;
    }
    ctx.status = cmd_build(rq, a->zfs, a->result_json);
  });

  auto* list = kernel->add_subcommand("list", "source-built kernel profiles in the cache");
  list->callback([&ctx] { ctx.status = cmd_list(ctx.json); });

  auto* source = kernel->add_subcommand(
      "source", "resolve a source (fetching debian:SERIES once): tree, version, identity");
  source->add_option("SOURCE", a->source_spec, "kernel tree directory or debian:SERIES")
      ->required();
  source->callback([a, &ctx] {
    install_stop_signal_handlers();
    auto s = resolve_kernel_source(a->source_spec,
                                   [](std::string_view l) { spdlog::info("[kernel] {}", l); });
    if (!s.ok()) {
      ctx.status = fail(s.error());
      return;
    }
    std::printf("tree: %s\nversion: %s\nidentity: %s\n", s->tree.c_str(), s->kernel_version.c_str(),
                s->identity.c_str());
    ctx.status = kExitOk;
  });
}

}  // namespace cowlab::harness
