// DeviceSet against a fake dm-thin pool and fake block devices: id allocation, transactions
// and their rollback after a crash, base device set-up and growth, snapshots of active
// origins, EBUSY retries, deferred deletion and status rows — no kernel needed.  Metadata
// files are real files in a temp directory.
#include "devicemapper/device_set.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cowlab/sys.h"
#include "devicemapper/devicemapper.h"

namespace cowlab::devmapper {
namespace {

// Thrown by the fake pool to model the process dying at that point: nothing after it runs,
// no error path cleans up.
struct Crash {};

// A model of dm-thin: thin ids in the pool's metadata, a transaction id, and activated
// devices with open counts.  Errors carry the errnos the kernel gives.
class FakePool : public ThinPool {
 public:
  struct Active {
    uint32_t id = 0;
    uint64_t size = 0;
    int32_t open_count = 0;
    bool suspended = false;
    bool deferred_remove = false;
  };
  struct Fs {
    std::string type, uuid;
  };

  std::string pool_name() const override { return "fake-pool"; }

  Result<PoolStatus> status(StatusQuery query) override {
    status_queries.push_back(query);
    PoolStatus s;
    s.transaction_id = transaction_id;
    s.data_block_sectors = 128;
    s.data_total_blocks = data_total_blocks;
    s.data_used_blocks = data_used_blocks;
    s.metadata_total_blocks = 4096;
    s.metadata_used_blocks = 100;
    s.mode = "rw";
    return s;
  }

  Result<void> create_thin(uint32_t id) override {
    log.push_back("create_thin " + std::to_string(id));
    if (thins.count(id)) return Error(ErrorKind::kSystem, "create_thin: exists", EEXIST);
    thins[id] = Fs{};
    return {};
  }
  Result<void> create_snap(uint32_t id, uint32_t origin) override {
    log.push_back("create_snap " + std::to_string(id) + " " + std::to_string(origin));
    if (thins.count(id)) return Error(ErrorKind::kSystem, "create_snap: exists", EEXIST);
    if (!thins.count(origin)) return Error(ErrorKind::kSystem, "create_snap: no origin", ENODATA);
    for (const auto& [name, a] : active)
      if (a.id == origin && !a.suspended) snapshot_of_running_origin = true;
    thins[id] = thins[origin];  // the snapshot carries the origin's filesystem
    if (crash_after_create_snap) throw Crash{};
    return {};
  }
  Result<void> delete_thin(uint32_t id) override {
    log.push_back("delete " + std::to_string(id));
    if (crash_before_delete) throw Crash{};
    if (!thins.count(id)) return Error(ErrorKind::kSystem, "delete: no such thin", ENODATA);
    for (const auto& [name, a] : active)
      if (a.id == id) return Error(ErrorKind::kBusy, "delete: busy", EBUSY);
    thins.erase(id);
    if (crash_after_delete) throw Crash{};
    return {};
  }
  Result<void> set_transaction_id(uint64_t current, uint64_t next) override {
    if (crash_in_set_transaction_id) throw Crash{};
    if (current != transaction_id)
      return Error(ErrorKind::kSystem, "set_transaction_id: mismatch", EINVAL);
    transaction_id = next;
    if (crash_after_set_transaction_id) throw Crash{};
    return {};
  }

  Result<ThinDeviceState> state(const std::string& name) override {
    ThinDeviceState s;
    auto it = active.find(name);
    if (it == active.end()) return s;
    s.active = true;
    s.suspended = it->second.suspended;
    s.open_count = it->second.open_count;
    s.deferred_remove = it->second.deferred_remove;
    return s;
  }
  Result<void> activate(const std::string& name, uint32_t id, uint64_t size) override {
    log.push_back("activate " + name);
    if (active.count(name)) return Error(ErrorKind::kSystem, "create: exists", EEXIST);
    if (!thins.count(id)) return Error(ErrorKind::kSystem, "thin: no such id", ENODATA);
    active[name] = Active{id, size};
    return {};
  }
  Result<void> deactivate(const std::string& name, Deactivation how) override {
    log.push_back(std::string(how == Deactivation::kDeferred ? "deferred-remove " : "remove ") +
                  name);
    auto it = active.find(name);
    if (it == active.end()) return Error(ErrorKind::kNotFound, "remove: no such device", ENXIO);
    if (transient_busy > 0) {
      --transient_busy;
      return Error(ErrorKind::kBusy, "remove: busy", EBUSY);
    }
    if (it->second.open_count > 0) {
      if (how == Deactivation::kDeferred) {
        it->second.deferred_remove = true;
        return {};
      }
      return Error(ErrorKind::kBusy, "remove: busy", EBUSY);
    }
    active.erase(it);
    return {};
  }
  Result<void> cancel_deferred_removal(const std::string& name) override {
    log.push_back("cancel-deferred " + name);
    auto it = active.find(name);
    if (it == active.end()) return Error(ErrorKind::kNotFound, "message: no such device", ENXIO);
    it->second.deferred_remove = false;
    return {};
  }
  Result<void> suspend(const std::string& name) override {
    log.push_back("suspend " + name);
    active.at(name).suspended = true;
    return {};
  }
  Result<void> resume(const std::string& name) override {
    log.push_back("resume " + name);
    active.at(name).suspended = false;
    return {};
  }
  std::string device_path(const std::string& name) const override { return "/dev/mapper/" + name; }
  Result<std::vector<std::string>> active_devices(const std::string& prefix) override {
    std::vector<std::string> out;
    for (const auto& [name, a] : active)
      if (name.rfind(prefix, 0) == 0) out.push_back(name);
    return out;
  }

  // Another opener (a leaked mount in some namespace) closes the device; the kernel then
  // finishes a deferred removal.
  void close_opener(const std::string& name) {
    auto& a = active.at(name);
    if (--a.open_count == 0 && a.deferred_remove) active.erase(name);
  }

  uint64_t transaction_id = 0;
  uint64_t data_total_blocks = 16384;
  uint64_t data_used_blocks = 0;
  std::map<uint32_t, Fs> thins;
  std::map<std::string, Active> active;
  std::vector<std::string> log;
  std::vector<StatusQuery> status_queries;  // every status() query, in order
  int transient_busy = 0;
  bool snapshot_of_running_origin = false;
  bool crash_in_set_transaction_id = false;
  bool crash_after_set_transaction_id = false;
  bool crash_after_create_snap = false;
  bool crash_before_delete = false;
  bool crash_after_delete = false;
};

class FakeBlock : public BlockOps {
 public:
  explicit FakeBlock(FakePool& pool) : pool_(pool) {}

