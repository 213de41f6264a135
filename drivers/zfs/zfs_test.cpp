// The zfs driver.
//
// Host tests (no zfs in the host kernel): option and name parsing, dataset naming, the
// mountinfo lookup of the parent dataset, status formatting with fake values, libzfs_core
// loading through dlopen, and init refusing with the exact reason so selection moves on.
//
// Guest tests (ZfsGuest.*): run where /dev/zfs exists and COWLAB_ZFS_TEST_FSNAME names an
// existing, empty dataset to work under (ctest vm-zfs-suites: tests/vm/guest_driver_suites.sh
// sets both up); otherwise each skips and prints why.  Every guest test checks afterwards that it
// left no dataset, snapshot or mount behind.
#include "zfs/zfs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "conformance/backing_store.h"
#include "core/tar_test_util.h"
#include "cowlab/layer_store.h"
#include "cowlab/registry.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "cowlab/sys_text.h"

namespace cowlab {
namespace {

using testing::killed_at;

constexpr uint64_t kMiB = 1024 * 1024;

bool have_dev_zfs() {
  auto st = sys::lstat_if_exists("/dev/zfs");
  return st.ok() && st->has_value();
}

bool present(const std::string& path) {
  auto st = sys::lstat_if_exists(path);
  return st.ok() && st->has_value();
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/var/tmp/cowlab-zfs-test-XXXXXX";
    if (char* p = ::mkdtemp(tmpl.data())) path_ = p;
  }
  explicit TempDir(const std::string& base) {
    std::string tmpl = base + "/cowlab-zfs-test-XXXXXX";
    if (char* p = ::mkdtemp(tmpl.data())) path_ = p;
  }
  ~TempDir() {
    if (!path_.empty()) (void)sys::remove_all(path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---- host: pure helpers ------------------------------------------------------------------------

TEST(ZfsOptions, FsnameAndMountopt) {
  auto o = parse_zfs_options(
      {{"zfs.fsname", "tank/docker"}, {"zfs.mountopt", "ro,noatime,xattr=sa, nodev"}});
  ASSERT_TRUE(o.ok()) << o.error().message();
  EXPECT_EQ(o->fsname, "tank/docker");
  EXPECT_EQ(o->mount_flags, static_cast<unsigned long>(MS_RDONLY | MS_NOATIME | MS_NODEV));
  EXPECT_EQ(o->mount_data, "xattr=sa");

  auto upper = parse_zfs_options({{"ZFS.FSNAME", "pool"}});
  ASSERT_TRUE(upper.ok());
  EXPECT_EQ(upper->fsname, "pool");

  auto none = parse_zfs_options({});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->fsname, "");
  EXPECT_EQ(none->mount_flags, 0ul);

  unsigned long flags = MS_RDONLY;
  std::string data;
  split_mount_options("rw,exec,context=\"x\"", &flags, &data);
  EXPECT_EQ(flags, 0ul);
  EXPECT_EQ(data, "context=\"x\"");
}

TEST(ZfsOptions, BadFsnameAndUnknownKeysAreInvalid) {
  for (const char* bad : {"tank/a@snap", "/tank", "tank//x", "tank/", "-tank", "tank/a%b", ""}) {
    auto o = parse_zfs_options({{"zfs.fsname", bad}});
    ASSERT_FALSE(o.ok()) << bad;
    EXPECT_EQ(o.error().kind(), ErrorKind::kInvalid) << bad;
  }
  auto o = parse_zfs_options({{"zfs.size", "1G"}});
  ASSERT_FALSE(o.ok());
  EXPECT_EQ(o.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(o.error().message().find("zfs.size"), std::string::npos);
}

TEST(ZfsOptions, LayerSize) {
  auto s = parse_zfs_layer_size({{"size", "50M"}});
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(s->has_value());
  EXPECT_EQ(**s, 50 * kMiB);
  s = parse_zfs_layer_size({{"Size", "1G"}});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(**s, 1024 * kMiB);
  s = parse_zfs_layer_size({{"size", "0"}});  // Docker: no quota
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->has_value());
  s = parse_zfs_layer_size({});
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->has_value());
  EXPECT_EQ(parse_zfs_layer_size({{"inodes", "10"}}).error().kind(), ErrorKind::kInvalid);
  EXPECT_FALSE(parse_zfs_layer_size({{"size", "lots"}}).ok());
}

TEST(ZfsNames, LayerDataset) {
  auto ds = zfs_layer_dataset("tank/docker", "3f2a-init");
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ(*ds, "tank/docker/3f2a-init");
  for (const char* bad : {"", "a/b", "a@b", ".x", "a:b", "-x", "a b", "a%b"}) {
    auto r = zfs_layer_dataset("tank", bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid) << bad;
  }
  // 255-character names at most, with room for "@<19 digits>" when the layer becomes a parent.
  std::string fsname(100, 'p');
  EXPECT_TRUE(zfs_layer_dataset(fsname, std::string(134, 'i')).ok());
  auto too_long = zfs_layer_dataset(fsname, std::string(135, 'i'));
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.error().message().find("too long"), std::string::npos);
}

TEST(ZfsNames, ParentDatasetFromMountinfo) {
  std::vector<sys::MountInfo> mounts = {
      {"/", "ext4", "/dev/vda", "rw", "rw", 254, 0},
      {"/tank", "zfs", "tank", "rw", "rw,xattr,noacl", 0, 40},
      {"/tank/cowlab", "zfs", "tank/cowlab", "rw", "rw,xattr,noacl", 0, 41},
      {"/var/lib/docker", "zfs", "tank/old", "rw", "rw", 0, 42},
      {"/var/lib/docker", "zfs", "tank/new", "rw", "rw", 0, 42},  // stacked on top: wins
  };
  auto fs = zfs_fsname_for_device(mounts, 0, 41);
  ASSERT_TRUE(fs.ok());
  EXPECT_EQ(*fs, "tank/cowlab");
  EXPECT_EQ(*zfs_fsname_for_device(mounts, 0, 42), "tank/new");
  auto ext = zfs_fsname_for_device(mounts, 254, 0);
  ASSERT_FALSE(ext.ok());
  EXPECT_EQ(ext.error().kind(), ErrorKind::kNotSupported);
  EXPECT_NE(ext.error().message().find("ext4, not zfs"), std::string::npos);
  EXPECT_EQ(zfs_fsname_for_device(mounts, 9, 9).error().kind(), ErrorKind::kNotSupported);
}

// list(): the direct children of the parent dataset that carry this store's home, named like
// layers — never another store's layers on the same parent, datasets cowlab did not make (no
// property: "-"), pending removals, the parent itself or anything deeper.
TEST(ZfsNames, LayerListKeepsOnlyThisStoresLayers) {
  const std::string out =
      "tank/cowlab\t-\n"
      "tank/cowlab/0123abcd\t/srv/a/zfs\n"
      "tank/cowlab/feed-init\t/srv/a/zfs\n"
      "tank/cowlab/other\t/srv/b/zfs\n"
      "tank/cowlab/users\t-\n"
      "tank/cowlab/cowlab-removing:00ff\t/srv/a/zfs\n"
      "tank/cowlab/deep/x\t/srv/a/zfs\n"
      "tank/cowlabx/y\t/srv/a/zfs\n"
      "tank/cowlab/trailing\t/srv/a/zfs/\n"
      "garbage line\n"
      "tank/cowlab/last\t/srv/a/zfs";  // no final newline
  EXPECT_EQ(parse_zfs_layer_list(out, "tank/cowlab", "/srv/a/zfs"),
            (std::vector<std::string>{"0123abcd", "feed-init", "last"}));
  EXPECT_EQ(parse_zfs_layer_list(out, "tank/cowlab", "/srv/b/zfs"),
            (std::vector<std::string>{"other"}));
  EXPECT_TRUE(parse_zfs_layer_list("", "tank/cowlab", "/srv/a/zfs").empty());
}

TEST(ZfsStatus, ParseZfsGet) {
  auto p = parse_zfs_get("used\t123456\navailable\t987654321\nquota\t0\ncompression\tlz4\n");
  EXPECT_EQ(p.size(), 4u);
  EXPECT_EQ(p["used"], "123456");
  EXPECT_EQ(p["available"], "987654321");
  EXPECT_EQ(p["quota"], "0");
  EXPECT_EQ(p["compression"], "lz4");
}

TEST(ZfsStatus, DockerRowsWithFakeValues) {
  ZfsStatusInputs in;
  in.fsname = "tank/cowlab";
  in.health = std::string("ONLINE");
  in.properties = std::map<std::string, std::string>{
      {"used", "1048576"}, {"available", "2147483648"}, {"quota", "0"}, {"compression", "off"}};
  KeyValues want = {
      {"Zpool", "tank"},
      {"Zpool Health", "ONLINE"},
      {"Parent Dataset", "tank/cowlab"},
      {"Space Used By Parent", "1048576"},
      {"Space Available", "2147483648"},
      {"Parent Quota", "no"},
      {"Compression", "off"},
  };
  EXPECT_EQ(format_zfs_status(in), want);

  in.properties = std::map<std::string, std::string>{
      {"used", "1"}, {"available", "2"}, {"quota", "1073741824"}, {"compression", "lz4"}};
  auto rows = format_zfs_status(in);
  EXPECT_EQ(rows[5], (std::pair<std::string, std::string>{"Parent Quota", "1073741824"}));

  // Docker's wording when the pool cannot be read; property errors are named, not hidden.
  in.fsname = "pool";
  in.health = Error::not_found("no zpool command");
  in.properties = Error::not_found("no zfs command");
  rows = format_zfs_status(in);
  ASSERT_EQ(rows.size(), 7u);
  EXPECT_EQ(rows[0].second, "error while getting pool information no zpool command");
  EXPECT_EQ(rows[1].second, "not available");
  EXPECT_EQ(rows[2].second, "pool");
  EXPECT_EQ(rows[3].second, "unknown (no zfs command)");
}

// ---- host: no zfs in this kernel ---------------------------------------------------------------

TEST(ZfsInit, KernelWithoutZfsIsNotSupportedWithTheReason) {
  if (have_dev_zfs())
    GTEST_SKIP() << "skipped: /dev/zfs exists here, so the refusal cannot be observed";
  TempDir root;
  DriverConfig cfg{root.path(), root.path() + "/zfs", {}};
  auto d = init_zfs(cfg);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().kind(), ErrorKind::kNotSupported);
  EXPECT_EQ(d.error().message().rfind("this kernel has no zfs: /dev/zfs missing (", 0), 0u)
      << d.error().message();
  EXPECT_FALSE(present(cfg.home));
}

