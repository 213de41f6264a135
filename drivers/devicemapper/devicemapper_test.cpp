// The devicemapper driver against the real kernel.  On a kernel without device-mapper (the
// development host) init must say so with kNotSupported; the DevicemapperKernel tests need
// device-mapper with dm-thin and run inside a guest (tests/vm), skipping with the reason
// elsewhere.  Each kernel test makes a store under the test temp dir in loop-lvm mode and
// asserts afterwards that no dm device, loop device or mount of it remains.
#include "devicemapper/devicemapper.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "conformance/backing_store.h"
#include "cowlab/fs.h"
#include "cowlab/layer_store.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "devicemapper/dm.h"

namespace cowlab {
namespace {

std::string make_temp_root() {
  std::string tmpl = cowlab::testing::test_tmp_base() + "/cowlab-dm-XXXXXX";
  if (!::mkdtemp(tmpl.data())) return "";
  return tmpl;
}

TEST(DevicemapperInit, BadOptionsAreInvalidWhateverTheKernel) {
  DriverConfig cfg{"/nonexistent-root", "/nonexistent-root/devicemapper", {{"dm.fs", "btrfs"}}};
  auto r = init_devicemapper(cfg);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(r.error().message().find("dm.fs=\"btrfs\""), std::string::npos) << r.error().message();
  cfg.options = {{"dm.nosuchkey", "1"}};
  r = init_devicemapper(cfg);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(r.error().message().find("dm.nosuchkey"), std::string::npos) << r.error().message();
}

TEST(DevicemapperInit, AKernelWithoutDeviceMapperIsNotSupported) {
  if (dm::probe_kernel().ok())
    GTEST_SKIP() << "this kernel has device-mapper (dm driver "
                 << dm::driver_version().value_or(dm::Version{}).text()
                 << "); the refusal is tested on kernels without it";
  std::string root = make_temp_root();
  ASSERT_FALSE(root.empty());
  DriverConfig cfg{root, root + "/devicemapper", {}};
  auto r = init_devicemapper(cfg);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kNotSupported) << r.error().message();
  EXPECT_NE(r.error().message().find("this kernel has no device-mapper"), std::string::npos)
      << r.error().message();
  EXPECT_FALSE(sys::lstat_if_exists(cfg.home).value_or(std::nullopt).has_value())
      << "a refused probe leaves no home behind";
  (void)sys::remove_all(root);
}

// ---- with a kernel -----------------------------------------------------------------------------

constexpr uint64_t kMiB = 1024 * 1024;
// The thin device id of an interrupted create (plant_interrupted_create).
constexpr uint32_t kOrphanId = 4242;

bool write_text(const std::string& path, const std::string& text) {
  return sys::write_file_atomic(path, text, 0644).ok();
}

class DevicemapperKernel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (device-mapper, loop devices, mounts)";
    auto probe = dm::probe_kernel();
    if (!probe.ok()) GTEST_SKIP() << "no device-mapper here: " << probe.error().message();
    auto thin = dm::ensure_thin_pool_target();
    if (!thin.ok() || !*thin) GTEST_SKIP() << "device-mapper has no thin-pool target here";
    root_ = make_temp_root();
    ASSERT_FALSE(root_.empty());
    home_ = root_ + "/devicemapper";
  }

  void TearDown() override {
    if (driver_) {
      auto r = driver_->cleanup();
      EXPECT_TRUE(r.ok()) << "cleanup: " << r.error().message();
      driver_.reset();
    }
    if (root_.empty()) return;
    // Nothing of the store may remain: no dm device of its prefix, no loop device over its
    // files, no mount below it.
    if (!prefix_.empty()) {
      auto names = dm::list_devices();
      ASSERT_TRUE(names.ok()) << names.error().message();
      for (const auto& n : *names)
        EXPECT_NE(n.rfind(prefix_, 0), 0u) << "dm device left behind: " << n;
    }
    EXPECT_EQ(testing::loop_devices_backed_under(root_), std::vector<std::string>{});
    EXPECT_EQ(testing::mounts_under(root_), std::vector<std::string>{});
    (void)sys::remove_all(root_);
  }

  // Small sizes as Docker's own tests (devmapper_test.go: 300/200/300 MiB).
  std::map<std::string, std::string> small(std::map<std::string, std::string> extra = {}) {
    std::map<std::string, std::string> o = {
        {"dm.loopdatasize", "1G"}, {"dm.loopmetadatasize", "64M"}, {"dm.basesize", "320M"}};
    for (auto& [k, v] : extra) o[k] = v;
    return o;
  }

  Driver* init(std::map<std::string, std::string> options) {
    auto r = init_devicemapper(DriverConfig{root_, home_, std::move(options)});
    EXPECT_TRUE(r.ok()) << r.error().message();
    if (!r.ok()) return nullptr;
    driver_ = std::move(*r);
    learn_prefix();
    return driver_.get();
  }
  // The prefix of the store's dm devices, Docker's "docker-MAJ:MIN-INO-" of its home, once the
  // home exists (TearDown checks that no device of it is left).
  void learn_prefix() {
    if (!prefix_.empty()) return;
    auto st = sys::stat(home_);
    if (st.ok())
      prefix_ = "docker-" + std::to_string(major(st->st_dev)) + ":" +
                std::to_string(minor(st->st_dev)) + "-" + std::to_string(st->st_ino) + "-";
  }
  // A devicemapper store at root_ with ext4 thin devices in *o, and through a writer of it
  // layer "l" holding /file ("content"); its cache id in *cache.  The readers' tests start
  // from it.
  void make_layer_with_file(StoreOptions* o, std::string* cache) {
    o->root = root_;
    o->driver = "devicemapper";
    o->storage_opts = small({{"dm.fs", "ext4"}});
    auto w = LayerStore::open(*o);
    ASSERT_TRUE(w.ok()) << w.error().message();
    auto l = (*w)->create_layer("l", "", LayerKind::kReadOnly);
    ASSERT_TRUE(l.ok()) << l.error().message();
    *cache = l->cache_id;
    auto p = (*w)->driver().get(*cache, "");
    ASSERT_TRUE(p.ok()) << p.error().message();
    ASSERT_TRUE(write_text(*p + "/file", "content"));
    ASSERT_TRUE((*w)->driver().put(*cache).ok());
    learn_prefix();
  }
  // What a process killed inside a create leaves: the open transaction recorded, the thin
  // device kOrphanId made in `pool`, the pool's transaction id (*tid) not advanced.
  void plant_interrupted_create(const std::string& pool, unsigned long long* tid) {
    auto status = dm::table(pool, dm::TableKind::kStatus);
    ASSERT_TRUE(status.ok()) << status.error().message();
    ASSERT_EQ(std::sscanf(status->at(0).params.c_str(), "%llu", tid), 1);
    ASSERT_TRUE(dm::message(pool, "create_thin " + std::to_string(kOrphanId)).ok());
    nlohmann::json txn = {
        {"open_transaction_id", *tid + 1}, {"device_hash", "orphan"}, {"device_id", kOrphanId}};
    ASSERT_TRUE(write_text(home_ + "/metadata/transaction-metadata", txn.dump()));
    nlohmann::json dev = {{"device_id", kOrphanId},
                          {"size", 320 * kMiB},
                          {"transaction_id", *tid + 1},
                          {"initialized", false},
                          {"deleted", false}};
    ASSERT_TRUE(write_text(home_ + "/metadata/orphan", dev.dump()));
  }
  // Cleans the driver up, as the end of a process using it would.
  void close_driver() {
    if (!driver_) return;
    auto r = driver_->cleanup();
    EXPECT_TRUE(r.ok()) << "cleanup: " << r.error().message();
    driver_.reset();
  }

  std::string status_value(const std::string& key) {
    for (const auto& [k, v] : driver_->status())
      if (k == key) return v;
    return "<no " + key + ">";
  }

  std::string root_, home_, prefix_;
  std::unique_ptr<Driver> driver_;
};

