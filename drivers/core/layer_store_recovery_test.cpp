// The layer store's intent/commit scheme (issue 11): every mutating step killed at each named
// point (COWLAB_TEST_KILL_AT) and recovered; quarantine of damaged metadata; temp files;
// mounts reconciled with mountinfo; the recorded driver; shared/exclusive locking with a
// timeout; a read-only store; a full filesystem.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "../tests/conformance/backing_store.h"
#include "aufs/aufs.h"
#include "core/tar_test_util.h"
#include "cowlab/digest.h"
#include "cowlab/layer_store.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"

namespace cowlab {
namespace {

using testing::killed_at;

using testing::TempRoot;

std::unique_ptr<LayerStore> open_store(const std::string& root, const std::string& driver,
                                       LockMode lock = LockMode::kExclusive) {
  StoreOptions o;
  o.root = root;
  o.driver = driver;
  o.lock = lock;
  auto s = LayerStore::open(o);
  EXPECT_TRUE(s.ok()) << s.error().message();
  return s.ok() ? std::move(*s) : nullptr;
}

std::string tar_of(const std::string& name, const std::string& data) {
  testing::TarEntry e;
  e.name = name;
  e.data = data;
  return testing::make_tar({e});
}

std::string file_in(const std::string& path) {
  auto t = sys::read_file(path);
  return t.ok() ? *t : "<" + t.error().message() + ">";
}

bool has_line(const std::vector<std::string>& lines, const std::string& needle) {
  for (const auto& l : lines)
    if (l.find(needle) != std::string::npos) return true;
  return false;
}

// The store root of a test for every driver that runs on the host: a temp directory on the
// host's filesystem (vfs, overlay) or a fresh loop-mounted btrfs (btrfs), taken apart after.
class HostRoot {
 public:
  explicit HostRoot(const std::string& driver) {
    if (driver != "btrfs") {
      path_ = temp_.path() + "/store";
      return;
    }
    auto b = testing::make_backing_store("btrfs-loop");
    if (!b.ok()) {
      error_ = b.error().message();
      return;
    }
    backing_ = std::move(*b);
    auto r = backing_->set_up();
    if (!r.ok()) {
      error_ = r.error().message();
      backing_.reset();
      return;
    }
    fs_ = *r;
    path_ = *r + "/store";
  }
  ~HostRoot() {
    if (!backing_) return;
    auto down = backing_->tear_down();
    EXPECT_TRUE(down.ok()) << down.error().message();
  }
  // Why the root could not be made ("" when it was).
  const std::string& error() const { return error_; }
  const std::string& path() const { return path_; }
  // A directory on the root's filesystem, beside the store (the btrfs mount, or the temp dir).
  std::string fs_dir() const { return backing_ ? fs_ : temp_.path(); }
  bool is_loop() const { return backing_ != nullptr; }

 private:
  TempRoot temp_;
  std::unique_ptr<testing::BackingStore> backing_;
  std::string fs_, path_, error_;
};

// Store behaviour every host driver must show: vfs and overlay on the host's filesystem, btrfs
// on a loop-mounted btrfs.
class StoreHostDriverTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    root_ = std::make_unique<HostRoot>(GetParam());
    ASSERT_EQ(root_->error(), "") << "no store root for " << GetParam();
  }
  void TearDown() override { root_.reset(); }
  std::unique_ptr<HostRoot> root_;
};

class StoreRecoveryTest : public ::testing::TestWithParam<std::string> {};

// Item 1: applydiff killed before its commit keeps the old content, DiffID and ChainID; killed
// after, the new content is there, DiffID/ChainID are cleared and the old copy is gone.
TEST_P(StoreRecoveryTest, ApplyDiffIsAtomicAcrossKills) {
  for (const char* point : {"applydiff:intent", "applydiff:staged", "applydiff:committed"}) {
    SCOPED_TRACE(point);
    TempRoot root;
    std::string old_cache;
    LayerInfo before;
    {
      auto s = open_store(root.path(), GetParam());
      std::string t = tar_of("old.txt", "old");
      StringReader r(t);
      auto l = s->import_layer("l", "", r);
      ASSERT_TRUE(l.ok()) << l.error().message();
      before = *l;
    }
    ASSERT_TRUE(killed_at(point, [&] {
      auto s = open_store(root.path(), GetParam());
      std::string t = tar_of("new.txt", "new");
      StringReader r(t);
      (void)s->apply_diff("l", r);
    }));
    auto s = open_store(root.path(), GetParam());
    ASSERT_TRUE(s);
    EXPECT_FALSE(s->recovered().empty()) << "recovery reported nothing";
    auto l = s->layer("l");
    ASSERT_TRUE(l.ok()) << l.error().message();
    EXPECT_EQ(l->intent.op, IntentOp::kNone);
    auto ch = s->changes("l", std::string(""));
    ASSERT_TRUE(ch.ok()) << ch.error().message();
    std::set<std::string> paths;
    for (const auto& c : *ch) paths.insert(c.path);
    bool committed = std::string(point) == "applydiff:committed";
    if (committed) {
      EXPECT_EQ(paths, (std::set<std::string>{"/new.txt", "/old.txt"}));
      EXPECT_EQ(l->diff_id, "");
      EXPECT_EQ(l->chain_id, "");
      EXPECT_FALSE(s->driver().exists(before.cache_id)) << "the replaced copy was left behind";
    } else {
      EXPECT_EQ(paths, (std::set<std::string>{"/old.txt"}));
      EXPECT_EQ(l->diff_id, before.diff_id);
      EXPECT_EQ(l->chain_id, before.chain_id);
      EXPECT_EQ(l->cache_id, before.cache_id);
    }
    // Exactly one copy in the driver: no staged leftovers.
    auto home = sys::read_dir(root.path() + "/" + GetParam() + (GetParam() == "vfs" ? "/dir" : ""));
    ASSERT_TRUE(home.ok());
    int copies = 0;
    for (const auto& e : *home)
      if (e.name.size() == 32) ++copies;
    EXPECT_EQ(copies, 1);
  }
}

