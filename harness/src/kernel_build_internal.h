// Internals of `cowlab kernel build` shared by kernel_source.cpp and kernel_build.cpp.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cowlab/harness/kernel_build.h"
#include "cowlab/result.h"

namespace cowlab::harness::detail {

// Runs argv to completion and returns its output (stdout + stderr, through `scratch`).  With
// `exit_status` the status is stored and a non-zero one is not an error.
Result<std::string> capture(const std::vector<std::string>& argv,
                            const std::filesystem::path& scratch, int* exit_status = nullptr,
                            const std::vector<std::pair<std::string, std::string>>& env = {});
// A fresh scratch file name under cache_dir()/kernel/tmp.
std::filesystem::path scratch_file(std::string_view tag);

// vm-images/kbuild/debian-source.sh, once per package version: the unpacked directory
// (linux/, package, deb.sha256).
Result<std::filesystem::path> fetch_debian_source(
    const std::string& series, const std::function<void(std::string_view)>& progress);

// The first failing hunk named in `patch` / `git apply` output.
std::string first_failing_hunk(std::string_view output);
Result<void> apply_patch(const std::filesystem::path& tree, const AppliedPatch& patch);
Result<std::vector<AppliedPatch>> read_patches(const std::vector<std::filesystem::path>& files);

// Makes `work` a hard-link copy of the source with the patches applied, unless it already is
// (recorded in work/.cowlab-state).  Keeps work/o-* (the build directories).  True when it
// refreshed the tree.
Result<bool> sync_work_tree(const KernelSource& source, const std::vector<AppliedPatch>& patches,
                            const std::filesystem::path& work,
                            const std::function<void(std::string_view)>& say);

}  // namespace cowlab::harness::detail