std::string read_text(const std::string& path) {
  auto r = sys::read_file(path);
  return r.ok() ? *r : "<" + r.error().message() + ">";
}

TEST_F(DevicemapperKernel, LayersAreIndependentThinSnapshots) {
  Driver* d = init(small({{"dm.fs", "ext4"}}));
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->name(), "devicemapper");
  ASSERT_TRUE(d->create("l1", "", {}).ok());
  auto p1 = d->get("l1", "");
  ASSERT_TRUE(p1.ok()) << p1.error().message();
  EXPECT_EQ(*p1, home_ + "/mnt/l1/rootfs");
  EXPECT_EQ(read_text(home_ + "/mnt/l1/id"), "l1");
  ASSERT_TRUE(write_text(*p1 + "/file", "parent"));
  // Snapshot of an active, mounted origin: it is suspended meanwhile, and the child sees
  // what the parent had.
  ASSERT_TRUE(d->create_rw("c1", "l1", {}).ok());
  auto pc = d->get("c1", "");
  ASSERT_TRUE(pc.ok()) << pc.error().message();
  EXPECT_EQ(read_text(*pc + "/file"), "parent");
  ASSERT_TRUE(write_text(*pc + "/file", "child"));
  EXPECT_EQ(read_text(*p1 + "/file"), "parent") << "the parent is unaffected by the child";
  ASSERT_TRUE(d->put("c1").ok());
  ASSERT_TRUE(d->put("l1").ok());
  EXPECT_FALSE(*sys::is_mountpoint(home_ + "/mnt/l1"));

  auto md = d->metadata("c1");
  ASSERT_TRUE(md.ok()) << md.error().message();
  ASSERT_EQ(md->size(), 3u);
  EXPECT_EQ((*md)[0].first, "DeviceId");
  EXPECT_EQ((*md)[1],
            (std::pair<std::string, std::string>{"DeviceSize", std::to_string(320 * kMiB)}));
  EXPECT_EQ((*md)[2], (std::pair<std::string, std::string>{"DeviceName", prefix_ + "c1"}));
  auto info = dm::info(prefix_ + "c1");
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->exists) << "put deactivated the device";

  ASSERT_TRUE(d->remove("c1").ok());
  ASSERT_TRUE(d->remove("l1").ok());
  EXPECT_FALSE(d->exists("l1"));
  auto again = d->remove("l1");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind(), ErrorKind::kNotFound);
}

