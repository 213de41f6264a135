// Matrix reports: results.json (docs/results.schema.json), junit.xml (junit.cpp), report.html
// (html_report.cpp) and the reproducer bundles.
#include "cowlab/harness/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include "cowlab/command_line.h"
#include "cowlab/fs.h"
#include "cowlab/harness/verdict.h"
#include "cowlab/sys.h"
#include "html_report.h"
#include "junit.h"

namespace cowlab::harness {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using detail::sweep_label;

int severity(const std::string& status) {
  static const std::map<std::string, int> k = {{"pass", 0}, {"skip", 1}, {"flaky", 2}, {"interrupted", 2},
                                               {"fail", 3}, {"timeout", 4}, {"error", 5}, {"panic", 6}};
  auto it = k.find(status);
  return it == k.end() ? 5 : it->second;
}

std::string cell_id(const json& r) {
  std::string id = r.value("profile", "host") + "__" + r.value("driver", "") + "__" + r.value("scenario", "");
  std::string sw = sweep_label(r);
  if (!sw.empty()) id += "__" + sw;
  for (auto& c : id)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  return id;
}

Result<void> write_text(const fs::path& p, const std::string& text) {
  return sys::write_file_atomic(p.string(), text, 0644);
}

Result<void> copy_into(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return Error(ErrorKind::kSystem, "copy " + from.string() + " -> " + to.string() + ": " + ec.message(), ec.value());
  return {};
}

// The scenario reduced to one sweep point: every `sweep:` list replaced by the failing value,
// so rerun.sh reruns exactly that point.  Comments are lost; the original file is kept beside it.
Result<std::string> one_point_scenario(const fs::path& src, const json& sweep) {
  try {
    YAML::Node doc = YAML::LoadFile(src.string());
    if (doc["sweep"] && doc["sweep"].IsMap())
      for (auto& [k, v] : sweep.items()) {
        YAML::Node one(YAML::NodeType::Sequence);
        one.push_back(v.is_string() ? v.get<std::string>() : v.dump());
        doc["sweep"][k] = one;
      }
    YAML::Emitter e;
    e << doc;
    return std::string("# ") + src.filename().string() + " reduced to the failing sweep point by cowlab matrix\n" +
           e.c_str() + "\n";
  } catch (const std::exception& ex) {
    return Error::invalid(src.string() + ": cannot reduce to one sweep point: " + ex.what());
  }
}

// rerun.sh: POSIX sh only, so the bundle runs anywhere cowlab is installed.
std::string rerun_script(const json& r, const std::string& scenario_file, bool has_manifest) {
  std::string profile = r.value("profile", "host"), driver = r.value("driver", "");
  std::string s =
      "#!/bin/sh\n"
      "# Reruns exactly this cell: " + r.value("scenario", "") + " on " + driver + " / " + profile +
      (sweep_label(r).empty() ? "" : " [" + sweep_label(r) + "]") + " (status was " + r.value("status", "") + ").\n"
      "# Usage: ./rerun.sh [--any-kernel]   (cowlab from PATH, $COWLAB, or /usr/local/bin)\n"
      "set -e\n"
      "here=$(cd \"$(dirname \"$0\")\" && pwd)\n"
      "any_kernel=\n"
      "for a in \"$@\"; do\n"
      "  case \"$a\" in\n"
      "    --any-kernel) any_kernel=1 ;;\n"
      "    *) echo \"rerun.sh: unknown option '$a' (only --any-kernel)\" >&2; exit 2 ;;\n"
      "  esac\n"
      "done\n"
      "cowlab=${COWLAB:-$(command -v cowlab || true)}\n"
      "[ -n \"$cowlab\" ] || [ ! -x /usr/local/bin/cowlab ] || cowlab=/usr/local/bin/cowlab\n"
      "if [ -z \"$cowlab\" ]; then\n"
      "  echo \"rerun.sh: cowlab not found (not on PATH, not in /usr/local/bin, COWLAB unset).\" >&2\n"
      "  echo \"  Install it from a cowlab checkout: make build && sudo make install\" >&2\n"
      "  echo \"  or point at a built binary: COWLAB=/path/to/build/drivers/cli/cowlab $0\" >&2\n"
      "  exit 127\n"
      "fi\n";
  if (profile == "host") {
    s += "want='" + r.value("kernel", "") + "'\n"
         "if [ \"$(uname -r)\" != \"$want\" ]; then\n"
         "  if [ -z \"$any_kernel\" ]; then\n"
         "    echo \"rerun.sh: this host runs kernel $(uname -r), the failure was on $want; rerun with --any-kernel to run anyway\" >&2\n"
         "    exit 1\n"
         "  fi\n"
         "  echo \"rerun.sh: warning: kernel $(uname -r), not $want (--any-kernel)\" >&2\n"
         "fi\n"
         "exec \"$cowlab\" --driver " + driver + " scenario run \"$here/" + scenario_file + "\"\n";
  } else {
    s += std::string("exec \"$cowlab\" matrix --profiles ") + profile + " --drivers " + driver +
         (has_manifest ? " --expect-manifest \"$here/profile-manifest.json\" ${any_kernel:+--any-kernel}" : "") +
         " --out \"$here/rerun\" \"$here/" + scenario_file + "\"\n";
  }
  return s;
}

Result<void> reproducers(const MatrixReport& rep, const std::vector<json>& rs, const fs::path& out) {
  for (const auto& r : rs) {
    std::string st = r.value("status", "error");
    if (st == "pass" || st == "skip" || st == "interrupted") continue;
    fs::path dir = out / "reproducers" / cell_id(r);
    COWLAB_TRY(sys::mkdir_all(dir.string(), 0755));
    std::string src = r.value("host_file", r.value("file", ""));
    std::string scenario_name = fs::path(src).filename().string(), run_file = scenario_name;
    if (!src.empty() && fs::exists(src)) {
      COWLAB_TRY(copy_into(src, dir / scenario_name));
      fs::path data = fs::path(src).parent_path() / "data";
      if (fs::is_directory(data)) {
        std::error_code ec;
        fs::copy(data, dir / "data", fs::copy_options::recursive | fs::copy_options::overwrite_existing, ec);
      }
      if (r.contains("sweep") && r["sweep"].is_object() && !r["sweep"].empty()) {
        run_file = fs::path(scenario_name).stem().string() + ".point.yaml";
        COWLAB_TRY(write_text(dir / run_file, COWLAB_TRY(one_point_scenario(src, r["sweep"]))));
      }
    }
    std::string profile = r.value("profile", "host");
    bool has_manifest = false;
    for (const auto& p : rep.profiles)
      if (p.name == profile && !p.manifest.empty() && fs::exists(p.manifest)) {
        COWLAB_TRY(copy_into(p.manifest, dir / "profile-manifest.json"));
        has_manifest = true;
      }
    COWLAB_TRY(sys::write_file_atomic((dir / "rerun.sh").string(), rerun_script(r, run_file, has_manifest), 0755));
    COWLAB_TRY(write_text(dir / "result.json", r.dump(2) + "\n"));
    // The guest's full console and kernel log, when the run kept them.
    for (const char* key : {"console_log", "dmesg_log"}) {
      std::string rel = r.value(key, "");
      if (!rel.empty() && fs::exists(out / rel)) COWLAB_TRY(copy_into(out / rel, dir / fs::path(rel).filename()));
    }
  }
  return {};
}

json host_json() {
  struct utsname u {};
  ::uname(&u);
  struct sysinfo si {};
  ::sysinfo(&si);
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  return {{"kernel", std::string(u.release)},
          {"cpus", cpus > 0 ? cpus : 1},
          {"memory_bytes", static_cast<uint64_t>(si.totalram) * si.mem_unit}};
}

}  // namespace

