// Where `cowlab vm run` keeps each guest's console log when the caller names none.
// Internal to the harness.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

namespace cowlab::harness {

// A new path under $COWLAB_CACHE/logs/guests for a console log of `profile`, after removing all
// but the newest `keep` logs there.  Several `cowlab vm run`s prune at once: a log another one
// removed, or an entry that cannot be stat-ed, is skipped, never an error.
std::filesystem::path new_guest_console_log(const std::string& profile, size_t keep = 200);

// Removes the oldest regular files (by mtime) in `dir` until at most `keep` are left; an entry
// that vanishes or cannot be stat-ed while this runs is left out.  Returns how many it removed.
size_t prune_oldest_files(const std::filesystem::path& dir, size_t keep);

}  // namespace cowlab::harness
