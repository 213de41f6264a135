// dm-log-writes logs on logs the tests write themselves in the kernel's format (LogBuilder):
// entry parsing, marks, replay of writes and discards to any point, crash-point selection,
// and refusal of damaged logs.  The kernel's own logs are exercised in guests (tests/vm/crash).
#include "cowlab/log_writes.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include "core/tar_test_util.h"
#include "cowlab/sys.h"

namespace cowlab::logwrites {
namespace {

std::string blocks(char c, size_t n, size_t ss = 512) {
  return std::string(n * ss, c);
}

std::string read_all(const std::string& path) {
  return sys::read_file(path).value();
}

void make_target(const std::string& path, size_t bytes, char fill) {
  auto fd = sys::open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600).value();
  std::string d(bytes, fill);
  ASSERT_TRUE(sys::write_all(fd.get(), d.data(), d.size()).ok());
}

// Writes a log: base state "." everywhere; A at block 2 (2 blocks), flush, mark "m1", B FUA at
// block 0, discard of block 3, C at block 5, mark "end".
std::string sample_log(const testing::TempRoot& t, uint32_t ss = 512) {
  std::string log = t.path() + "/log";
  auto b = LogBuilder::create(log, ss).value();
  EXPECT_TRUE(b.write(2, blocks('A', 2, ss)).ok());        // 0
  EXPECT_TRUE(b.flush().ok());                             // 1
  EXPECT_TRUE(b.mark("m1").ok());                          // 2
  EXPECT_TRUE(b.write(0, blocks('B', 1, ss), kFua).ok());  // 3
  EXPECT_TRUE(b.discard(3, 1).ok());                       // 4
  EXPECT_TRUE(b.write(5, blocks('C', 1, ss)).ok());        // 5
  EXPECT_TRUE(b.mark("end").ok());                         // 6
  EXPECT_TRUE(b.finish().ok());
  return log;
}

TEST(LogWrites, ReadsEntriesAndMarks) {
  testing::TempRoot t;
  auto log = LogWrites::open(sample_log(t));
  ASSERT_TRUE(log.ok()) << log.error().message();
  EXPECT_EQ(log->sector_size(), 512u);
  ASSERT_EQ(log->entries().size(), 7u);
  EXPECT_EQ(log->entries()[0].sector, 2u);
  EXPECT_EQ(log->entries()[0].nr_sectors, 2u);
  EXPECT_TRUE(log->entries()[1].is_flush_point());
  EXPECT_EQ(log->entries()[2].mark, "m1");
  EXPECT_TRUE(log->entries()[3].is_flush_point());  // FUA
  EXPECT_TRUE(log->entries()[4].is_discard());
  EXPECT_EQ(log->find_mark("m1"), 2u);
  EXPECT_EQ(log->find_mark("end"), 6u);
  EXPECT_EQ(log->find_mark("m1", 3), std::nullopt);
  EXPECT_EQ(log->find_mark("nope"), std::nullopt);
}

TEST(LogWrites, ReplaysToEveryPoint) {
  testing::TempRoot t;
  auto log = LogWrites::open(sample_log(t)).value();
  std::string target = t.path() + "/dev";
  const std::string dot = blocks('.', 1);
  // Expected block contents after replaying entries [0, n).
  struct Want {
    uint64_t n;
    std::string state;
  };
  const std::vector<Want> wants = {
      {0, dot + dot + dot + dot + dot + dot},
      {1, dot + dot + blocks('A', 2) + dot + dot},
      {4, blocks('B', 1) + dot + blocks('A', 2) + dot + dot},
      {5, blocks('B', 1) + dot + blocks('A', 1) + blocks('\0', 1) + dot + dot},
      {7, blocks('B', 1) + dot + blocks('A', 1) + blocks('\0', 1) + dot + blocks('C', 1)},
  };
  for (const auto& w : wants) {
    make_target(target, 6 * 512, '.');
    auto r = log.replay(target, 0, w.n);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(read_all(target), w.state) << "after " << w.n << " entries";
  }
  // Incremental replay (what the crash runner does) reaches the same state as one replay.
  make_target(target, 6 * 512, '.');
  ASSERT_TRUE(log.replay(target, 0, 2).ok());
  ASSERT_TRUE(log.replay(target, 2, 5).ok());
  ASSERT_TRUE(log.replay(target, 5, 7).ok());
  EXPECT_EQ(read_all(target), wants.back().state);
}

TEST(LogWrites, LargerSectorSize) {
  testing::TempRoot t;
  auto log = LogWrites::open(sample_log(t, 4096)).value();
  EXPECT_EQ(log.sector_size(), 4096u);
  std::string target = t.path() + "/dev";
  make_target(target, 6 * 4096, '.');
  ASSERT_TRUE(log.replay(target, 0, 1).ok());
  EXPECT_EQ(read_all(target).substr(2 * 4096, 2 * 4096), blocks('A', 2, 4096));
}

TEST(LogWrites, TargetTooSmallIsRefusedNamingTheEntry) {
  testing::TempRoot t;
  auto log = LogWrites::open(sample_log(t)).value();
  std::string target = t.path() + "/dev";
  make_target(target, 4 * 512, '.');
  auto r = log.replay(target, 0, 7);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("entry 5"), std::string::npos) << r.error().message();
  EXPECT_FALSE(log.replay(target, 3, 2).ok());
  EXPECT_FALSE(log.replay(target, 0, 8).ok());
}