std::vector<std::pair<std::string, int>> status_counts(const MatrixReport& report) {
  std::map<std::string, int> m;
  for (const auto& line : report.results) {
    try {
      m[json::parse(line).value("status", "error")]++;
    } catch (...) {
      m["error"]++;
    }
  }
  std::vector<std::pair<std::string, int>> out(m.begin(), m.end());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return severity(a.first) < severity(b.first); });
  return out;
}

Result<void> write_report(const MatrixReport& report_in, const fs::path& out) {
  MatrixReport report = report_in;
  // Reports made by older runs (or merged from them) lack the run's facts: say who wrote this.
  if (report.cowlab_version.empty()) report.cowlab_version = cowlab_version();
  if (report.hostname.empty()) {
    char b[256] = {};
    report.hostname = ::gethostname(b, sizeof b - 1) == 0 ? b : "unknown";
  }
  if (report.started_utc.empty()) {
    std::time_t t = std::time(nullptr);
    char b[32];
    std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    report.started_utc = b;
  }
  if (report.host.empty()) report.host = host_json().dump();
  std::vector<json> rs;
  for (const auto& line : report.results) {
    try {
      rs.push_back(json::parse(line));
    } catch (const std::exception& e) {
      return Error::invalid(std::string("matrix report: malformed result line: ") + e.what());
    }
  }
  detail::sort_results(rs);
  auto junit = COWLAB_TRY(detail::junit_xml(report, rs));
  COWLAB_TRY(sys::mkdir_all(out.string(), 0755));
  json profiles = json::array();
  for (const auto& p : report.profiles)
    profiles.push_back({{"name", p.name}, {"kernel_release", p.kernel_release}, {"manifest", p.manifest.string()},
                        {"accel", p.accel}});
  json doc = {{"schema_version", kResultsSchemaVersion},
              {"cowlab_version", report.cowlab_version},
              {"started", report.started_utc},
              {"hostname", report.hostname},
              {"host", json::parse(report.host)},
              {"command", report.command},
              {"wall_seconds", report.wall_seconds},
              {"interrupted", report.interrupted},
              {"profiles", profiles},
              {"drivers", report.drivers},
              {"results", rs}};
  COWLAB_TRY(write_text(out / "results.json", doc.dump(2) + "\n"));
  COWLAB_TRY(write_text(out / "junit.xml", junit));
  COWLAB_TRY(write_text(out / "report.html", detail::html_report(report, rs)));
  COWLAB_TRY(reproducers(report, rs, out));
  return {};
}

Result<MatrixReport> read_report(const fs::path& dir) {
  auto text = COWLAB_TRY(sys::read_file((dir / "results.json").string()));
  MatrixReport rep;
  try {
    json doc = json::parse(text);
    rep.command = doc.value("command", "");
    rep.wall_seconds = doc.value("wall_seconds", 0.0);
    rep.cowlab_version = doc.value("cowlab_version", "");
    rep.started_utc = doc.value("started", "");
    rep.hostname = doc.value("hostname", "");
    rep.interrupted = doc.value("interrupted", false);
    if (doc.contains("host") && doc["host"].is_object()) rep.host = doc["host"].dump();
    for (const auto& p : doc.at("profiles"))
      rep.profiles.push_back({p.value("name", ""), p.value("kernel_release", ""), p.value("manifest", ""), p.value("accel", "")});
    for (const auto& d : doc.at("drivers")) rep.drivers.push_back(d);
    for (const auto& r : doc.at("results")) rep.results.push_back(r.dump());
  } catch (const std::exception& e) {
    return Error::invalid((dir / "results.json").string() + ": not a cowlab matrix result: " + e.what());
  }
  return rep;
}

}  // namespace cowlab::harness
