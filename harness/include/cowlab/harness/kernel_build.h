// Kernels built from source: `cowlab kernel build` and its C++ API (also used by bisection).
//
// build_kernel() takes a kernel tree (a directory, git or not, or Debian's linux-source-SERIES
// package), applies patches, configures it (cowlab's minimal config or the user's, plus config
// fragments), builds it out of tree with ccache, optionally builds the OpenZFS module for it, and
// registers the result as a profile (ProfileKind::kSourceBuilt) that `vm run`, `vm shell` and
// `matrix --profiles` boot like any other.
//
// Cache layout (under cache_dir()/kernel):
//   src/linux-source-SERIES_VERSION/  Debian source packages, unpacked once (linux/ is the tree)
//   work/<key>/                       the tree that is built: a hard-link copy of the source (no
//                                     .git) with the patches applied.  One per source location
//                                     (a directory's absolute path, or debian:SERIES) unless the
//                                     request names its own work_dir.  Re-synchronised only when
//                                     the source identity or the patches change; unchanged files
//                                     keep their mtimes, so make rebuilds only what changed.
//   work/<key>/o-<config key>/        the O= build directory (inside the tree, so every path the
//                                     compiler sees is relative and ccache hits across trees)
//   out/<product key>/                the built kernel: bzImage, config, modules/, zfs/, build.log
//                                     (keyed by source identity + patches + resolved config hash;
//                                     the same inputs twice run no make at all)
// Builds hold the machine-wide build lock (cache_dir()/locks/build.lock), like image builds.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cowlab/harness/profile.h"
#include "cowlab/result.h"