  Result<void> make_filesystem(BaseFilesystem fs, const std::string& device,
                               const std::vector<std::string>& args) override {
    mkfs_calls.push_back(filesystem_name(fs) + " " + device);
    mkfs_args = args;
    auto& a = pool_.active.at(name_of(device));
    pool_.thins[a.id] = FakePool::Fs{filesystem_name(fs), "uuid-" + std::to_string(++uuids_)};
    return {};
  }
  Result<FsIdentity> identify(const std::string& device) override {
    auto it = pool_.active.find(name_of(device));
    if (it == pool_.active.end()) return Error::from_errno("open", device, ENXIO);
    const auto& fs = pool_.thins.at(it->second.id);
    return FsIdentity{fs.type, fs.uuid};
  }
  Result<void> mount(const std::string& device, const std::string& target,
                     const std::string& fstype, const std::string& options,
                     MountMode mode) override {
    if (fail_mount) return Error::from_errno("mount", target, EINVAL);
    // The kernel's answer to a read-only mount of a filesystem mounted read-write elsewhere.
    if (mounted_read_write_elsewhere && mode == MountMode::kReadOnly)
      return Error::from_errno("mount", target, EBUSY);
    auto it = pool_.active.find(name_of(device));
    if (it == pool_.active.end()) return Error::from_errno("mount", device, ENXIO);
    ++it->second.open_count;
    mounts[target] = name_of(device);
    mount_options[target] = fstype + ":" + options + (mode == MountMode::kReadOnly ? " (ro)" : "");
    return {};
  }
  Result<void> unmount(const std::string& target) override {
    auto it = mounts.find(target);
    if (it == mounts.end()) return Error::from_errno("umount2", target, EINVAL);
    pool_.close_opener(it->second);
    mounts.erase(it);
    return {};
  }
  Result<bool> is_mounted(const std::string& target) override { return mounts.count(target) > 0; }
  Result<void> grow_filesystem(BaseFilesystem fs, const std::string& device,
                               const std::string& mount_point) override {
    grow_calls.push_back(filesystem_name(fs) + " " + device + " " +
                         std::to_string(pool_.active.at(name_of(device)).size));
    if (!mounts.count(mount_point)) return Error::invalid("grow: not mounted");
    return {};
  }
  Result<void> discard(const std::string& device) override {
    discards.push_back(device);
    return {};
  }
  void sleep_ms(int ms) override {
    slept_ms += ms;
    ++sleeps;
  }

  static std::string name_of(const std::string& device) {
    return device.substr(device.rfind('/') + 1);
  }

  std::vector<std::string> mkfs_calls, grow_calls, discards;
  std::vector<std::string> mkfs_args;
  std::map<std::string, std::string> mounts, mount_options;
  bool fail_mount = false;
  bool mounted_read_write_elsewhere = false;
  long slept_ms = 0;
  int sleeps = 0;

 private:
  FakePool& pool_;
  int uuids_ = 0;
};

constexpr char kPrefix[] = "docker-8:1-99";

class DeviceSetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cowlab-dm-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    home_ = tmpl;
    config_.home = home_;
    config_.device_prefix = kPrefix;
    config_.options.base_size = 1ULL << 30;
    config_.options.mkfs_args = {"-m", "0"};
    config_.library_version = "1.02.185 (2022-05-18)";
  }
  void TearDown() override { (void)sys::remove_all(home_); }

  // A new DeviceSet over the same home and pool: what a new cowlab process sees.
  DeviceSet& open_set() {
    set_ = std::make_unique<DeviceSet>(config_, pool_, block_);
    return *set_;
  }
  DeviceSet& init_set() {
    DeviceSet& s = open_set();
    auto r = s.init();
    EXPECT_TRUE(r.ok()) << r.error().message();
    return s;
  }
  std::string name(const std::string& hash) const {
    return std::string(kPrefix) + "-" + (hash.empty() ? "base" : hash);
  }
  std::string mnt(const std::string& hash) {
    std::string p = home_ + "/mnt/" + hash;
    EXPECT_TRUE(sys::mkdir_all(p, 0755).ok());
    return p;
  }
  nlohmann::json read_json(const std::string& file) {
    auto text = sys::read_file(home_ + "/metadata/" + file);
    if (!text.ok()) return nullptr;
    return nlohmann::json::parse(*text);
  }
  bool file_exists(const std::string& file) {
    return sys::lstat_if_exists(home_ + "/metadata/" + file).value_or(std::nullopt).has_value();
  }

  std::string home_;
  DeviceSetConfig config_;
  FakePool pool_;
  FakeBlock block_{pool_};
  std::unique_ptr<DeviceSet> set_;
};

TEST_F(DeviceSetTest, InitMakesTheBaseDeviceInATransaction) {
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.has_device(""));
  auto base = s.lookup("");
  ASSERT_TRUE(base.ok());
  EXPECT_EQ(base->device_id, 1u) << "the first id is next_device_id + 1";
  EXPECT_EQ(base->size, 1ULL << 30);
  EXPECT_TRUE(base->initialized);
  EXPECT_EQ(pool_.transaction_id, 1u) << "set_transaction_id closed the transaction";
  EXPECT_EQ(s.pool_transaction_id(), 1u);
  ASSERT_EQ(block_.mkfs_calls, std::vector<std::string>{"ext4 /dev/mapper/" + name("")});
  EXPECT_EQ(block_.mkfs_args, (std::vector<std::string>{"-m", "0"})) << "dm.mkfsarg reaches mkfs";
  EXPECT_TRUE(pool_.active.empty()) << "the base device is left inactive";

  auto base_file = read_json("base");
  EXPECT_EQ(base_file["device_id"], 1);
  EXPECT_EQ(base_file["transaction_id"], 1);
  EXPECT_EQ(base_file["initialized"], true);
  EXPECT_EQ(base_file["deleted"], false);
  auto set_file = read_json("deviceset-metadata");
  EXPECT_EQ(set_file["next_device_id"], 1);
  EXPECT_EQ(set_file["BaseDeviceUUID"], "uuid-1");
  EXPECT_EQ(set_file["BaseDeviceFilesystem"], "ext4");
  auto txn = read_json("transaction-metadata");
  EXPECT_EQ(txn["open_transaction_id"], 1);
  EXPECT_EQ(txn["device_hash"], "");
  EXPECT_EQ(txn["device_id"], 1);
}

TEST_F(DeviceSetTest, DmFsChoosesTheBaseFilesystemOnlyOnce) {
  config_.options.filesystem = BaseFilesystem::kXfs;
  init_set();
  EXPECT_EQ(block_.mkfs_calls, std::vector<std::string>{"xfs /dev/mapper/" + name("")});
  config_.options.filesystem = BaseFilesystem::kExt4;
  DeviceSet& again = init_set();
  EXPECT_EQ(again.base_filesystem(), "xfs")
      << "an existing base keeps its filesystem (Docker warns)";
  EXPECT_EQ(block_.mkfs_calls.size(), 1u);
}

