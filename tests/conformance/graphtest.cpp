// Docker's graphtest (moby daemon/graphdriver/graphtest/graphtest_unix.go, testutil*.go) and
// containers/storage's DriverTestEcho / DriverTestListLayers, ported to GoogleTest with the
// same constants, plus the Get/Put reference-count rules and the "nothing left behind" check.
//
// Every test gets a fresh backing store and a driver made through the registry
// (find_driver(name)->init), exactly as the layer store makes one; drivers are reached only
// through the Driver interface.  After each test the driver is cleaned up and the store taken
// apart; a mount left below the store root or a loop device still bound to the store's image
// fails the test (TearDown).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "aufs/aufs.h"
#include "conformance/backing_store.h"
#include "conformance/conformance.h"
#include "cowlab/changes.h"
#include "cowlab/driver.h"
#include "cowlab/io.h"
#include "cowlab/registry.h"
#include "cowlab/sys.h"

namespace cowlab {
// GoogleTest prints a Change as "A /path" in assertion messages (found by argument-dependent
// lookup, so it lives beside Change).
void PrintTo(const Change& change, std::ostream* os) {
  *os << change_kind_letter(change.kind) << ' ' << change.path;
}
}  // namespace cowlab

namespace cowlab::conformance {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

// ---- graphtest's helpers (testutil.go) -----------------------------------------------------

// Deterministic content for `seed`: graphtest's randomContent draws 7 bytes per 63-bit value
// from a generator seeded with `seed`; any deterministic generator serves the same purpose.
std::string random_content(size_t size, int64_t seed) {
  std::mt19937_64 gen(static_cast<uint64_t>(seed));
  std::string out;
  out.reserve(size + 7);
  while (out.size() < size) {
    uint64_t v = gen() >> 1;
    for (int b = 0; b < 7; ++b) out.push_back(static_cast<char>((v >> (8 * b)) & 0xff));
  }
  out.resize(size);
  return out;
}

std::string random_id() {
  static std::mt19937_64 gen(std::random_device{}());
  static const char kHex[] = "0123456789abcdef";
  std::string id(64, '0');
  for (auto& c : id) c = kHex[gen() % 16];
  return id;
}

// Writes a file with an exact mode (the umask is not applied: the caller sets it to 0 where
// graphtest does, or fchmod fixes the bits).
::testing::AssertionResult write_file(const std::string& path, const std::string& data,
                                      mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return ::testing::AssertionFailure() << "open " << path << ": " << std::strerror(errno);
  ssize_t n = ::write(fd, data.data(), data.size());
  int e = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(data.size()))
    return ::testing::AssertionFailure() << "write " << path << ": " << std::strerror(e);
  return ::testing::AssertionSuccess();
}

std::optional<std::string> read_file(const std::string& path) {
  auto r = sys::read_file(path);
  if (!r.ok()) return std::nullopt;
  return *r;
}

// readDir: entries of a directory, ignoring lost+found (a filesystem root may have it).
std::vector<std::string> read_dir(const std::string& dir) {
  std::vector<std::string> out;
  auto entries = sys::read_dir(dir);
  if (!entries.ok()) return {"<" + entries.error().message() + ">"};
  for (const auto& e : *entries)
    if (e.name != "lost+found") out.push_back(e.name);
  std::sort(out.begin(), out.end());
  return out;
}