TEST(ZfsInit, UnknownOptionIsInvalidBeforeAnyProbe) {
  TempDir root;
  auto d = init_zfs(DriverConfig{root.path(), root.path() + "/zfs", {{"zfs.compression", "lz4"}}});
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().kind(), ErrorKind::kInvalid);
}

TEST(ZfsInit, SelectionMovesOnWithTheReason) {
  if (have_dev_zfs()) GTEST_SKIP() << "skipped: /dev/zfs exists here";
  TempDir root;
  SelectOptions o;
  o.root = root.path();
  o.priority = {"zfs", "vfs"};
  std::vector<DriverProbe> tried;
  auto d = select_driver(o, &tried);
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ((*d)->name(), "vfs");
  ASSERT_GE(tried.size(), 2u);
  EXPECT_EQ(tried[0].name, "zfs");
  EXPECT_NE(tried[0].reason.find("this kernel has no zfs: /dev/zfs missing"), std::string::npos)
      << tried[0].reason;
  (void)(*d)->cleanup();
}

// libzfs_core.so.3 and libnvpair.so.3 are resolved at run time: where they are installed (the
// host has libzfslinux-dev), every symbol must resolve and the failure can only be
// libzfs_core_init's open of the missing /dev/zfs.
TEST(ZfsLibrary, DlopenResolvesEverySymbol) {
  if (have_dev_zfs())
    GTEST_SKIP() << "skipped: /dev/zfs exists here (the guest tests use the library)";
  auto lib = sys::zfs_core_load();
  ASSERT_FALSE(lib.ok());
  EXPECT_EQ(lib.error().kind(), ErrorKind::kNotSupported);
  bool installed = present("/lib/x86_64-linux-gnu/libzfs_core.so.3") ||
                   present("/usr/lib/x86_64-linux-gnu/libzfs_core.so.3");
  if (installed) {
    EXPECT_NE(lib.error().message().find("libzfs_core_init"), std::string::npos)
        << lib.error().message();
    EXPECT_NE(lib.error().message().find("ENOENT"), std::string::npos) << lib.error().message();
  } else {
    EXPECT_NE(lib.error().message().find("dlopen"), std::string::npos) << lib.error().message();
  }
  // The outcome is cached: same answer, no second dlopen.
  auto again = sys::zfs_core_load();
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().message(), lib.error().message());
}