TEST_F(DeviceSetTest, AnXfsBaseBelow300MiBIsRefusedBeforeAnythingIsMade) {
  config_.options.filesystem = BaseFilesystem::kXfs;
  config_.options.base_size = 256ULL << 20;
  auto r = open_set().init();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(r.error().message().find("dm.basesize"), std::string::npos) << r.error().message();
  EXPECT_TRUE(pool_.thins.empty());
  EXPECT_EQ(pool_.transaction_id, 0u);
  config_.options.filesystem = BaseFilesystem::kExt4;
  EXPECT_TRUE(open_set().init().ok()) << "ext4 has no such minimum";
}

TEST_F(DeviceSetTest, ReopeningVerifiesTheBaseDeviceUuid) {
  init_set();
  DeviceSet& again = init_set();
  EXPECT_TRUE(again.has_device(""));
  EXPECT_EQ(block_.mkfs_calls.size(), 1u) << "an initialised base device is not remade";
  EXPECT_TRUE(pool_.active.empty()) << "verification deactivates the base device again";

  // A pool that is not this store's: the filesystem UUID differs.
  pool_.thins[1].uuid = "someone-else";
  DeviceSet& wrong = open_set();
  auto r = wrong.init();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kCorrupt);
  EXPECT_NE(r.error().message().find("uuid-1"), std::string::npos) << r.error().message();
}

TEST_F(DeviceSetTest, LayersAreSnapshotsOfTheirParents) {
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  ASSERT_TRUE(s.add_device("b", "a", std::nullopt).ok());
  EXPECT_EQ(s.lookup("a")->device_id, 2u);
  EXPECT_EQ(s.lookup("b")->device_id, 3u);
  EXPECT_EQ(s.lookup("b")->size, 1ULL << 30) << "size defaults to the parent's";
  EXPECT_NE(std::find(pool_.log.begin(), pool_.log.end(), "create_snap 2 1"), pool_.log.end());
  EXPECT_NE(std::find(pool_.log.begin(), pool_.log.end(), "create_snap 3 2"), pool_.log.end());
  EXPECT_EQ(pool_.transaction_id, 3u) << "one transaction per device";
  EXPECT_EQ(read_json("b")["transaction_id"], 3);
  EXPECT_EQ(s.device_name("b"), name("b"));

  auto dup = s.add_device("a", "", std::nullopt);
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().kind(), ErrorKind::kExists);
  auto orphan = s.add_device("c", "nope", std::nullopt);
  ASSERT_FALSE(orphan.ok());
  EXPECT_EQ(orphan.error().kind(), ErrorKind::kNotFound);
  EXPECT_FALSE(s.has_device("c"));
}

TEST_F(DeviceSetTest, ReservedAndOverlongNamesAreRefused) {
  DeviceSet& s = init_set();
  for (const char* bad : {"base", "deviceset-metadata", "transaction-metadata"}) {
    auto r = s.add_device(bad, "", std::nullopt);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid) << bad;
  }
  auto r = s.add_device(std::string(120, 'a'), "", std::nullopt);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("127"), std::string::npos) << r.error().message();
  EXPECT_EQ(pool_.transaction_id, 1u) << "nothing reached the pool";
}

TEST_F(DeviceSetTest, AnActiveOriginIsSuspendedDuringTheSnapshot) {
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  ASSERT_TRUE(s.mount_device("a", mnt("a")).ok());
  pool_.log.clear();
  ASSERT_TRUE(s.add_device("b", "a", std::nullopt).ok());
  EXPECT_FALSE(pool_.snapshot_of_running_origin);
  EXPECT_EQ(pool_.log, (std::vector<std::string>{"suspend " + name("a"), "create_snap 3 2",
                                                 "resume " + name("a")}));
  EXPECT_FALSE(pool_.active.at(name("a")).suspended);
}

TEST_F(DeviceSetTest, IdsTakenInThePoolAreSkipped) {
  DeviceSet& s = init_set();
  pool_.thins[2] = {};  // the pool has id 2 although no metadata file says so
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  EXPECT_EQ(s.lookup("a")->device_id, 3u);
  EXPECT_EQ(read_json("transaction-metadata")["device_id"], 3) << "the transaction follows the id";
  EXPECT_FALSE(s.device_ids().is_free(3));
}

TEST_F(DeviceSetTest, CrashBeforeClosingACreateIsRolledBack) {
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  pool_.crash_in_set_transaction_id = true;
  EXPECT_THROW((void)s.add_device("b", "a", std::nullopt), Crash);
  // The thin device exists in the pool, its metadata file was written, the pool's
  // transaction id is behind the open one.
  EXPECT_TRUE(pool_.thins.count(3));
  EXPECT_TRUE(file_exists("b"));
  EXPECT_EQ(pool_.transaction_id, 2u);
  EXPECT_EQ(read_json("transaction-metadata")["open_transaction_id"], 3);

  pool_.crash_in_set_transaction_id = false;
  DeviceSet& after = init_set();
  EXPECT_FALSE(after.has_device("b"));
  EXPECT_FALSE(file_exists("b"));
  EXPECT_FALSE(pool_.thins.count(3)) << "the thin device was deleted";
  EXPECT_TRUE(after.device_ids().is_free(3)) << "its id was freed";
  EXPECT_TRUE(after.has_device("a"));
  EXPECT_EQ(pool_.transaction_id, 2u);
  // The rollback is recorded: a reader finds nothing to do (else every reader would take the
  // exclusive lock for it, every time).
  EXPECT_EQ(read_json("transaction-metadata")["open_transaction_id"], 2);
  DeviceSet reader(config_, pool_, block_);
  ASSERT_TRUE(reader.init(DriverAccess::kShared).ok());
  EXPECT_TRUE(reader.pending().empty()) << reader.pending().front();
  // The store works on: the next device gets a fresh transaction.
  ASSERT_TRUE(after.add_device("b", "a", std::nullopt).ok());
  EXPECT_EQ(pool_.transaction_id, 3u);
}

TEST_F(DeviceSetTest, CrashRightAfterTheSnapshotMessageIsRolledBack) {
  DeviceSet& s = init_set();
  pool_.crash_after_create_snap = true;
  EXPECT_THROW((void)s.add_device("a", "", std::nullopt), Crash);
  EXPECT_TRUE(pool_.thins.count(2));
  EXPECT_FALSE(file_exists("a")) << "died before registering";
  pool_.crash_after_create_snap = false;
  DeviceSet& after = init_set();
  EXPECT_FALSE(pool_.thins.count(2));
  EXPECT_TRUE(after.device_ids().is_free(2));
  EXPECT_FALSE(after.has_device("a"));
}