// Filesystems stamp mtimes from a coarse clock (one jiffy).  Docker's "modified" compares
// mtime and size only, so a same-size rewrite within the tick that wrote the original is
// invisible; graphtest relies on time passing between building a base and changing a child.
void let_the_clock_tick() {
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

// ---- the fixture ----------------------------------------------------------------------------

class GraphDriverTest : public ::testing::TestWithParam<Combo> {
 protected:
  void SetUp() override {
    const Combo& combo = GetParam();
    auto store = testing::make_backing_store(combo.store);
    ASSERT_TRUE(store.ok()) << store.error().message();
    store_ = std::move(*store);
    auto root = store_->set_up();
    if (!root.ok() && root.error().kind() == ErrorKind::kNotSupported) {
      unusable("backing store " + combo.store + " is unavailable here: " + root.error().message());
      return;
    }
    ASSERT_TRUE(root.ok()) << root.error().message();
    root_ = *root;
    base_dir_ = store_->base_dir();
    dm_before_ = dm_devices();

    const DriverEntry* entry = find_driver(combo.driver);
    ASSERT_NE(entry, nullptr) << "no driver named \"" << combo.driver << "\" in the registry";
    // The store's options (zfs.fsname of a test pool) first; the command line's win.
    std::map<std::string, std::string> options = store_->storage_opts();
    for (const auto& [k, v] : combo.options) options[k] = v;
    auto driver = entry->init(DriverConfig{root_, root_ + "/" + combo.driver, options});
    if (!driver.ok() && driver.error().kind() == ErrorKind::kNotSupported) {
      unusable("driver " + combo.driver + " is unusable on " + combo.store + ": " +
               driver.error().message());
      return;
    }
    ASSERT_TRUE(driver.ok()) << driver.error().message();
    driver_ = std::move(*driver);
  }

  void TearDown() override {
    if (driver_) {
      auto r = driver_->cleanup();
      EXPECT_TRUE(r.ok()) << "cleanup: " << r.error().message();
      driver_.reset();
    }
    if (!store_) return;
    // Taking the store apart reports (and removes) every mount left below its root and every
    // loop device still bound to its image.
    auto down = store_->tear_down();
    EXPECT_TRUE(down.ok()) << down.error().message();
    // And independently of the store's own bookkeeping: /proc/self/mountinfo shows no mount and
    // /sys/block/loop*/loop/backing_file no loop device with a file of this test's store
    // (paths, not device numbers: another process may reuse a freed loop device at once).
    if (!base_dir_.empty()) {
      EXPECT_EQ(testing::mounts_under(base_dir_), std::vector<std::string>{})
          << "mounts left under " << base_dir_;
      EXPECT_EQ(testing::loop_devices_backed_under(base_dir_), std::vector<std::string>{})
          << "loop devices left bound to files under " << base_dir_;
    }
    // Device-mapper devices (devicemapper's pool and thin devices) made during the test must be
    // gone too.  Only new names count, so devices that existed before the test are not blamed.
    if (!base_dir_.empty()) {
      std::vector<std::string> left;
      for (const auto& name : dm_devices())
        if (!dm_before_.count(name)) left.push_back(name);
      EXPECT_EQ(left, std::vector<std::string>{}) << "device-mapper devices left behind";
    }
  }

  // Names of the device-mapper devices that exist now (/sys/block/dm-*/dm/name).
  static std::set<std::string> dm_devices() {
    std::set<std::string> out;
    auto entries = sys::read_dir("/sys/block");
    if (!entries.ok()) return out;
    for (const auto& e : *entries) {
      if (e.name.rfind("dm-", 0) != 0) continue;
      auto name = sys::read_file("/sys/block/" + e.name + "/dm/name");
      if (!name.ok()) continue;
      std::string n = *name;
      while (!n.empty() && n.back() == '\n') n.pop_back();
      out.insert(n);
    }
    return out;
  }

  // A driver or store this machine cannot provide: skip with the reason, or fail under
  // --require-usable.
  void unusable(const std::string& reason) {
    if (unusable_policy() == Unusable::kFail) {
      ADD_FAILURE() << reason << " (--require-usable)";
      return;
    }
    GTEST_SKIP() << reason;
  }

  Driver& driver() { return *driver_; }

  std::unique_ptr<testing::BackingStore> store_;
  std::unique_ptr<Driver> driver_;
  std::string root_;
  std::string base_dir_;
  std::set<std::string> dm_before_;
};

// get() with a guaranteed put(): a failing assertion never leaves a layer mounted.
class Mounted {
 public:
  Mounted(Driver& d, std::string id) : d_(d), id_(std::move(id)) {
    auto r = d_.get(id_, "");
    if (r.ok()) {
      path_ = *r;
      held_ = true;
    } else {
      error_ = r.error().message();
    }
  }
  ~Mounted() {
    if (held_) (void)d_.put(id_);
  }
  Mounted(const Mounted&) = delete;
  Mounted& operator=(const Mounted&) = delete;

  bool ok() const { return held_; }
  const std::string& error() const { return error_; }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }
  Result<void> put() {
    held_ = false;
    return d_.put(id_);
  }

 private:
  Driver& d_;
  std::string id_;
  std::string path_;
  std::string error_;
  bool held_ = false;
};

#define MOUNT_OR_FAIL(var, driver, id) \
  Mounted var(driver, id);             \
  ASSERT_TRUE(var.ok()) << "get " << (id) << ": " << var.error()

#define ASSERT_OK(expr)                                                                \
  do {                                                                                 \
    auto&& assert_ok_r_ = (expr);                                                      \
    ASSERT_TRUE(assert_ok_r_.ok()) << #expr << ": " << assert_ok_r_.error().message(); \
  } while (0)

// ---- graphtest's layer builders and checks ------------------------------------------------

