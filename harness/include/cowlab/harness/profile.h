// Kernel profiles and their cached images.
//
// A profile names a kernel plus the guest root it runs with:
//   - Debian profiles are recipes in vm-images/profiles/NAME.conf (debian-6.1, the default;
//     debian-6.12; debian-5.10): kernel, headers and zfs-dkms resolved from the Debian archive,
//     an OpenZFS module built for that exact kernel, and a bookworm root with the matching ZFS
//     userland and cowlab's runtime libraries.
//   - Bring-your-own (BYO) profiles: a kernel image and an optional modules directory, given by
//     path (for example an aufs-patched build), run with the default profile's root.
//   - Source-built profiles (kernel_build.h, `cowlab kernel build`): a BYO profile whose kernel
//     cowlab built; the manifest also carries the build's record (source identity, patches,
//     config hash, compiler, build time, ZFS status).
//
// build_profile() resolves the recipe's inputs, hashes them and returns the cached images for
// that hash, building what is missing.  Cache: ${COWLAB_CACHE:-$HOME/.cache/cowlab}; entries are
// built in a temporary directory inside it and renamed into place, so an interrupted build leaves
// nothing that looks valid; an entry whose files no longer match its manifest is rebuilt.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::harness {

// ${COWLAB_CACHE:-$HOME/.cache/cowlab}, created on first use.
std::filesystem::path cache_dir();
// The vm-images recipe directory: $COWLAB_VM_IMAGES, else the source tree this binary was built
// from.  Fails (kNotFound) when neither holds resolve.sh.
Result<std::filesystem::path> vm_images_dir();

enum class ProfileKind { kDebian, kBringYourOwn, kSourceBuilt };
// "debian", "byo", "source" (the manifest's "kind").
std::string_view profile_kind_name(ProfileKind kind);

struct ProfileSpec {
  std::string name;
  ProfileKind kind = ProfileKind::kDebian;
  std::string description;
  std::filesystem::path recipe;          // kDebian: vm-images/profiles/NAME.conf
  std::filesystem::path kernel;          // kBringYourOwn: kernel image
  std::filesystem::path modules;         // kBringYourOwn: optional modules directory
  std::filesystem::path kernel_config;   // kBringYourOwn: optional config file
  std::filesystem::path build_record;    // kSourceBuilt: record.json of the kernel build
  std::string qemu_cpu = "max,la57=off";  // -cpu under TCG
};

inline constexpr std::string_view kDefaultProfile = "debian-6.1";

// The Debian profiles found in vm-images/profiles, sorted by name.
Result<std::vector<ProfileSpec>> debian_profiles();
// A profile by name: a Debian one, or one stored by an earlier `vm build --kernel` (byo) or
// `kernel build` (source); kNotFound names the profiles that exist.
Result<ProfileSpec> find_profile(std::string_view name);
// Every stored byo and source-built profile (the manifests in the cache), newest first: the
// profiles `vm profiles` lists after the Debian ones.  Unreadable manifests are left out.
Result<std::vector<ProfileSpec>> stored_profiles();
// A BYO profile.  The name defaults to "byo-" + a digest of the kernel path; the kernel must be
// a readable file and `modules`, when given, a directory.
Result<ProfileSpec> byo_profile(const std::filesystem::path& kernel,
                                const std::filesystem::path& modules = {},
                                const std::filesystem::path& kernel_config = {},
                                std::string name = {});

// Everything needed to boot a profile: what a Guest consumes.
struct ProfileImage {
  std::string profile;
  std::string hash;                     // digest of every input of kernel + root
  std::string kernel_release;           // uname -r of the guest
  std::string qemu_cpu;
  std::filesystem::path kernel;         // vmlinuz / bzImage
  std::filesystem::path boot_initrd;    // busybox boot initramfs (uncompressed cpio)
  std::filesystem::path modules_disk;   // ext4 image of lib/modules; empty when none
  std::filesystem::path root_disk;      // ext4 root; opened with snapshot=on, never written
  std::filesystem::path kernel_config;  // empty when unknown
  std::filesystem::path manifest;       // the profile manifest (JSON)
  std::map<std::string, std::string> versions;  // key facts: kernel, zfs, zfs userland, ...
};

enum class VerifyMode { kQuick, kFull };  // kQuick: sizes; kFull: sha256 of every file

// Package versions: kCached reuses the last resolution of the same recipe and scripts
// (resolution.h; $COWLAB_CACHE/resolved), kRefresh asks the archive again (vm build --refresh).
enum class ResolveMode { kCached, kRefresh };

struct BuildOptions {
  VerifyMode verify = VerifyMode::kFull;
  ResolveMode resolve = ResolveMode::kCached;
  bool force = false;  // rebuild even when cached
  // Progress lines ("[debian-6.1] zfs: configure + make ... 2m10s"); stderr when unset.
  std::function<void(std::string_view)> progress;
  // The binary whose runtime libraries the root must provide (ldd); default: this executable.
  std::filesystem::path runtime_binary;
};

// Resolves, builds what is missing and records the profile manifest (exact package versions
// and the input hash).  Builds are serialised machine-wide (a lock in the cache).
Result<ProfileImage> build_profile(const ProfileSpec& spec, const BuildOptions& options = {});

// The last built image of a profile, without network access or building: fails with kNotFound
// ("... is not built; run: cowlab vm build --profile NAME") or kCorrupt when files are missing
// or changed size since the build.
Result<ProfileImage> load_profile_image(const ProfileSpec& spec);

}  // namespace cowlab::harness