TEST_F(DeviceSetTest, CrashInsideADeleteFinishesTheDeletion) {
  config_.options.blkdiscard = Setting::kDisabled;
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  pool_.crash_after_delete = true;
  EXPECT_THROW((void)s.delete_device("a", DeleteMode::kAllowDeferred), Crash);
  EXPECT_TRUE(file_exists("a")) << "died before unregistering";
  pool_.crash_after_delete = false;
  DeviceSet& after = init_set();
  EXPECT_FALSE(after.has_device("a"));
  EXPECT_FALSE(file_exists("a"));
  EXPECT_TRUE(after.device_ids().is_free(2));

  // Dying after the pool closed the delete's transaction, before the record was removed (a
  // power cut in the guest crash test, docs/crash.md): the record is still there, the pool
  // has no such thin device, and deleting it again must finish (it failed with ENODATA).
  ASSERT_TRUE(after.add_device("c", "", std::nullopt).ok());
  uint32_t cid = after.lookup("c")->device_id;
  pool_.crash_after_set_transaction_id = true;
  EXPECT_THROW((void)after.delete_device("c", DeleteMode::kAllowDeferred), Crash);
  pool_.crash_after_set_transaction_id = false;
  EXPECT_FALSE(pool_.thins.count(cid));
  DeviceSet& rebooted = init_set();
  ASSERT_TRUE(rebooted.has_device("c")) << "the record outlived the pool's delete";
  auto again = rebooted.delete_device("c", DeleteMode::kAllowDeferred);
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_FALSE(rebooted.has_device("c"));
  EXPECT_FALSE(file_exists("c"));
  EXPECT_TRUE(rebooted.device_ids().is_free(cid));
  DeviceSet& after_c = init_set();
  EXPECT_FALSE(after_c.has_device("c"));

  // Dying before the delete message: the rollback deletes the device itself.
  ASSERT_TRUE(after.add_device("b", "", std::nullopt).ok());
  uint32_t id = after.lookup("b")->device_id;
  pool_.crash_before_delete = true;
  EXPECT_THROW((void)after.delete_device("b", DeleteMode::kAllowDeferred), Crash);
  pool_.crash_before_delete = false;
  DeviceSet& last = init_set();
  EXPECT_FALSE(last.has_device("b"));
  EXPECT_FALSE(pool_.thins.count(id));
  EXPECT_TRUE(last.device_ids().is_free(id));
}

TEST_F(DeviceSetTest, DeviceFilesOfUncommittedTransactionsAreIgnored) {
  init_set();
  // As left by a crash: a device file from transaction 5 of a pool at transaction 1, and no
  // open transaction record for it.
  ASSERT_TRUE(
      sys::write_file_atomic(
          home_ + "/metadata/ghost",
          R"({"device_id":9,"size":1,"transaction_id":5,"initialized":false,"deleted":false})")
          .ok());
  DeviceSet& s = init_set();
  EXPECT_FALSE(s.has_device("ghost"));
  EXPECT_TRUE(s.device_ids().is_free(9));
}

// A power cut in the middle of sys::write_file_atomic leaves its temp file behind — empty or
// cut short, since its data was never flushed (the crash runner found exactly this:
// deviceset-metadata.tmp-*, after which the store refused to start).  Recovery must never lock
// the user out: the temp files are not device records, and init removes them.
TEST_F(DeviceSetTest, TempFilesOfInterruptedMetadataWritesAreRemovedAtInit) {
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  const std::string dir = home_ + "/metadata/";
  const std::vector<std::pair<std::string, std::string>> leftovers = {
      {sys::atomic_write_temp_path(dir + kDeviceSetMetadataFile), ""},
      {sys::atomic_write_temp_path(dir + kTransactionMetadataFile), R"({"open_transac)"},
      {sys::atomic_write_temp_path(dir + "a"), R"({"device_id":2,"size":1073741824,"trans)"},
      {sys::atomic_write_temp_path(dir + "base"), std::string(4, '\0')},
  };
  for (const auto& [path, text] : leftovers) {
    ASSERT_NE(path.find(".tmp-"), std::string::npos) << path;
    auto fd = sys::open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    ASSERT_TRUE(fd.ok()) << fd.error().message();
    ASSERT_TRUE(sys::write_all(fd->get(), text.data(), text.size()).ok()) << path;
  }

  DeviceSet& after = open_set();
  auto r = after.init();
  ASSERT_TRUE(r.ok()) << "a temp file locked the store: " << r.error().message();
  EXPECT_TRUE(after.has_device("a"));
  EXPECT_TRUE(after.has_device(""));
  EXPECT_EQ(after.lookup("a")->device_id, 2u);
  for (const auto& [path, text] : leftovers)
    EXPECT_FALSE(sys::lstat_if_exists(path).value_or(std::nullopt).has_value())
        << path << " was left behind";
  // Nothing else was touched: the records and the pool are as before.
  EXPECT_EQ(read_json("a")["device_id"], 2);
  EXPECT_EQ(pool_.transaction_id, 2u);
  ASSERT_TRUE(after.add_device("b", "a", std::nullopt).ok()) << "the store works on";
}

// Every file below `dir` with its inode, size, mtime and content: what "nothing changed"
// compares.
std::map<std::string, std::string> tree_state(const std::string& dir) {
  std::map<std::string, std::string> out;
  auto entries = sys::read_dir(dir);
  if (!entries.ok()) return out;
  for (const auto& e : *entries) {
    const std::string path = dir + "/" + e.name;
    auto st = sys::lstat(path);
    if (!st.ok()) continue;
    std::string facts = std::to_string(st->st_ino) + " " + std::to_string(st->st_size) + " " +
                        std::to_string(st->st_mtim.tv_sec) + "." +
                        std::to_string(st->st_mtim.tv_nsec);
    if (S_ISDIR(st->st_mode)) {
      out[path + "/"] = facts;
      for (auto& [p, f] : tree_state(path)) out[p] = f;
    } else {
      out[path] = facts + " " + sys::read_file(path).value_or("<unreadable>");
    }
  }
  return out;
}

