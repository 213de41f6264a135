// Per-process mount reference counts (Docker's graphdriver.RefCounter, counter.go).
// Internal to drivers.
#pragma once

#include <map>
#include <string>

namespace cowlab {

class RefCounter {
 public:
  // `is_mounted` decides whether a path seen for the first time is already mounted; such a
  // path starts at one reference so state survives a restart.
  using MountedCheck = bool (*)(const std::string& path);
  explicit RefCounter(MountedCheck is_mounted) : is_mounted_(is_mounted) {}

  // Returns the count after incrementing.
  int increment(const std::string& path);
  // Returns the count after decrementing (never below 0).
  int decrement(const std::string& path);
  int count(const std::string& path) const;

 private:
  struct Entry {
    int count = 0;
    bool checked = false;
  };
  MountedCheck is_mounted_;
  std::map<std::string, Entry> counts_;
};

// The usual check: `path` appears as a mount point in /proc/self/mountinfo.
bool path_is_mounted(const std::string& path);
// Checks that never consider anything mounted (drivers whose get() does not mount).
bool path_never_mounted(const std::string& path);

}  // namespace cowlab
