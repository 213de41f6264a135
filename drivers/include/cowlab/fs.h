// Backing-filesystem facts (Docker's FsNames table, daemon/graphdriver/driver_linux.go).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cowlab/result.h"

namespace cowlab {

// Filesystem name for a statfs f_type ("btrfs", "extfs", "xfs", "overlayfs", "tmpfs", ...);
// "<unknown>" with the hex magic for types not in the table.
std::string fs_name_for_magic(long magic);

constexpr long kMagicBtrfs = 0x9123683E;
constexpr long kMagicExt = 0xEF53;
constexpr long kMagicXfs = 0x58465342;
constexpr long kMagicZfs = 0x2fc12fc1;
constexpr long kMagicOverlay = 0x794C7630;
constexpr long kMagicAufs = 0x61756673;
constexpr long kMagicEcryptfs = 0xf15f;
constexpr long kMagicNfs = 0x6969;
constexpr long kMagicTmpfs = 0x01021994;

// statfs of `path`, or of its nearest existing ancestor when `path` does not exist yet
// (Docker probes the home if it exists, otherwise its parent).
Result<long> backing_fs_magic(const std::string& path);
Result<std::string> backing_fs_name(const std::string& path);

// Names of the directories in `dir` (not following symlinks), for drivers that keep one
// directory per layer; a missing `dir` has none.
Result<std::vector<std::string>> subdirectories(const std::string& dir);

// Parses a size with an optional binary suffix: "10G", "512M", "100k", "4096", "1.5G"
// (k/K, m/M, g/G, t/T, optional "b"/"iB"; case-insensitive).  Returns bytes.
Result<uint64_t> parse_size(const std::string& text);
// Human size as Docker prints it ("10.74 GB": decimal units).
std::string human_size(uint64_t bytes);

}  // namespace cowlab