// ---- guest: a real pool ------------------------------------------------------------------------

std::string run_out(const std::vector<std::string>& argv) {
  std::string out;
  auto rc = sys::run(argv, &out);
  if (!rc.ok()) return "<" + rc.error().message() + ">";
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Every dataset and snapshot below `fsname`, excluding `fsname` itself.
std::vector<std::string> below(const std::string& fsname) {
  std::string out =
      run_out({"zfs", "list", "-H", "-o", "name", "-t", "filesystem,snapshot", "-r", fsname});
  std::vector<std::string> names;
  for (const std::string& n : sys::split_lines(out))
    if (!n.empty() && n != fsname) names.push_back(n);
  return names;
}

int write_bytes(const std::string& path, uint64_t bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  std::string chunk(kMiB, '\x5a');
  int err = 0;
  for (uint64_t done = 0; done < bytes && err == 0;) {
    ssize_t w = ::write(fd, chunk.data(), std::min<uint64_t>(chunk.size(), bytes - done));
    if (w < 0)
      err = errno;
    else
      done += static_cast<uint64_t>(w);
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

class ZfsGuest : public ::testing::TestWithParam<ZfsBackend> {
 protected:
  void SetUp() override {
    if (!have_dev_zfs())
      GTEST_SKIP() << "skipped: no /dev/zfs (zfs runs in guests: ctest vm-zfs-suites, "
                      "tests/vm/guest_driver_suites.sh)";
    const char* fs = std::getenv("COWLAB_ZFS_TEST_FSNAME");
    if (!fs || !*fs)
      GTEST_SKIP() << "skipped: COWLAB_ZFS_TEST_FSNAME is not set (ctest vm-zfs-suites, "
                      "tests/vm/guest_driver_suites.sh sets it)";
    fsname_ = fs;
    ASSERT_EQ(below(fsname_), std::vector<std::string>{}) << fsname_ << " must start empty";
    root_ = std::make_unique<TempDir>();
    ASSERT_FALSE(root_->path().empty());
    home_ = root_->path() + "/zfs";
    auto d = init_zfs_with_backend(DriverConfig{root_->path(), home_, {{"zfs.fsname", fsname_}}},
                                   GetParam());
    ASSERT_TRUE(d.ok()) << d.error().message();
    driver_ = std::move(*d);
    ASSERT_EQ(zfs_probes(*driver_)->backend, GetParam());
  }

  void TearDown() override {
    if (!driver_) return;
    EXPECT_TRUE(driver_->cleanup().ok());
    driver_.reset();
    // Nothing this test made may remain: no dataset or snapshot, no mount below the root.
    EXPECT_EQ(below(fsname_), std::vector<std::string>{}) << "left behind under " << fsname_;
    auto mounts = sys::mountinfo();
    ASSERT_TRUE(mounts.ok());
    for (const auto& m : *mounts)
      EXPECT_NE(m.mount_point.rfind(root_->path(), 0), 0u) << "left mounted: " << m.mount_point;
  }

  std::string ds(const std::string& id) const { return fsname_ + "/" + id; }

  // Layer "l" holding /file ("content"), made by the test's writer; the readers' tests
  // start from it.
  void make_layer_with_file() {
    ASSERT_TRUE(driver_->create("l", "", {}).ok());
    auto w = driver_->get("l", "");
    ASSERT_TRUE(w.ok()) << w.error().message();
    testing::write_file(*w + "/file", "content");
    ASSERT_TRUE(driver_->put("l").ok());
  }

  std::string fsname_;
  std::unique_ptr<TempDir> root_;
  std::string home_;
  std::unique_ptr<Driver> driver_;
};

TEST_P(ZfsGuest, ChildIsACloneOfADeferredSnapshot) {
  ASSERT_TRUE(driver_->create("base", "", {}).ok());
  auto base = driver_->get("base", "");
  ASSERT_TRUE(base.ok()) << base.error().message();
  EXPECT_EQ(*base, home_ + "/graph/base");
  ASSERT_EQ(write_bytes(*base + "/file", 4096), 0);
  ASSERT_TRUE(driver_->put("base").ok());
  EXPECT_FALSE(present(home_ + "/graph/base")) << "put removes the mount point";

  ASSERT_TRUE(driver_->create("child", "base", {}).ok());
  EXPECT_EQ(run_out({"zfs", "get", "-H", "-o", "value", "mountpoint", ds("child")}), "legacy");
  std::string origin = run_out({"zfs", "get", "-H", "-o", "value", "origin", ds("child")});
  EXPECT_EQ(origin.rfind(ds("base") + "@", 0), 0u) << origin;
  EXPECT_EQ(run_out({"zfs", "get", "-H", "-o", "value", "defer_destroy", origin}), "on");

  auto child = driver_->get("child", "");
  ASSERT_TRUE(child.ok()) << child.error().message();
  EXPECT_TRUE(present(*child + "/file"));
  auto md = driver_->metadata("child");
  ASSERT_TRUE(md.ok());
  EXPECT_EQ(*md, (KeyValues{{"Mountpoint", home_ + "/graph/child"}, {"Dataset", ds("child")}}));
  ASSERT_TRUE(driver_->put("child").ok());

  // Removing the child takes its origin snapshot with it: no orphaned @snapshot.
  ASSERT_TRUE(driver_->remove("child").ok());
  EXPECT_EQ(below(fsname_), std::vector<std::string>{ds("base")});
  ASSERT_TRUE(driver_->remove("base").ok());
  EXPECT_EQ(driver_->remove("base").error().kind(), ErrorKind::kNotFound);
}

// Snapshots of `dataset` ("<dataset>@<name>").
std::vector<std::string> snapshots_of(const std::string& dataset) {
  std::vector<std::string> out;
  for (const std::string& n : sys::split_lines(
           run_out({"zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1", dataset})))
    if (n.rfind(dataset + "@", 0) == 0) out.push_back(n);
  return out;
}

// A create of a child cut (power cut, kill) after its snapshot of the parent and before the
// clone, or before the snapshot's destroy was deferred, leaves that snapshot.  It used to be
// named after the clock: remove(child) — what the layer store's recovery of the incomplete child
// calls — could not find it, a retried create took another, and they stayed until the parent
// was removed.  Now named after the child, the child's remove() and a retried create take it.
TEST_P(ZfsGuest, CreateCutAfterItsSnapshotLeavesNoSnapshotOnceRecovered) {
  ASSERT_TRUE(driver_->create("cbase", "", {}).ok());
  for (const char* point : {"zfs:snapshotted", "zfs:cloned"}) {
    SCOPED_TRACE(point);
    ASSERT_TRUE(killed_at(point, [&] { (void)driver_->create_rw("cchild", "cbase", {}); }))
        << "the create must die at " << point;
    ASSERT_EQ(snapshots_of(ds("cbase")).size(), 1u) << "the cut leaves the parent's snapshot";
    const std::string ledger = home_ + "/creating/cchild";
    EXPECT_EQ(sys::read_file(ledger).value_or(""), ds("cbase") + "@cchild\n")
        << "the cut create's ledger names its snapshot";
    // Recovery of the incomplete child: remove() whatever exists() says.
    auto removed = driver_->remove("cchild");
    EXPECT_TRUE(removed.ok()) << removed.error().message();
    EXPECT_EQ(below(fsname_), std::vector<std::string>{ds("cbase")})
        << "remove(cchild) must take the snapshot its cut create left";
    EXPECT_FALSE(sys::lstat_if_exists(ledger).value_or(std::nullopt)) << "and the ledger";

    // Cut again, then the create retried without a remove in between: it reuses the name.
    ASSERT_TRUE(killed_at(point, [&] { (void)driver_->create_rw("cchild", "cbase", {}); }));
    if (std::string(point) == "zfs:cloned") ASSERT_TRUE(driver_->remove("cchild").ok());
    auto again = driver_->create_rw("cchild", "cbase", {});
    ASSERT_TRUE(again.ok()) << again.error().message();
    auto snaps = snapshots_of(ds("cbase"));
    EXPECT_EQ(snaps.size(), 1u) << "one snapshot for the one child";
    auto ledgers = sys::read_dir(home_ + "/creating");
    ASSERT_TRUE(ledgers.ok()) << ledgers.error().message();
    EXPECT_TRUE(ledgers->empty()) << "a create that got as far as the deferral leaves no ledger";
    std::string origin = run_out({"zfs", "get", "-H", "-o", "value", "origin", ds("cchild")});
    EXPECT_EQ(run_out({"zfs", "get", "-H", "-o", "value", "defer_destroy", origin}), "on");
    ASSERT_TRUE(driver_->remove("cchild").ok());
    EXPECT_EQ(below(fsname_), std::vector<std::string>{ds("cbase")});
    EXPECT_EQ(driver_->remove("cchild").error().kind(), ErrorKind::kNotFound);
  }
  ASSERT_TRUE(driver_->remove("cbase").ok());
}

// remove() learns of a cut create's snapshot from the ledger the create wrote; a ledger that
// does not name "<fsname>/<layer>@<id>" (damaged, or written by hand) is not trusted: the
// snapshots are listed, and the cut create's snapshot still goes.  Nothing but that one
// snapshot is touched, whatever the ledger names.
TEST_P(ZfsGuest, ALedgerThatNamesSomethingElseIsNotTrusted) {
  ASSERT_TRUE(driver_->create("lbase", "", {}).ok());
  ASSERT_TRUE(driver_->create("lother", "", {}).ok());
  run_out({"zfs", "snapshot", ds("lother") + "@keep"});
  const std::string ledger = home_ + "/creating/lchild";
  for (const std::string& text : {std::string("garbage"), ds("lother") + "@keep\n",
                                  ds("lbase") + "/x@lchild\n", std::string()}) {
    SCOPED_TRACE(text);
    ASSERT_TRUE(
        killed_at("zfs:snapshotted", [&] { (void)driver_->create("lchild", "lbase", {}); }));
    ASSERT_TRUE(sys::write_file_atomic(ledger, text, 0600).ok());
    auto removed = driver_->remove("lchild");
    EXPECT_TRUE(removed.ok()) << removed.error().message();
    EXPECT_EQ(snapshots_of(ds("lbase")), std::vector<std::string>{});
    EXPECT_EQ(snapshots_of(ds("lother")), std::vector<std::string>{ds("lother") + "@keep"});
    EXPECT_FALSE(sys::lstat_if_exists(ledger).value_or(std::nullopt));
  }
  run_out({"zfs", "destroy", ds("lother") + "@keep"});
  ASSERT_TRUE(driver_->remove("lother").ok());
  ASSERT_TRUE(driver_->remove("lbase").ok());
}

// A child's create that fails at its snapshot or its clone leaves nothing: no snapshot, no
// dataset and no ledger (creating/<id>).  The ledger used to stay behind until a remove or
// create of the same id; ZFS fails neither step on demand (it took a 1-byte quota), hence the
// fail points.
TEST_P(ZfsGuest, AFailedCreateLeavesNoLedger) {
  ASSERT_TRUE(driver_->create("fbase", "", {}).ok());
  const std::string ledger = home_ + "/creating/fchild";
  for (const char* point : {"zfs:snapshot", "zfs:clone"}) {
    SCOPED_TRACE(point);
    ASSERT_EQ(::setenv("COWLAB_TEST_FAIL_AT", point, 1), 0);
    auto created = driver_->create_rw("fchild", "fbase", {});
    ::unsetenv("COWLAB_TEST_FAIL_AT");
    ASSERT_FALSE(created.ok()) << "the create must fail at " << point;
    EXPECT_NE(created.error().message().find(std::string("injected failure at ") + point),
              std::string::npos)
        << created.error().message();
    EXPECT_EQ(below(fsname_), std::vector<std::string>{ds("fbase")});
    EXPECT_EQ(snapshots_of(ds("fbase")), std::vector<std::string>{});
    EXPECT_FALSE(sys::lstat_if_exists(ledger).value_or(std::nullopt)) << "ledger left: " << ledger;
  }
  auto again = driver_->create_rw("fchild", "fbase", {});
  ASSERT_TRUE(again.ok()) << again.error().message();
  ASSERT_TRUE(driver_->remove("fchild").ok());
  ASSERT_TRUE(driver_->remove("fbase").ok());
}

// Driver::list names this store's layers (so the layer store can collect the data no layer
// claims, as on the other drivers): not a dataset another store made on the same parent, not
// one cowlab did not make.  It was kNotSupported before.
TEST_P(ZfsGuest, ListNamesThisStoresLayersOnly) {
  ASSERT_TRUE(driver_->create("lbase", "", {}).ok());
  ASSERT_TRUE(driver_->create_rw("lchild", "lbase", {}).ok());
  TempDir other_root;
  auto other = init_zfs_with_backend(
      DriverConfig{other_root.path(), other_root.path() + "/zfs", {{"zfs.fsname", fsname_}}},
      GetParam());
  ASSERT_TRUE(other.ok()) << other.error().message();
  ASSERT_TRUE((*other)->create("theirs", "", {}).ok());
  run_out({"zfs", "create", "-o", "mountpoint=legacy", ds("foreign")});
  auto listed = driver_->list();
  ASSERT_TRUE(listed.ok()) << listed.error().message();
  std::sort(listed->begin(), listed->end());
  EXPECT_EQ(*listed, (std::vector<std::string>{"lbase", "lchild"}));
  auto theirs = (*other)->list();
  ASSERT_TRUE(theirs.ok()) << theirs.error().message();
  EXPECT_EQ(*theirs, std::vector<std::string>{"theirs"});
  run_out({"zfs", "destroy", ds("foreign")});
  ASSERT_TRUE((*other)->remove("theirs").ok());
  EXPECT_TRUE((*other)->cleanup().ok());
  ASSERT_TRUE(driver_->remove("lchild").ok());
  ASSERT_TRUE(driver_->remove("lbase").ok());
  listed = driver_->list();
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());
}

// Salvage on zfs as on the other drivers: metadata that no longer names its cache id is
// deleted, and its dataset — listed, claimed by no layer — goes with it; the other layer stays.
TEST_P(ZfsGuest, DeletingUnreadableMetadataCollectsItsDataset) {
  StoreOptions o;
  o.root = root_->path();
  o.driver = "zfs";
  o.storage_opts = {{"zfs.fsname", fsname_}};
  std::string x, y;
  {
    auto s = LayerStore::open(o);
    ASSERT_TRUE(s.ok()) << s.error().message();
    ASSERT_TRUE((*s)->create_layer("x", "", LayerKind::kReadOnly).ok());
    ASSERT_TRUE((*s)->create_layer("y", "", LayerKind::kReadOnly).ok());
    x = (*s)->layer("x")->cache_id;
    y = (*s)->layer("y")->cache_id;
  }
  ASSERT_TRUE(sys::write_file_atomic(o.root + "/layers/x.json", std::string(64, '\0')).ok());
  auto s = LayerStore::open(o);
  ASSERT_TRUE(s.ok()) << s.error().message();
  auto d = (*s)->delete_layer("x");
  ASSERT_TRUE(d.ok()) << d.error().message();
  std::string lines;
  for (const auto& l : (*s)->recovered()) lines += l + "\n";
  EXPECT_NE(lines.find("removed driver data " + x), std::string::npos) << lines;
  EXPECT_FALSE((*s)->driver().exists(x)) << "the unclaimed dataset " << ds(x) << " stayed";
  EXPECT_TRUE((*s)->driver().exists(y));
  ASSERT_TRUE((*s)->wipe().ok());
}

TEST_P(ZfsGuest, QuotaFromSizeOption) {
  ASSERT_TRUE(driver_->create("qbase", "", {}).ok());
  CreateOpts sized;
  sized.storage_opt["size"] = "50M";
  ASSERT_TRUE(driver_->create_rw("qtest", "qbase", sized).ok());
  EXPECT_EQ(run_out({"zfs", "get", "-H", "-p", "-o", "value", "quota", ds("qtest")}),
            std::to_string(50 * kMiB));
  auto dir = driver_->get("qtest", "");
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(write_bytes(*dir + "/small", 25 * kMiB), 0);
  int e = write_bytes(*dir + "/bigfile", 50 * kMiB);
  EXPECT_TRUE(e == EDQUOT || e == ENOSPC) << "errno " << e;
  ASSERT_TRUE(driver_->put("qtest").ok());
  ASSERT_TRUE(driver_->remove("qtest").ok());
  ASSERT_TRUE(driver_->remove("qbase").ok());
}

TEST_P(ZfsGuest, StatusIsLive) {
  auto rows = driver_->status();
  ASSERT_EQ(rows.size(), 7u);
  std::string pool = fsname_.substr(0, fsname_.find('/'));
  EXPECT_EQ(rows[0], (std::pair<std::string, std::string>{"Zpool", pool}));
  EXPECT_EQ(rows[1], (std::pair<std::string, std::string>{"Zpool Health", "ONLINE"}));
  EXPECT_EQ(rows[2], (std::pair<std::string, std::string>{"Parent Dataset", fsname_}));
  EXPECT_EQ(rows[3].first, "Space Used By Parent");
  EXPECT_EQ(rows[4].first, "Space Available");
  EXPECT_EQ(rows[5].first, "Parent Quota");
  EXPECT_EQ(rows[6].first, "Compression");
  uint64_t used_before = std::stoull(rows[3].second);
  ASSERT_TRUE(driver_->create("s", "", {}).ok());
  auto dir = driver_->get("s", "");
  ASSERT_TRUE(dir.ok());
  ASSERT_EQ(write_bytes(*dir + "/f", 8 * kMiB), 0);
  ASSERT_TRUE(driver_->put("s").ok());
  (void)sys::run({"zpool", "sync", pool});
  uint64_t used_after = std::stoull(driver_->status()[3].second);
  EXPECT_GE(used_after, used_before + 7 * kMiB) << "status must read the pool now, not at init";
  ASSERT_TRUE(driver_->remove("s").ok());
}

// moby#16112: a copy of the mount held by another mount namespace must not make Remove fail.
TEST_P(ZfsGuest, RemoveWhileMountedInALeakedNamespace) {
  ASSERT_TRUE(driver_->create("lbase", "", {}).ok());
  ASSERT_TRUE(driver_->create_rw("leaky", "lbase", {}).ok());
  auto dir = driver_->get("leaky", "");
  ASSERT_TRUE(dir.ok());
  auto holder = sys::spawn_mount_holder();  // unshare -m; sleep
  ASSERT_TRUE(holder.ok()) << holder.error().message();
  std::string held = "/proc/" + std::to_string(*holder) + "/mounts";
  EXPECT_NE(run_out({"cat", held}).find(ds("leaky")), std::string::npos)
      << "the holder must see the mount";
  ASSERT_TRUE(driver_->put("leaky").ok());
  auto removed = driver_->remove("leaky");
  EXPECT_TRUE(removed.ok()) << removed.error().message();
  // Destroyed at once, not deferred: removing the mount point released the holder's copy.
  EXPECT_FALSE(driver_->exists("leaky"));
  auto pending = zfs_pending_removals(*driver_);
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(*pending, std::vector<std::string>{});
  EXPECT_EQ(run_out({"cat", held}).find(ds("leaky")), std::string::npos);
  ASSERT_TRUE(sys::kill_child(*holder).ok());
  ASSERT_TRUE(driver_->remove("lbase").ok());
}

// A holder with its working directory inside the copy keeps the filesystem busy however the
// mount is detached: remove still succeeds, the dataset is renamed and destroyed once the
// holder has gone.  The layer is a child, so its origin snapshot "<parent>@busy" moves out of
// the id's way too and the same id can be created from the same parent at once.
TEST_P(ZfsGuest, RemoveWhileAProcessIsInsideTheMount) {
  ASSERT_TRUE(driver_->create("bbase", "", {}).ok());
  ASSERT_TRUE(driver_->create_rw("busy", "bbase", {}).ok());
  auto dir = driver_->get("busy", "");
  ASSERT_TRUE(dir.ok());
  auto holder = sys::fork_child([&](int out_fd) -> int {
    char ok = 'n';
    if (::unshare(CLONE_NEWNS) == 0 &&
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
        ::chdir(dir->c_str()) == 0)
      ok = 'y';
    (void)!::write(out_fd, &ok, 1);
    for (;;) ::pause();
  });
  ASSERT_TRUE(holder.ok()) << holder.error().message();
  const pid_t pid = holder->pid;
  char ok = 'n';
  ASSERT_EQ(::read(holder->out.get(), &ok, 1), 1);
  ASSERT_EQ(ok, 'y');
  ASSERT_TRUE(driver_->put("busy").ok());
  auto removed = driver_->remove("busy");
  EXPECT_TRUE(removed.ok()) << removed.error().message();
  EXPECT_FALSE(driver_->exists("busy"));
  auto pending = zfs_pending_removals(*driver_);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].rfind(fsname_ + "/cowlab-removing:", 0), 0u) << (*pending)[0];
  // The id is free again at once.
  auto again = driver_->create_rw("busy", "bbase", {});
  ASSERT_TRUE(again.ok()) << again.error().message();
  ASSERT_TRUE(driver_->remove("busy").ok());
  ASSERT_TRUE(sys::kill_child(pid).ok());
  ASSERT_TRUE(driver_->cleanup().ok());  // reaps what the holder kept
  pending = zfs_pending_removals(*driver_);
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(*pending, std::vector<std::string>{});
  EXPECT_EQ(below(fsname_), std::vector<std::string>{ds("bbase")})
      << "the pending dataset's renamed origin goes with it";
  ASSERT_TRUE(driver_->remove("bbase").ok());
}