// A process that dies with the store open (a `scenario run` worker killed at its timeout)
// leaves its thin devices and the pool active: remove_store_devices(home) takes them, the
// thin devices before the pool, and with the pool its loop devices go (TearDown checks).
TEST_F(DevicemapperKernel, RemoveStoreDevicesTakesWhatADeadProcessLeftActive) {
  auto none = remove_store_devices(root_ + "/no-such-home");
  ASSERT_TRUE(none.ok()) << none.error().message();
  EXPECT_TRUE(none->empty());

  auto child = sys::fork_child([&](int) -> int {
    auto d = init_devicemapper(DriverConfig{root_, home_, small({{"dm.fs", "ext4"}})});
    bool ok = d.ok() && (*d)->create("l1", "", {}).ok() && (*d)->create_rw("c1", "l1", {}).ok() &&
              (*d)->get("c1", "").ok();
    return ok ? 0 : 1;  // dies holding it all: no put, no cleanup
  });
  ASSERT_TRUE(child.ok()) << child.error().message();
  auto status = sys::wait_child(*child, 300 * 1000, nullptr);
  ASSERT_TRUE(status.ok()) << status.error().message();
  ASSERT_EQ(*status, std::optional<int>(0)) << "the child could not set up";
  learn_prefix();
  ASSERT_TRUE(dm::info(prefix_ + "pool")->exists);
  ASSERT_TRUE(dm::info(prefix_ + "c1")->exists);

  // Mounted, the device is in use: refused, naming it.
  auto busy = remove_store_devices(home_);
  ASSERT_FALSE(busy.ok());
  EXPECT_NE(busy.error().message().find(prefix_ + "c1"), std::string::npos)
      << busy.error().message();
  for (const auto& m : testing::mounts_under(root_)) ASSERT_TRUE(sys::umount2(m, 0).ok()) << m;

  auto removed = remove_store_devices(home_);
  ASSERT_TRUE(removed.ok()) << removed.error().message();
  ASSERT_FALSE(removed->empty());
  EXPECT_EQ(removed->back(), prefix_ + "pool") << "the pool last";
  EXPECT_NE(std::find(removed->begin(), removed->end(), prefix_ + "c1"), removed->end());
  EXPECT_FALSE(dm::info(prefix_ + "pool")->exists);
  // The pool's autoclear loop devices go once the kernel has closed them (close_pool's wait).
  for (int i = 0; i < 100 && !testing::loop_devices_backed_under(root_).empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

// Layer ids that are also the device set's own names ("base" is the base device's metadata
// file and device name) are ordinary layers for the caller.
TEST_F(DevicemapperKernel, LayerIdsThatNameTheSetsOwnFilesAreOrdinaryLayers) {
  Driver* d = init(small({{"dm.fs", "ext4"}}));
  ASSERT_NE(d, nullptr);
  for (const char* id : {"base", "deviceset-metadata", "transaction-metadata"}) {
    ASSERT_TRUE(d->create(id, "", {}).ok()) << id;
    EXPECT_TRUE(d->exists(id)) << id;
    auto p = d->get(id, "");
    ASSERT_TRUE(p.ok()) << p.error().message();
    EXPECT_TRUE(write_text(*p + "/f", id));
    ASSERT_TRUE(d->put(id).ok());
    auto md = d->metadata(id);
    ASSERT_TRUE(md.ok());
    EXPECT_EQ((*md)[2].second, prefix_ + "@" + id);
  }
  ASSERT_TRUE(d->create("child", "base", {}).ok());
  auto p = d->get("child", "");
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(read_text(*p + "/f"), "base") << "a snapshot of the layer, not of the base device";
  ASSERT_TRUE(d->put("child").ok());
  close_driver();
  // The set's own files are intact: the store opens again with every layer.
  Driver* again = init(small({{"dm.fs", "ext4"}}));
  ASSERT_NE(again, nullptr);
  for (const char* id : {"base", "deviceset-metadata", "transaction-metadata", "child"}) {
    EXPECT_TRUE(again->exists(id)) << id;
    ASSERT_TRUE(again->remove(id).ok()) << id;
  }
  EXPECT_FALSE(again->exists("@base"));
}

TEST_F(DevicemapperKernel, StatusComesFromTheLivePool) {
  Driver* d = init(small({{"dm.fs", "ext4"}}));
  ASSERT_NE(d, nullptr);
  std::vector<std::string> keys;
  for (const auto& [k, v] : d->status()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"Pool Name",
                                            "Pool Blocksize",
                                            "Base Device Size",
                                            "Backing Filesystem",
                                            "Udev Sync Supported",
                                            "Data file",
                                            "Metadata file",
                                            "Data loop file",
                                            "Metadata loop file",
                                            "Data Space Used",
                                            "Data Space Total",
                                            "Data Space Available",
                                            "Metadata Space Used",
                                            "Metadata Space Total",
                                            "Metadata Space Available",
                                            "Thin Pool Minimum Free Space",
                                            "Deferred Removal Enabled",
                                            "Deferred Deletion Enabled",
                                            "Deferred Deleted Device Count",
                                            "Library Version"}));
  EXPECT_EQ(status_value("Pool Name"), prefix_ + "pool");
  EXPECT_EQ(status_value("Pool Blocksize"), "65.54 kB");
  EXPECT_EQ(status_value("Base Device Size"), "335.5 MB");
  EXPECT_EQ(status_value("Backing Filesystem"), "ext4");
  EXPECT_EQ(status_value("Data Space Total"), "1.074 GB");
  EXPECT_EQ(status_value("Metadata Space Total"), "67.11 MB");
  EXPECT_EQ(status_value("Data loop file"), home_ + "/devicemapper/data");
  EXPECT_EQ(status_value("Metadata loop file"), home_ + "/devicemapper/metadata");
  EXPECT_EQ(status_value("Data file").rfind("/dev/loop", 0), 0u) << status_value("Data file");
  EXPECT_EQ(status_value("Library Version"), dm::library_version());

  // Block-level copy-on-write: a 1-byte write into a 32 MiB file of a snapshot costs one
  // pool block, not the file.
  ASSERT_TRUE(d->create("img", "", {}).ok());
  {
    auto p = d->get("img", "");
    ASSERT_TRUE(p.ok()) << p.error().message();
    std::string blob(32 * kMiB, 'x');
    ASSERT_TRUE(write_text(*p + "/big", blob));
    ASSERT_TRUE(d->put("img").ok());
  }
  ASSERT_TRUE(d->create_rw("ctr", "img", {}).ok());
  auto before = d->space_used();
  ASSERT_TRUE(before.ok()) << before.error().message();
  {
    auto p = d->get("ctr", "");
    ASSERT_TRUE(p.ok()) << p.error().message();
    auto fd = sys::open(*p + "/big", O_WRONLY);
    ASSERT_TRUE(fd.ok());
    ASSERT_EQ(::pwrite(fd->get(), "y", 1, 16 * kMiB), 1);
    ASSERT_TRUE(sys::fsync(fd->get()).ok());
    ASSERT_TRUE(d->put("ctr").ok());
  }
  auto after = d->space_used();
  ASSERT_TRUE(after.ok());
  const uint64_t grew = *after - *before;
  std::cout << "[   NOTE   ] 1-byte write into a 32 MiB file of a snapshot: pool grew by " << grew
            << " bytes\n";
  EXPECT_LE(grew, 4 * 65536u) << "block-level CoW copies pool blocks, not the 32 MiB file";
  ASSERT_TRUE(d->remove("ctr").ok());
  ASSERT_TRUE(d->remove("img").ok());
}