// Issue 11: readers share the store lock, so DeviceSet::init under it may not repair (two
// readers, or a reader and a writer, would both roll back one transaction, or both make the
// base device).  Each kind of work init does finds its way into pending() instead, and the
// exclusive init afterwards does it.
TEST_F(DeviceSetTest, ASharedInitChangesNothingAndListsTheWorkItFound) {
  config_.deferred_remove = true;
  config_.deferred_delete = true;
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  ASSERT_TRUE(s.add_device("d", "", std::nullopt).ok());
  // A device whose deletion was deferred (another opener), the opener gone since.
  const std::string mp = mnt("d");
  ASSERT_TRUE(s.mount_device("d", mp).ok());
  pool_.active[name("d")].open_count++;
  ASSERT_TRUE(s.unmount_device("d", mp).ok());
  ASSERT_TRUE(s.delete_device("d", DeleteMode::kAllowDeferred).ok());
  ASSERT_EQ(s.deleted_device_count(), 1u);
  pool_.close_opener(name("d"));
  // A create that died before closing its transaction.
  pool_.crash_in_set_transaction_id = true;
  EXPECT_THROW((void)s.add_device("c", "a", std::nullopt), Crash);
  pool_.crash_in_set_transaction_id = false;
  // A metadata write that died before its rename.
  const std::string temp = sys::atomic_write_temp_path(home_ + "/metadata/a");
  ASSERT_TRUE(sys::write_file_atomic(temp, "{").ok());
  // And a larger dm.basesize.
  config_.options.base_size_given = true;
  config_.options.base_size = 2ULL << 30;

  const auto files = tree_state(home_);
  const auto thins = pool_.thins.size();
  const auto transaction = pool_.transaction_id;
  const auto messages = pool_.log.size();
  const auto grows = block_.grow_calls.size();
  // Two readers at once, as the shared lock allows.
  DeviceSet first(config_, pool_, block_), second(config_, pool_, block_);
  for (DeviceSet* reader : {&first, &second}) {
    auto r = reader->init(DriverAccess::kShared);
    ASSERT_TRUE(r.ok()) << r.error().message();
  }
  EXPECT_EQ(tree_state(home_), files) << "a shared init changed the home";
  EXPECT_EQ(pool_.log.size(), messages)
      << "a shared init sent a pool message: " << pool_.log.back();
  EXPECT_EQ(pool_.thins.size(), thins);
  EXPECT_EQ(pool_.transaction_id, transaction);
  EXPECT_EQ(block_.grow_calls.size(), grows);
  EXPECT_TRUE(pool_.active.empty()) << "a shared init activated a device";
  for (DeviceSet* reader : {&first, &second}) {
    EXPECT_TRUE(reader->has_device("a"));
    EXPECT_FALSE(reader->has_device("c")) << "a device of an uncommitted transaction is not served";
    EXPECT_FALSE(reader->has_device("d")) << "a deleted device is not served";
    const auto& p = reader->pending();
    std::string all;
    for (const auto& line : p) all += line + "\n";
    EXPECT_EQ(p.size(), 3u) << all;
    EXPECT_NE(all.find("1 temporary metadata file(s)"), std::string::npos) << all;
    EXPECT_NE(all.find("interrupted pool transaction 6 (device c, thin id 4"), std::string::npos)
        << all;
    EXPECT_NE(all.find("base device to grow"), std::string::npos) << all;
  }

  // The exclusive init does all of it (the deferred deletion too); a shared init after it
  // finds nothing left.
  DeviceSet& writer = init_set();
  EXPECT_FALSE(sys::lstat_if_exists(temp).value_or(std::nullopt).has_value());
  EXPECT_FALSE(file_exists("c"));
  EXPECT_EQ(writer.deleted_device_count(), 0u);
  EXPECT_EQ(writer.lookup("")->size, 2ULL << 30);
  DeviceSet after(config_, pool_, block_);
  ASSERT_TRUE(after.init(DriverAccess::kShared).ok());
  EXPECT_TRUE(after.pending().empty()) << after.pending().front();
}

TEST_F(DeviceSetTest, ASharedInitOfANewStoreMakesNothing) {
  DeviceSet reader(config_, pool_, block_);
  auto r = reader.init(DriverAccess::kShared);
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(reader.pending().size(), 1u);
  EXPECT_NE(reader.pending()[0].find("no base device"), std::string::npos) << reader.pending()[0];
  EXPECT_TRUE(tree_state(home_).empty())
      << "a shared init made " << tree_state(home_).begin()->first;
  EXPECT_TRUE(pool_.log.empty()) << pool_.log.front();
  EXPECT_TRUE(pool_.thins.empty());
  // dm.basesize smaller than the base is refused under either lock, before anything.
  init_set();
  config_.options.base_size_given = true;
  config_.options.base_size = 512ULL << 20;
  DeviceSet smaller(config_, pool_, block_);
  auto bad = smaller.init(DriverAccess::kShared);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind(), ErrorKind::kInvalid) << bad.error().message();
}

TEST_F(DeviceSetTest, BaseSizeMayOnlyGrow) {
  init_set();
  config_.options.base_size_given = true;
  config_.options.base_size = 512ULL << 20;
  DeviceSet& smaller = open_set();
  auto r = smaller.init();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(r.error().message().find("cannot be smaller than"), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("dm.basesize"), std::string::npos) << r.error().message();
  EXPECT_TRUE(block_.grow_calls.empty());

  config_.options.base_size = 2ULL << 30;
  DeviceSet& larger = init_set();
  EXPECT_EQ(larger.lookup("")->size, 2ULL << 30);
  EXPECT_EQ(read_json("base")["size"], 2ULL << 30);
  ASSERT_EQ(block_.grow_calls.size(), 1u);
  EXPECT_EQ(block_.grow_calls[0], "ext4 /dev/mapper/" + name("") + " " + std::to_string(2ULL << 30))
      << "the device is activated at its new size before the filesystem grows";
  EXPECT_TRUE(pool_.active.empty());
  EXPECT_TRUE(block_.mounts.empty());

  DeviceSet& same = init_set();
  EXPECT_EQ(block_.grow_calls.size(), 1u) << "an unchanged size does not grow again";
  EXPECT_EQ(same.lookup("")->size, 2ULL << 30);
  // Without dm.basesize the recorded size stands.
  config_.options.base_size_given = false;
  config_.options.base_size = 1ULL << 30;
  EXPECT_EQ(init_set().lookup("")->size, 2ULL << 30);
}

TEST_F(DeviceSetTest, PerLayerSizeGrowsButNeverShrinks) {
  DeviceSet& s = init_set();
  auto small = s.add_device("a", "", 100ULL << 20);
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(small.error().message().find("cannot be smaller than"), std::string::npos);
  EXPECT_FALSE(s.has_device("a"));
  ASSERT_TRUE(s.add_device("a", "", 3ULL << 30).ok());
  EXPECT_EQ(s.lookup("a")->size, 3ULL << 30);
  ASSERT_EQ(block_.grow_calls.size(), 1u);
  EXPECT_EQ(block_.grow_calls[0],
            "ext4 /dev/mapper/" + name("a") + " " + std::to_string(3ULL << 30));
  EXPECT_TRUE(pool_.active.empty());
}

