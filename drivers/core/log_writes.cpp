// dm-log-writes logs: reading, replaying, and writing (for tests).  The format is the kernel's
// (drivers/md/dm-log-writes.c: log_one_block, log_super); fstests' src/log-writes is the
// reference replayer whose behaviour this follows: entries are replayed in log order, discards
// become discards (or zeroes), marks and flushes carry no data.
#include "cowlab/log_writes.h"

#include <endian.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <set>

#include "cowlab/sys.h"

namespace cowlab::logwrites {

namespace {

constexpr size_t kEntryHeader = 32;  // struct log_write_entry: four le64
constexpr size_t kSuperSize = 28;    // struct log_write_super: three le64 + le32

uint64_t le64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return le64toh(v);
}
uint32_t le32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return le32toh(v);
}
void put64(char* p, uint64_t v) {
  v = htole64(v);
  std::memcpy(p, &v, 8);
}
void put32(char* p, uint32_t v) {
  v = htole32(v);
  std::memcpy(p, &v, 4);
}

// Reads exactly `len` bytes at `off`; a short read is a truncated log.
Result<void> pread_exact(int fd, void* buf, size_t len, uint64_t off, const std::string& what) {
  size_t done = 0;
  while (done < len) {
    size_t n = COWLAB_TRY(
        sys::pread(fd, static_cast<char*>(buf) + done, len - done, static_cast<off_t>(off + done)));
    if (n == 0) return Error::corrupt(what + ": log ends at byte " + std::to_string(off + done));
    done += n;
  }
  return {};
}

}  // namespace

Result<LogWrites> LogWrites::open(const std::string& path) {
  auto fd = COWLAB_TRY_CTX(sys::open(path, O_RDONLY | O_CLOEXEC), "read log-writes log");
  char super[kSuperSize];
  COWLAB_TRY_CTX(pread_exact(fd.get(), super, sizeof super, 0, "log-writes super " + path),
                 "read log-writes log");
  LogWrites log;
  log.path_ = path;
  if (le64(super) != kMagic)
    return Error::corrupt("log-writes log " + path + ": bad magic (not a dm-log-writes log)");
  if (uint64_t v = le64(super + 8); v != kVersion)
    return Error::corrupt("log-writes log " + path + ": unsupported version " + std::to_string(v));
  uint64_t nr = le64(super + 16);
  uint32_t ss = le32(super + 24);
  if (ss < 512 || ss > 65536 || (ss & (ss - 1)) != 0)
    return Error::corrupt("log-writes log " + path + ": sector size " + std::to_string(ss) +
                          " is not a power of two in [512, 65536]");
  log.sector_size_ = ss;
  auto st = COWLAB_TRY(sys::fstat(fd.get()));
  uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    uint64_t bytes = 0;
    COWLAB_TRY(sys::ioctl(fd.get(), BLKGETSIZE64, &bytes, "BLKGETSIZE64 " + path));
    file_size = bytes;
  }
  // Every entry needs at least one block: a count beyond that is a corrupt super, not a
  // reason to allocate.
  if (nr > file_size / ss)
    return Error::corrupt("log-writes log " + path + ": super claims " + std::to_string(nr) +
                          " entries, more than the log's " + std::to_string(file_size) +
                          " bytes hold");
  log.entries_.reserve(nr);
  std::string block(ss, '\0');
  uint64_t pos = ss;
  for (uint64_t i = 0; i < nr; ++i) {
    const std::string what = "log-writes log " + path + " entry " + std::to_string(i);
    COWLAB_TRY(pread_exact(fd.get(), block.data(), ss, pos, what));
    Entry e;
    e.index = i;
    e.sector = le64(block.data());
    e.nr_sectors = le64(block.data() + 8);
    e.flags = le64(block.data() + 16);
    uint64_t data_len = le64(block.data() + 24);
    pos += ss;
    if (e.flags & kMark) {
      if (data_len > ss - kEntryHeader)
        return Error::corrupt(what + ": mark of " + std::to_string(data_len) +
                              " bytes does not fit its block");
      e.mark.assign(block.data() + kEntryHeader, data_len);
    } else if (!(e.flags & kDiscard)) {
      if (e.nr_sectors > (file_size - pos) / ss)
        return Error::corrupt(what + ": " + std::to_string(e.nr_sectors) +
                              " blocks of data run past the end of the log");
      e.data_offset = pos;
      pos += e.nr_sectors * ss;
    }
    log.entries_.push_back(std::move(e));
  }
  return log;
}