TEST_F(DevicemapperKernel, AnInterruptedTransactionIsRolledBackAtStart) {
  Driver* d = init(small({{"dm.fs", "ext4"}}));
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->create("kept", "", {}).ok());
  const std::string pool = prefix_ + "pool";
  close_driver();
  // What a process that died inside a create leaves: the open transaction recorded, the thin
  // device made in the pool, the pool's transaction id not advanced.
  auto gone_pool = dm::info(pool);
  ASSERT_TRUE(gone_pool.ok()) << gone_pool.error().message();
  EXPECT_FALSE(gone_pool->exists) << "cleanup removed the pool";
  auto no_status = dm::table(pool, dm::TableKind::kStatus);
  ASSERT_FALSE(no_status.ok());
  EXPECT_EQ(no_status.error().kind(), ErrorKind::kNotFound) << no_status.error().message();
  Driver* reopened = init(small({{"dm.fs", "ext4"}}));
  ASSERT_NE(reopened, nullptr);
  unsigned long long tid = 0;
  ASSERT_NO_FATAL_FAILURE(plant_interrupted_create(pool, &tid));
  close_driver();

  Driver* recovered = init(small({{"dm.fs", "ext4"}}));
  ASSERT_NE(recovered, nullptr);
  EXPECT_FALSE(recovered->exists("orphan"));
  EXPECT_TRUE(recovered->exists("kept"));
  EXPECT_FALSE(sys::lstat_if_exists(home_ + "/metadata/orphan").value_or(std::nullopt).has_value());
  // The thin device is gone from the pool: deleting it again finds nothing (ENODATA)...
  auto gone = dm::message(pool, "delete " + std::to_string(kOrphanId));
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().err(), ENODATA) << gone.error().message();
  // ...and the store carries on with fresh transactions.
  ASSERT_TRUE(recovered->create("next", "kept", {}).ok());
  ASSERT_TRUE(recovered->remove("next").ok());
  ASSERT_TRUE(recovered->remove("kept").ok());
}

TEST_F(DevicemapperKernel, BaseSizeOnlyGrowsAndLayersMayBeLarger) {
  Driver* d = init(small({{"dm.fs", "ext4"}}));
  ASSERT_NE(d, nullptr);
  close_driver();
  auto smaller = init_devicemapper(DriverConfig{root_, home_, small({{"dm.basesize", "256M"}})});
  ASSERT_FALSE(smaller.ok());
  EXPECT_EQ(smaller.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(smaller.error().message().find("cannot be smaller than"), std::string::npos)
      << smaller.error().message();
  EXPECT_TRUE(dm::list_devices().ok());

  Driver* grown = init(small({{"dm.basesize", "640M"}}));
  ASSERT_NE(grown, nullptr);
  EXPECT_EQ(status_value("Base Device Size"), "671.1 MB");
  ASSERT_TRUE(grown->create("l", "", {}).ok());
  CreateOpts big;
  big.storage_opt["size"] = "1G";
  ASSERT_TRUE(grown->create_rw("c", "l", big).ok());
  CreateOpts tiny;
  tiny.storage_opt["size"] = "50M";
  auto refused = grown->create_rw("t", "l", tiny);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("cannot be smaller than"), std::string::npos);
  for (auto [id, expect] :
       {std::pair<const char*, uint64_t>{"l", 640 * kMiB}, {"c", 1024 * kMiB}}) {
    auto p = grown->get(id, "");
    ASSERT_TRUE(p.ok()) << p.error().message();
    auto st = sys::statfs(*p);
    ASSERT_TRUE(st.ok());
    uint64_t fs_bytes = static_cast<uint64_t>(st->f_blocks) * st->f_bsize;
    EXPECT_GT(fs_bytes, expect * 9 / 10) << id << ": the filesystem was grown";
    EXPECT_LE(fs_bytes, expect) << id;
    ASSERT_TRUE(grown->put(id).ok());
  }
  ASSERT_TRUE(grown->remove("c").ok());
  ASSERT_TRUE(grown->remove("l").ok());
}

TEST_F(DevicemapperKernel, LoopFilesGrowButNeverShrink) {
  // Docker's testChangeLoopBackSize: after re-init the pool's totals follow a larger size and
  // ignore a smaller one.
  ASSERT_NE(init(small({{"dm.fs", "ext4"}})), nullptr);
  close_driver();
  ASSERT_NE(init(small(
                {{"dm.fs", "ext4"}, {"dm.loopdatasize", "1088M"}, {"dm.loopmetadatasize", "80M"}})),
            nullptr);
  EXPECT_EQ(status_value("Data Space Total"), human_size(1088 * kMiB));
  EXPECT_EQ(status_value("Metadata Space Total"), human_size(80 * kMiB));
  close_driver();
  ASSERT_NE(init(small({{"dm.fs", "ext4"}, {"dm.loopdatasize", "1G"}})), nullptr);
  EXPECT_EQ(status_value("Data Space Total"), human_size(1088 * kMiB));
}