TEST_F(DeviceSetTest, MountAndUnmount) {
  config_.options.mount_options = "noatime";
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  const std::string mp = mnt("a");
  ASSERT_TRUE(s.mount_device("a", mp).ok());
  EXPECT_EQ(block_.mount_options[mp], "ext4:noatime");
  EXPECT_TRUE(pool_.active.count(name("a")));
  ASSERT_TRUE(s.unmount_device("a", mp).ok());
  EXPECT_FALSE(pool_.active.count(name("a"))) << "put deactivates";
  EXPECT_FALSE(sys::lstat_if_exists(mp).value_or(std::nullopt).has_value())
      << "the mount point is removed (moby#34573)";
}

// Issue 11: a reader writes nothing to the pool.  Mounted read-write, ext4 writes its
// superblock (mount count, times) and replays a journal; readers mount read-only without log
// recovery, and share the read-write superblock of a writer's mount only where the kernel
// refuses a second, read-only one (EBUSY).
TEST_F(DeviceSetTest, ReadOnlyMountsSkipLogRecoveryAndShareAReadWriteMountOnEbusy) {
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  const std::string mp = mnt("a");
  ASSERT_TRUE(sys::mkdir_all(mp, 0700).ok());
  ASSERT_TRUE(s.mount_device("a", mp, MountMode::kReadOnly).ok());
  EXPECT_EQ(block_.mount_options[mp], "ext4:noload (ro)");
  ASSERT_TRUE(s.unmount_device("a", mp).ok());
  ASSERT_TRUE(sys::mkdir_all(mp, 0700).ok());
  block_.mounted_read_write_elsewhere = true;
  ASSERT_TRUE(s.mount_device("a", mp, MountMode::kReadOnly).ok());
  EXPECT_EQ(block_.mount_options[mp], "ext4:");
  ASSERT_TRUE(s.unmount_device("a", mp).ok());
}

TEST_F(DeviceSetTest, XfsMountsWithNouuidAndAFailedMountLeavesNothingActive) {
  config_.options.filesystem = BaseFilesystem::kXfs;
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  const std::string mp = mnt("a");
  ASSERT_TRUE(s.mount_device("a", mp).ok());
  EXPECT_EQ(block_.mount_options[mp], "xfs:nouuid");
  ASSERT_TRUE(s.unmount_device("a", mp).ok());
  ASSERT_TRUE(sys::mkdir_all(mp, 0700).ok());
  ASSERT_TRUE(s.mount_device("a", mp, MountMode::kReadOnly).ok());
  EXPECT_EQ(block_.mount_options[mp], "xfs:nouuid,norecovery (ro)");
  ASSERT_TRUE(s.unmount_device("a", mp).ok());
  block_.fail_mount = true;
  auto r = s.mount_device("a", mnt("a"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find(name("a")), std::string::npos) << r.error().message();
  EXPECT_TRUE(pool_.active.empty());
}

TEST_F(DeviceSetTest, BusyRemovalIsRetried200TimesThenReported) {
  config_.options.blkdiscard = Setting::kDisabled;
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  ASSERT_TRUE(pool_.activate(name("a"), 2, 1ULL << 30).ok());
  pool_.active[name("a")].open_count = 1;  // held by a mount in another namespace
  auto r = s.delete_device("a", DeleteMode::kAllowDeferred);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kBusy) << r.error().message();
  EXPECT_EQ(block_.sleeps, 199) << "200 attempts, 199 waits between them";
  EXPECT_EQ(block_.slept_ms, 199 * 100);
  EXPECT_TRUE(s.has_device("a")) << "a failed delete keeps the device";
  EXPECT_TRUE(pool_.thins.count(2));
}

TEST_F(DeviceSetTest, TransientBusyRemovalSucceeds) {
  config_.options.blkdiscard = Setting::kDisabled;
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  const std::string mp = mnt("a");
  ASSERT_TRUE(s.mount_device("a", mp).ok());
  pool_.transient_busy = 3;
  ASSERT_TRUE(s.unmount_device("a", mp).ok());
  EXPECT_EQ(block_.sleeps, 3);
  EXPECT_FALSE(pool_.active.count(name("a")));
}

TEST_F(DeviceSetTest, DeferredDeletionWhileAnotherNamespaceHoldsTheDevice) {
  config_.deferred_remove = true;
  config_.deferred_delete = true;
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  const std::string mp = mnt("a");
  ASSERT_TRUE(s.mount_device("a", mp).ok());
  pool_.active[name("a")].open_count++;  // a copy of the mount leaked elsewhere
  ASSERT_TRUE(s.unmount_device("a", mp).ok()) << "put must not fail on a leaked mount";
  EXPECT_TRUE(pool_.active.at(name("a")).deferred_remove) << "removal was deferred";

  auto r = s.delete_device("a", DeleteMode::kAllowDeferred);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_FALSE(s.has_device("a")) << "a deferred-deleted device is gone for the driver";
  EXPECT_EQ(s.deleted_device_count(), 1u);
  EXPECT_EQ(read_json("a")["deleted"], true);
  EXPECT_FALSE(s.device_ids().is_free(2)) << "its id stays taken until the device is gone";

  // The same id again while the old device is still held: refused, not clobbered.
  auto again = s.add_device("a", "", std::nullopt);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind(), ErrorKind::kBusy);

  // The leaked mount goes away; the kernel finishes the deferred removal; the next chance
  // to retry deletes the device.
  pool_.close_opener(name("a"));
  EXPECT_FALSE(pool_.active.count(name("a")));
  DeviceSet& reopened = init_set();
  EXPECT_EQ(reopened.deleted_device_count(), 0u);
  EXPECT_FALSE(file_exists("a"));
  EXPECT_FALSE(pool_.thins.count(2));
  EXPECT_TRUE(reopened.device_ids().is_free(2));
  ASSERT_TRUE(reopened.add_device("a", "", std::nullopt).ok());
}

TEST_F(DeviceSetTest, DiscardBeforeDeleteWhenEnabled) {
  DeviceSet& s = init_set();  // loop-lvm defaults: discards on
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  ASSERT_TRUE(s.delete_device("a", DeleteMode::kAllowDeferred).ok());
  EXPECT_EQ(block_.discards, std::vector<std::string>{"/dev/mapper/" + name("a")});
  EXPECT_FALSE(pool_.thins.count(2));
  EXPECT_TRUE(pool_.active.empty()) << "the device activated for the discard is gone again";
  auto missing = s.delete_device("a", DeleteMode::kAllowDeferred);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind(), ErrorKind::kNotFound);
}

TEST_F(DeviceSetTest, MinimumFreeSpace) {
  DeviceSet& s = init_set();
  pool_.data_used_blocks = pool_.data_total_blocks - 100;  // < 10% free
  auto r = s.add_device("a", "", std::nullopt);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().err(), ENOSPC);
  EXPECT_NE(r.error().message().find("dm.min_free_space=10%"), std::string::npos)
      << r.error().message();
  EXPECT_FALSE(s.has_device("a"));
  config_.options.min_free_space_percent = 0;
  EXPECT_TRUE(init_set().add_device("a", "", std::nullopt).ok()) << "0% turns the check off";
}

