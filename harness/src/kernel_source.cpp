// Kernel sources for `cowlab kernel build`: resolving --source, the identity of a tree, patch
// formats and application, and the work tree (a hard-link copy with the patches applied).
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <regex>
#include <sstream>

#include "cowlab/sys.h"
#include "cowlab/harness/kernel_build.h"
#include "kernel_build_internal.h"
#include "process.h"
#include "util.h"

namespace fs = std::filesystem;

namespace cowlab::harness {
namespace {
using detail::read_file;
using detail::sha256_hex;

bool is_kernel_tree(const fs::path& d) {
  std::error_code ec;
  return fs::is_regular_file(d / "Makefile", ec) && fs::is_regular_file(d / "Kconfig", ec) &&
         fs::is_directory(d / "arch" / "x86", ec);
}

}  // namespace

namespace detail {

Result<std::string> capture(const std::vector<std::string>& argv, const fs::path& scratch,
                            int* exit_status,
                            const std::vector<std::pair<std::string, std::string>>& env) {
  std::error_code ec;
  fs::create_directories(scratch.parent_path(), ec);
  SpawnOptions so;
  so.argv = argv;
  so.output_file = scratch;
  so.env = env;
  so.env.emplace_back("LC_ALL", "C");
  auto run = COWLAB_TRY(run_tool(so, std::chrono::seconds(600)));
  auto text = read_file(scratch);
  fs::remove(scratch, ec);
  if (exit_status)
    *exit_status = run.exit_status;
  else if (run.exit_status != 0)
    return Error(ErrorKind::kSystem, argv[0] + " exited with status " +
                                         std::to_string(run.exit_status) + ": " + run.output_tail);
  return text.ok() ? *text : std::string();
}

fs::path scratch_file(std::string_view tag) {
  static int seq = 0;
  return cache_dir() / "kernel" / "tmp" /
         (std::string(tag) + "." + std::to_string(::getpid()) + "." + std::to_string(seq++));
}

}  // namespace detail

Result<std::string> tree_kernel_version(const fs::path& tree) {
  auto text = COWLAB_TRY_CTX(read_file(tree / "Makefile"), "kernel tree " + tree.string());
  std::map<std::string, std::string> v;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line) && v.size() < 3;) {
    for (const char* key : {"VERSION", "PATCHLEVEL", "SUBLEVEL"}) {
      std::string k = key;
      if (line.rfind(k + " = ", 0) == 0 && !v.count(k)) v[k] = line.substr(k.size() + 3);
    }
  }
  if (v.size() < 3 || v["VERSION"].empty())
    return Error::invalid("kernel tree " + tree.string() +
                          ": Makefile has no VERSION/PATCHLEVEL/SUBLEVEL");
  return v["VERSION"] + "." + v["PATCHLEVEL"] + "." + (v["SUBLEVEL"].empty() ? "0" : v["SUBLEVEL"]);
}