TEST_F(DevicemapperKernel, XfsBaseMountsSnapshotsWithNouuid) {
  if (!sys::filesystem_supported("xfs").value_or(false)) {
    (void)sys::run({"modprobe", "xfs"}, nullptr);
    if (!sys::filesystem_supported("xfs").value_or(false)) GTEST_SKIP() << "no xfs in this kernel";
  }
  Driver* d = init(small({{"dm.fs", "xfs"}}));
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(status_value("Backing Filesystem"), "xfs");
  ASSERT_TRUE(d->create("a", "", {}).ok());
  ASSERT_TRUE(d->create("b", "a", {}).ok());
  auto pa = d->get("a", "");
  ASSERT_TRUE(pa.ok()) << pa.error().message();
  auto pb = d->get("b", "");
  ASSERT_TRUE(pb.ok()) << "two snapshots with one UUID mounted at once: " << pb.error().message();
  auto mi = sys::mountinfo();
  ASSERT_TRUE(mi.ok());
  bool nouuid = false;
  for (const auto& m : *mi)
    if (m.mount_point == home_ + "/mnt/b")
      nouuid = m.super_options.find("nouuid") != std::string::npos;
  EXPECT_TRUE(nouuid);
  ASSERT_TRUE(d->put("b").ok());
  ASSERT_TRUE(d->put("a").ok());
  ASSERT_TRUE(d->remove("b").ok());
  ASSERT_TRUE(d->remove("a").ok());
}

// dm.thinpooldev: a pool made outside cowlab (here with libdevmapper over two loop devices,
// as an administrator would with lvm or dmsetup) is used as it is, never removed, and must be
// empty the first time.
TEST_F(DevicemapperKernel, AnExistingThinPoolIsUsedAndKept) {
  const std::string files = root_ + "/pool-files";
  ASSERT_TRUE(sys::mkdir_all(files, 0700).ok());
  auto make_file = [&](const std::string& path, uint64_t size) {
    auto fd = sys::open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    return fd.ok() && sys::ftruncate(fd->get(), static_cast<off_t>(size)).ok();
  };
  ASSERT_TRUE(make_file(files + "/data", 1024 * kMiB));
  ASSERT_TRUE(make_file(files + "/meta", 64 * kMiB));
  auto data = sys::loop_attach(files + "/data", sys::LoopFlags::kAutoclear);
  ASSERT_TRUE(data.ok()) << data.error().message();
  auto meta = sys::loop_attach(files + "/meta", sys::LoopFlags::kAutoclear);
  ASSERT_TRUE(meta.ok()) << meta.error().message();
  auto dev = [](const sys::LoopAttachment& a) {
    auto st = sys::fstat(a.fd.get());
    return std::to_string(major(st->st_rdev)) + ":" + std::to_string(minor(st->st_rdev));
  };
  const std::string pool = "cowlab-test-pool-" + std::to_string(::getpid());
  ASSERT_TRUE(
      dm::create(pool, {{0, 1024 * kMiB / 512, "thin-pool",
                         dev(*meta) + " " + dev(*data) + " 128 32768 1 skip_block_zeroing"}})
          .ok());
  data->fd.reset();
  meta->fd.reset();

  Driver* d =
      init({{"dm.thinpooldev", "/dev/mapper/" + pool}, {"dm.basesize", "320M"}, {"dm.fs", "ext4"}});
  if (d) {
    EXPECT_EQ(status_value("Pool Name"), pool);
    for (const auto& [k, v] : d->status())
      EXPECT_EQ(k.find("loop"), std::string::npos) << "no loop rows with a real pool: " << k;
    EXPECT_EQ(status_value("Data file"), "<no Data file>");
    ASSERT_TRUE(d->create("l", "", {}).ok());
    auto p = d->get("l", "");
    ASSERT_TRUE(p.ok()) << p.error().message();
    EXPECT_TRUE(write_text(*p + "/f", "on the admin's pool"));
    ASSERT_TRUE(d->put("l").ok());
    ASSERT_TRUE(d->remove("l").ok());
    close_driver();
    auto kept = dm::info(pool);
    ASSERT_TRUE(kept.ok());
    EXPECT_TRUE(kept->exists) << "cleanup leaves a pool it did not make";
    // A second store on the same, now used, pool is refused.
    auto other = init_devicemapper(
        DriverConfig{root_ + "/other", root_ + "/other/devicemapper", {{"dm.thinpooldev", pool}}});
    ASSERT_FALSE(other.ok());
    EXPECT_NE(other.error().message().find("unable to take ownership"), std::string::npos)
        << other.error().message();
  }
  ASSERT_TRUE(dm::remove(pool, dm::Removal::kImmediate).ok());
  for (int i = 0; i < 100 && !testing::loop_devices_backed_under(files).empty(); ++i)
    ::usleep(50 * 1000);
}

// moby#34573 / moby#27381: a copy of the mount in another mount namespace must not make Put
// or Remove fail, and nothing may leak once the other namespace is gone.
TEST_F(DevicemapperKernel, AMountLeakedIntoAnotherNamespaceDoesNotBlockPutOrRemove) {
  Driver* d = init(small({{"dm.fs", "ext4"}}));
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->create("img", "", {}).ok());
  ASSERT_TRUE(d->create_rw("ctr", "img", {}).ok());
  auto p = d->get("ctr", "");
  ASSERT_TRUE(p.ok()) << p.error().message();
  auto holder = sys::spawn_mount_holder();
  ASSERT_TRUE(holder.ok()) << holder.error().message();
  auto start = std::chrono::steady_clock::now();
  auto put = d->put("ctr");
  EXPECT_TRUE(put.ok()) << put.error().message();
  auto removed = d->remove("ctr");
  EXPECT_TRUE(removed.ok()) << removed.error().message();
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  std::cout << "[   NOTE   ] put+remove with a leaked mount: " << took.count() << " ms, deferred "
            << "deleted devices: " << status_value("Deferred Deleted Device Count") << "\n";
  EXPECT_FALSE(d->exists("ctr"));
  ASSERT_TRUE(sys::kill_child(*holder).ok());
  ASSERT_TRUE(d->remove("img").ok());
  // A later operation (here the removal of img) retried any deferred deletion; cleanup in
  // TearDown then finds every device gone or removable.
  EXPECT_EQ(status_value("Deferred Deleted Device Count"), "0");
}