namespace cowlab::harness {

// ---- sources ---------------------------------------------------------------------------------

enum class SourceKind { kDirectory, kDebianPackage };

struct KernelSource {
  SourceKind kind = SourceKind::kDirectory;
  std::string spec;            // as given: "/path/to/linux" or "debian:6.1"
  std::filesystem::path tree;  // the kernel tree (for Debian: unpacked in the cache)
  // Identity of the tree's content: "git:<commit>" (+ "+dirty:<sha256 of changes>"),
  // "dir:<sha256 of every file's path, size and mtime>", or "deb:<pkg>=<version> sha256:<deb>".
  std::string identity;
  std::string kernel_version;            // VERSION.PATCHLEVEL.SUBLEVEL from the tree's Makefile
  std::string package;                   // Debian: "linux-source-6.1=6.1.192-3"; else empty
  std::filesystem::path debian_configs;  // Debian: the package's own configs; else empty
};

// "debian:SERIES" fetches Debian's linux-source-SERIES package (apt-get download from the
// machine-derived sources, vm-images/kbuild/debian-source.sh) and unpacks it once into the cache;
// anything else is a directory that must hold a kernel tree (Makefile + Kconfig + arch/x86).
// Fails kUsage for a malformed spec, kNotFound for a missing tree or package, kInvalid for a
// directory that is not a kernel tree or was configured in-tree (.config present: O= builds
// refuse such trees; run `make mrproper` there).
Result<KernelSource> resolve_kernel_source(
    std::string_view spec, const std::function<void(std::string_view)>& progress = {});

// The identity of a directory tree (see KernelSource::identity).  Git trees: HEAD's commit plus,
// when there are uncommitted or untracked changes, a hash of `git diff HEAD` and of the untracked
// files' contents.  Other trees: a hash over every file's relative path, size and mtime (build
// outputs and .git excluded).  Touching a file changes a non-git identity, not a git one.
Result<std::string> source_identity(const std::filesystem::path& tree);

// "6.1.192" from a tree's top-level Makefile.
Result<std::string> tree_kernel_version(const std::filesystem::path& tree);

// ---- patches ---------------------------------------------------------------------------------

enum class PatchFormat {
  kUnified,  // a plain diff: applied with `patch -p1`
  kMail,     // `git format-patch` output (From <sha> Mon Sep 17 ...): applied with `git apply`
             // (the work tree has no .git: this is `git am` without the commit)
};
// Mail format when the text starts with a "From <40 hex> " mbox line, or with "From:" and
// "Subject:" headers before the first "diff --git"/"---" line.
PatchFormat detect_patch_format(std::string_view text);
std::string_view patch_format_name(PatchFormat f);

struct AppliedPatch {
  std::filesystem::path file;
  std::string sha256;
  PatchFormat format = PatchFormat::kUnified;
};

// ---- configuration ---------------------------------------------------------------------------

// One option a fragment asks for: value "y", "m", a string/number, or "n" for "is not set".
// Who wrote a fragment: cowlab's own fragments serve every series from 5.10 on; a user's fragment
// is written for the tree at hand.
enum class FragmentOwner { kUser, kCowlab };

struct RequestedOption {
  std::string name;  // "CONFIG_OVERLAY_FS"
  std::string value;
  std::string origin;  // "storage.config:12"
  FragmentOwner owner = FragmentOwner::kUser;
};

// The options of a fragment in merge_config.sh's format ("CONFIG_X=v" and "# CONFIG_X is not
// set"; other comments and blank lines ignored).  kInvalid names the file and line of anything
// else.
Result<std::vector<RequestedOption>> parse_config_fragment(
    std::string_view text, std::string_view origin, FragmentOwner owner = FragmentOwner::kUser);

// Merges fragments over a .config text, later ones winning, as merge_config.sh does: each
// requested option replaces the base's line for it (set or "is not set") or is appended.
std::string merge_config_text(std::string_view base, const std::vector<RequestedOption>& requested);

// Every requested option whose value in the final (olddefconfig'd) .config differs, e.g.
// "CONFIG_DM_FLAKEY=y (from storage.config:15) ended up not set".  For the same option asked
// for more than once, only the last request counts.
std::vector<std::string> dropped_options(const std::vector<RequestedOption>& requested,
                                         std::string_view final_config);

// Why OPTION ("CONFIG_AUFS_FS") is off in FINAL_CONFIG: the conditions guarding it in TREE's
// Kconfig files — its `depends on` lines, the `if` blocks around its declaration and around every
// `source` line on the way to the top — that name a symbol which is not set, e.g.
// "fs/Kconfig:316 `if MISC_FILESYSTEMS` (CONFIG_MISC_FILESYSTEMS not set)".  Empty when the
// symbol is not declared or no such condition is found (a `select`/choice conflict).
std::vector<std::string> kconfig_unmet_guards(const std::filesystem::path& tree,
                                              std::string_view option,
                                              std::string_view final_config);

// Every Kconfig symbol the tree declares ("config X" / "menuconfig X" in Kconfig* files).
Result<std::vector<std::string>> kconfig_symbols(const std::filesystem::path& tree);
// The requested options no Kconfig file declares (unknown to this kernel), named with origin.
// A user's fragment must not name one (a misspelt option would silently do nothing): those are
// `refused`.  cowlab's own fragments serve every series (CONFIG_EMBEDDED, which the harness
// fragment turns off for 5.10 and 6.1, no longer exists in 6.12): their unknown options are
// removed from `requested` and listed in `skipped`, so that they are neither refused nor reported
// as dropped.
struct UnknownOptions {
  std::vector<std::string> refused;
  std::vector<std::string> skipped;
};
UnknownOptions sort_out_unknown_options(std::vector<RequestedOption>& requested,
                                        const std::vector<std::string>& symbols);

// cowlab's own fragments (vm-images/kconfig/harness.config, storage.config).
Result<std::vector<std::filesystem::path>> default_config_fragments();

// ---- building --------------------------------------------------------------------------------

enum class ZfsMode {
  kAuto,  // build the module when zfs-dkms declares support for the kernel, else record why not
  kSkip,  // do not build it; zfs cells skip ("zfs: not built (--zfs no)")
};

struct KernelBuildRequest {
  std::string source;  // "DIR" or "debian:SERIES" (see resolve_kernel_source)
  std::vector<std::filesystem::path> patches;  // applied in order
  std::filesystem::path config;  // a full .config; empty: tinyconfig + default fragments
  std::vector<std::filesystem::path> fragments;  // merged on top, in order
  std::string profile;  // profile name; empty: "src-" + digest of the product
  ZfsMode zfs = ZfsMode::kAuto;
  // The tree that is built (see the cache layout above); empty: chosen by source location.
  // Bisection passes one fixed directory so that every step rebuilds incrementally.
  std::filesystem::path work_dir;
  unsigned jobs = 0;                       // make -j; 0: the number of CPUs
  int nice = 10;                           // niceness of make and the ZFS build
  std::chrono::seconds timeout{4 * 3600};  // the whole make
  bool force = false;                      // rebuild even when the product is cached
  // Also build the profile's boot images (build_profile): the result is then bootable at once.
  bool build_images = true;
  // Progress lines ("[kernel] make: CC fs/overlayfs/super.o (3m12s)"); stderr when unset.
  std::function<void(std::string_view)> progress;
};

struct KernelBuildResult {
  KernelSource source;
  std::vector<AppliedPatch> patches;
  std::string config_hash;            // sha256 of the final .config
  std::string kernel_release;         // `make kernelrelease`
  std::string compiler;               // first line of `gcc --version`
  std::filesystem::path work_dir;     // the tree built
  std::filesystem::path build_dir;    // O=
  std::filesystem::path product_dir;  // out/<key>: bzImage, config, modules/, build.log
  std::filesystem::path log;          // build log (kept)
  bool cached = false;                // the product existed: no make ran
  bool build_dir_reused = false;      // O= held a previous build
  unsigned objects_compiled = 0;      // compiler invocations ("CC"/"AS" lines) of this make
  double build_seconds = 0;           // this make (0 when cached)
  std::vector<std::string> dropped;   // requested options that did not survive
  std::string zfs;                    // "zfs-dkms=2.1.11-1 built" or why not
  ProfileSpec profile;                // find_profile(profile.name) finds it once built
  ProfileImage image;                 // with build_images: what a Guest boots
};

// Builds (or finds cached) the kernel and, with build_images, its profile (build_profile(): boot
// initramfs, modules disk, the default profile's root) so that result.image boots at once and
// find_profile(result.profile.name) finds it from then on.
// Errors name the input and the cause:
//   - a patch that does not apply: kInvalid "patch FILE: does not apply: <first failing hunk>";
//   - a fragment with an unknown option: kInvalid "config fragment F:N: CONFIG_X is not a
//     Kconfig symbol of this tree";
//   - a tree that does not compile: kSystem "make failed (log L)" + the log's tail.
// A failed build leaves no product and no profile; the work tree and O= directory stay for the
// next (incremental) attempt.
Result<KernelBuildResult> build_kernel(const KernelBuildRequest& request);

// Source-built kernels known to this cache (their profile names), newest first.
Result<std::vector<std::string>> source_built_profiles();

}  // namespace cowlab::harness