// Item 1: a failing applydiff (here: a tar that cannot be applied) leaves the layer as it was.
TEST_P(StoreRecoveryTest, FailedApplyDiffLeavesTheLayerUntouched) {
  TempRoot root;
  auto s = open_store(root.path(), GetParam());
  std::string t = tar_of("a.txt", "a");
  StringReader r(t);
  auto l = s->import_layer("l", "", r);
  ASSERT_TRUE(l.ok());
  // Valid as a tar, fails only while applying: a hard link to a file that does not exist.
  testing::TarEntry f;
  f.name = "new.txt";
  f.data = "x";
  testing::TarEntry h;
  h.name = "link";
  h.type = 'h';
  h.link = "missing";
  std::string bad = testing::make_tar({f, h});
  StringReader br(bad);
  auto res = s->apply_diff("l", br);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().message().find("apply-diff layer l"), std::string::npos)
      << res.error().message();
  EXPECT_EQ(res.error().message().find(l->cache_id), std::string::npos) << "names the cache id";
  auto after = s->layer("l");
  EXPECT_EQ(after->diff_id, l->diff_id);
  EXPECT_EQ(after->cache_id, l->cache_id);
  auto ch = s->changes("l", std::string(""));
  ASSERT_TRUE(ch.ok());
  ASSERT_EQ(ch->size(), 1u);
  EXPECT_EQ((*ch)[0].path, "/a.txt");
}

// Item 2: a kill between the driver's mount and the metadata update leaves a real mount that
// the next open must undo; a kill between unmount and metadata update leaves mount_count 1.
TEST_P(StoreRecoveryTest, MountAndUnmountAreReconciledAfterKills) {
  for (const char* point :
       {"mount:intent", "mount:mounted", "unmount:intent", "unmount:unmounted"}) {
    SCOPED_TRACE(point);
    TempRoot root;
    bool unmounting = std::string(point).rfind("unmount", 0) == 0;
    std::string merged;
    {
      auto s = open_store(root.path(), GetParam());
      ASSERT_TRUE(s->create_layer("base", "", LayerKind::kReadOnly).ok());
      ASSERT_TRUE(s->create_layer("c", "base", LayerKind::kReadWrite).ok());
      if (unmounting) merged = *s->mount("c");
    }
    ASSERT_TRUE(killed_at(point, [&] {
      auto s = open_store(root.path(), GetParam());
      if (unmounting)
        (void)s->unmount("c");
      else
        (void)s->mount("c");
    }));
    auto s = open_store(root.path(), GetParam());
    EXPECT_TRUE(has_line(s->recovered(), "layer c")) << "nothing reported";
    auto c = s->layer("c");
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->mount_count, 0);
    EXPECT_EQ(c->intent.op, IntentOp::kNone);
    auto mi = sys::mountinfo();
    ASSERT_TRUE(mi.ok());
    for (const auto& m : *mi)
      EXPECT_NE(m.mount_point.rfind(root.path(), 0), 0u) << "leaked mount " << m.mount_point;
    // Usable again.
    auto p = s->mount("c");
    ASSERT_TRUE(p.ok()) << p.error().message();
    ASSERT_TRUE(s->unmount("c").ok());
  }
}

// Item 2: a recorded mount that is gone (reboot, umount by hand) is reset at open.
TEST(StoreRecovery, RecordedMountThatIsGoneIsReset) {
  TempRoot root;
  std::string path;
  {
    auto s = open_store(root.path(), "overlay");
    ASSERT_TRUE(s->create_layer("base", "", LayerKind::kReadOnly).ok());
    ASSERT_TRUE(s->create_layer("c", "base", LayerKind::kReadWrite).ok());
    path = *s->mount("c");
  }
  ASSERT_TRUE(sys::umount2(path, MNT_DETACH).ok());
  auto s = open_store(root.path(), "overlay");
  EXPECT_TRUE(has_line(s->recovered(), "recorded mount is gone"));
  EXPECT_EQ(s->layer("c")->mount_count, 0);
  auto p = s->mount("c");
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_TRUE(*sys::is_mountpoint(*p)) << "mount printed a path that is not mounted";
  ASSERT_TRUE(s->unmount("c").ok());
}

// Forwards everything to a registry driver; the test drivers below change one thing each.
class ForwardingDriver : public Driver {
 public:
  explicit ForwardingDriver(std::unique_ptr<Driver> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return inner_->name(); }
  Result<void> create(const std::string& id, const std::string& parent,
                      const CreateOpts& opts) override {
    return inner_->create(id, parent, opts);
  }
  Result<void> create_rw(const std::string& id, const std::string& parent,
                         const CreateOpts& opts) override {
    return inner_->create_rw(id, parent, opts);
  }
  Result<void> remove(const std::string& id) override { return inner_->remove(id); }
  Result<std::string> get(const std::string& id, const std::string& label) override {
    return inner_->get(id, label);
  }
  Result<void> put(const std::string& id) override { return inner_->put(id); }
  Result<std::string> mount_dir(const std::string& id) override { return inner_->mount_dir(id); }
  bool exists(const std::string& id) override { return inner_->exists(id); }
  KeyValues status() override { return inner_->status(); }
  Result<KeyValues> metadata(const std::string& id) override { return inner_->metadata(id); }
  Result<void> cleanup() override { return inner_->cleanup(); }
  Result<void> diff(const std::string& id, const std::string& parent, Writer& out) override {
    return inner_->diff(id, parent, out);
  }
  Result<std::vector<Change>> changes(const std::string& id, const std::string& parent) override {
    return inner_->changes(id, parent);
  }
  Result<int64_t> apply_diff(const std::string& id, const std::string& parent,
                             Reader& tar) override {
    return inner_->apply_diff(id, parent, tar);
  }
  Result<int64_t> diff_size(const std::string& id, const std::string& parent) override {
    return inner_->diff_size(id, parent);
  }
  Result<void> sync_data() override { return inner_->sync_data(); }
  Result<std::vector<std::string>> list() override { return inner_->list(); }
  std::string home() const override { return inner_->home(); }
  WhiteoutFormat whiteout_format() const override { return inner_->whiteout_format(); }
  bool supports_quota() const override { return inner_->supports_quota(); }

 protected:
  std::unique_ptr<Driver> inner_;
};

// DriverEntry::init of a ForwardingDriver `D` around the registered driver named `kInner`.
template <class D, const char* kInner>
Result<std::unique_ptr<Driver>> init_around(const DriverConfig& config) {
  auto driver = COWLAB_TRY(find_driver(kInner)->init(config));
  return std::unique_ptr<Driver>(new D(std::move(driver)));
}
constexpr char kOverlay[] = "overlay";
constexpr char kVfs[] = "vfs";