// Every file below `dir` with its size, mtime and content — but the loop-lvm files
// (devicemapper/devicemapper/{data,metadata}): the kernel writes those on its own (dm-thin's
// periodic metadata commit); the pool's transaction id stands for them.
std::map<std::string, std::string> tree_state(const std::string& dir) {
  std::map<std::string, std::string> out;
  auto entries = sys::read_dir(dir);
  if (!entries.ok()) return out;
  for (const auto& e : *entries) {
    const std::string path = dir + "/" + e.name;
    if (path.size() > 26 && path.compare(path.size() - 26, 26, "/devicemapper/devicemapper") == 0)
      continue;
    auto st = sys::lstat(path);
    if (!st.ok()) continue;
    std::string facts = std::to_string(st->st_size) + " " + std::to_string(st->st_mtim.tv_sec) +
                        "." + std::to_string(st->st_mtim.tv_nsec);
    if (S_ISDIR(st->st_mode)) {
      out[path + "/"] = facts;
      for (auto& [p, f] : tree_state(path)) out[p] = f;
    } else if (S_ISREG(st->st_mode) && st->st_size < (1 << 20)) {
      out[path] = facts + " " + sys::read_file(path).value_or("<unreadable>");
    } else {
      out[path] = facts;
    }
  }
  return out;
}

// Issue 11: a reader (the store's shared lock) must not repair the device set — two readers,
// or a reader and a writer, would both roll back one transaction.  Opened shared, the driver
// lists an interrupted transaction instead (Driver::pending_recovery): on a read-only store
// the reader serves the layers and reports it, on a writable one it takes the lock exclusive
// and the driver's exclusive init rolls it back.
TEST_F(DevicemapperKernel, ReadersLeaveTheDeviceSetToTheExclusiveLock) {
  StoreOptions o;
  o.root = root_;
  o.driver = "devicemapper";
  o.storage_opts = small({{"dm.fs", "ext4"}});
  std::string pool;
  {
    auto s = LayerStore::open(o);
    ASSERT_TRUE(s.ok()) << s.error().message();
    ASSERT_TRUE((*s)->create_layer("kept", "", LayerKind::kReadOnly).ok());
    learn_prefix();
    ASSERT_FALSE(prefix_.empty());
    pool = prefix_ + "pool";
  }
  // What a writer killed inside a create leaves (as in AnInterruptedTransactionIsRolledBack-
  // AtStart).
  unsigned long long tid = 0;
  ASSERT_NO_FATAL_FAILURE(plant_interrupted_create(pool, &tid));
  auto pool_tid = [&] {
    auto t = dm::table(pool, dm::TableKind::kStatus);
    unsigned long long v = 0;
    if (t.ok()) std::sscanf(t->at(0).params.c_str(), "%llu", &v);
    return v;
  };
  const auto before = tree_state(root_);

  // Read-only store: nothing may change, and the reader still serves the layers.
  ASSERT_TRUE(sys::mount(root_, root_, "", MS_BIND, "").ok());
  ASSERT_TRUE(sys::mount("", root_, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "").ok());
  {
    o.lock = LockMode::kShared;
    auto r = LayerStore::open(o);
    EXPECT_TRUE(r.ok()) << "a reader on a read-only store: " << r.error().message();
    if (r.ok()) {
      std::string lines;
      for (const auto& l : (*r)->not_recovered()) lines += l + "\n";
      EXPECT_NE(lines.find("devicemapper: interrupted pool transaction " + std::to_string(tid + 1) +
                           " (device orphan"),
                std::string::npos)
          << lines;
      EXPECT_TRUE((*r)->exists("kept"));
      EXPECT_TRUE((*r)->driver().exists((*r)->layer("kept")->cache_id));
      EXPECT_FALSE((*r)->driver().exists("orphan"));
    }
  }
  EXPECT_TRUE(sys::umount2(root_, MNT_DETACH).ok());
  EXPECT_EQ(tree_state(root_), before) << "a reader changed the read-only store";
  EXPECT_EQ(pool_tid(), tid) << "a reader sent a pool message";

  // Writable store: the reader upgrades, the exclusive init rolls the transaction back, and the
  // reader is back to shared (a second reader gets in at once).
  {
    auto r = LayerStore::open(o);
    ASSERT_TRUE(r.ok()) << r.error().message();
    std::string lines;
    for (const auto& l : (*r)->recovered()) lines += l + "\n";
    EXPECT_NE(lines.find("devicemapper: interrupted pool transaction"), std::string::npos) << lines;
    EXPECT_TRUE((*r)->not_recovered().empty());
    EXPECT_FALSE(sys::lstat_if_exists(home_ + "/metadata/orphan").value_or(std::nullopt));
    auto gone = dm::message(pool, "delete " + std::to_string(kOrphanId));
    ASSERT_FALSE(gone.ok()) << "the interrupted transaction's thin device is still in the pool";
    EXPECT_EQ(gone.error().err(), ENODATA) << gone.error().message();
    StoreOptions again = o;
    again.lock_timeout_s = 0;
    auto second = LayerStore::open(again);
    ASSERT_TRUE(second.ok()) << "the recovering reader kept the lock exclusive: "
                             << second.error().message();
    EXPECT_TRUE((*second)->recovered().empty());
    EXPECT_TRUE((*second)->exists("kept"));
  }
  o.lock = LockMode::kExclusive;
  auto w = LayerStore::open(o);
  ASSERT_TRUE(w.ok()) << w.error().message();
  // Driver::list: the layers' devices, not the base device, not the rolled-back one.
  auto listed = (*w)->driver().list();
  ASSERT_TRUE(listed.ok()) << listed.error().message();
  EXPECT_EQ(*listed, std::vector<std::string>{(*w)->layer("kept")->cache_id});
  ASSERT_TRUE((*w)->delete_layer("kept").ok());
  auto c = (*w)->driver().cleanup();
  EXPECT_TRUE(c.ok()) << c.error().message();
}

