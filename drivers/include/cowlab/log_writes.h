// Reader and replayer of dm-log-writes logs (power-cut testing, docs/crash.md).
//
// dm-log-writes (Linux drivers/md/dm-log-writes.c, Documentation/admin-guide/device-mapper/
// log-writes.rst) records every write that reached a device, in the order the device made
// them durable, onto a log device:
//
//   block 0            the super: le64 magic 0x6a736677736872, le64 version 1,
//                      le64 nr_entries, le32 sectorsize (the data device's logical block size)
//   blocks 1..         entries, each one block holding le64 sector, le64 nr_sectors, le64 flags,
//                      le64 data_len; a mark's name follows the header inside that block
//                      (data_len bytes); a write's nr_sectors blocks of data follow the block;
//                      a discard carries no data.
//
// All sizes and sector numbers are in units of `sectorsize` (the kernel converts from 512-byte
// bio sectors).  Writes are logged only once a flush covers them, so replaying the entries
// [0, i] onto a copy of the device's starting state gives exactly what the disk held when entry
// i completed; replaying to a flush or FUA entry gives a state that a power cut right after
// that flush leaves behind.
//
// Contract: `LogWrites::open` reads and validates the super and every entry header up to
// nr_entries (never the data), so a log with a bad magic, an unknown version, a sector size
// that is not a power of two in [512, 65536], or entries that run past the end of the file is
// refused with an error naming the log and the entry.  Entries past nr_entries (left by a
// logger that died before its last super update) are ignored, as the kernel's super says.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cowlab/result.h"

namespace cowlab::logwrites {

inline constexpr uint64_t kMagic = 0x6a736677736872ULL;
inline constexpr uint64_t kVersion = 1;

enum EntryFlag : uint64_t {
  kFlush = 1 << 0,
  kFua = 1 << 1,
  kDiscard = 1 << 2,
  kMark = 1 << 3,
  kMetadata = 1 << 4,
};

struct Entry {
  uint64_t index = 0;        // 0-based position in the log
  uint64_t sector = 0;       // first block written (units of sectorsize)
  uint64_t nr_sectors = 0;   // blocks written or discarded
  uint64_t flags = 0;        // EntryFlag bits
  std::string mark;          // the mark's name (kMark entries)
  uint64_t data_offset = 0;  // byte offset of the data in the log (writes)

  bool is_flush_point() const { return (flags & (kFlush | kFua)) != 0; }
  bool is_mark() const { return (flags & kMark) != 0; }
  bool is_discard() const { return (flags & kDiscard) != 0; }
};

// What the replay does with a discard: dm-thin and loop devices discard; a plain file target
// has its range zeroed, which is what a discarded thin block reads back as.
enum class DiscardAs { kDiscard, kZero };

class LogWrites {
 public:
  static Result<LogWrites> open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t sector_size() const { return sector_size_; }
  const std::vector<Entry>& entries() const { return entries_; }

  // Index of the first mark named `name` at or after `from`, if any.
  std::optional<uint64_t> find_mark(const std::string& name, uint64_t from = 0) const;

  // Applies entries [begin, end) to `target` (a block device or a file, opened read-write),
  // then fsyncs it.  A block device target gets discards as BLKDISCARD; a regular file has
  // them zeroed.  Fails naming the entry when the target is too small.
  Result<void> replay(const std::string& target, uint64_t begin, uint64_t end) const;

 private:
  std::string path_;
  uint32_t sector_size_ = 0;
  std::vector<Entry> entries_;
};

// Crash points in entries [begin, end): each point is the exclusive end of a replay (a power cut
// right after entry point-1 completed).  Every flush/FUA entry in the range gives a point (a
// write with a preflush gives two: with and without its own data); with
// `random` > 0, that many distinct non-flush write entries chosen with `seed` are added (torn
// states between flushes, which a store that only relies on flushes must also survive).  Sorted,
// no duplicates.
std::vector<uint64_t> crash_points(const std::vector<Entry>& entries, uint64_t begin, uint64_t end,
                                   unsigned random, uint64_t seed);

// Helper for tests and tools that need a log without a kernel: writes logs in the kernel's
// format.  Each call appends one entry; `finish` writes the super with the entry count.
class LogBuilder {
 public:
  static Result<LogBuilder> create(const std::string& path, uint32_t sector_size);
  Result<void> write(uint64_t sector, const std::string& data, uint64_t flags = 0);
  Result<void> flush();  // an empty flush entry
  Result<void> discard(uint64_t sector, uint64_t nr_sectors);
  Result<void> mark(const std::string& name);
  // nr_entries = entries written so far, unless given (to model a logger that died).
  Result<void> finish(std::optional<uint64_t> nr_entries = std::nullopt);

 private:
  Result<void> append(uint64_t sector, uint64_t nr_sectors, uint64_t flags,
                      const std::string& inline_data, const std::string& data);
  std::string path_;
  uint32_t sector_size_ = 0;
  uint64_t next_ = 0;  // byte offset of the next entry
  uint64_t count_ = 0;
};

}  // namespace cowlab::logwrites