// A driver whose get() returns a path below the directory it mounts, as devicemapper does
// (the thin device on mnt/<id>, the layer in its rootfs/): overlay's layers, each mounted one
// seen through <merged>/rootfs.
class BelowMountDriver final : public ForwardingDriver {
 public:
  using ForwardingDriver::ForwardingDriver;
  std::string name() const override { return "below-mount"; }
  Result<std::string> get(const std::string& id, const std::string& label) override {
    auto path = COWLAB_TRY(inner_->get(id, label));
    if (COWLAB_TRY(inner_->mount_dir(id)).empty()) return path;
    if (!COWLAB_TRY(sys::lstat_if_exists(path + "/rootfs")))
      COWLAB_TRY(sys::mkdir(path + "/rootfs", 0755));
    return path + "/rootfs";
  }
};

const DriverEntry kBelowMount{
    "below-mount", &init_around<BelowMountDriver, kOverlay>, {"overlay."}};

std::unique_ptr<LayerStore> open_below_mount_store(const std::string& root) {
  StoreOptions o;
  o.root = root;
  o.driver_entry = &kBelowMount;
  auto s = LayerStore::open(o);
  EXPECT_TRUE(s.ok()) << s.error().message();
  return s.ok() ? std::move(*s) : nullptr;
}

// A power cut while a layer is mounted, on a driver whose path lies below its mount point:
// the record still says mount_count 1 with that path.  Recovery must ask the driver which
// directory it mounts (Driver::mount_dir) — before, it checked only records whose path was
// itself a mount point, and on devicemapper `mount` then returned a path that no longer
// existed after the reboot (docs/crash.md: copy-up-write, 36 of 119 crash states).
TEST(StoreRecovery, RecordedMountBelowTheDriversMountPointThatIsGoneIsReset) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (overlay mounts)";
  TempRoot root;
  const std::string store_root = root.path() + "/store";
  std::string path, dir;
  {
    auto s = open_below_mount_store(store_root);
    ASSERT_TRUE(s);
    ASSERT_TRUE(s->create_layer("base", "", LayerKind::kReadOnly).ok());
    ASSERT_TRUE(s->create_layer("c", "base", LayerKind::kReadWrite).ok());
    path = *s->mount("c");
    dir = *s->driver().mount_dir(s->layer("c")->cache_id);
    ASSERT_EQ(path, dir + "/rootfs");
    ASSERT_TRUE(*sys::is_mountpoint(dir));
    ASSERT_TRUE(sys::write_file_atomic(path + "/written", "kept", 0644).ok());
  }
  // What a reboot does to the mount (the store's metadata still says mount_count 1).
  ASSERT_TRUE(sys::umount2(dir, MNT_DETACH).ok());
  ASSERT_FALSE(sys::lstat_if_exists(path).value_or(std::nullopt)) << "the old path should be gone";

  auto s = open_below_mount_store(store_root);
  ASSERT_TRUE(s);
  EXPECT_TRUE(has_line(s->recovered(), "layer c: its recorded mount is gone"))
      << "recovery did not notice that the driver's mount of c is gone";
  EXPECT_EQ(s->layer("c")->mount_count, 0);
  auto p = s->mount("c");
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_TRUE(*sys::is_mountpoint(dir)) << "mount returned " << *p << " without mounting " << dir;
  EXPECT_EQ(file_in(*p + "/written"), "kept");
  ASSERT_TRUE(s->unmount("c").ok());
  EXPECT_FALSE(*sys::is_mountpoint(dir));
  ASSERT_TRUE(s->driver().cleanup().ok());
}

// A layer its driver mounts nothing for keeps its references across recovery: the path stays
// valid (vfs, overlay's base layer), and nothing tells a holder from a reboot.
TEST(StoreRecovery, ReferencesToALayerTheDriverDoesNotMountAreKept) {
  TempRoot root;
  {
    auto s = open_store(root.path() + "/store", "vfs");
    ASSERT_TRUE(s->create_layer("c", "", LayerKind::kReadWrite).ok());
    ASSERT_TRUE(s->mount("c").ok());
    EXPECT_EQ(*s->driver().mount_dir(s->layer("c")->cache_id), "");
  }
  auto s = open_store(root.path() + "/store", "vfs");
  EXPECT_FALSE(has_line(s->recovered(), "layer c"));
  EXPECT_EQ(s->layer("c")->mount_count, 1);
  ASSERT_TRUE(s->unmount("c").ok());
}

// vfs whose remove() fails (so recovery of an interrupted create fails) and that counts its
// cleanup() calls: what a driver's init activated must be released when open fails.
int g_cleanups = 0;
class FailingRemoveDriver final : public ForwardingDriver {
 public:
  using ForwardingDriver::ForwardingDriver;
  std::string name() const override { return "failing-remove"; }
  Result<void> remove(const std::string& id) override {
    return Error(ErrorKind::kSystem, "remove layer " + id + ": refused by the test", EIO);
  }
  Result<void> cleanup() override {
    ++g_cleanups;
    return inner_->cleanup();
  }
};
const DriverEntry kFailingRemove{
    "failing-remove", &init_around<FailingRemoveDriver, kVfs>, {"vfs."}};

// A store whose recovery fails is not handed out, and the driver is released first (before, a
// devicemapper pool and its loop devices stayed active after the failed open, and the crash
// runner could not detach the crash state: dm remove EBUSY).
TEST(StoreRecovery, FailedRecoveryReleasesTheDriver) {
  TempRoot root;
  const std::string store_root = root.path() + "/store";
  StoreOptions o;
  o.root = store_root;
  o.driver_entry = &kFailingRemove;
  {
    auto s = LayerStore::open(o);
    ASSERT_TRUE(s.ok()) << s.error().message();
  }
  ASSERT_TRUE(killed_at("create:recorded", [&] {
    auto s = LayerStore::open(o);
    if (s.ok()) (void)(*s)->create_layer("l", "", LayerKind::kReadOnly);
  }));
  g_cleanups = 0;
  auto s = LayerStore::open(o);
  ASSERT_FALSE(s.ok()) << "recovery cannot remove the interrupted layer, open must fail";
  EXPECT_NE(s.error().message().find("refused by the test"), std::string::npos)
      << s.error().message();
  EXPECT_EQ(g_cleanups, 1) << "the driver was not released after the failed open";
}