TEST_F(DeviceSetTest, ThinPoolDevMustBeEmptyTheFirstTime) {
  config_.options.thin_pool_device = "fake-pool";
  pool_.data_used_blocks = 5;
  auto r = open_set().init();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(r.error().message().find("used data blocks"), std::string::npos) << r.error().message();
  pool_.data_used_blocks = 0;
  pool_.transaction_id = 4;
  r = open_set().init();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("transaction id is 4"), std::string::npos)
      << r.error().message();
}

TEST_F(DeviceSetTest, DeactivateUnusedKeepsOpenDevices) {
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  ASSERT_TRUE(s.add_device("b", "", std::nullopt).ok());
  ASSERT_TRUE(s.mount_device("a", mnt("a")).ok());
  ASSERT_TRUE(pool_.activate(name("b"), 3, 1).ok());  // left active, unused
  auto remaining = s.deactivate_unused();
  ASSERT_TRUE(remaining.ok()) << remaining.error().message();
  EXPECT_EQ(*remaining, std::vector<std::string>{name("a")});
  EXPECT_FALSE(pool_.active.count(name("b")));
}

TEST_F(DeviceSetTest, StatusRowsInDockersOrder) {
  config_.udev_sync_supported = false;
  config_.deferred_remove = true;
  config_.deferred_delete = true;
  config_.data_device = "/dev/loop0";
  config_.metadata_device = "/dev/loop1";
  config_.data_loop_file = "";  // real files would cap "available" by their filesystem
  DeviceSet& s = init_set();
  pool_.data_used_blocks = 1000;
  KeyValues rows = s.status();
  std::vector<std::string> keys;
  for (const auto& [k, v] : rows) keys.push_back(k);
  EXPECT_EQ(
      keys,
      (std::vector<std::string>{
          "Pool Name", "Pool Blocksize", "Base Device Size", "Backing Filesystem",
          "Udev Sync Supported", "Data file", "Metadata file", "Data Space Used",
          "Data Space Total", "Data Space Available", "Metadata Space Used", "Metadata Space Total",
          "Metadata Space Available", "Thin Pool Minimum Free Space", "Deferred Removal Enabled",
          "Deferred Deletion Enabled", "Deferred Deleted Device Count", "Library Version"}));
  std::map<std::string, std::string> v(rows.begin(), rows.end());
  EXPECT_EQ(v["Pool Name"], "fake-pool");
  EXPECT_EQ(v["Pool Blocksize"], "65.54 kB");
  EXPECT_EQ(v["Base Device Size"], "1.074 GB");
  EXPECT_EQ(v["Backing Filesystem"], "ext4");
  EXPECT_EQ(v["Udev Sync Supported"], "false");
  EXPECT_EQ(v["Data file"], "/dev/loop0");
  EXPECT_EQ(v["Data Space Used"], "65.54 MB");   // 1000 blocks of 64 KiB
  EXPECT_EQ(v["Data Space Total"], "1.074 GB");  // 16384 blocks
  EXPECT_EQ(v["Data Space Available"], "1.008 GB");
  EXPECT_EQ(v["Metadata Space Used"], "409.6 kB");  // 100 blocks of 4 KiB
  EXPECT_EQ(v["Metadata Space Total"], "16.78 MB");
  EXPECT_EQ(v["Metadata Space Available"], "16.37 MB");
  EXPECT_EQ(v["Thin Pool Minimum Free Space"], "107.3 MB");  // 10% of the data blocks
  EXPECT_EQ(v["Deferred Removal Enabled"], "true");
  EXPECT_EQ(v["Deferred Deletion Enabled"], "true");
  EXPECT_EQ(v["Deferred Deleted Device Count"], "0");
  EXPECT_EQ(v["Library Version"], "1.02.185 (2022-05-18)");

  // The loop rows appear only when set; the library row only when known.
  config_.data_device = config_.metadata_device = "";
  config_.library_version = "";
  KeyValues plain = init_set().status();
  EXPECT_EQ(plain.size(), 15u) << "Docker's 15 fixed rows";
  EXPECT_EQ(plain.back().first, "Deferred Deleted Device Count");
}

// dm-thin commits the pool's metadata on a plain status query (pool_status, drivers/md/
// dm-thin.c): a reader's init, `cowlab info` and size queries ask with no-flush so that a
// read-only command writes nothing to the pool; a writer's queries commit first, as Docker's.
TEST_F(DeviceSetTest, ReadersQueryThePoolWithoutACommit) {
  init_set();
  ASSERT_TRUE(set_->data_bytes_used().ok());
  (void)set_->status();
  // init, data_bytes_used and status at least: an empty list would pass the loop unchecked.
  ASSERT_GE(pool_.status_queries.size(), 3u);
  for (StatusQuery q : pool_.status_queries)
    EXPECT_EQ(q, StatusQuery::kCommitFirst) << "a writer's status query commits";

  pool_.status_queries.clear();
  DeviceSet reader(config_, pool_, block_);
  ASSERT_TRUE(reader.init(DriverAccess::kShared).ok());
  EXPECT_EQ(reader.pool_transaction_id(), pool_.transaction_id);
  ASSERT_TRUE(reader.data_bytes_used().ok());
  EXPECT_FALSE(reader.status().empty());
  ASSERT_EQ(pool_.status_queries.size(), 3u) << "init, data_bytes_used, status";
  for (StatusQuery q : pool_.status_queries)
    EXPECT_EQ(q, StatusQuery::kNoCommit) << "a reader's status query must not commit";
}

TEST_F(DeviceSetTest, StatusReadsTheLivePool) {
  config_.data_loop_file = home_ + "/data";  // a real file: "available" is capped by its fs
  DeviceSet& s = init_set();
  ASSERT_TRUE(sys::write_file_atomic(home_ + "/data", "x").ok());
  pool_.data_used_blocks = 0;
  auto before = s.status();
  pool_.data_used_blocks = 8192;
  auto after = s.status();
  auto value = [](const KeyValues& kv, const std::string& key) {
    for (const auto& [k, v] : kv)
      if (k == key) return v;
    return std::string("<missing>");
  };
  EXPECT_EQ(value(before, "Data Space Used"), "0 B");
  EXPECT_EQ(value(after, "Data Space Used"), "536.9 MB");
  EXPECT_EQ(value(after, "Data loop file"), home_ + "/data");
  auto used = s.data_bytes_used();
  ASSERT_TRUE(used.ok());
  EXPECT_EQ(*used, 8192ULL * 65536);
}