Result<std::string> source_identity(const fs::path& tree) {
  std::error_code ec;
  if (fs::exists(tree / ".git", ec)) {
    int st = 0;
    auto head = COWLAB_TRY(detail::capture({"git", "-C", tree.string(), "rev-parse", "HEAD"},
                                           detail::scratch_file("git-head"), &st));
    if (st == 0) {
      while (!head.empty() && (head.back() == '\n' || head.back() == ' ')) head.pop_back();
      // Tracked changes (staged or not) relative to HEAD, then untracked files (not ignored).
      auto diff =
          COWLAB_TRY(detail::capture({"git", "-C", tree.string(), "diff", "HEAD", "--binary"},
                                     detail::scratch_file("git-diff")));
      auto untracked = COWLAB_TRY(detail::capture(
          {"git", "-C", tree.string(), "ls-files", "--others", "--exclude-standard", "-z"},
          detail::scratch_file("git-untracked")));
      std::string extra;
      std::istringstream names(untracked);
      for (std::string name; std::getline(names, name, '\0');) {
        if (name.empty()) continue;
        auto sum = detail::sha256_file(tree / name);
        extra += name + " " + (sum.ok() ? *sum : "unreadable") + "\n";
      }
      std::string id = "git:" + head;
      if (!diff.empty() || !extra.empty())
        id += "+dirty:" + sha256_hex(diff + "\n--untracked--\n" + extra).substr(0, 16);
      return id;
    }
  }
  // Not a git tree: every file's path, size and mtime (content hashing 1.5 GB would take longer
  // than the incremental build it decides about).
  std::vector<std::string> lines;
  for (auto it = fs::recursive_directory_iterator(tree, fs::directory_options::none, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return Error::from_errno("walk", tree.string(), ec.value());
    const std::string name = it->path().filename().string();
    if (it.depth() == 0 &&
        (name == ".git" || name.rfind("o-", 0) == 0 || name == ".cowlab-state")) {
      it.disable_recursion_pending();
      continue;
    }
    struct stat sb {};
    if (::lstat(it->path().c_str(), &sb) != 0)
      return Error::from_errno("lstat", it->path().string(), errno);
    std::string rel = it->path().lexically_relative(tree).string();
    lines.push_back(rel + " " + std::to_string(sb.st_mode) + " " + std::to_string(sb.st_size) +
                    " " + std::to_string(sb.st_mtim.tv_sec) + "." +
                    std::to_string(sb.st_mtim.tv_nsec));
  }
  std::sort(lines.begin(), lines.end());
  std::string all;
  for (const auto& l : lines) all += l + "\n";
  return "dir:" + sha256_hex(all).substr(0, 32);
}

Result<KernelSource> resolve_kernel_source(std::string_view spec,
                                           const std::function<void(std::string_view)>& progress) {
  KernelSource s;
  s.spec = std::string(spec);
  if (spec.empty()) return Error::usage("--source: give a kernel tree directory or debian:SERIES");
  if (spec.rfind("debian:", 0) == 0) {
    std::string series(spec.substr(7));
    static const std::regex kSeries("^[0-9]+\\.[0-9]+$");
    if (!std::regex_match(series, kSeries))
      return Error::usage("--source " + s.spec +
                          ": a Debian series is MAJOR.MINOR (e.g. debian:6.1)");
    s.kind = SourceKind::kDebianPackage;
    auto dir = COWLAB_TRY(detail::fetch_debian_source(series, progress));
    s.tree = dir / "linux";
    auto pkg = COWLAB_TRY(read_file(dir / "package"));
    auto deb = COWLAB_TRY(read_file(dir / "deb.sha256"));
    auto trim = [](std::string x) {
      while (!x.empty() && (x.back() == '\n' || x.back() == ' ')) x.pop_back();
      return x;
    };
    s.package = trim(pkg);
    s.identity = "deb:" + s.package + " sha256:" + trim(deb);
    if (fs::exists(dir / "debian-configs")) s.debian_configs = dir / "debian-configs";
  } else {
    std::error_code ec;
    fs::path d = fs::absolute(fs::path(spec), ec);
    if (!fs::is_directory(d, ec))
      return Error::not_found("--source " + s.spec +
                              ": not a directory (give a kernel tree or debian:SERIES)");
    if (!is_kernel_tree(d))
      return Error::invalid("--source " + s.spec +
                            ": not a kernel tree (no Makefile, Kconfig and arch/x86)");
    if (fs::exists(d / ".config", ec) || fs::exists(d / "include" / "config", ec))
      return Error::invalid(
          "--source " + s.spec +
          ": the tree was configured in place (.config or include/config present), "
          "which out-of-tree builds refuse; run `make mrproper` in it first");
    s.kind = SourceKind::kDirectory;
    s.tree = fs::canonical(d, ec);
    s.identity = COWLAB_TRY_CTX(source_identity(s.tree), "--source " + s.spec);
  }
  s.kernel_version = COWLAB_TRY(tree_kernel_version(s.tree));
  return s;
}

PatchFormat detect_patch_format(std::string_view text) {
  static const std::regex kMbox("^From [0-9a-f]{40} ");
  std::string head(text.substr(0, std::min<size_t>(text.size(), 200)));
  if (std::regex_search(head, kMbox, std::regex_constants::match_continuous))
    return PatchFormat::kMail;
  // Headers before the first diff line: From: and Subject: mark a mail.
  bool from = false, subject = false;
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("diff ", 0) == 0 || line.rfind("--- ", 0) == 0 || line.rfind("Index: ", 0) == 0)
      break;
    if (line.rfind("From: ", 0) == 0) from = true;
    if (line.rfind("Subject: ", 0) == 0) subject = true;
  }
  return from && subject ? PatchFormat::kMail : PatchFormat::kUnified;
}

std::string_view patch_format_name(PatchFormat f) {
  return f == PatchFormat::kMail ? "mail (git format-patch)" : "unified diff";
}

namespace detail {

// The first failing hunk from `patch` or `git apply` output.
std::string first_failing_hunk(std::string_view output) {
  std::istringstream in{std::string(output)};
  std::string file, first;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("patching file ", 0) == 0) file = line.substr(14);
    if (line.rfind("checking file ", 0) == 0) file = line.substr(14);
    if (line.find("FAILED") != std::string::npos && line.rfind("Hunk #", 0) == 0)
      return file + ": " + line.substr(0, line.find(" -- "));
    if (line.rfind("error: patch failed: ", 0) == 0) return line.substr(7);
    if (line.find("can't find file to patch") != std::string::npos ||
        line.find("No file to patch") != std::string::npos)
      first = first.empty() ? "a file it patches does not exist in the tree" : first;
    if (line.rfind("error: ", 0) == 0 && first.empty()) first = line.substr(7);
    if (line.find("Reversed (or previously applied) patch detected") != std::string::npos &&
        first.empty())
      first = file + ": already applied (reversed or previously applied patch detected)";
    if (line.find("Only garbage was found") != std::string::npos && first.empty())
      first = "not a patch (only garbage was found)";
  }
  return first.empty() ? "see the output above" : first;
}