// References taken in an earlier boot are gone with the processes that held them, whatever the
// driver mounts: a vfs container mounted at a power cut is deletable after the reboot (before,
// its record kept mount_count 1 for good and delete refused "layer is mounted").
TEST(StoreRecovery, ReferencesOfAnEarlierBootAreReset) {
  TempRoot root;
  const std::string store_root = root.path() + "/store";
  std::string cache;
  {
    auto s = open_store(store_root, "vfs");
    ASSERT_TRUE(s->create_layer("c", "", LayerKind::kReadWrite).ok());
    ASSERT_TRUE(s->mount("c").ok());
    cache = s->layer("c")->cache_id;
  }
  // The record as a power cut leaves it, rewritten as if it came from another boot.
  const std::string file = store_root + "/layers/c.json";
  auto j = nlohmann::json::parse(file_in(file));
  ASSERT_EQ(j.at("mount_count"), 1);
  ASSERT_FALSE(j.at("mount_boot").get<std::string>().empty()) << "mount records no boot id";
  j["mount_boot"] = "00000000-0000-4000-8000-000000000000";
  ASSERT_TRUE(sys::write_file_atomic(file, j.dump(2), 0600).ok());

  auto s = open_store(store_root, "vfs");
  EXPECT_TRUE(has_line(s->recovered(), "layer c: its recorded mount is gone"));
  EXPECT_EQ(s->layer("c")->mount_count, 0);
  auto d = s->delete_layer("c");
  EXPECT_TRUE(d.ok()) << d.error().message();
}

// A power cut inside a driver's create, at the states the crash runner found on an aufs kernel
// and their kin: the driver's create runs, then what it made last is taken away again (it never
// reached the disk), and the process dies.
enum class CreateCut {
  kAufsBeforeLayersFile,   // mnt/<id> and diff/<id> made, layers/<id> not: exists() is false
  kAufsAfterMnt,           // only mnt/<id> made
  kOverlayBeforeLinkFile,  // <id>/diff and l/<short id> made, <id>/link not written
};
CreateCut g_create_cut;
bool g_cut_armed = false;  // set in the child that is to die

class CutCreateDriver final : public ForwardingDriver {
 public:
  using ForwardingDriver::ForwardingDriver;
  static Result<std::unique_ptr<Driver>> init_aufs(const DriverConfig& config) {
    // aufs's create and remove only make and delete directories: no aufs kernel needed.
    auto inner = COWLAB_TRY(init_aufs_unprobed_for_tests(config, AufsProbes{}));
    return std::unique_ptr<Driver>(new CutCreateDriver(std::move(inner)));
  }
  static Result<std::unique_ptr<Driver>> init_overlay(const DriverConfig& config) {
    auto inner = COWLAB_TRY(find_driver("overlay")->init(config));
    return std::unique_ptr<Driver>(new CutCreateDriver(std::move(inner)));
  }
  std::string name() const override { return "cut-" + inner_->name(); }
  Result<void> create(const std::string& id, const std::string& parent,
                      const CreateOpts& opts) override {
    COWLAB_TRY(inner_->create(id, parent, opts));
    if (!g_cut_armed) return {};
    const std::string h = inner_->home();
    switch (g_create_cut) {
      case CreateCut::kAufsBeforeLayersFile:
        COWLAB_TRY(sys::unlink(h + "/layers/" + id));
        break;
      case CreateCut::kAufsAfterMnt:
        COWLAB_TRY(sys::unlink(h + "/layers/" + id));
        COWLAB_TRY(sys::rmdir(h + "/diff/" + id));
        break;
      case CreateCut::kOverlayBeforeLinkFile:
        COWLAB_TRY(sys::unlink(h + "/" + id + "/link"));
        break;
    }
    ::kill(::getpid(), SIGKILL);
    return {};
  }
};
const DriverEntry kCutAufs{"cut-aufs", &CutCreateDriver::init_aufs, {"aufs."}};
const DriverEntry kCutOverlay{"cut-overlay", &CutCreateDriver::init_overlay, {"overlay."}};

// Entry names below `dir` ("<absent>" when it does not exist).
std::vector<std::string> names_in(const std::string& dir) {
  auto entries = sys::read_dir(dir);
  if (!entries.ok()) return {"<" + entries.error().message() + ">"};
  std::vector<std::string> out;
  for (const auto& e : *entries) out.push_back(e.name);
  std::sort(out.begin(), out.end());
  return out;
}

// The layer store's recovery of a layer whose creation a power cut interrupted inside the
// driver must leave no driver data, whatever exists() says.  Before, recovery asked remove()
// only when exists() was true, and aufs's remove() refused a layer without its layers file:
// diff/<id> and mnt/<id> stayed with no layer naming them (the crash runner's no-orphans on
// an aufs kernel: every create and import); overlay's remove() left the short link l/<id>
// dangling when the link file naming it had not been written.
class StoreCreateCutTest : public ::testing::TestWithParam<CreateCut> {};