std::optional<uint64_t> LogWrites::find_mark(const std::string& name, uint64_t from) const {
  for (uint64_t i = from; i < entries_.size(); ++i)
    if (entries_[i].is_mark() && entries_[i].mark == name) return i;
  return std::nullopt;
}

Result<void> LogWrites::replay(const std::string& target, uint64_t begin, uint64_t end) const {
  const std::string ctx = "replay " + path_ + " onto " + target;
  if (begin > end || end > entries_.size())
    return Error::invalid(ctx + ": entries [" + std::to_string(begin) + ", " + std::to_string(end) +
                          ") are outside the log's " + std::to_string(entries_.size()));
  auto log = COWLAB_TRY_CTX(sys::open(path_, O_RDONLY | O_CLOEXEC), ctx);
  auto dev = COWLAB_TRY_CTX(sys::open(target, O_RDWR | O_CLOEXEC), ctx);
  auto st = COWLAB_TRY_CTX(sys::fstat(dev.get()), ctx);
  const bool block_device = S_ISBLK(st.st_mode);
  uint64_t target_size = static_cast<uint64_t>(st.st_size);
  if (block_device)
    COWLAB_TRY_CTX(sys::ioctl(dev.get(), BLKGETSIZE64, &target_size, "BLKGETSIZE64 " + target),
                   ctx);
  const uint64_t ss = sector_size_;
  std::vector<char> buf;
  for (uint64_t i = begin; i < end; ++i) {
    const Entry& e = entries_[i];
    if (e.is_mark() || e.nr_sectors == 0) continue;
    const std::string what = ctx + ": entry " + std::to_string(i);
    uint64_t off = e.sector * ss, len = e.nr_sectors * ss;
    if (e.sector > target_size / ss || e.nr_sectors > target_size / ss - e.sector)
      return Error::invalid(what + " writes blocks " + std::to_string(e.sector) + "+" +
                            std::to_string(e.nr_sectors) + " beyond the target's " +
                            std::to_string(target_size) + " bytes");
    if (e.is_discard()) {
      if (block_device) {
        uint64_t range[2] = {off, len};
        COWLAB_TRY_CTX(sys::ioctl(dev.get(), BLKDISCARD, range, "BLKDISCARD " + target), what);
      } else {
        // A discarded block reads back as zeroes on dm-thin; a file gets explicit zeroes.
        buf.assign(std::min<uint64_t>(len, 1 << 20), 0);
        for (uint64_t done = 0; done < len;) {
          size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), len - done));
          COWLAB_TRY_CTX(sys::pwrite_all(dev.get(), buf.data(), n, static_cast<off_t>(off + done)),
                         what);
          done += n;
        }
      }
      continue;
    }
    for (uint64_t done = 0; done < len;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(1 << 20, len - done));
      buf.resize(n);
      COWLAB_TRY(pread_exact(log.get(), buf.data(), n, e.data_offset + done, what));
      COWLAB_TRY_CTX(sys::pwrite_all(dev.get(), buf.data(), n, static_cast<off_t>(off + done)),
                     what);
      done += n;
    }
  }
  COWLAB_TRY_CTX(sys::fsync(dev.get()), ctx);
  return {};
}

