#include "aufs/branches.h"

namespace cowlab::aufs {

namespace {

constexpr const char* kRwPerm = "rw";
constexpr const char* kRoPerm = "ro+wh";  // read-only, whiteouts of lower layers honoured

// aufs splits "br:" on ':' and each branch on its last '='; options are split on ','.  A path
// holding any of them would be parsed as something else.
Result<void> check_branch_path(const std::string& dir) {
  if (dir.empty()) return Error::invalid("aufs: empty branch path");
  if (dir[0] != '/') return Error::invalid("aufs: branch path \"" + dir + "\" is not absolute");
  for (char c : {':', ',', '='})
    if (dir.find(c) != std::string::npos)
      return Error::invalid("aufs: branch path \"" + dir + "\" contains '" + std::string(1, c) +
                            "', which aufs's mount option syntax reserves");
  return {};
}

std::string spec(const std::string& dir, const char* perm) {
  return dir + "=" + perm;
}

}  // namespace

std::vector<std::string> expected_branch_specs(const BranchRequest& request) {
  std::vector<std::string> out;
  out.reserve(request.ro.size() + 1);
  out.push_back(spec(request.rw, kRwPerm));
  for (const auto& ro : request.ro) out.push_back(spec(ro, kRoPerm));
  return out;
}

Result<BranchMountPlan> plan_branch_mounts(const BranchRequest& request) {
  COWLAB_TRY(check_branch_path(request.rw));
  for (const auto& ro : request.ro) COWLAB_TRY(check_branch_path(ro));
  if (request.xino.find(',') != std::string::npos)
    return Error::invalid("aufs: xino path \"" + request.xino + "\" contains ','");

  // Everything after the branch list: fixed for the first mount.
  std::string tail = ",dio";
  if (!request.xino.empty()) tail += ",xino=" + request.xino;
  if (request.dirperm1 == Dirperm1::kOn) tail += ",dirperm1";
  std::string label = request.label_option.empty() ? "" : "," + request.label_option;
  tail += label;

  // mount(2) reads at most page_size bytes including the terminating NUL.
  const size_t limit = request.page_size == 0 ? 0 : request.page_size - 1;

  BranchMountPlan plan;
  plan.first = "br:" + spec(request.rw, kRwPerm);
  if (plan.first.size() + tail.size() > limit)
    return Error::invalid("aufs: the writable branch \"" + request.rw +
                          "\" and the mount options (" +
                          std::to_string(plan.first.size() + tail.size() + 1) +
                          " bytes) do not fit in one page of mount data (" +
                          std::to_string(request.page_size) + " bytes)");
  plan.branches_in_first = 1;

  size_t i = 0;
  for (; i < request.ro.size(); ++i) {
    std::string piece = ":" + spec(request.ro[i], kRoPerm);
    if (plan.first.size() + piece.size() + tail.size() > limit) break;
    plan.first += piece;
    ++plan.branches_in_first;
  }
  plan.first += tail;

  // The rest in order, one branch per remount (Docker's aufsMount).
  for (; i < request.ro.size(); ++i) {
    std::string data = "append:" + spec(request.ro[i], kRoPerm) + label;
    if (data.size() > limit)
      return Error::invalid(
          "aufs: branch \"" + request.ro[i] + "\" does not fit in one page of mount data (" +
          std::to_string(data.size() + 1) + " > " + std::to_string(request.page_size) + " bytes)");
    plan.appends.push_back(std::move(data));
  }
  return plan;
}

std::vector<std::string> plan_branch_specs(const BranchMountPlan& plan) {
  std::vector<std::string> out;
  auto options_of = [](const std::string& data, size_t from) {
    std::vector<std::string> opts;
    size_t start = from;
    while (start <= data.size()) {
      size_t end = data.find(',', start);
      if (end == std::string::npos) end = data.size();
      opts.push_back(data.substr(start, end - start));
      start = end + 1;
    }
    return opts;
  };
  for (const auto& opt : options_of(plan.first, 0)) {
    if (opt.rfind("br:", 0) != 0) continue;
    size_t start = 3;
    while (start <= opt.size()) {
      size_t end = opt.find(':', start);
      if (end == std::string::npos) end = opt.size();
      out.push_back(opt.substr(start, end - start));
      start = end + 1;
    }
  }
  for (const auto& data : plan.appends)
    for (const auto& opt : options_of(data, 0))
      if (opt.rfind("append:", 0) == 0) out.push_back(opt.substr(7));
  return out;
}

Result<void> verify_branches(const std::vector<std::string>& expected,
                             const std::vector<std::string>& mounted) {
  auto trim = [](std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  };
  for (size_t i = 0; i < expected.size() || i < mounted.size(); ++i) {
    if (i >= mounted.size())
      return Error::corrupt("aufs: the mount has " + std::to_string(mounted.size()) +
                            " branches, expected " + std::to_string(expected.size()) + ": branch " +
                            std::to_string(i) + " (" + expected[i] +
                            ") and every one after it are missing (moby#9151)");
    std::string got = trim(mounted[i]);
    if (i >= expected.size())
      return Error::corrupt("aufs: the mount has " + std::to_string(mounted.size()) +
                            " branches, expected " + std::to_string(expected.size()) +
                            ": unexpected branch " + std::to_string(i) + " (" + got + ")");
    if (got != expected[i])
      return Error::corrupt("aufs: branch " + std::to_string(i) + " is \"" + got +
                            "\", expected \"" + expected[i] + "\"");
  }
  return {};
}

Result<int> branch_max_from_config(std::string_view text) {
  // Kconfig makes the four a choice: exactly one is "=y" in a valid config.
  for (int max : {127, 511, 1023, 32767}) {
    const std::string opt = "CONFIG_AUFS_BRANCH_MAX_" + std::to_string(max) + "=y";
    for (size_t at = text.find(opt); at != std::string_view::npos; at = text.find(opt, at + 1)) {
      const bool line_start = at == 0 || text[at - 1] == '\n';
      const size_t end = at + opt.size();
      const bool line_end = end == text.size() || text[end] == '\n';
      if (line_start && line_end) return max;
    }
  }
  return Error::not_found("no CONFIG_AUFS_BRANCH_MAX_{127,511,1023,32767}=y in the config");
}

}  // namespace cowlab::aufs