TEST_P(StoreCreateCutTest, RecoveryLeavesNoDriverData) {
  const bool overlay = GetParam() == CreateCut::kOverlayBeforeLinkFile;
  if (overlay && geteuid() != 0) GTEST_SKIP() << "skipped: overlay's init needs root";
  TempRoot root;
  StoreOptions o;
  o.root = root.path() + "/store";
  o.driver_entry = overlay ? &kCutOverlay : &kCutAufs;
  const std::string home = o.root + "/" + o.driver_entry->name;
  {
    auto s = LayerStore::open(o);
    ASSERT_TRUE(s.ok()) << s.error().message();
    ASSERT_TRUE((*s)->create_layer("keep", "", LayerKind::kReadOnly).ok());
  }
  g_create_cut = GetParam();
  auto child = sys::fork_child([&](int) -> int {
    g_cut_armed = true;
    auto s = LayerStore::open(o);
    if (s.ok()) (void)(*s)->create_layer("cut", "keep", LayerKind::kReadOnly);
    return 0;
  });
  ASSERT_TRUE(child.ok()) << child.error().message();
  auto status = sys::wait_child(*child, -1, nullptr);
  ASSERT_TRUE(status.ok() && *status == 128 + SIGKILL) << "the create was not cut";

  auto s = LayerStore::open(o);
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_TRUE(has_line((*s)->recovered(), "removed layer cut"));
  EXPECT_FALSE((*s)->exists("cut"));
  const std::string keep = (*s)->layer("keep")->cache_id;
  if (overlay) {
    std::vector<std::string> want = {"l", "probes", keep};
    std::sort(want.begin(), want.end());
    auto got = names_in(home);
    std::erase(got, ".tmp");
    EXPECT_EQ(got, want) << "a layer directory outlived recovery";
    auto link = sys::read_file(home + "/" + keep + "/link");
    ASSERT_TRUE(link.ok());
    EXPECT_EQ(names_in(home + "/l"), std::vector<std::string>{*link})
        << "a short link of the cut layer outlived recovery";
  } else {
    for (const char* sub : {"layers", "diff", "mnt"})
      EXPECT_EQ(names_in(home + "/" + sub), std::vector<std::string>{keep})
          << sub << "/: the cut layer's data outlived recovery";
  }
  auto listed = (*s)->driver().list();
  ASSERT_TRUE(listed.ok()) << listed.error().message();
  EXPECT_EQ(*listed, std::vector<std::string>{keep});
  // The store works on: the same layer id again.
  auto again = (*s)->create_layer("cut", "keep", LayerKind::kReadOnly);
  EXPECT_TRUE(again.ok()) << again.error().message();
  ASSERT_TRUE((*s)->driver().cleanup().ok());
}

INSTANTIATE_TEST_SUITE_P(Cuts, StoreCreateCutTest,
                         ::testing::Values(CreateCut::kAufsBeforeLayersFile,
                                           CreateCut::kAufsAfterMnt,
                                           CreateCut::kOverlayBeforeLinkFile),
                         [](const ::testing::TestParamInfo<CreateCut>& i) {
                           switch (i.param) {
                             case CreateCut::kAufsBeforeLayersFile:
                               return std::string("AufsBeforeLayersFile");
                             case CreateCut::kAufsAfterMnt:
                               return std::string("AufsAfterMnt");
                             case CreateCut::kOverlayBeforeLinkFile:
                               return std::string("OverlayBeforeLinkFile");
                           }
                           return std::string("unknown");
                         });

// Every other mutating step killed at each point: afterwards the store is consistent.
TEST_P(StoreRecoveryTest, CreateImportDeleteWipeSurviveKills) {
  struct Case {
    const char* point;
    std::function<void(LayerStore&)> op;
    bool layer_remains;
  };
  std::string t = tar_of("f", "data");
  std::vector<Case> cases = {
      {"create:recorded",
       [](LayerStore& s) { (void)s.create_layer("x", "base", LayerKind::kReadWrite); }, false},
      {"import:recorded",
       [&](LayerStore& s) {
         StringReader r(t);
         (void)s.import_layer("x", "base", r);
       },
       false},
      {"import:applied",
       [&](LayerStore& s) {
         StringReader r(t);
         (void)s.import_layer("x", "base", r);
       },
       false},
      {"delete:renamed", [](LayerStore& s) { (void)s.delete_layer("x"); }, false},
      {"delete:removed", [](LayerStore& s) { (void)s.delete_layer("x"); }, false},
      {"wipe:layer-removed", [](LayerStore& s) { (void)s.wipe(); }, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.point);
    TempRoot root;
    bool pre_exists = std::string(c.point).rfind("delete", 0) == 0;
    {
      auto s = open_store(root.path(), GetParam());
      ASSERT_TRUE(s->create_layer("base", "", LayerKind::kReadOnly).ok());
      if (pre_exists) {
        ASSERT_TRUE(s->create_layer("x", "base", LayerKind::kReadWrite).ok());
      }
    }
    ASSERT_TRUE(killed_at(c.point, [&] {
      auto s = open_store(root.path(), GetParam());
      c.op(*s);
    }));
    auto s = open_store(root.path(), GetParam());
    // Killed after the last step of a deletion, nothing is left to recover.
    bool finished =
        std::string(c.point) == "delete:removed" || std::string(c.point) == "wipe:layer-removed";
    EXPECT_EQ(s->recovered().empty(), finished);
    EXPECT_FALSE(s->exists("x"));
    auto all = s->layers();
    ASSERT_TRUE(all.ok());
    for (const auto& l : *all) {
      EXPECT_FALSE(l.incomplete);
      EXPECT_TRUE(s->driver().exists(l.cache_id)) << l.id;
    }
    EXPECT_TRUE(s->damaged()->empty());
    auto left = sys::read_dir(root.path() + "/layers");
    ASSERT_TRUE(left.ok());
    for (const auto& e : *left)
      EXPECT_TRUE(e.name.size() > 5 && e.name.substr(e.name.size() - 5) == ".json")
          << "left: " << e.name;
    EXPECT_TRUE(sys::read_dir(root.path() + "/tmp")->empty());
    // The id is free again.
    ASSERT_TRUE(s->create_layer("x", "", LayerKind::kReadOnly).ok());
  }
}

// Item 3: temp files of interrupted metadata writes are removed, and reported.
TEST_P(StoreRecoveryTest, TempFilesOfInterruptedWritesAreRemoved) {
  TempRoot root;
  {
    auto s = open_store(root.path(), GetParam());
    ASSERT_TRUE(s->create_layer("a", "", LayerKind::kReadOnly).ok());
  }
  std::string tmp = root.path() + "/layers/a.json.tmp-4242-77";
  ASSERT_TRUE(sys::write_file_atomic(tmp, "{").ok());
  auto s = open_store(root.path(), GetParam());
  EXPECT_TRUE(has_line(s->recovered(), "temporary metadata"));
  EXPECT_FALSE(sys::lstat_if_exists(tmp)->has_value());
  EXPECT_TRUE(s->exists("a"));
}

