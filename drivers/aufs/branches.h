// aufs mount data: building the branch list and fitting it into mount(2)'s one page.
//
// Pure functions, no kernel: the aufs driver mounts with what plan_branch_mounts() returns and
// checks the mounted branch list with verify_branches().
//
// Why a budget at all (moby#9151, fixing #1171, #6465, #7095): mount(2) copies at most one page
// of option data.  A longer "br:..." string is cut at the page boundary, aufs parses the cut
// string without complaint, and the mount succeeds *without its trailing layers* — files of
// the lowest layers silently vanish from the container.  Early Docker capped images at 42
// layers for this reason (moby#2905).  Docker's fix, kept here: the first mount takes as many
// whole branches as fit, the rest are added one by one with MS_REMOUNT "append:<dir>=ro+wh".
//
// The budget here is exact, not Docker's estimate (pagesize - len(label) - 54 [- 9 for
// dirperm1]): the first mount's data *including its terminating NUL* is at most one page, a
// branch spec is either wholly in the first mount or wholly in an append, and branch order is
// kept (the first branch that does not fit and every branch after it go to appends, even if a
// later, shorter one would still fit).  Every string returned fits in a page; a single branch
// that cannot fit in a page is an error, never a truncation.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::aufs {

// Whether the mount asks for aufs's "dirperm1" (check permission bits of the topmost
// directory only; Docker uses it when a probe mount accepts it).
enum class Dirperm1 { kOff, kOn };

struct BranchRequest {
  std::string rw;               // the writable branch (the layer's own diff dir)
  std::vector<std::string> ro;  // read-only branches, nearest ancestor first
  size_t page_size = 4096;      // the kernel's limit on mount data (sysconf(_SC_PAGESIZE))
  std::string xino;             // path of aufs's external inode number file ("" = no option)
  Dirperm1 dirperm1 = Dirperm1::kOff;
  std::string label_option;  // a formatted SELinux mount option ("context=...") or ""
};

struct BranchMountPlan {
  // Data for the first mount(2): "br:<rw>=rw:<ro1>=ro+wh:...,dio,xino=<xino>[,dirperm1][,<label>]".
  std::string first;
  // Data for each following mount(2) with MS_REMOUNT, in order: "append:<ro>=ro+wh[,<label>]".
  std::vector<std::string> appends;
  // Branches (rw included) carried by `first`.
  size_t branches_in_first = 0;
};

// The mount data for `request`.  kInvalid when a branch path cannot be expressed in aufs's
// option syntax (empty, relative, or containing ':', ',' or '=' which aufs treats as
// separators) or when one branch spec alone cannot fit in a page.
Result<BranchMountPlan> plan_branch_mounts(const BranchRequest& request);

// The branch specs ("<dir>=<perm>") a plan hands to the kernel, in order: a re-parse of the
// strings above, used to check that the plan carries every requested branch exactly once.
std::vector<std::string> plan_branch_specs(const BranchMountPlan& plan);

// The branch specs the mount must end up with: "<rw>=rw", then "<ro>=ro+wh" for each ro.
std::vector<std::string> expected_branch_specs(const BranchRequest& request);

// Compares what the kernel reports for a mounted aufs (the contents of
// /sys/fs/aufs/si_<id>/br0, br1, ... in index order, each "<dir>=<perm>", trailing newlines
// ignored) with the expected specs.  kCorrupt naming the first difference — a missing
// trailing branch is exactly the moby#9151 symptom.
Result<void> verify_branches(const std::vector<std::string>& expected,
                             const std::vector<std::string>& mounted);

// The kernel's aufs branch limit, AUFS_BRANCH_MAX (1 rw + limit-1 ro branches in one union),
// chosen at build time by CONFIG_AUFS_BRANCH_MAX_{127,511,1023,32767}.
struct BranchLimit {
  int max = 0;         // 127, 511, 1023 or 32767
  std::string source;  // where it was read ("/sys/fs/aufs/config", "/proc/config.gz", ...)
};
// The limit a config text (a kernel .config or aufs's /sys/fs/aufs/config) selects; kNotFound
// when it selects none.
Result<int> branch_max_from_config(std::string_view config_text);

}  // namespace cowlab::aufs