// Issue 11, concurrent readers: two readers of one layer (two `cowlab diff`s, each under the
// store's shared lock) used to share graph/<id>: the second found it mounted and counted that
// as a reference, and the first to finish unmounted it under the other.  Each reader now
// mounts on a directory of its own (core/reader_mounts.h); one killed while mounted leaves
// its mount to the next writer's init, which removes it before the dataset is destroyed.
TEST_P(ZfsGuest, TwoReadersOfALayerEachKeepTheirOwnMount) {
  ASSERT_NO_FATAL_FAILURE(make_layer_with_file());

  DriverConfig shared{root_->path(), home_, {{"zfs.fsname", fsname_}}};
  shared.access = DriverAccess::kShared;
  auto first = init_zfs_with_backend(shared, GetParam());
  auto second = init_zfs_with_backend(shared, GetParam());
  ASSERT_TRUE(first.ok()) << first.error().message();
  ASSERT_TRUE(second.ok()) << second.error().message();
  auto p1 = (*first)->get("l", "");
  auto p2 = (*second)->get("l", "");
  ASSERT_TRUE(p1.ok()) << p1.error().message();
  ASSERT_TRUE(p2.ok()) << p2.error().message();
  EXPECT_NE(*p1, *p2);
  ASSERT_TRUE((*first)->put("l").ok());
  EXPECT_EQ(sys::read_file(*p2 + "/file").value_or("<unreadable>"), "content")
      << "the first reader unmounted the second's";
  ASSERT_TRUE((*second)->put("l").ok());
  EXPECT_EQ(testing::mounts_under(root_->path()), std::vector<std::string>{});

  // A reader that never puts (killed): its mount stays until a writer opens the store.
  auto p3 = (*first)->get("l", "");
  ASSERT_TRUE(p3.ok()) << p3.error().message();
  first->reset();
  second->reset();
  EXPECT_EQ(testing::mounts_under(root_->path()).size(), 1u);
  DriverConfig exclusive{root_->path(), home_, {{"zfs.fsname", fsname_}}};
  auto writer = init_zfs_with_backend(exclusive, GetParam());
  ASSERT_TRUE(writer.ok()) << writer.error().message();
  EXPECT_EQ(testing::mounts_under(root_->path()), std::vector<std::string>{})
      << "the writer left a killed reader's mount";
  ASSERT_TRUE((*writer)->remove("l").ok());
  auto pending = zfs_pending_removals(**writer);
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(*pending, std::vector<std::string>{}) << "a reader's mount kept the dataset busy";
}