// Item 4: a damaged file and a parent loop are quarantined instead of blocking the store, and
// delete-layer / wipe remove them.
TEST_P(StoreRecoveryTest, DamagedMetadataIsQuarantinedAndRemovable) {
  TempRoot root;
  {
    auto s = open_store(root.path(), GetParam());
    ASSERT_TRUE(s->create_layer("good", "", LayerKind::kReadOnly).ok());
    ASSERT_TRUE(s->create_layer("p", "", LayerKind::kReadOnly).ok());
    ASSERT_TRUE(s->create_layer("q", "p", LayerKind::kReadOnly).ok());
  }
  ASSERT_TRUE(sys::write_file_atomic(root.path() + "/layers/bad.json", "{not json").ok());
  // A hand-edited loop: p's parent is q, q's parent is p.
  auto pj = nlohmann::json::parse(file_in(root.path() + "/layers/p.json"));
  pj["parent"] = "q";
  ASSERT_TRUE(sys::write_file_atomic(root.path() + "/layers/p.json", pj.dump()).ok());
  // The first to open the store — a reader here — quarantines and reports the damage.
  {
    auto r = open_store(root.path(), GetParam(), LockMode::kShared);
    ASSERT_TRUE(r);
    EXPECT_TRUE(has_line(r->recovered(), "quarantined layer bad"));
    EXPECT_TRUE(has_line(r->recovered(), "quarantined layer p"));
    auto d = r->damaged();
    ASSERT_TRUE(d.ok());
    ASSERT_EQ(d->size(), 3u);
    EXPECT_EQ((*d)[0].id, "bad");
    EXPECT_TRUE(r->exists("good"));
  }
  auto s = open_store(root.path(), GetParam());
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->recovered().empty());
  EXPECT_TRUE(sys::lstat_if_exists(root.path() + "/layers/bad.json.damaged")->has_value());
  EXPECT_EQ(s->damaged()->size(), 3u);
  auto bad = s->layer("bad");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("damaged"), std::string::npos);
  ASSERT_TRUE(s->delete_layer("bad").ok());
  EXPECT_FALSE(sys::lstat_if_exists(root.path() + "/layers/bad.json.damaged")->has_value());
  ASSERT_TRUE(s->delete_layer("q").ok()) << "a looping layer must be deletable";
  ASSERT_TRUE(s->wipe().ok());
  EXPECT_TRUE(s->layers()->empty());
  EXPECT_TRUE(s->damaged()->empty());
  EXPECT_TRUE(sys::read_dir(root.path() + "/layers")->empty());
}

// Item 7: the layer records its driver; another driver is refused naming both, and no
// driver given means the recorded one.
TEST(StoreDriver, MismatchIsRefusedNamingBoth) {
  TempRoot root;
  {
    auto s = open_store(root.path(), "vfs");
    ASSERT_TRUE(s->create_layer("a", "", LayerKind::kReadOnly).ok());
    EXPECT_EQ(s->layer("a")->driver, "vfs");
  }
  StoreOptions o;
  o.root = root.path();
  o.driver = "overlay";
  auto bad = LayerStore::open(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("vfs"), std::string::npos) << bad.error().message();
  EXPECT_NE(bad.error().message().find("overlay"), std::string::npos) << bad.error().message();
  o.driver = "";
  auto s = LayerStore::open(o);
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ((*s)->driver().name(), "vfs");
  ASSERT_TRUE((*s)->delete_layer("a").ok());
}

// Item 6: readers share the lock, a writer waits for them, says for whom after a second, and
// gives up at its timeout naming the holder.
TEST(StoreLock, ReadersShareWritersWaitAndTimeOutNamingTheHolder) {
  TempRoot root;
  { ASSERT_TRUE(open_store(root.path(), "vfs")); }
  auto r1 = open_store(root.path(), "vfs", LockMode::kShared);
  auto r2 = open_store(root.path(), "vfs", LockMode::kShared);  // does not block
  ASSERT_TRUE(r1 && r2);
  StoreOptions o;
  o.root = root.path();
  o.driver = "vfs";
  o.lock_timeout_s = 1.5;
  std::string waited;
  o.on_lock_wait = [&](const std::string& m) { waited = m; };
  auto w = LayerStore::open(o);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().kind(), ErrorKind::kTimeout);
  std::string pid = "PID " + std::to_string(::getpid());
  EXPECT_NE(w.error().message().find(pid), std::string::npos) << w.error().message();
  EXPECT_NE(waited.find("waiting for the store lock held by " + pid), std::string::npos) << waited;
  r1.reset();
  r2.reset();
  auto ok = LayerStore::open(o);
  EXPECT_TRUE(ok.ok());
}

// Item 6: readers work on a read-only store, for every host driver; an operation a crash
// interrupted is neither recovered (nothing may change) nor seen half-done, and is reported.
TEST_P(StoreHostDriverTest, ReadOnlyStoreServesReaders) {
  const std::string store_root = root_->path();
  std::string t = tar_of("f", "data");
  std::string t2 = tar_of("g", "more");
  {
    auto s = open_store(store_root, GetParam());
    ASSERT_TRUE(s);
    StringReader r(t);
    ASSERT_TRUE(s->import_layer("a", "", r).ok());
    StringReader r2(t2);
    ASSERT_TRUE(s->import_layer("b", "a", r2).ok());
  }
  ASSERT_TRUE(killed_at("import:applied", [&] {
    auto s = open_store(store_root, GetParam());
    StringReader r(t2);
    (void)s->import_layer("half", "b", r);
  }));
  ASSERT_TRUE(sys::lstat_if_exists(store_root + "/layers/half.json")->has_value());
  ASSERT_TRUE(sys::mount(store_root, store_root, "", MS_BIND, "").ok());
  ASSERT_TRUE(sys::mount("", store_root, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "").ok());
  {
    auto s = open_store(store_root, "", LockMode::kShared);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->driver().name(), GetParam());
    EXPECT_TRUE(s->recovered().empty());
    EXPECT_TRUE(has_line(s->not_recovered(), "layer half: creation interrupted"));
    EXPECT_FALSE(s->exists("half")) << "a reader saw a half-imported layer";
    auto all = s->layers();
    ASSERT_TRUE(all.ok());
    for (const auto& l : *all)
      if (l.id == "half") {
        EXPECT_TRUE(l.incomplete);
      }
    for (const char* id : {"a", "b"}) {
      SCOPED_TRACE(id);
      StringWriter w;
      auto d = s->diff(id, std::nullopt, w);
      EXPECT_TRUE(d.ok()) << d.error().message();
      EXPECT_FALSE(w.data().empty());
      auto ch = s->changes(id, std::nullopt);
      ASSERT_TRUE(ch.ok()) << ch.error().message();
      EXPECT_EQ(ch->size(), 1u);
    }
  }
  EXPECT_TRUE(sys::umount2(store_root, MNT_DETACH).ok());
  EXPECT_TRUE(sys::lstat_if_exists(store_root + "/layers/half.json")->has_value())
      << "the read-only store was changed";
  auto w = open_store(store_root, GetParam());
  ASSERT_TRUE(w);
  EXPECT_FALSE(w->exists("half"));
}