std::vector<uint64_t> crash_points(const std::vector<Entry>& entries, uint64_t begin, uint64_t end,
                                   unsigned random, uint64_t seed) {
  end = std::min<uint64_t>(end, entries.size());
  std::set<uint64_t> points;
  std::vector<uint64_t> others;
  for (uint64_t i = begin; i < end; ++i) {
    if (entries[i].is_flush_point()) {
      points.insert(i + 1);
      // A write carrying a preflush: everything before it is durable once the flush is done,
      // before the write itself is (REQ_PREFLUSH orders the cache flush first), so the state
      // without it is a crash point too.
      if ((entries[i].flags & kFlush) && entries[i].nr_sectors > 0 && i > begin) points.insert(i);
    }
    else if (!entries[i].is_mark() && entries[i].nr_sectors > 0)
      others.push_back(i + 1);
  }
  std::mt19937_64 rng(seed);
  std::shuffle(others.begin(), others.end(), rng);
  for (size_t k = 0; k < others.size() && k < random; ++k) points.insert(others[k]);
  return {points.begin(), points.end()};
}

// ---- LogBuilder ---------------------------------------------------------------------------

Result<LogBuilder> LogBuilder::create(const std::string& path, uint32_t sector_size) {
  if (sector_size < 512 || (sector_size & (sector_size - 1)) != 0)
    return Error::invalid("log-writes builder: sector size " + std::to_string(sector_size) +
                          " is not a power of two >= 512");
  auto fd = COWLAB_TRY(sys::open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  LogBuilder b;
  b.path_ = path;
  b.sector_size_ = sector_size;
  b.next_ = sector_size;
  return b;
}

Result<void> LogBuilder::append(uint64_t sector, uint64_t nr_sectors, uint64_t flags,
                                const std::string& inline_data, const std::string& data) {
  auto fd = COWLAB_TRY(sys::open(path_, O_WRONLY | O_CLOEXEC));
  std::string block(sector_size_, '\0');
  put64(block.data(), sector);
  put64(block.data() + 8, nr_sectors);
  put64(block.data() + 16, flags);
  put64(block.data() + 24, inline_data.size());
  if (inline_data.size() > sector_size_ - kEntryHeader)
    return Error::invalid("log-writes builder: mark too long");
  std::memcpy(block.data() + kEntryHeader, inline_data.data(), inline_data.size());
  COWLAB_TRY(sys::pwrite_all(fd.get(), block.data(), block.size(), static_cast<off_t>(next_)));
  next_ += sector_size_;
  if (!data.empty()) {
    COWLAB_TRY(sys::pwrite_all(fd.get(), data.data(), data.size(), static_cast<off_t>(next_)));
    next_ += data.size();
  }
  ++count_;
  return {};
}

Result<void> LogBuilder::write(uint64_t sector, const std::string& data, uint64_t flags) {
  if (data.empty() || data.size() % sector_size_ != 0)
    return Error::invalid("log-writes builder: a write must be whole blocks");
  return append(sector, data.size() / sector_size_, flags, "", data);
}
Result<void> LogBuilder::flush() {
  return append(0, 0, kFlush, "", "");
}
Result<void> LogBuilder::discard(uint64_t sector, uint64_t nr_sectors) {
  return append(sector, nr_sectors, kDiscard, "", "");
}
Result<void> LogBuilder::mark(const std::string& name) {
  return append(0, 0, kMark, name, "");
}

Result<void> LogBuilder::finish(std::optional<uint64_t> nr_entries) {
  auto fd = COWLAB_TRY(sys::open(path_, O_WRONLY | O_CLOEXEC));
  std::string block(sector_size_, '\0');
  put64(block.data(), kMagic);
  put64(block.data() + 8, kVersion);
  put64(block.data() + 16, nr_entries.value_or(count_));
  put32(block.data() + 24, sector_size_);
  COWLAB_TRY(sys::pwrite_all(fd.get(), block.data(), block.size(), 0));
  return sys::fsync(fd.get());
}

}  // namespace cowlab::logwrites