// A reader of a store whose thin pool is not active (a new store, or after a reboot) does not
// set it up under the shared lock: it upgrades, and the exclusive init activates the pool.
TEST_F(DevicemapperKernel, AReaderActivatesTheThinPoolOnlyUnderTheExclusiveLock) {
  StoreOptions o;
  o.root = root_;
  o.driver = "devicemapper";
  o.storage_opts = small({{"dm.fs", "ext4"}});
  o.lock = LockMode::kShared;
  ASSERT_TRUE(sys::mkdir_all(root_ + "/layers", 0700).ok());
  ASSERT_TRUE(write_text(root_ + "/lock", ""));  // what a read-only store has
  ASSERT_TRUE(sys::mount(root_, root_, "", MS_BIND, "").ok());
  ASSERT_TRUE(sys::mount("", root_, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "").ok());
  {
    auto r = LayerStore::open(o);
    EXPECT_TRUE(r.ok()) << r.error().message();
    if (r.ok()) {
      ASSERT_EQ((*r)->not_recovered().size(), 1u);
      EXPECT_NE((*r)->not_recovered()[0].find("devicemapper: no home"), std::string::npos)
          << (*r)->not_recovered()[0];
      EXPECT_TRUE((*r)->layers()->empty());
      auto d = (*r)->driver().get("x", "");
      ASSERT_FALSE(d.ok());
      EXPECT_NE(d.error().message().find("thin pool is not set up"), std::string::npos)
          << d.error().message();
    }
  }
  EXPECT_TRUE(sys::umount2(root_, MNT_DETACH).ok());
  auto r = LayerStore::open(o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  auto st = sys::stat(home_);
  ASSERT_TRUE(st.ok()) << "the upgraded reader did not set the store up";
  prefix_ = "docker-" + std::to_string(major(st->st_dev)) + ":" +
            std::to_string(minor(st->st_dev)) + "-" + std::to_string(st->st_ino) + "-";
  EXPECT_TRUE(dm::info(prefix_ + "pool")->exists);
  EXPECT_TRUE((*r)->not_recovered().empty());
  EXPECT_TRUE((*r)->driver().pending_recovery().empty());
  // A reader's cleanup() leaves the pool to the other processes that may use it; closing it is
  // a writer's (the exclusive lock).
  auto c = (*r)->driver().cleanup();
  EXPECT_TRUE(c.ok()) << c.error().message();
  EXPECT_TRUE(dm::info(prefix_ + "pool")->exists) << "a reader's cleanup closed the pool";
  r->reset();
  o.lock = LockMode::kExclusive;
  auto w = LayerStore::open(o);
  ASSERT_TRUE(w.ok()) << w.error().message();
  c = (*w)->driver().cleanup();
  EXPECT_TRUE(c.ok()) << c.error().message();
}

// Two readers of one layer under the shared lock (two `diff`s at once): the first to finish
// must not unmount the layer under the second.  Before, both mounted on mnt/<id>, the second
// counted the first's mount as a reference, and the first's put unmounted it.  A writer's
// mount (`cowlab mount`) is left alone by readers, and a killed reader's mount point is
// removed by the next writer.
TEST_F(DevicemapperKernel, TwoReadersOfALayerEachKeepTheirOwnMount) {
  StoreOptions o;
  std::string cache;
  ASSERT_NO_FATAL_FAILURE(make_layer_with_file(&o, &cache));
  o.lock = LockMode::kShared;
  auto first = LayerStore::open(o);
  auto second = LayerStore::open(o);
  ASSERT_TRUE(first.ok()) << first.error().message();
  ASSERT_TRUE(second.ok()) << second.error().message();
  auto p1 = (*first)->driver().get(cache, "");
  auto p2 = (*second)->driver().get(cache, "");
  ASSERT_TRUE(p1.ok()) << p1.error().message();
  ASSERT_TRUE(p2.ok()) << p2.error().message();
  EXPECT_NE(*p1, *p2);
  ASSERT_TRUE((*first)->driver().put(cache).ok());
  EXPECT_EQ(read_text(*p2 + "/file"), "content") << "the first reader unmounted the second's";
  EXPECT_TRUE(dm::info(prefix_ + cache)->exists);
  ASSERT_TRUE((*second)->driver().put(cache).ok());
  EXPECT_FALSE(dm::info(prefix_ + cache)->exists) << "the last reader left the device active";
  EXPECT_EQ(testing::mounts_under(root_), std::vector<std::string>{});
  // A reader that never puts (killed): its mount stays until a writer opens the store.
  auto p3 = (*first)->driver().get(cache, "");
  ASSERT_TRUE(p3.ok()) << p3.error().message();
  first->reset();
  second->reset();
  EXPECT_EQ(testing::mounts_under(root_).size(), 1u);
  o.lock = LockMode::kExclusive;
  auto w = LayerStore::open(o);
  ASSERT_TRUE(w.ok()) << w.error().message();
  EXPECT_EQ(testing::mounts_under(root_), std::vector<std::string>{})
      << "the writer left a killed reader's mount";
  ASSERT_TRUE((*w)->delete_layer("l").ok());
  auto c = (*w)->driver().cleanup();
  EXPECT_TRUE(c.ok()) << c.error().message();
}

// Issue 11: read-only commands work on a read-only store.  A reader mounts a layer on a
// directory of its own, and under the shared lock that was readers/<id>.<pid>.<random> in the
// home — which a read-only store cannot make: `diff` and `changes` failed ("mkdir
// .../devicemapper/readers...: EROFS").  There a reader mounts in a private mount namespace
// instead (see get_private): the mount is not seen outside the reader, and a reader killed
// while mounted leaves nothing mounted and the device open nowhere.  Each reader runs in a
// child process, as each `cowlab diff` is a process of its own (it changes its mount
// namespace).
TEST_F(DevicemapperKernel, ReadersOfAReadOnlyStoreMountLayersPrivately) {
  StoreOptions o;
  std::string cache;
  ASSERT_NO_FATAL_FAILURE(make_layer_with_file(&o, &cache));
  const std::string device = prefix_ + cache;
  const auto before = tree_state(root_);
  // The pool's data and metadata files, which tree_state leaves out; their mtimes move with
  // every write through the attached loop devices.  A reader mounting read-write wrote into
  // the data file (ext4's superblock at mount and unmount).  A reader's plain status query
  // wrote the metadata file: dm-thin commits its metadata on every status query without
  // DM_NOFLUSH_FLAG (pool_status, drivers/md/dm-thin.c) — measured with dmsetup on an idle
  // pool: plain `status` moved the file's mtime each time, `status --noflush`, thin
  // activation, a ro,noload mount, umount and thin removal did not.
  const std::vector<std::string> pool_files = {root_ + "/devicemapper/devicemapper/data",
                                               root_ + "/devicemapper/devicemapper/metadata"};
  auto pool_mtimes = [&] {
    std::string text;
    for (const auto& f : pool_files) {
      auto st = sys::lstat(f);
      text +=
          f + ": " +
          (st.ok() ? std::to_string(st->st_mtim.tv_sec) + "." + std::to_string(st->st_mtim.tv_nsec)
                   : "missing: " + st.error().message()) +
          "\n";
    }
    return text;
  };
  // The writer's last writes reach the files through the loop devices' workers, a little
  // after its unmount returned: wait until they stay still.
  std::string mtimes_before = pool_mtimes();
  for (int i = 0; i < 10; ++i) {
    ::usleep(1500 * 1000);
    const std::string now = pool_mtimes();
    if (now == mtimes_before) break;
    mtimes_before = now;
  }
  ASSERT_EQ(mtimes_before.find("missing"), std::string::npos) << mtimes_before;
  ASSERT_TRUE(sys::mount(root_, root_, "", MS_BIND, "").ok());
  ASSERT_TRUE(sys::mount("", root_, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "").ok());
  struct Unmount {
    std::string path;
    ~Unmount() { (void)sys::umount2(path, MNT_DETACH); }
  } unmount{root_};

  // `put` false: the reader ends without releasing its mount (a killed `cowlab diff`).
  auto reader = [&](bool put) -> std::pair<std::optional<int>, std::string> {
    auto child = sys::fork_child([&](int out_fd) -> int {
      auto fail = [&](const std::string& why) {
        (void)!::write(out_fd, why.data(), why.size());
        return 1;
      };
      StoreOptions ro = o;
      ro.lock = LockMode::kShared;
      auto s = LayerStore::open(ro);
      if (!s.ok()) return fail("open: " + s.error().message());
      auto all = (*s)->layers();
      if (!all.ok() || all->size() != 1) return fail("layers: not the one layer");
      if ((*s)->driver().status().empty()) return fail("info: no status rows");
      StringWriter out;
      if (auto d = (*s)->diff("l", std::nullopt, out); !d.ok())
        return fail("diff: " + d.error().message());
      if (out.data().find("content") == std::string::npos) return fail("diff: no file content");
      auto ch = (*s)->changes("l", std::nullopt);
      if (!ch.ok()) return fail("changes: " + ch.error().message());
      if (ch->size() != 1 || ch->at(0).path != "/file") return fail("changes: not A /file");
      auto m = (*s)->driver().get(cache, "");
      if (!m.ok()) return fail("get: " + m.error().message());
      if (sys::read_file(*m + "/file").value_or("") != "content") return fail("get: no content");
      // Nothing is written outside the store root, not even an empty mount point.
      if (m->rfind(root_ + "/", 0) != 0) return fail("get: mounted outside the store: " + *m);
      if (put) {
        if (auto r = (*s)->driver().put(cache); !r.ok()) return fail("put: " + r.error().message());
      } else {
        ::_exit(0);  // killed: no put, no cleanup
      }
      return 0;
    });
    if (!child.ok()) return {std::nullopt, child.error().message()};
    std::string output;
    auto rc = sys::wait_child(*child, 300000, &output);
    if (!rc.ok()) return {std::nullopt, rc.error().message()};
    return {*rc, output};
  };

  // Only the read-only bind mount of the root itself: nothing of the readers.
  const std::vector<std::string> just_the_root{root_};
  auto [rc, why] = reader(true);
  EXPECT_EQ(rc, std::optional<int>(0)) << "a reader of the read-only store failed: " << why;
  EXPECT_EQ(testing::mounts_under(root_), just_the_root);
  EXPECT_FALSE(dm::info(device)->exists) << "the reader left the layer's device active";

  auto [killed_rc, killed_why] = reader(false);
  EXPECT_EQ(killed_rc, std::optional<int>(0)) << killed_why;
  EXPECT_EQ(testing::mounts_under(root_), just_the_root);
  auto info = dm::info(device);
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_EQ(info->open_count, 0) << "a killed reader's mount still holds the device open";

  EXPECT_EQ(pool_mtimes(), mtimes_before) << "a reader of the read-only store wrote into its pool";
  EXPECT_TRUE(sys::umount2(root_, MNT_DETACH).ok());
  EXPECT_EQ(tree_state(root_), before) << "a reader changed the read-only store";

  o.lock = LockMode::kExclusive;
  auto w = LayerStore::open(o);
  ASSERT_TRUE(w.ok()) << w.error().message();
  ASSERT_TRUE((*w)->delete_layer("l").ok());
  auto c = (*w)->driver().cleanup();
  EXPECT_TRUE(c.ok()) << c.error().message();
}

}  // namespace
}  // namespace cowlab