// addManyFiles: directory-<i>/file-<i+j>, 100 files per directory, 64 bytes of
// randomContent(64, seed+i+j) each, mode 0755.
::testing::AssertionResult add_many_files(Driver& d, const std::string& layer, int count,
                                          int64_t seed) {
  Mounted m(d, layer);
  if (!m.ok()) return ::testing::AssertionFailure() << "get " << layer << ": " << m.error();
  for (int i = 0; i < count; i += 100) {
    std::string dir = m / ("directory-" + std::to_string(i));
    if (auto r = sys::mkdir_all(dir, 0755); !r.ok())
      return ::testing::AssertionFailure() << r.error().message();
    for (int j = 0; i + j < count && j < 100; ++j) {
      auto w = write_file(dir + "/file-" + std::to_string(i + j), random_content(64, seed + i + j),
                          0755);
      if (!w) return w;
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult check_many_files(Driver& d, const std::string& layer, int count,
                                            int64_t seed) {
  Mounted m(d, layer);
  if (!m.ok()) return ::testing::AssertionFailure() << "get " << layer << ": " << m.error();
  for (int i = 0; i < count; i += 100) {
    for (int j = 0; i + j < count && j < 100; ++j) {
      std::string file = m / ("directory-" + std::to_string(i) + "/file-" + std::to_string(i + j));
      auto got = read_file(file);
      if (!got) return ::testing::AssertionFailure() << "cannot read " << file;
      if (*got != random_content(64, seed + i + j))
        return ::testing::AssertionFailure()
               << file << ": content is not randomContent(64, " << seed + i + j << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// changeManyFiles: per file j, by j mod 3: rewrite (Modify), add file-<seed>-<j> (Add),
// remove (Delete); each directory is a Modify.  Returns the changes graphtest expects.
std::vector<Change> change_many_files(Driver& d, const std::string& layer, int count, int64_t seed,
                                      ::testing::AssertionResult* status) {
  std::vector<Change> changes;
  *status = ::testing::AssertionSuccess();
  Mounted m(d, layer);
  if (!m.ok()) {
    *status = ::testing::AssertionFailure() << "get " << layer << ": " << m.error();
    return changes;
  }
  for (int i = 0; i < count; i += 100) {
    std::string archive_root = "/directory-" + std::to_string(i);
    (void)sys::mkdir_all(m.path() + archive_root, 0755);
    for (int j = 0; i + j < count && j < 100; ++j) {
      if (j == 0) changes.push_back({archive_root, ChangeKind::kModify});
      Change change;
      switch (j % 3) {
        case 0:  // update a file
          change = {archive_root + "/file-" + std::to_string(i + j), ChangeKind::kModify};
          if (auto w = write_file(m.path() + change.path, random_content(64, seed + i + j), 0755);
              !w)
            *status = w;
          break;
        case 1:  // add a file
          change = {archive_root + "/file-" + std::to_string(seed) + "-" + std::to_string(i + j),
                    ChangeKind::kAdd};
          if (auto w = write_file(m.path() + change.path, random_content(64, seed + i + j), 0755);
              !w)
            *status = w;
          break;
        case 2:  // remove a file
          change = {archive_root + "/file-" + std::to_string(i + j), ChangeKind::kDelete};
          if (::unlink((m.path() + change.path).c_str()) != 0)
            *status = ::testing::AssertionFailure()
                      << "unlink " << change.path << ": " << std::strerror(errno);
          break;
      }
      changes.push_back(change);
    }
  }
  return changes;
}

// createBase: a read-write layer holding "a subdir" (0705|sticky, 1:2) and "a file"
// (0222|setuid, "Some data"), made with umask 0 so any mode can be set.
void create_base(Driver& d, const std::string& name) {
  mode_t old_mask = ::umask(0);
  struct RestoreUmask {
    mode_t mask;
    ~RestoreUmask() { ::umask(mask); }
  } restore{old_mask};
  ASSERT_OK(d.create_rw(name, "", {}));
  MOUNT_OR_FAIL(m, d, name);
  ASSERT_EQ(::mkdir((m / "a subdir").c_str(), 0705 | S_ISVTX), 0) << std::strerror(errno);
  ASSERT_EQ(::lchown((m / "a subdir").c_str(), 1, 2), 0) << std::strerror(errno);
  ASSERT_TRUE(write_file(m / "a file", "Some data", 0222 | S_ISUID));
}

// verifyFile: type, permission bits, and the setuid/setgid/sticky bits checked separately.
void verify_file(const std::string& path, mode_t type, mode_t perm, uid_t uid, gid_t gid) {
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  EXPECT_EQ(st.st_mode & S_IFMT, type) << path;
  EXPECT_EQ(st.st_mode & 0777, perm & 0777) << path << std::oct << " mode " << st.st_mode;
  EXPECT_EQ(st.st_mode & S_ISUID, perm & S_ISUID) << path << ": setuid";
  EXPECT_EQ(st.st_mode & S_ISGID, perm & S_ISGID) << path << ": setgid";
  EXPECT_EQ(st.st_mode & S_ISVTX, perm & S_ISVTX) << path << ": sticky";
  EXPECT_EQ(st.st_uid, uid) << path;
  EXPECT_EQ(st.st_gid, gid) << path;
}

void verify_base(Driver& d, const std::string& name) {
  MOUNT_OR_FAIL(m, d, name);
  verify_file(m / "a subdir", S_IFDIR, 0705 | S_ISVTX, 1, 2);
  verify_file(m / "a file", S_IFREG, 0222 | S_ISUID, 0, 0);
  // 0222: only root can read it back, which these tests are.
  EXPECT_EQ(read_file(m / "a file").value_or("<unreadable>"), "Some data");
  EXPECT_EQ(read_dir(m.path()), (std::vector<std::string>{"a file", "a subdir"}))
      << "exactly 2 entries";
}

// addLayerFiles / checkManyLayers for DeepLayerRead.
void add_layer_files(Driver& d, const std::string& layer, const std::string& parent, int i) {
  MOUNT_OR_FAIL(m, d, layer);
  ASSERT_TRUE(write_file(m / "top-id", layer, 0755));
  std::string layer_dir = m / ("layer-" + std::to_string(i));
  ASSERT_OK(sys::mkdir_all(layer_dir, 0755));
  ASSERT_TRUE(write_file(layer_dir + "/layer-id", layer, 0755));
  ASSERT_TRUE(write_file(layer_dir + "/parent-id", parent, 0755));
}

void check_many_layers(Driver& d, const std::string& layer, int count) {
  MOUNT_OR_FAIL(m, d, layer);
  auto expected = read_file(m / "top-id");
  ASSERT_TRUE(expected.has_value()) << "top-id unreadable";
  ASSERT_EQ(*expected, layer);
  for (int i = count; i > 0; --i) {
    std::string layer_dir = m / ("layer-" + std::to_string(i));
    auto this_id = read_file(layer_dir + "/layer-id");
    ASSERT_TRUE(this_id.has_value()) << layer_dir << "/layer-id unreadable";
    ASSERT_EQ(*this_id, *expected) << "layer " << i;
    expected = read_file(layer_dir + "/parent-id");
    ASSERT_TRUE(expected.has_value()) << layer_dir << "/parent-id unreadable";
  }
}

std::string describe(const std::vector<Change>& changes) {
  std::string out;
  for (const auto& c : changes)
    out += std::string(1, change_kind_letter(c.kind)) + " " + c.path + "\n";
  return out;
}

// checkChanges: same length, same entries after sorting by (path, kind).
void check_changes(std::vector<Change> expected, std::vector<Change> actual) {
  sort_changes(expected);
  sort_changes(actual);
  EXPECT_EQ(actual.size(), expected.size()) << "expected:\n"
                                            << describe(expected) << "got:\n"
                                            << describe(actual);
  EXPECT_EQ(actual, expected) << "expected:\n"
                              << describe(expected) << "got:\n"
                              << describe(actual);
}

// Whether the running kernel takes one "lowerdir+" per overlay layer (new mount API, Linux >=
// 6.7), found by trying it on an fs context that is never mounted.
bool kernel_has_overlay_lowerdir_plus() {
  auto fs = sys::fsopen("overlay", 0);
  if (!fs.ok()) return false;
  return sys::fsconfig_string(fs->get(), "lowerdir+", "/").ok();
}

// ---- the tests ------------------------------------------------------------------------------

TEST_P(GraphDriverTest, CreateEmpty) {
  ASSERT_OK(driver().create("empty", "", {}));
  EXPECT_TRUE(driver().exists("empty"));
  {
    MOUNT_OR_FAIL(m, driver(), "empty");
    verify_file(m.path(), S_IFDIR, 0755, 0, 0);
    EXPECT_EQ(read_dir(m.path()), std::vector<std::string>{}) << "a new layer has 0 entries";
  }
  ASSERT_OK(driver().remove("empty"));
  EXPECT_FALSE(driver().exists("empty"));
}

TEST_P(GraphDriverTest, CreateBase) {
  ASSERT_NO_FATAL_FAILURE(create_base(driver(), "Base"));
  ASSERT_NO_FATAL_FAILURE(verify_base(driver(), "Base"));
  ASSERT_OK(driver().remove("Base"));
}

TEST_P(GraphDriverTest, CreateSnap) {
  ASSERT_NO_FATAL_FAILURE(create_base(driver(), "Base"));
  ASSERT_OK(driver().create("Snap", "Base", {}));
  ASSERT_NO_FATAL_FAILURE(verify_base(driver(), "Snap"));
  ASSERT_OK(driver().remove("Snap"));
  ASSERT_OK(driver().remove("Base"));
}

// graphtest's DeepLayerRead: overlay2 runs it with 128 layers, its maxDepth.  On overlay this
// asks for 500 (the kernel's OVL_MAX_STACK) and accepts the driver's depth limit only where the
// kernel lacks "lowerdir+" and only beyond 128 layers; elsewhere 128.  On aufs the stack is as
// deep as the kernel's branch limit allows (AUFS_BRANCH_MAX: base + limit-1 layers mount limit
// branches), and one layer more must be refused with an error naming the limit.
TEST_P(GraphDriverTest, DeepLayerRead) {
  const bool overlay = GetParam().driver == "overlay";
  const bool aufs = GetParam().driver == "aufs";
  const bool new_api = overlay && kernel_has_overlay_lowerdir_plus();
  int wanted = overlay ? 500 : 128;
  int aufs_limit = 0;
  if (aufs) {
    auto limit = kernel_aufs_branch_limit();
    ASSERT_TRUE(limit.ok()) << limit.error().message()
                            << " (build the aufs kernel with CONFIG_IKCONFIG_PROC=y, or aufs as a "
                               "module: docs/aufs.md)";
    aufs_limit = limit->max;
    wanted = aufs_limit - 1;
    std::cout << "[   NOTE   ] aufs branch limit " << aufs_limit << " (" << limit->source
              << "): " << wanted << " layers on a base\n";
  }
  std::string base = random_id();
  ASSERT_OK(driver().create(base, "", {}));
  {
    MOUNT_OR_FAIL(m, driver(), base);
    ASSERT_TRUE(write_file(m / "testfile.txt", "test content", 0755));
  }
  std::string top = base;
  int depth = 0;
  for (int i = 1; i <= wanted; ++i) {
    std::string next = random_id();
    auto made = driver().create(next, top, {});
    if (!made.ok() && overlay && !new_api && i > 128 &&
        made.error().message().find("max depth exceeded") != std::string::npos) {
      std::cout << "[   NOTE   ] overlay stops at " << depth
                << " layers on this kernel (no lowerdir+): " << made.error().message() << "\n";
      break;
    }
    ASSERT_TRUE(made.ok()) << "layer " << i << " of " << wanted << ": " << made.error().message();
    ASSERT_NO_FATAL_FAILURE(add_layer_files(driver(), next, top, i));
    top = next;
    depth = i;
  }
  if (overlay && new_api) {
    EXPECT_EQ(depth, 500) << "the kernel takes lowerdir+: 500 layers must stack";
  }
  ASSERT_GE(depth, aufs ? wanted : 128);
  ASSERT_NO_FATAL_FAILURE(check_many_layers(driver(), top, depth));
  {
    MOUNT_OR_FAIL(m, driver(), top);
    EXPECT_EQ(read_file(m / "testfile.txt").value_or("<missing>"), "test content");
  }
  if (aufs) {
    // One layer beyond the limit: created (no mount), but never mounted short of a branch.
    std::string over = random_id();
    ASSERT_OK(driver().create(over, top, {}));
    auto m = driver().get(over, "");
    ASSERT_FALSE(m.ok()) << "a union of " << aufs_limit + 1
                         << " branches mounted on a kernel limited to " << aufs_limit;
    EXPECT_NE(m.error().message().find("branch limit is " + std::to_string(aufs_limit)),
              std::string::npos)
        << m.error().message();
    ASSERT_OK(driver().remove(over));
  }
}

TEST_P(GraphDriverTest, DiffApply) {
  constexpr int kFileCount = 10;
  const std::string base = random_id(), upper = random_id(), diff = random_id();
  const std::string delete_file = "file-remove.txt";
  const std::string delete_file_content = "This file should get removed in upper!";
  const std::string delete_dir = "var/lib";

  ASSERT_OK(driver().create(base, "", {}));
  ASSERT_TRUE(add_many_files(driver(), base, kFileCount, 3));
  {
    MOUNT_OR_FAIL(m, driver(), base);
    ASSERT_TRUE(write_file(m / delete_file, delete_file_content, 0755));
    ASSERT_OK(sys::mkdir_all(m / delete_dir, 0755));
  }
  let_the_clock_tick();
  ASSERT_OK(driver().create(upper, base, {}));
  ASSERT_TRUE(add_many_files(driver(), upper, kFileCount, 6));
  {
    MOUNT_OR_FAIL(m, driver(), upper);
    ASSERT_OK(sys::remove_all(m / delete_file));
    ASSERT_OK(sys::remove_all(m / delete_dir));
  }

  // Note: against nothing, as graphtest does.
  auto diff_size = driver().diff_size(upper, "");
  ASSERT_TRUE(diff_size.ok()) << diff_size.error().message();

  ASSERT_OK(driver().create(diff, base, {}));
  ASSERT_TRUE(check_many_files(driver(), diff, kFileCount, 3));
  {
    MOUNT_OR_FAIL(m, driver(), diff);
    EXPECT_EQ(read_file(m / delete_file).value_or("<missing>"), delete_file_content);
  }

  StringWriter tar;
  ASSERT_OK(driver().diff(upper, base, tar));
  StringReader reader(tar.take(), "diff of " + upper);
  auto applied = driver().apply_diff(diff, base, reader);
  ASSERT_TRUE(applied.ok()) << applied.error().message();
  EXPECT_EQ(*applied, *diff_size) << "apply-diff size must equal diff-size(upper, \"\")";

  EXPECT_TRUE(check_many_files(driver(), diff, kFileCount, 6));
  MOUNT_OR_FAIL(m, driver(), diff);
  EXPECT_FALSE(sys::lstat_if_exists(m / delete_file)->has_value())
      << delete_file << " must be gone";
  EXPECT_FALSE(sys::lstat_if_exists(m / delete_dir)->has_value()) << delete_dir << " must be gone";
}

TEST_P(GraphDriverTest, Changes) {
  const std::string base = random_id(), upper = random_id();
  ASSERT_OK(driver().create(base, "", {}));
  ASSERT_TRUE(add_many_files(driver(), base, 20, 3));
  let_the_clock_tick();
  ASSERT_OK(driver().create(upper, base, {}));
  ::testing::AssertionResult changed = ::testing::AssertionSuccess();
  auto expected = change_many_files(driver(), upper, 20, 6, &changed);
  ASSERT_TRUE(changed);
  // graphtest's arithmetic for 20 files: 1 directory Modify, 7 Modify, 7 Add, 6 Delete.
  ASSERT_EQ(expected.size(), 21u);
  auto count = [&](ChangeKind k) {
    return std::count_if(expected.begin(), expected.end(),
                         [&](const Change& c) { return c.kind == k; });
  };
  ASSERT_EQ(count(ChangeKind::kModify), 8);
  ASSERT_EQ(count(ChangeKind::kAdd), 7);
  ASSERT_EQ(count(ChangeKind::kDelete), 6);

  auto changes = driver().changes(upper, base);
  ASSERT_TRUE(changes.ok()) << changes.error().message();
  check_changes(expected, *changes);
}

TEST_P(GraphDriverTest, SetQuota) {
  ASSERT_NO_FATAL_FAILURE(create_base(driver(), "Base"));
  CreateOpts opts;
  opts.storage_opt["size"] = "50M";
  auto made = driver().create_rw("zfsTest", "Base", opts);
  if (!driver().supports_quota()) {
    // A size the driver cannot honour must be refused, never silently ignored.
    EXPECT_FALSE(made.ok()) << GetParam().driver
                            << " reports no quota support but accepted size=50M";
    GTEST_SKIP()
        << GetParam().driver << " on " << GetParam().store
        << " has no per-layer quota (supports_quota() is false); create_rw(size=50M) said: "
        << (made.ok() ? std::string("ok") : made.error().message());
  }
  ASSERT_TRUE(made.ok()) << made.error().message();
  MOUNT_OR_FAIL(m, driver(), "zfsTest");
  auto write_random = [](const std::string& path, uint64_t size) -> int {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);
    if (fd < 0) return errno;
    std::string chunk = random_content(kMiB, static_cast<int64_t>(size));
    int err = 0;
    for (uint64_t done = 0; done < size && err == 0;) {
      ssize_t n = ::write(fd, chunk.data(), std::min<uint64_t>(chunk.size(), size - done));
      if (n < 0)
        err = errno;
      else
        done += static_cast<uint64_t>(n);
    }
    if (err == 0 && ::fsync(fd) != 0) err = errno;
    if (::close(fd) != 0 && err == 0) err = errno;
    return err;
  };
  EXPECT_EQ(write_random(m / "smallfile", 25 * kMiB), 0) << "25 MiB fits in 50M";
  int err = write_random(m / "bigfile", 50 * kMiB);
  EXPECT_TRUE(err == EDQUOT || err == ENOSPC)
      << "writing 50 MiB more into a 50M layer must fail with EDQUOT or ENOSPC, got "
      << (err ? errno_name(err) : std::string_view("success"));
}

// containers/storage's DriverTestEcho: 10 rounds over a subdir1/.../subdir9/file chain.
TEST_P(GraphDriverTest, Echo) {
  constexpr int kComponents = 10;
  for (int depth = 0; depth < kComponents; ++depth) {
    SCOPED_TRACE("depth " + std::to_string(depth));
    const std::string base = random_id(), second = random_id(), third = random_id();
    ASSERT_OK(driver().create(base, "", {}));
    MOUNT_OR_FAIL(base_root, driver(), base);
    std::vector<std::string> paths;
    std::vector<Change> expected;
    std::string path;
    for (int i = 0; i < kComponents - 1; ++i) {
      path += "/subdir" + std::to_string(i + 1);
      paths.push_back(path);
      ASSERT_EQ(::mkdir((base_root.path() + path).c_str(), 0700), 0) << std::strerror(errno);
      expected.push_back({path, ChangeKind::kAdd});
    }
    path += "/file";
    paths.push_back(path);
    ASSERT_TRUE(write_file(base_root.path() + path, random_content(128, depth), 0600));
    expected.push_back({path, ChangeKind::kAdd});
    auto changes = driver().changes(base, "");
    ASSERT_TRUE(changes.ok()) << changes.error().message();
    ASSERT_NO_FATAL_FAILURE(check_changes(expected, *changes));

    ASSERT_OK(driver().create(second, base, {}));
    MOUNT_OR_FAIL(second_root, driver(), second);
    ASSERT_OK(sys::remove_all(second_root.path() + paths[depth]));
    expected.clear();
    for (int i = 0; i < depth; ++i) expected.push_back({paths[i], ChangeKind::kModify});
    expected.push_back({paths[depth], ChangeKind::kDelete});
    changes = driver().changes(second, base);
    ASSERT_TRUE(changes.ok()) << changes.error().message();
    ASSERT_NO_FATAL_FAILURE(check_changes(expected, *changes));

    ASSERT_OK(driver().create(third, second, {}));
    MOUNT_OR_FAIL(third_root, driver(), third);
    expected.clear();
    for (int i = 0; i < depth; ++i) expected.push_back({paths[i], ChangeKind::kModify});
    for (int i = depth; i < kComponents - 1; ++i) {
      ASSERT_EQ(::mkdir((third_root.path() + paths[i]).c_str(), 0700), 0) << std::strerror(errno);
      expected.push_back({paths[i], ChangeKind::kAdd});
    }
    ASSERT_TRUE(write_file(third_root.path() + paths.back(), random_content(128, depth), 0600));
    expected.push_back({paths.back(), ChangeKind::kAdd});
    changes = driver().changes(third, second);
    ASSERT_TRUE(changes.ok()) << changes.error().message();
    ASSERT_NO_FATAL_FAILURE(check_changes(expected, *changes));

    ASSERT_OK(third_root.put());
    ASSERT_OK(second_root.put());
    ASSERT_OK(base_root.put());
  }
}

// containers/storage's DriverTestListLayers: exactly {base, mid, upper}.  The Driver interface
// has no listing (the layer store keeps it), so each is asked for by exists().
TEST_P(GraphDriverTest, ListLayers) {
  const std::string base = random_id(), mid = random_id(), upper = random_id();
  ASSERT_NO_FATAL_FAILURE(create_base(driver(), base));
  ASSERT_OK(driver().create(mid, base, {}));
  ASSERT_OK(driver().create(upper, mid, {}));
  for (const auto& id : {base, mid, upper}) EXPECT_TRUE(driver().exists(id)) << id;
  EXPECT_FALSE(driver().exists(random_id())) << "a layer never created";
  ASSERT_OK(driver().remove(upper));
  EXPECT_FALSE(driver().exists(upper)) << "a removed layer";
  EXPECT_TRUE(driver().exists(mid));
  EXPECT_TRUE(driver().exists(base));
}

// The contract's error kinds for layers that do not exist.
TEST_P(GraphDriverTest, MissingLayers) {
  auto removed = driver().remove("never-created");
  ASSERT_FALSE(removed.ok());
  EXPECT_EQ(removed.error().kind(), ErrorKind::kNotFound) << removed.error().message();
  EXPECT_FALSE(driver().get("never-created", "").ok());
  auto orphan = driver().create("orphan", "never-created", {});
  EXPECT_FALSE(orphan.ok()) << "a missing parent must be an error";
  EXPECT_FALSE(driver().exists("orphan"));
}

// Paths below `dir` whose name, or whose symlink target, contains `needle` (mount points are
// not entered: a layer's data never lies below another mount in the home).
void find_named(const std::string& dir, const std::string& needle, std::vector<std::string>* out) {
  auto entries = sys::read_dir(dir);
  if (!entries.ok()) return;
  for (const auto& e : *entries) {
    const std::string p = dir + "/" + e.name;
    auto st = sys::lstat(p);
    if (!st.ok()) continue;
    if (e.name.find(needle) != std::string::npos) out->push_back(p);
    if (S_ISLNK(st->st_mode)) {
      auto t = sys::readlink(p);
      if (t.ok() && t->find(needle) != std::string::npos) out->push_back(p + " -> " + *t);
    } else if (S_ISDIR(st->st_mode) && !sys::is_mountpoint(p).value_or(true)) {
      find_named(p, needle, out);
    }
  }
}

// The layer store calls remove() for every layer it recovers, whatever exists() says, and takes
// kNotFound as "nothing was there" (driver.h): after a remove, nothing in the driver's home is
// named after the layer or points to it, and a second remove answers kNotFound and changes
// nothing.  (The half-made states a power cut leaves are driver-specific: aufs_test.cpp and
// StoreCreateCutTest; the crash runner checks them in guests.)
TEST_P(GraphDriverTest, RemoveLeavesNothingAndIsIdempotent) {
  const std::string base = random_id(), layer = random_id();
  ASSERT_NO_FATAL_FAILURE(create_base(driver(), base));
  ASSERT_OK(driver().create_rw(layer, base, {}));
  {
    MOUNT_OR_FAIL(m, driver(), layer);
    ASSERT_TRUE(write_file(m.path() + "/written", "x", 0644));
  }
  ASSERT_OK(driver().remove(layer));
  EXPECT_FALSE(driver().exists(layer));
  std::vector<std::string> left;
  find_named(driver().home(), layer, &left);
  // devicemapper keeps the record of a device whose deletion it deferred, marked deleted
  // (docs/devicemapper.md): that is the driver's own bookkeeping, no longer the layer.
  std::erase_if(left, [](const std::string& p) {
    if (p.find("/metadata/") == std::string::npos) return false;
    auto j = nlohmann::json::parse(read_file(p).value_or(""), nullptr, false);
    return j.is_object() && j.value("deleted", false);
  });
  EXPECT_EQ(left, std::vector<std::string>{}) << "remove() left data of the layer in the home";
  auto again = driver().remove(layer);
  ASSERT_FALSE(again.ok()) << "a second remove() found something to remove";
  EXPECT_EQ(again.error().kind(), ErrorKind::kNotFound) << again.error().message();
  EXPECT_TRUE(driver().exists(base));
  if (auto listed = driver().list(); listed.ok())
    EXPECT_EQ(std::count(listed->begin(), listed->end(), layer), 0) << "list() names it";
  ASSERT_OK(driver().remove(base));
}

// Docker's RefCounter: two gets and one put keep the layer mounted; the second put unmounts.
TEST_P(GraphDriverTest, GetPutRefcount) {
  ASSERT_NO_FATAL_FAILURE(create_base(driver(), "Base"));
  ASSERT_OK(driver().create_rw("Container", "Base", {}));
  auto first = driver().get("Container", "");
  ASSERT_TRUE(first.ok()) << first.error().message();
  auto second = driver().get("Container", "");
  if (!second.ok()) (void)driver().put("Container");
  ASSERT_TRUE(second.ok()) << second.error().message();
  EXPECT_EQ(*first, *second);
  const std::string path = *first;
  // Drivers whose get() mounts (overlay) show a mount point; the others hand out a directory.
  const bool mounts = *sys::is_mountpoint(path);

  auto put_once = driver().put("Container");
  if (!put_once.ok()) (void)driver().put("Container");
  ASSERT_TRUE(put_once.ok()) << put_once.error().message();
  EXPECT_EQ(*sys::is_mountpoint(path), mounts) << "one reference is still held";
  EXPECT_EQ(read_file(path + "/a file").value_or("<unreadable>"), "Some data")
      << "the layer must stay usable while a reference is held";

  ASSERT_OK(driver().put("Container"));
  EXPECT_FALSE(*sys::is_mountpoint(path)) << "the last put must unmount";
  ASSERT_OK(driver().remove("Container"));
  ASSERT_OK(driver().remove("Base"));
}

std::string param_name(const ::testing::TestParamInfo<Combo>& info) {
  return combo_name(info.param);
}

INSTANTIATE_TEST_SUITE_P(Drivers, GraphDriverTest, ::testing::ValuesIn(selected_combos()),
                         param_name);
// A binary run with no combination selected (it always has one; see main) is not an error.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GraphDriverTest);

}  // namespace
}  // namespace cowlab::conformance