TEST(LogWrites, EntriesPastTheSuperCountAreIgnored) {
  testing::TempRoot t;
  std::string path = t.path() + "/log";
  auto b = LogBuilder::create(path, 512).value();
  ASSERT_TRUE(b.write(0, blocks('A', 1)).ok());
  ASSERT_TRUE(b.flush().ok());
  ASSERT_TRUE(b.write(1, blocks('B', 1)).ok());
  ASSERT_TRUE(b.finish(2).ok());  // the logger died before its last super update
  auto log = LogWrites::open(path).value();
  EXPECT_EQ(log.entries().size(), 2u);
}

TEST(LogWrites, DamagedLogsAreRefused) {
  testing::TempRoot t;
  std::string good = sample_log(t);
  std::string text = read_all(good);
  auto write = [&](const std::string& name, const std::string& data) {
    std::string p = t.path() + "/" + name;
    auto fd = sys::open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600).value();
    EXPECT_TRUE(sys::write_all(fd.get(), data.data(), data.size()).ok());
    return p;
  };
  auto fails_with = [&](const std::string& path, const std::string& needle) {
    auto r = LogWrites::open(path);
    ASSERT_FALSE(r.ok()) << path;
    EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find(path), std::string::npos) << r.error().message();
  };
  std::string bad = text;
  bad[0] ^= 1;
  fails_with(write("magic", bad), "bad magic");
  bad = text;
  bad[8] = 2;
  fails_with(write("version", bad), "unsupported version 2");
  bad = text;
  bad[24] = 0x10;  // sector size 528
  bad[25] = 0x02;
  fails_with(write("ss", bad), "sector size 528");
  bad = text;
  bad[16] = 0x7f;  // 127 entries
  fails_with(write("count", bad), "entries, more than");
  // Cut inside the data of entry 5 (C): its header says one block of data follows.
  fails_with(write("cut", text.substr(0, text.size() - 1024 - 256)), "entry 5");
  fails_with(write("short", text.substr(0, 10)), "log ends at byte");
}

TEST(LogWrites, CrashPointsAreFlushesPlusSeededRandomWrites) {
  testing::TempRoot t;
  std::string path = t.path() + "/log";
  auto b = LogBuilder::create(path, 512).value();
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(b.write(i, blocks('x', 1)).ok());
    if (i % 3 == 2) ASSERT_TRUE(b.flush().ok());
  }
  ASSERT_TRUE(b.mark("end").ok());
  ASSERT_TRUE(b.finish().ok());
  auto log = LogWrites::open(path).value();
  const auto& e = log.entries();
  // Flush entries are at 3, 7 and 11: points 4, 8, 12.
  EXPECT_EQ(crash_points(e, 0, e.size(), 0, 1), (std::vector<uint64_t>{4, 8, 12}));
  // Limited to the range.
  EXPECT_EQ(crash_points(e, 5, 9, 0, 1), (std::vector<uint64_t>{8}));
  auto with_random = crash_points(e, 0, e.size(), 3, 42);
  EXPECT_EQ(with_random.size(), 6u);
  for (uint64_t p : with_random) EXPECT_FALSE(e[p - 1].is_mark());
  EXPECT_EQ(with_random, crash_points(e, 0, e.size(), 3, 42));  // same seed, same points
  // More random points than writes: every write is a point.
  EXPECT_EQ(crash_points(e, 0, e.size(), 100, 7).size(), 13u);
}

TEST(LogWrites, PreflushWriteGivesTheStatesBeforeAndAfterIt) {
  testing::TempRoot t;
  std::string path = t.path() + "/log";
  auto b = LogBuilder::create(path, 512).value();
  ASSERT_TRUE(b.write(0, blocks('a', 1)).ok());
  ASSERT_TRUE(b.write(1, blocks('b', 1), kFlush | kFua).ok());  // a journal commit block
  ASSERT_TRUE(b.write(2, blocks('c', 1)).ok());
  ASSERT_TRUE(b.finish().ok());
  auto log = LogWrites::open(path).value();
  EXPECT_EQ(crash_points(log.entries(), 0, 3, 0, 1), (std::vector<uint64_t>{1, 2}));
}

}  // namespace
}  // namespace cowlab::logwrites