// A reader that finds an interrupted operation on a writable store recovers it (taking the
// lock exclusive for that), instead of leaving it to the next writer: it neither sees the
// half-done state nor waits for a writer to clear it.
TEST_P(StoreHostDriverTest, ReadersRecoverInterruptedOperations) {
  const std::string store_root = root_->path();
  std::string t = tar_of("f", "data");
  {
    auto s = open_store(store_root, GetParam());
    ASSERT_TRUE(s);
    StringReader r(t);
    ASSERT_TRUE(s->import_layer("a", "", r).ok());
  }
  // Each writer's open recovers what the last kill left, so one interruption at a time.
  auto reader_recovers = [&](const std::string& what) {
    SCOPED_TRACE(what);
    auto first = open_store(store_root, GetParam(), LockMode::kShared);
    ASSERT_TRUE(first);
    EXPECT_TRUE(has_line(first->recovered(), what));
    EXPECT_TRUE(first->not_recovered().empty());
    // Back to shared: another reader opens at once.
    StoreOptions o;
    o.root = store_root;
    o.driver = GetParam();
    o.lock = LockMode::kShared;
    o.lock_timeout_s = 0;
    auto second = LayerStore::open(o);
    ASSERT_TRUE(second.ok()) << "the recovering reader kept the lock exclusive: "
                             << second.error().message();
    EXPECT_TRUE((*second)->recovered().empty()) << "recovered once, nothing left";
  };

  ASSERT_TRUE(killed_at("import:applied", [&] {
    auto s = open_store(store_root, GetParam());
    StringReader r(t);
    (void)s->import_layer("half", "a", r);
  }));
  ASSERT_TRUE(sys::write_file_atomic(store_root + "/layers/a.json.tmp-4242-77", "{").ok());
  reader_recovers("removed layer half");
  EXPECT_FALSE(sys::lstat_if_exists(store_root + "/layers/half.json")->has_value());
  EXPECT_FALSE(sys::lstat_if_exists(store_root + "/layers/a.json.tmp-4242-77")->has_value());

  ASSERT_TRUE(killed_at("applydiff:staged", [&] {
    auto s = open_store(store_root, GetParam());
    std::string t2 = tar_of("new", "new");
    StringReader r(t2);
    (void)s->apply_diff("a", r);
  }));
  reader_recovers("rolled back an interrupted applydiff");
  auto s = open_store(store_root, GetParam(), LockMode::kShared);
  ASSERT_TRUE(s);
  auto a = s->layer("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->intent.op, IntentOp::kNone);
  auto ch = s->changes("a", std::nullopt);
  ASSERT_TRUE(ch.ok());
  ASSERT_EQ(ch->size(), 1u);
  EXPECT_EQ((*ch)[0].path, "/f") << "the killed applydiff was rolled back";
}

// Unreadable metadata that still names its cache id (cut short, partly overwritten): deleting
// the damaged layer removes its driver data too, never data another layer uses.
TEST_P(StoreHostDriverTest, DeletingUnreadableMetadataRemovesItsData) {
  const std::string store_root = root_->path();
  std::string t = tar_of("f", std::string(5000, 'd'));
  std::string cache_x, cache_y;
  {
    auto s = open_store(store_root, GetParam());
    ASSERT_TRUE(s);
    for (const char* id : {"x", "y"}) {
      StringReader r(t);
      ASSERT_TRUE(s->import_layer(id, "", r).ok());
    }
    cache_x = s->layer("x")->cache_id;
    cache_y = s->layer("y")->cache_id;
  }
  std::string x = file_in(store_root + "/layers/x.json");
  std::string y = file_in(store_root + "/layers/y.json");
  auto cut = [](const std::string& text) {
    return text.substr(0, text.find("\"cache_id\"") + 48) + "\0\0garbage";
  };
  ASSERT_NE(cut(x).find(cache_x), std::string::npos);
  ASSERT_TRUE(sys::write_file_atomic(store_root + "/layers/x.json", cut(x)).ok());
  // "z" is a damaged copy of y's metadata: y's data must survive z's deletion.
  ASSERT_TRUE(sys::write_file_atomic(store_root + "/layers/z.json", cut(y)).ok());
  auto s = open_store(store_root, GetParam());
  ASSERT_TRUE(s);
  ASSERT_EQ(s->damaged()->size(), 2u);
  ASSERT_TRUE(s->driver().exists(cache_x));
  auto d = s->delete_layer("x");
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_FALSE(s->driver().exists(cache_x)) << "the damaged layer's data was left behind";
  ASSERT_TRUE(s->delete_layer("z").ok());
  EXPECT_TRUE(s->driver().exists(cache_y)) << "another layer's data was removed";
  StringWriter w;
  EXPECT_TRUE(s->diff("y", std::nullopt, w).ok());
  EXPECT_TRUE(s->damaged()->empty());
}

// Unreadable metadata that no longer names its cache id (zeroed by a power cut, overwritten):
// its data is driver data no layer claims, collected when the last unreadable metadata is
// deleted — not before (that file might own it) and never data a readable layer or a
// quarantined but parseable one (a parent loop) claims.
TEST_P(StoreHostDriverTest, DeletingUnreadableMetadataWithoutItsCacheIdCollectsItsDataLast) {
  const std::string store_root = root_->path();
  std::map<std::string, std::string> cache;
  {
    auto s = open_store(store_root, GetParam());
    ASSERT_TRUE(s);
    for (const char* id : {"x", "w", "y", "p"}) {
      std::string t = tar_of(std::string("f-") + id, std::string(3000, id[0]));
      StringReader r(t);
      ASSERT_TRUE(s->import_layer(id, "", r).ok());
    }
    ASSERT_TRUE(s->create_layer("q", "p", LayerKind::kReadWrite).ok());
    for (const char* id : {"x", "w", "y", "p", "q"}) cache[id] = s->layer(id)->cache_id;
  }
  ASSERT_TRUE(sys::write_file_atomic(store_root + "/layers/x.json", "{garbage").ok());
  ASSERT_TRUE(sys::write_file_atomic(store_root + "/layers/w.json", std::string(64, '\0')).ok());
  auto pj = nlohmann::json::parse(file_in(store_root + "/layers/p.json"));
  pj["parent"] = "q";  // p <-> q: quarantined, still parseable
  ASSERT_TRUE(sys::write_file_atomic(store_root + "/layers/p.json", pj.dump()).ok());

  auto s = open_store(store_root, GetParam());
  ASSERT_TRUE(s);
  ASSERT_EQ(s->damaged()->size(), 4u);
  auto held = [&](const char* id) { return s->driver().exists(cache[id]); };
  auto d = s->delete_layer("x");
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_TRUE(held("x")) << "x's data was collected while w, also unreadable, might own it";
  EXPECT_TRUE(held("w"));
  d = s->delete_layer("w");
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_FALSE(held("x")) << "x's data is left behind after the last unreadable file went";
  EXPECT_FALSE(held("w")) << "w's data is left behind after the last unreadable file went";
  for (const char* id : {"y", "p", "q"}) EXPECT_TRUE(held(id)) << id << "'s data was collected";
  for (const char* id : {"x", "w"})
    EXPECT_TRUE(has_line(s->recovered(), "removed driver data " + cache[id])) << id;
  StringWriter w;
  EXPECT_TRUE(s->diff("y", std::nullopt, w).ok());
  // The loop's layers go with their own (parseable) metadata.
  ASSERT_TRUE(s->delete_layer("q").ok());
  ASSERT_TRUE(s->delete_layer("p").ok());
  EXPECT_FALSE(held("p"));
  EXPECT_FALSE(held("q"));
  EXPECT_TRUE(held("y"));
  EXPECT_TRUE(s->damaged()->empty());
  auto listed = s->driver().list();
  ASSERT_TRUE(listed.ok()) << listed.error().message();
  EXPECT_EQ(*listed, std::vector<std::string>{cache["y"]});
}

// Item 5: on a full filesystem, delete-layer and wipe still work (and opening writes nothing),
// for every host driver: vfs and overlay on a full tmpfs, btrfs on a full loop btrfs.
TEST_P(StoreHostDriverTest, DeleteAndWipeWorkOnAFullFilesystem) {
  std::string fs = root_->fs_dir() + "/small";
  std::string store_root = fs + "/store";
  ASSERT_TRUE(sys::mkdir(fs, 0700).ok());
  if (!root_->is_loop()) {
    ASSERT_TRUE(sys::mount("tmpfs", fs, "tmpfs", 0, "size=4m").ok());
  }
  {
    auto s = open_store(store_root, GetParam());
    ASSERT_TRUE(s);
    std::string t = tar_of("f", std::string(100000, 'x'));
    for (const char* id : {"a", "b"}) {
      StringReader r(t);
      ASSERT_TRUE(s->import_layer(id, "", r).ok());
    }
    ASSERT_TRUE(s->create_layer("c", "b", LayerKind::kReadWrite).ok());
  }
  // Fill every block (fallocate first: a 1 GiB btrfs fills at once), then every inode or
  // metadata block (small files with inline data on btrfs).  btrfs over-reserves for delayed
  // allocation and gives the surplus back at writeback, so a filesystem that refused a write
  // may take one again after syncfs: fill and sync until one more block is refused after the
  // sync.
  auto fill = sys::open(fs + "/fill", O_WRONLY | O_CREAT, 0600);
  ASSERT_TRUE(fill.ok());
  std::string block(65536, 'f');
  std::string small(1500, 's');
  std::string page(4096, 'p');
  int files = 0;
  // One more block, written and synced: the error of that write (0 if it was taken).
  auto one_more_block = [&]() -> int {
    auto f = sys::open(fs + "/probe" + std::to_string(files++), O_WRONLY | O_CREAT, 0600);
    if (!f.ok()) return f.error().err();
    auto w = sys::write_all(f->get(), page.data(), page.size());
    if (!w.ok()) return w.error().err();
    return ::fsync(f->get()) == 0 ? 0 : errno;
  };
  int refused = 0;
  for (int round = 0; round < 5 && refused == 0; ++round) {
    for (off_t chunk = 256 << 20, off = ::lseek(fill->get(), 0, SEEK_END); chunk >= 4096;) {
      if (::fallocate(fill->get(), 0, off, chunk) == 0)
        off += chunk;
      else
        chunk /= 2;
    }
    ::lseek(fill->get(), 0, SEEK_END);
    while (sys::write_all(fill->get(), block.data(), block.size()).ok()) {
    }
    for (;;) {
      auto f = sys::open(fs + "/i" + std::to_string(files++), O_WRONLY | O_CREAT, 0600);
      if (!f.ok() || !sys::write_all(f->get(), small.data(), small.size()).ok()) break;
    }
    ::syncfs(fill->get());
    refused = one_more_block();
  }
  ASSERT_EQ(refused, ENOSPC) << "the filesystem under the store is not full: one more "
                             << page.size() << "-byte block was "
                             << (refused == 0 ? "written and synced" : errno_name(refused));
  {
    auto s = open_store(store_root, GetParam());
    ASSERT_TRUE(s) << "open failed on a full filesystem";
    auto d = s->delete_layer("a");
    ASSERT_TRUE(d.ok()) << d.error().message();
    auto w = s->wipe();
    ASSERT_TRUE(w.ok()) << w.error().message();
    EXPECT_TRUE(s->layers()->empty());
  }
  fill->reset();
  if (!root_->is_loop()) {
    EXPECT_TRUE(sys::umount2(fs, MNT_DETACH).ok());
  }
}

INSTANTIATE_TEST_SUITE_P(HostDrivers, StoreRecoveryTest, ::testing::Values("vfs", "overlay"),
                         [](const auto& info) { return info.param; });
INSTANTIATE_TEST_SUITE_P(HostDrivers, StoreHostDriverTest,
                         ::testing::Values("vfs", "overlay", "btrfs"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace cowlab