// Every reader releases its driver with cleanup() (`cowlab info --all` after each probe): under
// the shared lock other processes use the pool at the same time, and a device nobody has open
// may be one another process has just activated and is about to mount.  Before, a shared
// driver's cleanup deactivated every such device (and closed a loop-lvm pool with nothing left
// open) under them.
TEST_F(DeviceSetTest, ASharedDriversCleanupLeavesOtherProcessesDevicesAndThePoolAlone) {
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  auto rec = s.lookup("a");
  ASSERT_TRUE(rec.ok());
  for (const auto& [n, a] : std::map<std::string, FakePool::Active>(pool_.active))
    ASSERT_TRUE(pool_.deactivate(n, Deactivation::kImmediate).ok());
  // Another process activated a's device and is about to mount it.
  ASSERT_TRUE(pool_.activate(name("a"), rec->device_id, rec->size).ok());
  const auto messages = pool_.log.size();
  auto reader =
      devicemapper_driver_over({home_, home_, {}, DriverAccess::kShared}, config_, pool_, block_);
  ASSERT_TRUE(reader.ok()) << reader.error().message();
  auto c = (*reader)->cleanup();
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_TRUE(pool_.active.count(name("a")))
      << "a reader's cleanup deactivated a device another process activated";
  EXPECT_EQ(pool_.log.size(), messages) << "a reader's cleanup did: " << pool_.log.back();
  // Under the exclusive lock nobody else runs: cleanup deactivates what nobody has open.
  auto writer = devicemapper_driver_over({home_, home_, {}, DriverAccess::kExclusive}, config_,
                                         pool_, block_);
  ASSERT_TRUE(writer.ok()) << writer.error().message();
  c = (*writer)->cleanup();
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_FALSE(pool_.active.count(name("a")));
}

// Two readers of one layer (two `diff`s under the shared lock) in two processes: each mounts
// the device on a mount point of its own, and the first to finish unmounts only its own.
// Before, both used mnt/<id>: the second counted the first's mount as a reference, and the
// first's put unmounted it under the second.
TEST_F(DeviceSetTest, TwoReadersOfALayerEachUnmountOnlyTheirOwnMount) {
  config_.deferred_remove = true;  // as on every kernel since dm 4.27
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  const DriverConfig shared{home_, home_, {}, DriverAccess::kShared};
  auto first = devicemapper_driver_over(shared, config_, pool_, block_);
  auto second = devicemapper_driver_over(shared, config_, pool_, block_);
  ASSERT_TRUE(first.ok()) << first.error().message();
  ASSERT_TRUE(second.ok()) << second.error().message();
  auto p1 = (*first)->get("a", "");
  auto p2 = (*second)->get("a", "");
  ASSERT_TRUE(p1.ok()) << p1.error().message();
  ASSERT_TRUE(p2.ok()) << p2.error().message();
  const std::string dir1 = p1->substr(0, p1->rfind('/')), dir2 = p2->substr(0, p2->rfind('/'));
  EXPECT_NE(dir1, dir2) << "two readers share one mount point";
  EXPECT_NE(dir1, home_ + "/mnt/a") << "a reader mounted on the writers' mount point";
  EXPECT_EQ(pool_.active.at(name("a")).open_count, 2);
  // The same reader getting the layer again (a diff against itself) shares its own mount.
  auto again = (*first)->get("a", "");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *p1);
  ASSERT_TRUE((*first)->put("a").ok());
  EXPECT_TRUE(block_.mounts.count(dir1));
  ASSERT_TRUE((*first)->put("a").ok());
  EXPECT_FALSE(block_.mounts.count(dir1));
  EXPECT_EQ(block_.mounts.count(dir2), 1u) << "the first reader's put unmounted the second's mount";
  ASSERT_TRUE(pool_.active.count(name("a")))
      << "the device was deactivated under the second reader";
  EXPECT_FALSE(pool_.active.at(name("a")).deferred_remove)
      << "the first reader scheduled the device's removal under the second";
  ASSERT_TRUE((*second)->put("a").ok());
  EXPECT_TRUE(block_.mounts.empty());
  EXPECT_FALSE(pool_.active.count(name("a"))) << "the last reader left the device active";
  // A put without a get is refused, and changes nothing.
  auto stray = (*second)->put("a");
  EXPECT_FALSE(stray.ok());
}

// A reader's put leaves a writer's mount (a `cowlab mount` reference, mnt/<id>) and its
// device alone; a reader killed while mounted leaves its mount point, which the next exclusive
// init removes (no reader runs then), and cleanup() releases what a reader still holds.
TEST_F(DeviceSetTest, ReadersLeaveWritersMountsAndTheirLeftoversGoUnderTheExclusiveLock) {
  DeviceSet& s = init_set();
  ASSERT_TRUE(s.add_device("a", "", std::nullopt).ok());
  ASSERT_TRUE(s.add_device("b", "", std::nullopt).ok());
  const std::string persistent = mnt("a");
  ASSERT_TRUE(s.mount_device("a", persistent).ok());
  const DriverConfig shared{home_, home_, {}, DriverAccess::kShared};
  {
    auto reader = devicemapper_driver_over(shared, config_, pool_, block_);
    ASSERT_TRUE(reader.ok()) << reader.error().message();
    ASSERT_TRUE((*reader)->get("a", "").ok());
    ASSERT_TRUE((*reader)->put("a").ok());
    EXPECT_TRUE(block_.mounts.count(persistent));
    ASSERT_TRUE(pool_.active.count(name("a"))) << "a reader deactivated a writer's mounted device";
    // cleanup() releases what this reader holds.
    ASSERT_TRUE((*reader)->get("b", "").ok());
    ASSERT_TRUE((*reader)->cleanup().ok());
    EXPECT_EQ(block_.mounts.size(), 1u);
    EXPECT_FALSE(pool_.active.count(name("b")));
  }
  std::string left;
  {
    auto killed = devicemapper_driver_over(shared, config_, pool_, block_);
    ASSERT_TRUE(killed.ok());
    auto p = (*killed)->get("b", "");
    ASSERT_TRUE(p.ok());
    left = p->substr(0, p->rfind('/'));
    // Destroyed without put() or cleanup(): what a SIGKILL leaves.
  }
  ASSERT_TRUE(block_.mounts.count(left));
  auto reader = devicemapper_driver_over(shared, config_, pool_, block_);
  ASSERT_TRUE(reader.ok());
  EXPECT_TRUE(block_.mounts.count(left)) << "a shared init removed another reader's mount";
  auto writer = devicemapper_driver_over({home_, home_, {}, DriverAccess::kExclusive}, config_,
                                         pool_, block_);
  ASSERT_TRUE(writer.ok()) << writer.error().message();
  EXPECT_FALSE(block_.mounts.count(left)) << "the exclusive init left a killed reader's mount";
  EXPECT_TRUE(block_.mounts.count(persistent));
}

}  // namespace
}  // namespace cowlab::devmapper
