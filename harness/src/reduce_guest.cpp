// `cowlab scenario reduce --profile`: one guest runs the whole reduction (reduce_guest.h).
#include "cowlab/harness/reduce_guest.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cowlab/harness/accel.h"
#include "cowlab/harness/guest.h"
#include "cowlab/harness/profile.h"
#include "cowlab/registry.h"
#include "cowlab/scenario.h"

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

}  // namespace

Result<GuestReduceResult> reduce_in_guest(const GuestReduceOptions& o) {
  if (!find_driver(o.driver))
    return Error::usage("scenario reduce: unknown driver \"" + o.driver + "\"");
  // Validated here first: a broken file fails before a guest boots (as in the matrix).
  auto scenario = COWLAB_TRY(scenario::load(o.file));
  auto spec = COWLAB_TRY_CTX(find_profile(o.profile), "scenario reduce --profile");
  auto image = COWLAB_TRY_CTX(load_profile_image(spec), "scenario reduce --profile");

  fs::path host = fs::absolute(o.file);
  GuestSpec g;
  g.image = image;
  g.accel = choose_accel(image);
  g.payload.push_back({host.parent_path(), "scenario"});
  g.payload.push_back({fs::read_symlink("/proc/self/exe"), "bin/cowlab"});
  // Sparse: only what the candidates write is allocated (as the matrix's work disk).
  g.disks.push_back({COWLAB_TRY(parse_size("24G"))});
  // The scenario's name and the reducer's arguments go in as positional parameters: nothing
  // of them is parsed by the guest's shell.  The first record tells where the payload is, so
  // the reduced file's absolute tar/oci paths can be turned back into the host's.
  std::string script =
      "set -e; printf '{\"payload\": \"%s\"}\\n' \"$COWLAB_PAYLOAD\" > \"$COWLAB_RESULTS\"; "
      "mkfs.ext4 -q -F /dev/cowlab/scratch0; mkdir -p /run/cowlab/work; "
      "mount /dev/cowlab/scratch0 /run/cowlab/work; "
      "f=$1; shift; exec cowlab scenario reduce \"$COWLAB_PAYLOAD/scenario/$f\" "
      "--work-dir /run/cowlab/work \"$@\"";
  g.command = {"/bin/sh", "-c", script, "sh", host.filename().string(), "--driver", o.driver};
  for (const auto& opt : o.storage_opts) {
    g.command.push_back("--storage-opt");
    g.command.push_back(opt);
  }
  g.command_timeout = o.timeout;
  g.hang_timeout = std::chrono::seconds(300);  // a candidate's step may be silent for long
  g.label = o.profile + "/" + o.driver + " reduce";
  (void)scenario;

  GuestObserver observer;
  if (o.on_stderr) observer.on_stderr = o.on_stderr;
  auto r = COWLAB_TRY(run_guest(g, observer));
  std::string where = "scenario reduce in a " + o.profile + " guest (kernel " +
                      (r.kernel_release.empty() ? "?" : r.kernel_release) + ")";
  if (r.status == GuestStatus::kFail)
    return Error(ErrorKind::kInvalid, where + ": " + last_line(r.stderr_text));
  if (r.status != GuestStatus::kPass)
    return Error(ErrorKind::kSystem,
                 where + ": the guest ended with " + std::string(guest_status_name(r.status)) +
                     ": " + r.reason +
                     " (a scenario that brings the kernel down cannot be reduced "
                     "by expectations)\n--- console excerpt ---\n" +
                     r.console_excerpt + "--- end ---");
  std::string payload;
  for (const auto& rec : r.records) {
    auto j = nlohmann::json::parse(rec, nullptr, false);
    if (j.is_object() && j.contains("payload")) payload = j["payload"].get<std::string>();
  }
  GuestReduceResult out{r.stdout_text, r.kernel_release, r.total_seconds};
  if (!payload.empty()) {
    std::string from = payload + "/scenario/", to = host.parent_path().string() + "/";
    for (size_t p = out.yaml.find(from); p != std::string::npos;
         p = out.yaml.find(from, p + to.size()))
      out.yaml.replace(p, from.size(), to);
  }
  return out;
}

}  // namespace cowlab::harness