Result<void> apply_patch(const fs::path& tree, const AppliedPatch& p) {
  std::vector<std::string> check, apply;
  if (p.format == PatchFormat::kMail) {
    // git apply understands the mail around the diff; `git am` needs a repository and would
    // only add the commit, which the work tree (no .git) has no use for.
    check = {"git", "-C", tree.string(), "apply", "--check", "-v", "-p1", p.file.string()};
    apply = {"git", "-C", tree.string(), "apply", "-p1", p.file.string()};
  } else {
    check = {"patch",   "-d",        tree.string(), "-p1",          "--dry-run",
             "--batch", "--forward", "-i",          p.file.string()};
    apply = {"patch",
             "-d",
             tree.string(),
             "-p1",
             "--batch",
             "--forward",
             "--no-backup-if-mismatch",
             "-r",
             "-",
             "-i",
             p.file.string()};
  }
  int st = 0;
  // git must not find a repository above the work tree (a cache inside a checkout) and apply
  // the patch relative to that repository's top instead.
  const std::vector<std::pair<std::string, std::string>> env = {
      {"GIT_CEILING_DIRECTORIES", tree.parent_path().string()}};
  auto out = COWLAB_TRY(capture(check, scratch_file("patch-check"), &st, env));
  if (st != 0)
    return Error::invalid("patch " + p.file.string() +
                          ": does not apply: " + first_failing_hunk(out));
  auto done = COWLAB_TRY(capture(apply, scratch_file("patch-apply"), &st, env));
  if (st != 0)
    return Error::invalid("patch " + p.file.string() +
                          ": does not apply: " + first_failing_hunk(done));
  return ok();
}

Result<std::vector<AppliedPatch>> read_patches(const std::vector<fs::path>& files) {
  std::vector<AppliedPatch> out;
  for (const auto& f : files) {
    std::error_code ec;
    if (!fs::is_regular_file(f, ec))
      return Error::not_found("--patch " + f.string() + ": not found or not a file");
    auto text = COWLAB_TRY_CTX(read_file(f), "--patch " + f.string());
    if (text.find("\n--- ") == std::string::npos && text.rfind("--- ", 0) != 0 &&
        text.find("diff --git") == std::string::npos)
      return Error::invalid("--patch " + f.string() + ": not a patch (no diff in it)");
    AppliedPatch p;
    p.file = fs::absolute(f);
    p.sha256 = sha256_hex(text);
    p.format = detect_patch_format(text);
    out.push_back(std::move(p));
  }
  return out;
}

Result<bool> sync_work_tree(const KernelSource& source, const std::vector<AppliedPatch>& patches,
                            const fs::path& work,
                            const std::function<void(std::string_view)>& say) {
  std::string state = "source " + source.identity + "\nfrom " + source.tree.string() + "\n";
  for (const auto& p : patches)
    state += "patch " + p.sha256 + " " + std::string(patch_format_name(p.format)) + "\n";
  const fs::path state_file = work / ".cowlab-state";
  if (auto cur = read_file(state_file); cur.ok() && *cur == state) return false;
  std::error_code ec;
  fs::create_directories(work, ec);
  if (ec) return Error::from_errno("mkdir", work.string(), ec.value());
  fs::remove(state_file, ec);  // the tree is in flux until the state is written again
  say("work tree: refreshing " + work.string() + " from " + source.spec);
  // Everything but the O= directories goes: they hold the previous build, which make reuses.
  for (const auto& e : fs::directory_iterator(work, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("o-", 0) == 0 && e.is_directory()) continue;
    fs::remove_all(e.path(), ec);
    if (ec) return Error::from_errno("remove", e.path().string(), ec.value());
  }
  // Hard links keep every file's mtime, so make sees only what really changed.  patch and git
  // apply replace the files they change (new inodes), never writing through to the source.
  std::vector<std::string> argv = {"cp", "-al"};
  for (const auto& e : fs::directory_iterator(source.tree, ec)) {
    const std::string name = e.path().filename().string();
    if (name == ".git") continue;
    argv.push_back(e.path().string());
  }
  argv.push_back(work.string() + "/");
  COWLAB_TRY_CTX(capture(argv, scratch_file("cp"), nullptr),
                 "copy " + source.tree.string() + " to " + work.string());
  for (const auto& p : patches) {
    say("patch: " + p.file.filename().string() + " (" + std::string(patch_format_name(p.format)) +
        ")");
    COWLAB_TRY(apply_patch(work, p));
  }
  COWLAB_TRY(sys::write_file_atomic(state_file.string(), state));
  return true;
}

}  // namespace detail
}  // namespace cowlab::harness
