// Test helpers for the archive and change-detection tests: tars built with libarchive's
// writer, a per-test temp root that takes itself apart (mounts included) even when a test
// fails, tree snapshots for exact comparisons, and overlay mounts of layer directories.
#pragma once

// Tests spell entries as partial aggregates ({"name", 'f', "data"}); the rest defaults.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cowlab/archive.h"
#include "cowlab/result.h"

namespace cowlab::testing {

struct TarEntry {
  std::string name;
  // f regular file, d directory, l symlink, h hard link, p fifo, c / b character / block
  // device, g PAX global header (only at the start of the tar).
  char type = 'f';
  std::string data;
  mode_t mode =
      0;  // permission bits incl. setuid/setgid/sticky; 0: 0644 (f), 0755 (d), 0600 (c, b)
  std::string link;  // symlink or hard-link target
  unsigned dev_major = 0, dev_minor = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  int64_t mtime = 1700000000;
  std::vector<std::pair<std::string, std::string>> xattrs;
};

// A pax (restricted) tar of `entries`, in order.
std::string make_tar(const std::vector<TarEntry>& entries);
// "a/" is a directory, "a" an empty regular file.
std::vector<TarEntry> names(std::initializer_list<const char*> list);

// Rewrites the ustar header block at `offset`: type flag and/or checksum, recomputing the
// checksum unless `checksum_override` is set.
std::string patch_header(std::string tar, size_t offset, char typeflag,
                         const char* checksum_override = nullptr);
// Offsets of the ustar header blocks of `tar` (including extension headers).
std::vector<size_t> header_offsets(const std::string& tar);

// A tar read back with libarchive: "name type perm uid:gid size mtime [-> link] [xattr=...]".
struct ReadEntry {
  std::string name;
  char type = '?';  // as TarEntry, plus 'h' for hard links
  mode_t perm = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  int64_t size = 0;
  int64_t mtime = 0;
  bool has_atime = false, has_ctime = false, has_uname = false;
  std::string link;
  std::string data;
  std::vector<std::pair<std::string, std::string>> xattrs;
};
std::vector<ReadEntry> read_tar(const std::string& tar);

// A fresh directory under testing::test_tmp_base() for one test.  The destructor detaches
// every mount below it (deepest first) and removes it, so a failing test leaves nothing.
class TempRoot {
 public:
  TempRoot();
  ~TempRoot();
  TempRoot(const TempRoot&) = delete;
  TempRoot& operator=(const TempRoot&) = delete;
  const std::string& path() const { return path_; }
  // Creates <root>/<name> (and parents), returns its path.
  std::string dir(const std::string& name) const;
  // Mounts overlay at `merged` with `lowers` (nearest first) and, if `upper` is set, an upper
  // and a work dir.  A single lower without upper is bind-mounted read-only instead (overlay
  // needs two lowers for a lower-only mount).
  Result<void> mount_overlay(const std::string& merged, const std::vector<std::string>& lowers,
                             const std::string& upper = "", const std::string& work = "") const;
  Result<void> unmount(const std::string& merged) const;

 private:
  std::string path_;
};

// Names below `root`, "a" or "a/" for directories, sorted (Docker's test form).
std::set<std::string> tree_names(const std::string& root);
// One line per entry below `root`, sorted by path, with type, permission bits, owner, size,
// mtime seconds, device number, link target, xattrs (trusted.overlay.* left out), content
// digest, and for every later name of a multiply-linked inode "=link <first name>".
std::vector<std::string> snapshot(const std::string& root, bool with_mtime = true);

Result<ApplyStats> apply_tar(const std::string& root, const std::string& tar,
                             WhiteoutFormat format = WhiteoutFormat::kDeleteInPlace,
                             ApplyMode mode = ApplyMode::kApply, const std::string& scratch = "",
                             const std::vector<std::string>& lower_dirs = {});

// Writes `content` to `path` (created or truncated) with `mode`.
void write_file(const std::string& path, const std::string& content, mode_t mode = 0644);
// Sets a path's mtime (seconds, nanoseconds) without following symlinks.
void set_mtime(const std::string& path, int64_t sec, long nsec = 0);

// Hands out at most `step` bytes per read(), like a pipe, so stream consumers see short reads.
// Runs `op` in a forked child with COWLAB_TEST_KILL_AT=point (sys_process.h kill_point); true if
// the child died of SIGKILL there.  The kill tests of the layer store and of the drivers.
bool killed_at(const char* point, const std::function<void()>& op);

class TrickleReader final : public Reader {
 public:
  TrickleReader(std::string data, size_t step, std::string name = "trickle")
      : data_(std::move(data)), step_(step), name_(std::move(name)) {}
  Result<size_t> read(void* buf, size_t len) override;
  std::string name() const override { return name_; }

 private:
  std::string data_;
  size_t step_;
  std::string name_;
  size_t pos_ = 0;
};

}  // namespace cowlab::testing