// Issue 11: read-only commands work on a read-only store.  A reader's init chmod-ed the home
// (EROFS: every command failed, `layers` too), and its mount points are made in the home.  On
// a read-only store a reader now changes nothing and mounts in a private mount namespace, on a
// tmpfs over graph/ (core/reader_mounts.h).  The reader runs in a child process, as each
// `cowlab diff` is a process of its own (it changes its mount namespace).
TEST_P(ZfsGuest, ReadersOfAReadOnlyStoreMountLayersPrivately) {
  ASSERT_NO_FATAL_FAILURE(make_layer_with_file());
  const std::string root = root_->path();
  ASSERT_TRUE(sys::mount(root, root, "", MS_BIND, "").ok());
  ASSERT_TRUE(sys::mount("", root, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "").ok());
  struct Unmount {
    std::string path;
    ~Unmount() { (void)sys::umount2(path, MNT_DETACH); }
  } unmount{root};

  auto child = sys::fork_child([&](int out_fd) -> int {
    auto fail = [&](const std::string& why) {
      (void)!::write(out_fd, why.data(), why.size());
      return 1;
    };
    DriverConfig shared{root, home_, {{"zfs.fsname", fsname_}}};
    shared.access = DriverAccess::kShared;
    auto d = init_zfs_with_backend(shared, GetParam());
    if (!d.ok()) return fail("init: " + d.error().message());
    if (!(*d)->exists("l")) return fail("exists: no layer l");
    auto m = (*d)->get("l", "");
    if (!m.ok()) return fail("get: " + m.error().message());
    if (sys::read_file(*m + "/file").value_or("") != "content") return fail("get: no content");
    if (m->rfind(root + "/", 0) != 0) return fail("get: mounted outside the store: " + *m);
    if (auto r = (*d)->put("l"); !r.ok()) return fail("put: " + r.error().message());
    auto m2 = (*d)->get("l", "");  // and a killed reader: no put, no cleanup
    if (!m2.ok()) return fail("get again: " + m2.error().message());
    ::_exit(0);
  });
  ASSERT_TRUE(child.ok()) << child.error().message();
  std::string output;
  auto rc = sys::wait_child(*child, 300000, &output);
  ASSERT_TRUE(rc.ok()) << rc.error().message();
  EXPECT_EQ(*rc, std::optional<int>(0)) << "a reader of the read-only store failed: " << output;
  EXPECT_EQ(testing::mounts_under(root), std::vector<std::string>{root})
      << "a reader's mount is seen outside it";
  ASSERT_TRUE(sys::umount2(root, MNT_DETACH).ok());
  auto removed = driver_->remove("l");
  EXPECT_TRUE(removed.ok()) << removed.error().message();
  auto pending = zfs_pending_removals(*driver_);
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(*pending, std::vector<std::string>{}) << "a killed reader's mount kept it busy";
}

TEST_P(ZfsGuest, CreateRefusals) {
  EXPECT_EQ(driver_->create("x", "missing", {}).error().kind(), ErrorKind::kNotFound);
  EXPECT_FALSE(driver_->exists("x"));
  CreateOpts bad;
  bad.storage_opt["inodes"] = "5";
  EXPECT_EQ(driver_->create_rw("y", "", bad).error().kind(), ErrorKind::kInvalid);
  ASSERT_TRUE(driver_->create("dup", "", {}).ok());
  EXPECT_EQ(driver_->create("dup", "", {}).error().kind(), ErrorKind::kExists);
  ASSERT_TRUE(driver_->remove("dup").ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, ZfsGuest,
                         ::testing::Values(ZfsBackend::kLibZfsCore, ZfsBackend::kCommand),
                         [](const ::testing::TestParamInfo<ZfsBackend>& info) {
                           return info.param == ZfsBackend::kLibZfsCore
                                      ? std::string("libzfs_core")
                                      : std::string("zfs_command");
                         });

}  // namespace
}  // namespace cowlab
