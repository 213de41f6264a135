// The aufs driver on the host, whose kernel has no aufs: init must refuse with the exact
// reason and selection must move on; everything that needs no mount (Docker's layout, create
// and remove, native diff/changes/apply-diff on the diff dirs, aufs metadata never exported,
// status, stale cleanup) runs on a driver made without the kernel probes.  Mounting is covered
// by the guest suites on an aufs kernel (docs/aufs.md).
#include "aufs/aufs.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "aufs/branches.h"
#include "cowlab/archive.h"
#include "cowlab/registry.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "cowlab/sys_text.h"
#include "cowlab/view.h"

namespace cowlab {
namespace {

constexpr const char* kNoAufs =
    "this kernel has no aufs (not in /proc/filesystems and modprobe aufs failed)";

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/var/tmp") + "/cowlab-aufs-test-XXXXXX";
    char* p = ::mkdtemp(tmpl.data());
    if (p) path_ = p;
  }
  ~TempDir() {
    if (!path_.empty()) (void)sys::remove_all(path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool host_has_aufs() {
  auto r = sys::filesystem_supported("aufs");
  return r.ok() && *r;
}

std::string read_text(const std::string& path) {
  auto r = sys::read_file(path);
  return r.ok() ? *r : "<" + r.error().message() + ">";
}

Result<void> write_text(const std::string& path, const std::string& text) {
  return sys::write_file_atomic(path, text, 0644);
}

mode_t mode_of(const std::string& path) {
  auto st = sys::lstat(path);
  return st.ok() ? (st->st_mode & 07777) : 0;
}

bool present(const std::string& path) {
  auto st = sys::lstat_if_exists(path);
  return st.ok() && st->has_value();
}

// Entry names of a tar stream, via tar(1) on a temp file.
std::vector<std::string> tar_names(const std::string& dir, const std::string& tar) {
  std::string file = dir + "/listing.tar";
  EXPECT_TRUE(sys::write_file_atomic(file, tar, 0600).ok());
  std::string out;
  auto rc = sys::run({"tar", "-tf", file}, &out);
  EXPECT_TRUE(rc.ok() && *rc == 0) << out;
  (void)sys::unlink(file);
  std::vector<std::string> names;
  for (std::string n : sys::split_lines(out)) {
    while (!n.empty() && n.back() == '/') n.pop_back();
    if (n.rfind("./", 0) == 0) n = n.substr(2);
    if (!n.empty()) names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  return names;
}

bool mounted(const std::string& path) {
  auto m = sys::is_mountpoint(path);
  return m.ok() && *m;
}

// Names in `dir` starting with `prefix`, sorted.
std::vector<std::string> names_with_prefix(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  auto entries = sys::read_dir(dir);
  if (entries.ok())
    for (const auto& e : *entries)
      if (e.name.rfind(prefix, 0) == 0) out.push_back(e.name);
  std::sort(out.begin(), out.end());
  return out;
}

// Another process's dirperm1 probe in progress in `home`: its .probe- dir, a file in its branch
// and a mount on its union (tmpfs: the host has no aufs).  The mount goes with the object.
class ProbeInProgress {
 public:
  explicit ProbeInProgress(const std::string& home) : dir_(home + "/.probe-0123456789ab") {
    ok_ = sys::mkdir_all(dir_ + "/base", 0755).ok() && sys::mkdir(dir_ + "/union", 0755).ok() &&
          write_text(dir_ + "/base/f", "in use").ok() &&
          sys::mount("probe-in-use", dir_ + "/union", "tmpfs", 0, "").ok();
  }
  ~ProbeInProgress() {
    if (mounted(dir_ + "/union")) (void)sys::umount2(dir_ + "/union", MNT_DETACH);
  }
  bool ok() const { return ok_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  bool ok_ = false;
};

// `root` bind-mounted read-only on itself while the object lives.
class ReadOnlyBind {
 public:
  explicit ReadOnlyBind(const std::string& root) : root_(root) {
    ok_ = sys::mount(root_, root_, "", MS_BIND, "").ok() &&
          sys::mount("", root_, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "").ok();
  }
  ~ReadOnlyBind() { (void)sys::umount2(root_, MNT_DETACH); }
  bool ok() const { return ok_; }

 private:
  std::string root_;
  bool ok_ = false;
};

TEST(AufsInit, KernelWithoutAufsIsNotSupportedWithTheReason) {
  if (host_has_aufs())
    GTEST_SKIP() << "skipped: this kernel has aufs, so the refusal cannot be observed";
  TempDir root;
  ASSERT_FALSE(root.path().empty());
  DriverConfig cfg{root.path(), root.path() + "/aufs", {}};
  auto d = init_aufs(cfg);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().kind(), ErrorKind::kNotSupported);
  EXPECT_EQ(d.error().message(), kNoAufs);
  EXPECT_FALSE(present(cfg.home)) << "a refused init must not leave a home that pins the driver";
}

TEST(AufsInit, UnknownOptionIsInvalidBeforeAnyProbe) {
  TempDir root;
  DriverConfig cfg{root.path(), root.path() + "/aufs", {{"aufs.xino", "/dev/shm/x"}}};
  auto d = init_aufs(cfg);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(d.error().message().find("aufs.xino"), std::string::npos) << d.error().message();
}

TEST(AufsInit, SelectionMovesOnWithTheReason) {
  if (host_has_aufs()) GTEST_SKIP() << "skipped: this kernel has aufs, so selection would pick it";
  TempDir root;
  SelectOptions o;
  o.root = root.path();
  o.priority = {"aufs", "vfs"};
  std::vector<DriverProbe> tried;
  auto d = select_driver(o, &tried);
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ((*d)->name(), "vfs");
  ASSERT_GE(tried.size(), 2u);
  EXPECT_EQ(tried[0].name, "aufs");
  EXPECT_FALSE(tried[0].usable);
  EXPECT_NE(tried[0].reason.find(kNoAufs), std::string::npos) << tried[0].reason;
  EXPECT_FALSE(present(root.path() + "/aufs"));
  (void)(*d)->cleanup();
}

class AufsUnprobed : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(root_.path().empty());
    home_ = root_.path() + "/aufs";
    AufsProbes probes;
    probes.backing_fs = "extfs";
    probes.dirperm1 = true;
    auto d = init_aufs_unprobed_for_tests(DriverConfig{root_.path(), home_, {}}, probes);
    ASSERT_TRUE(d.ok()) << d.error().message();
    driver_ = std::move(*d);
  }

  // base: a, dir/b.   mid (child of base): deletes a (whiteout), adds c, and carries the
  // metadata aufs leaves in a rw branch.
  void make_base_and_mid() {
    ASSERT_TRUE(driver_->create("base", "", {}).ok());
    ASSERT_TRUE(driver_->create("mid", "base", {}).ok());
    std::string base = home_ + "/diff/base", mid = home_ + "/diff/mid";
    ASSERT_TRUE(write_text(base + "/a", "aaa").ok());
    ASSERT_TRUE(sys::mkdir(base + "/dir", 0755).ok());
    ASSERT_TRUE(write_text(base + "/dir/b", "bbbb").ok());
    ASSERT_TRUE(write_text(mid + "/.wh.a", "").ok());
    ASSERT_TRUE(write_text(mid + "/c", "c").ok());
    ASSERT_TRUE(write_text(mid + "/.wh..wh.aufs", "").ok());
    ASSERT_TRUE(sys::mkdir(mid + "/.wh..wh.plnk", 0700).ok());
    ASSERT_TRUE(write_text(mid + "/.wh..wh.plnk/1234.5678", "plink").ok());
    ASSERT_TRUE(sys::mkdir(mid + "/.wh..wh.orph", 0700).ok());
  }

  TempDir root_;
  std::string home_;
  std::unique_ptr<Driver> driver_;
};

TEST_F(AufsUnprobed, DockerLayout) {
  for (const char* sub : {"layers", "diff", "mnt"})
    EXPECT_EQ(mode_of(home_ + "/" + sub), 0710u) << sub;
  EXPECT_EQ(mode_of(home_), 0710u);
  ASSERT_TRUE(driver_->create("base", "", {}).ok());
  ASSERT_TRUE(driver_->create("mid", "base", {}).ok());
  ASSERT_TRUE(driver_->create_rw("top", "mid", {}).ok());
  EXPECT_EQ(read_text(home_ + "/layers/base"), "");
  EXPECT_EQ(read_text(home_ + "/layers/mid"), "base\n");
  EXPECT_EQ(read_text(home_ + "/layers/top"), "mid\nbase\n");  // nearest first
  for (const char* id : {"base", "mid", "top"}) {
    EXPECT_EQ(mode_of(home_ + "/diff/" + id), 0755u) << id;
    EXPECT_EQ(mode_of(home_ + "/mnt/" + id), 0755u) << id;
    EXPECT_TRUE(driver_->exists(id));
  }
  // A layer without ancestors is its diff dir: no mount.
  auto path = driver_->get("base", "");
  ASSERT_TRUE(path.ok()) << path.error().message();
  EXPECT_EQ(*path, home_ + "/diff/base");
  EXPECT_TRUE(driver_->put("base").ok());
  EXPECT_EQ(driver_->whiteout_format(), WhiteoutFormat::kAufs);
  EXPECT_FALSE(driver_->supports_quota());
}

TEST_F(AufsUnprobed, CreateRefusals) {
  CreateOpts sized;
  sized.storage_opt["size"] = "10M";
  auto r = driver_->create_rw("x", "", sized);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(r.error().message().find("--storage-opt is not supported for aufs"), std::string::npos);
  EXPECT_FALSE(driver_->exists("x"));

  r = driver_->create("orphan", "nosuchparent", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kNotFound);
  EXPECT_FALSE(driver_->exists("orphan"));
  EXPECT_FALSE(present(home_ + "/diff/orphan"));

  for (const char* bad : {"layer-removing", "a:b", "a,b", "a=b", ".hidden"}) {
    r = driver_->create(bad, "", {});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid) << bad;
  }
  ASSERT_TRUE(driver_->create("dup", "", {}).ok());
  r = driver_->create("dup", "", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kExists);
}

TEST_F(AufsUnprobed, StatusAndMetadata) {
  ASSERT_TRUE(driver_->create("one", "", {}).ok());
  ASSERT_TRUE(driver_->create("two", "one", {}).ok());
  KeyValues want = {{"Root Dir", home_},
                    {"Backing Filesystem", "extfs"},
                    {"Dirs", "2"},
                    {"Dirperm1 Supported", "true"}};
  EXPECT_EQ(driver_->status(), want);
  auto md = driver_->metadata("two");
  ASSERT_TRUE(md.ok());
  EXPECT_TRUE(md->empty());
  EXPECT_EQ(driver_->metadata("nope").error().kind(), ErrorKind::kNotFound);
}

TEST_F(AufsUnprobed, NativeChangesAndDiffNeverExportAufsMetadata) {
  make_base_and_mid();
  auto ch = driver_->changes("mid", "base");
  ASSERT_TRUE(ch.ok()) << ch.error().message();
  std::vector<Change> want = {{"/a", ChangeKind::kDelete}, {"/c", ChangeKind::kAdd}};
  EXPECT_EQ(*ch, want);

  StringWriter out;
  auto d = driver_->diff("mid", "base", out);
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ(tar_names(root_.path(), out.data()), (std::vector<std::string>{".wh.a", "c"}));

  auto size = driver_->diff_size("mid", "base");
  ASSERT_TRUE(size.ok()) << size.error().message();
  EXPECT_EQ(*size, 1);

  // The base layer against nothing: everything, as Adds.
  StringWriter base_out;
  ASSERT_TRUE(driver_->diff("base", "", base_out).ok());
  EXPECT_EQ(tar_names(root_.path(), base_out.data()),
            (std::vector<std::string>{"a", "dir", "dir/b"}));
}

TEST_F(AufsUnprobed, NativeApplyDiffKeepsAufsWhiteouts) {
  make_base_and_mid();
  StringWriter out;
  ASSERT_TRUE(driver_->diff("mid", "base", out).ok());
  ASSERT_TRUE(driver_->create("copy", "base", {}).ok());
  StringReader in(out.data());
  auto applied = driver_->apply_diff("copy", "base", in);
  ASSERT_TRUE(applied.ok()) << applied.error().message();
  EXPECT_EQ(*applied, 1);                            // one byte of file content ("c")
  EXPECT_TRUE(present(home_ + "/diff/copy/.wh.a"));  // native aufs whiteout, a plain file
  EXPECT_EQ(read_text(home_ + "/diff/copy/c"), "c");
  EXPECT_FALSE(present(home_ + "/.tmp")) << "the scratch dir must not outlive the apply";
  auto ch = driver_->changes("copy", "base");
  ASSERT_TRUE(ch.ok());
  EXPECT_EQ(*ch, (std::vector<Change>{{"/a", ChangeKind::kDelete}, {"/c", ChangeKind::kAdd}}));
}

TEST_F(AufsUnprobed, RemoveLeavesNothing) {
  make_base_and_mid();
  ASSERT_TRUE(driver_->remove("mid").ok());
  EXPECT_FALSE(driver_->exists("mid"));
  for (const char* p :
       {"/layers/mid", "/diff/mid", "/mnt/mid", "/diff/mid-removing", "/mnt/mid-removing"})
    EXPECT_FALSE(present(home_ + p)) << p;
  auto again = driver_->remove("mid");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(driver_->exists("base"));
}

// Every state a power cut can leave a create or remove in: create makes mnt/<id>, then
// diff/<id>, then writes layers/<id> through a temp file; remove unlinks layers/<id>, then
// renames diff/<id> and mnt/<id> to -removing and deletes them.  exists() is false in most of
// these states, yet remove() must take everything away (the crash runner found diff/<id> and
// mnt/<id> orphaned after cut creates on an aufs kernel: before, remove() answered kNotFound
// because exists() was false, and left them), then answer kNotFound; list() names each state,
// so the layer store can collect one no layer claims.
TEST_F(AufsUnprobed, RemoveTakesAwayEveryHalfMadeState) {
  ASSERT_TRUE(driver_->create("base", "", {}).ok());
  struct State {
    const char* name;
    std::vector<std::string> dirs;   // made below the home, in this order
    std::vector<std::string> files;  // written below the home (content "base\n")
  };
  const std::string id = "0123456789abcdef0123456789abcdef";
  const std::vector<State> states = {
      {"mnt made", {"mnt/" + id}, {}},
      {"mnt and diff made", {"mnt/" + id, "diff/" + id}, {}},
      {"diff filled, layers file not written",
       {"mnt/" + id, "diff/" + id, "diff/" + id + "/etc"},
       {"diff/" + id + "/etc/f"}},
      {"layers file's temp write cut",
       {"mnt/" + id, "diff/" + id},
       {"layers/" + id + ".tmp-4242-123456"}},
      {"remove cut after the layers file", {"mnt/" + id, "diff/" + id + "-removing"}, {}},
      {"remove cut after renaming diff", {"diff/" + id + "-removing"}, {}},
      {"layers file only", {}, {"layers/" + id}},
  };
  for (const auto& st : states) {
    SCOPED_TRACE(st.name);
    for (const auto& d : st.dirs) ASSERT_TRUE(sys::mkdir(home_ + "/" + d, 0755).ok()) << d;
    for (const auto& f : st.files) ASSERT_TRUE(write_text(home_ + "/" + f, "base\n").ok()) << f;
    auto listed = driver_->list();
    ASSERT_TRUE(listed.ok()) << listed.error().message();
    bool dir_only_removing = st.dirs.size() == 1 && st.dirs[0].ends_with("-removing");
    EXPECT_EQ(std::count(listed->begin(), listed->end(), id), dir_only_removing ? 0 : 1)
        << "list() must name a half-made layer (a directory being removed is init's)";
    auto r = driver_->remove(id);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_FALSE(driver_->exists(id));
    for (const char* sub : {"layers", "diff", "mnt"}) {
      auto entries = sys::read_dir(home_ + "/" + sub);
      ASSERT_TRUE(entries.ok());
      for (const auto& e : *entries)
        EXPECT_EQ(e.name, "base") << sub << "/" << e.name << " outlived remove()";
    }
    auto again = driver_->remove(id);
    ASSERT_FALSE(again.ok()) << "nothing of the layer is left: kNotFound";
    EXPECT_EQ(again.error().kind(), ErrorKind::kNotFound);
    EXPECT_TRUE(driver_->exists("base"));
  }
  // A create of the same id after the removal works (nothing is in its way).
  ASSERT_TRUE(driver_->create(id, "base", {}).ok());
  EXPECT_TRUE(driver_->exists(id));
}

TEST_F(AufsUnprobed, InitDeletesStaleRemovingDirs) {
  ASSERT_TRUE(driver_->create("keep", "", {}).ok());
  ASSERT_TRUE(sys::mkdir(home_ + "/diff/gone-removing", 0755).ok());
  ASSERT_TRUE(write_text(home_ + "/diff/gone-removing/f", "x").ok());
  ASSERT_TRUE(sys::mkdir(home_ + "/mnt/gone-removing", 0755).ok());
  driver_.reset();
  AufsProbes probes;
  auto d = init_aufs_unprobed_for_tests(DriverConfig{root_.path(), home_, {}}, probes);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(present(home_ + "/diff/gone-removing"));
  EXPECT_FALSE(present(home_ + "/mnt/gone-removing"));
  EXPECT_TRUE((*d)->exists("keep"));
}

// Issue 11: readers (DriverAccess::kShared) run at once under the store's shared lock, and each
// whose cached dirperm1 result does not fit this boot probes in a .probe-<random> dir of its own.
// A reader must leave every other probe dir alone — it may be another reader's, in use — and the
// -removing dirs of an interrupted remove, which are a writer's to delete (it lists them as
// pending recovery, so the layer store upgrades its lock); only a writer (kExclusive: nobody else
// runs) removes what killed inits and removes left.  Before, every init removed all of them.
TEST_F(AufsUnprobed, OnlyTheWriterRemovesProbeAndRemovingDirsReadersLeaveThem) {
  ASSERT_TRUE(driver_->create("keep", "", {}).ok());
  EXPECT_TRUE(driver_->pending_recovery().empty());
  ProbeInProgress other(home_);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(sys::mkdir(home_ + "/diff/gone-removing", 0755).ok());
  ASSERT_TRUE(write_text(home_ + "/diff/gone-removing/f", "x").ok());
  ASSERT_TRUE(sys::mkdir(home_ + "/mnt/gone-removing", 0755).ok());
  const std::string temp = home_ + "/probes.tmp-4242-123456";  // a killed cache write's
  ASSERT_TRUE(write_text(temp, "x").ok());
  ASSERT_TRUE(sys::is_atomic_write_temp_name("probes.tmp-4242-123456"));

  AufsProbes probes;
  probes.backing_fs = "extfs";
  DriverConfig shared{root_.path(), home_, {}, DriverAccess::kShared};
  auto reader = init_aufs_unprobed_for_tests(shared, probes);
  ASSERT_TRUE(reader.ok()) << reader.error().message();
  EXPECT_EQ(read_text(other.dir() + "/base/f"), "in use")
      << "a reader removed another reader's probe dir";
  EXPECT_TRUE(mounted(other.dir() + "/union")) << "a reader unmounted another reader's probe mount";
  EXPECT_TRUE(present(home_ + "/diff/gone-removing/f")) << "a reader deleted a writer's leftover";
  EXPECT_TRUE(present(home_ + "/mnt/gone-removing"));
  EXPECT_TRUE(present(temp));
  EXPECT_EQ((*reader)->pending_recovery(),
            std::vector<std::string>{"2 dir(s) of interrupted removes to delete (" + home_ +
                                     "/diff/gone-removing, ...)"});
  EXPECT_TRUE((*reader)->exists("keep"));
  auto listed = (*reader)->list();
  ASSERT_TRUE(listed.ok()) << listed.error().message();
  EXPECT_EQ(*listed, std::vector<std::string>{"keep"});

  // A writer runs alone: what is there is a killed init's or remove's leftover, and it goes.
  auto writer = init_aufs_unprobed_for_tests(DriverConfig{root_.path(), home_, {}}, probes);
  ASSERT_TRUE(writer.ok()) << writer.error().message();
  EXPECT_FALSE(mounted(other.dir() + "/union")) << "the writer left a stale probe mount";
  EXPECT_EQ(names_with_prefix(home_, ".probe-"), std::vector<std::string>{})
      << "the writer left a stale probe dir";
  EXPECT_FALSE(present(home_ + "/diff/gone-removing"));
  EXPECT_FALSE(present(home_ + "/mnt/gone-removing"));
  EXPECT_FALSE(present(temp));
  EXPECT_TRUE((*writer)->pending_recovery().empty());
  EXPECT_TRUE((*writer)->exists("keep"));
}

// Issue 11, item 6: read-only commands work on a read-only store.  A reader writes nothing in an
// existing home — no chmod (EROFS even to the same mode), no mkdir of what is there — and goes
// without a missing directory it cannot make.  Before: "aufs init: fchmodat .../aufs: EROFS".
TEST_F(AufsUnprobed, ReadersOfAReadOnlyHomeWriteNothing) {
  make_base_and_mid();
  const KeyValues status = driver_->status();
  StringWriter diff_before;
  ASSERT_TRUE(driver_->diff("mid", "base", diff_before).ok());
  ASSERT_TRUE(sys::rmdir(home_ + "/xino").ok());  // a home of an older cowlab, say
  driver_.reset();
  ReadOnlyBind ro(root_.path());
  ASSERT_TRUE(ro.ok());
  auto made = sys::mkdir(home_ + "/x", 0700);
  ASSERT_FALSE(made.ok()) << "the bind is not read-only";
  ASSERT_EQ(made.error().err(), EROFS) << made.error().message();

  AufsProbes probes;
  probes.backing_fs = "extfs";
  probes.dirperm1 = true;
  DriverConfig shared{root_.path(), home_, {}, DriverAccess::kShared};
  auto reader = init_aufs_unprobed_for_tests(shared, probes);
  ASSERT_TRUE(reader.ok()) << reader.error().message();
  EXPECT_EQ((*reader)->status(), status);
  EXPECT_TRUE((*reader)->exists("mid"));
  EXPECT_TRUE((*reader)->pending_recovery().empty());
  auto ch = (*reader)->changes("mid", "base");
  ASSERT_TRUE(ch.ok()) << ch.error().message();
  EXPECT_EQ(*ch, (std::vector<Change>{{"/a", ChangeKind::kDelete}, {"/c", ChangeKind::kAdd}}));
  StringWriter out;
  ASSERT_TRUE((*reader)->diff("mid", "base", out).ok());
  EXPECT_EQ(out.data(), diff_before.data());
  EXPECT_FALSE(present(home_ + "/xino"));

  // A writer cannot work on a read-only home, and says where and why.
  auto writer = init_aufs_unprobed_for_tests(DriverConfig{root_.path(), home_, {}}, probes);
  ASSERT_FALSE(writer.ok());
  EXPECT_NE(writer.error().message().find(home_), std::string::npos) << writer.error().message();
  EXPECT_EQ(writer.error().err(), EROFS) << writer.error().message();
}

// Without an aufs kernel the union mount fails; the failure must not leave a reference behind
// (a second get must try again, not hand out an unmounted directory).
TEST_F(AufsUnprobed, FailedMountLeavesNoReference) {
  if (host_has_aufs()) GTEST_SKIP() << "skipped: this kernel has aufs, so the mount would succeed";
  make_base_and_mid();
  for (int i = 0; i < 2; ++i) {
    auto g = driver_->get("mid", "");
    ASSERT_FALSE(g.ok()) << "mount of aufs cannot succeed on a kernel without aufs";
    EXPECT_NE(g.error().message().find("mount"), std::string::npos) << g.error().message();
  }
  EXPECT_TRUE(driver_->put("mid").ok());
}

// ---- on an aufs kernel (guests with a bring-your-own kernel: docs/aufs.md) -------------------

std::vector<std::string> mounts_below(const std::string& dir) {
  std::vector<std::string> out;
  auto mi = sys::mountinfo();
  if (mi.ok())
    for (const auto& m : *mi)
      if (m.mount_point.rfind(dir + "/", 0) == 0) out.push_back(m.mount_point);
  return out;
}

// A stack deeper than a known branch limit is refused before mount(2), naming the limit and
// where it was read; without a known limit the same get reaches mount(2) (and fails here).
TEST_F(AufsUnprobed, StackBeyondTheBranchLimitIsRefusedBeforeMounting) {
  AufsProbes probes;
  probes.backing_fs = "extfs";
  probes.branch_max = 3;
  probes.branch_max_source = "/proc/config.gz";
  auto d = init_aufs_unprobed_for_tests(DriverConfig{root_.path(), home_, {}}, probes);
  ASSERT_TRUE(d.ok()) << d.error().message();
  for (const char* id : {"l1", "l2", "l3", "l4"})
    ASSERT_TRUE(
        (*d)->create(id, std::string(id) == "l1" ? "" : std::string("l") + char(id[1] - 1), {})
            .ok())
        << id;
  auto g = (*d)->get("l4", "");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.error().message(),
            "get layer l4: aufs: layer l4 needs 4 branches; the kernel's aufs branch limit is 3 "
            "(CONFIG_AUFS_BRANCH_MAX_3, read from /proc/config.gz)");
  EXPECT_TRUE(mounts_below(home_).empty());
  if (!host_has_aufs()) {
    auto within = (*d)->get("l3", "");
    ASSERT_FALSE(within.ok());
    EXPECT_EQ(within.error().message().find("branch limit"), std::string::npos)
        << within.error().message();
  }
}

TEST(AufsBranchLimit, ReadFromAConfigText) {
  EXPECT_EQ(*aufs::branch_max_from_config("CONFIG_AUFS_FS=y\nCONFIG_AUFS_BRANCH_MAX_127=y\n"), 127);
  EXPECT_EQ(*aufs::branch_max_from_config("# x\nCONFIG_AUFS_BRANCH_MAX_511=y"), 511);
  EXPECT_EQ(*aufs::branch_max_from_config("CONFIG_AUFS_BRANCH_MAX_32767=y\n"), 32767);
  // Only a whole "=y" line counts: not a comment, not another option's prefix.
  auto none = aufs::branch_max_from_config(
      "# CONFIG_AUFS_BRANCH_MAX_127 is not set\nXCONFIG_AUFS_BRANCH_MAX_511=y\n");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().kind(), ErrorKind::kNotFound);
}

class AufsKernel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!host_has_aufs())
      GTEST_SKIP() << "skipped: this kernel has no aufs (run on an aufs kernel: docs/aufs.md)";
    ASSERT_FALSE(root_.path().empty());
    home_ = root_.path() + "/aufs";
    auto d = init_aufs(DriverConfig{root_.path(), home_, {}});
    ASSERT_TRUE(d.ok()) << d.error().message();
    driver_ = std::move(*d);
  }
  void TearDown() override {
    if (!driver_) return;
    EXPECT_TRUE(driver_->cleanup().ok());
    driver_.reset();
    EXPECT_EQ(mounts_below(root_.path()), std::vector<std::string>{}) << "mounts left behind";
  }
  TempDir root_;
  std::string home_;
  std::unique_ptr<Driver> driver_;
};

// Docker's TestMountMoreThan42Layers: 126 chained layers, each adding a file named after its
// hash, every 10th deleting its parent's file through the union; the top shows 114 entries.
// The branch list needs append remounts, and the driver checks the kernel kept all of it.
TEST_F(AufsKernel, MountMoreThan42Layers) {
  auto hash = [](int i) {
    char buf[65];
    std::snprintf(buf, sizeof buf, "%064x", 0xabc000 + i * 104729);
    return std::string(buf);
  };
  std::string parent, last;
  int expected = 0;
  for (int i = 1; i < 127; ++i) {
    ++expected;
    std::string current = hash(i);
    ASSERT_TRUE(driver_->create_rw(current, parent, {}).ok()) << i;
    auto point = driver_->get(current, "");
    ASSERT_TRUE(point.ok()) << i << ": " << point.error().message();
    ASSERT_TRUE(write_text(*point + "/" + current, "").ok()) << i;
    if (i % 10 == 0) {
      ASSERT_TRUE(sys::unlink(*point + "/" + parent).ok()) << i;
      --expected;
    }
    ASSERT_TRUE(driver_->put(current).ok());
    parent = last = current;
  }
  EXPECT_EQ(expected, 114);
  auto point = driver_->get(last, "");
  ASSERT_TRUE(point.ok()) << point.error().message();
  auto entries = sys::read_dir(*point);
  ASSERT_TRUE(entries.ok());
  size_t visible = 0;
  for (const auto& e : *entries)
    if (e.name.rfind(".wh.", 0) != 0) ++visible;
  EXPECT_EQ(visible, 114u);

  // The mount really needed appends (so the append path was exercised) and holds 126 branches.
  aufs::BranchRequest req;
  req.rw = home_ + "/diff/" + last;
  auto ancestors = sys::read_file(home_ + "/layers/" + last);
  ASSERT_TRUE(ancestors.ok());
  std::string line;
  std::istringstream in(*ancestors);
  while (std::getline(in, line))
    if (!line.empty()) req.ro.push_back(home_ + "/diff/" + line);
  ASSERT_EQ(req.ro.size(), 125u);
  req.page_size = static_cast<size_t>(sys::page_size());
  req.xino = home_ + "/xino/aufs.xino";
  auto plan = aufs::plan_branch_mounts(req);
  ASSERT_TRUE(plan.ok());
  EXPECT_FALSE(plan->appends.empty());
  ASSERT_TRUE(driver_->put(last).ok());

  for (int i = 126; i >= 1; --i) ASSERT_TRUE(driver_->remove(hash(i)).ok()) << i;
}

// Whiteouts made by the kernel stay aufs's; the exported diff carries OCI whiteouts and none of
// aufs's own metadata, although the rw branch now holds it.
TEST_F(AufsKernel, KernelWhiteoutsExportAsOciAndMetadataStaysHome) {
  ASSERT_TRUE(driver_->create("base", "", {}).ok());
  std::string base = home_ + "/diff/base";
  ASSERT_TRUE(write_text(base + "/a", "a").ok());
  ASSERT_TRUE(write_text(base + "/keep", "k").ok());
  ASSERT_TRUE(sys::mkdir(base + "/d", 0755).ok());
  ASSERT_TRUE(write_text(base + "/d/x", "x").ok());
  ASSERT_TRUE(driver_->create_rw("c", "base", {}).ok());
  auto mnt = driver_->get("c", "");
  ASSERT_TRUE(mnt.ok()) << mnt.error().message();
  EXPECT_EQ(*mnt, home_ + "/mnt/c");
  ASSERT_TRUE(sys::unlink(*mnt + "/a").ok());
  ASSERT_TRUE(sys::remove_all(*mnt + "/d").ok());
  ASSERT_TRUE(sys::mkdir(*mnt + "/d", 0755).ok());  // recreated: aufs marks it opaque
  ASSERT_TRUE(write_text(*mnt + "/d/y", "y").ok());
  ASSERT_TRUE(sys::linkat(sys::kCwd, *mnt + "/keep", sys::kCwd, *mnt + "/keep2", 0).ok());  // plink
  EXPECT_FALSE(present(*mnt + "/a"));
  EXPECT_FALSE(present(*mnt + "/d/x"));
  ASSERT_TRUE(driver_->put("c").ok());
  EXPECT_TRUE(present(home_ + "/diff/c/.wh.a"));
  EXPECT_TRUE(present(home_ + "/diff/c/d/.wh..wh..opq"));

  StringWriter out;
  ASSERT_TRUE(driver_->diff("c", "base", out).ok());
  auto names = tar_names(root_.path(), out.data());
  EXPECT_NE(std::find(names.begin(), names.end(), ".wh.a"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "d/.wh..wh..opq"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "d/y"), names.end());
  for (const auto& n : names) {
    EXPECT_EQ(n.find(".wh..wh.aufs"), std::string::npos) << n;
    EXPECT_EQ(n.find(".wh..wh.plnk"), std::string::npos) << n;
    EXPECT_EQ(n.find(".wh..wh.orph"), std::string::npos) << n;
  }
  ASSERT_TRUE(driver_->remove("c").ok());
  ASSERT_TRUE(driver_->remove("base").ok());
}

// aufs answers a lookup of a `.wh.` name in the union with EPERM (no shwh): the driver's view of
// the container reads it as absent, while a real error is still an error.  Before the fix the
// scenario runner's view check failed oci-whiteout-file and oci-opaque-dir with that EPERM.
TEST_F(AufsKernel, WhiteoutNamesReadAsAbsentInTheView) {
  auto d = init_aufs(DriverConfig{root_.path(), home_, {}});
  ASSERT_TRUE(d.ok()) << d.error().message();
  driver_ = std::move(*d);
  ASSERT_TRUE(driver_->create("base", "", {}).ok());
  ASSERT_TRUE(write_text(home_ + "/diff/base/gone", "x").ok());
  ASSERT_TRUE(driver_->create_rw("c", "base", {}).ok());
  auto m = driver_->get("c", "");
  ASSERT_TRUE(m.ok()) << m.error().message();
  ASSERT_TRUE(sys::unlink(*m + "/gone").ok());  // leaves diff/c/.wh.gone
  ASSERT_TRUE(present(home_ + "/diff/c/.wh.gone"));
  auto raw = sys::lstat_if_exists(*m + "/.wh.gone");
  ASSERT_FALSE(raw.ok()) << "aufs showed a whiteout name in the union";
  EXPECT_EQ(raw.error().err(), EPERM) << raw.error().message();
  auto view = lstat_in_view(*driver_, *m + "/.wh.gone");
  ASSERT_TRUE(view.ok()) << view.error().message();
  EXPECT_FALSE(view->has_value());
  auto plain = lstat_in_view(*driver_, *m + "/gone");
  ASSERT_TRUE(plain.ok() && !plain->has_value());
  auto through_file = lstat_in_view(*driver_, *m + "/nothing/.wh.x");
  EXPECT_TRUE(through_file.ok()) << through_file.error().message();
  ASSERT_TRUE(driver_->put("c").ok());
  ASSERT_TRUE(driver_->remove("c").ok());
  ASSERT_TRUE(driver_->remove("base").ok());
}

// On an aufs kernel, a reader whose cached dirperm1 result is stale (another boot) probes in a
// .probe-<random> dir of its own, removes that dir and no other, and records its result; before,
// it removed another reader's probe dir and unmounted its union while that probe ran.
TEST_F(AufsKernel, ReadersProbeInTheirOwnDirAndLeaveOtherProbesAlone) {
  const std::string cache = home_ + "/probes";
  const bool dirperm1 = aufs_probes(*driver_)->dirperm1;
  auto written = sys::read_file(cache);
  EXPECT_TRUE(written.ok()) << "the writer's init recorded no dirperm1 result: "
                            << written.error().message();
  ASSERT_TRUE(
      write_text(cache, "boot another\ndirperm1 " + std::string(dirperm1 ? "0" : "1")).ok());
  ProbeInProgress other(home_);
  ASSERT_TRUE(other.ok());

  auto reader = init_aufs(DriverConfig{root_.path(), home_, {}, DriverAccess::kShared});
  ASSERT_TRUE(reader.ok()) << reader.error().message();
  EXPECT_EQ(aufs_probes(**reader)->dirperm1, dirperm1) << "the reader took a stale result";
  EXPECT_EQ(read_text(other.dir() + "/base/f"), "in use")
      << "a reader removed another reader's probe dir";
  EXPECT_TRUE(mounted(other.dir() + "/union")) << "a reader unmounted another reader's probe mount";
  EXPECT_EQ(names_with_prefix(home_, ".probe-"), std::vector<std::string>{".probe-0123456789ab"})
      << "the reader left its own probe dir behind";
  const std::string recorded = read_text(cache);
  EXPECT_EQ(recorded.substr(recorded.find('\n') + 1), dirperm1 ? "dirperm1 1\n" : "dirperm1 0\n")
      << "the reader did not record its result: " << recorded;
  EXPECT_NE(recorded.rfind("boot another", 0), 0u) << "the reader did not record its result";
  if (written.ok()) EXPECT_EQ(recorded, *written);
  EXPECT_EQ(names_with_prefix(home_, "probes."), std::vector<std::string>{});
  ASSERT_TRUE((*reader)->cleanup().ok());

  auto writer = init_aufs(DriverConfig{root_.path(), home_, {}});
  ASSERT_TRUE(writer.ok()) << writer.error().message();
  EXPECT_FALSE(mounted(other.dir() + "/union")) << "the writer left a stale probe mount";
  EXPECT_EQ(names_with_prefix(home_, ".probe-"), std::vector<std::string>{});
  ASSERT_TRUE((*writer)->cleanup().ok());
}

// The result is used while its fingerprint (boot, kernel, aufs version, device) fits: an init
// then mounts nothing to probe.
TEST_F(AufsKernel, Dirperm1IsProbedOncePerBoot) {
  const std::string cache = home_ + "/probes";
  auto text = sys::read_file(cache);
  ASSERT_TRUE(text.ok()) << text.error().message();
  const bool dirperm1 = aufs_probes(*driver_)->dirperm1;
  const std::string fp = text->substr(0, text->find('\n'));
  EXPECT_EQ(fp.rfind("boot ", 0), 0u) << fp;
  // The recorded result is taken as it is (flipped here, so taking it shows).
  ASSERT_TRUE(write_text(cache, fp + "\ndirperm1 " + (dirperm1 ? "0" : "1") + "\n").ok());
  auto again = init_aufs(DriverConfig{root_.path(), home_, {}});
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(aufs_probes(**again)->dirperm1, !dirperm1);
  ASSERT_TRUE((*again)->cleanup().ok());
  // Another boot's result is probed again and replaced.
  ASSERT_TRUE(
      write_text(cache, "boot another\ndirperm1 " + std::string(dirperm1 ? "0" : "1")).ok());
  auto probed = init_aufs(DriverConfig{root_.path(), home_, {}});
  ASSERT_TRUE(probed.ok()) << probed.error().message();
  EXPECT_EQ(aufs_probes(**probed)->dirperm1, dirperm1);
  EXPECT_EQ(read_text(cache), *text);
  ASSERT_TRUE((*probed)->cleanup().ok());
}

// A read-only home cannot be probed (the probe mounts in a dir it makes there) and cannot
// change: its readers use the result the last writer recorded, whatever boot it was probed on,
// and without one they fail naming the home and why.  Before: "aufs init: fchmodat ...: EROFS".
TEST_F(AufsKernel, ReadersOfAReadOnlyHomeUseTheRecordedDirperm1) {
  ASSERT_TRUE(driver_->create("base", "", {}).ok());
  const std::string cache = home_ + "/probes";
  const bool dirperm1 = aufs_probes(*driver_)->dirperm1;
  // Another boot's result, the opposite of this kernel's: a reader that probed would not say it.
  const std::string recorded = "boot another\ndirperm1 " + std::string(dirperm1 ? "0" : "1") + "\n";
  ASSERT_TRUE(write_text(cache, recorded).ok());
  ASSERT_TRUE(driver_->cleanup().ok());
  driver_.reset();
  DriverConfig shared{root_.path(), home_, {}, DriverAccess::kShared};
  {
    ReadOnlyBind ro(root_.path());
    ASSERT_TRUE(ro.ok());
    auto reader = init_aufs(shared);
    ASSERT_TRUE(reader.ok()) << reader.error().message();
    EXPECT_EQ(aufs_probes(**reader)->dirperm1, !dirperm1) << "not the recorded result";
    EXPECT_EQ((*reader)->status()[3].second, dirperm1 ? "false" : "true");
    EXPECT_TRUE((*reader)->exists("base"));
    ASSERT_TRUE((*reader)->cleanup().ok());
  }
  EXPECT_EQ(read_text(cache), recorded);
  EXPECT_EQ(names_with_prefix(home_, ".probe-"), std::vector<std::string>{});

  // Nothing recorded: the reader says why it cannot open the home.
  ASSERT_TRUE(sys::unlink(cache).ok());
  ReadOnlyBind ro(root_.path());
  ASSERT_TRUE(ro.ok());
  auto refused = init_aufs(shared);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind(), ErrorKind::kNotSupported) << refused.error().message();
  EXPECT_NE(refused.error().message().find("aufs init: " + home_ +
                                           " is read-only and holds no dirperm1 probe result"),
            std::string::npos)
      << refused.error().message();
  EXPECT_NE(refused.error().message().find("EROFS"), std::string::npos)
      << refused.error().message();
}

TEST_F(AufsKernel, StatusAfterProbes) {
  auto rows = driver_->status();
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0], (std::pair<std::string, std::string>{"Root Dir", home_}));
  EXPECT_EQ(rows[1].first, "Backing Filesystem");
  EXPECT_EQ(rows[2], (std::pair<std::string, std::string>{"Dirs", "0"}));
  EXPECT_EQ(rows[3].first, "Dirperm1 Supported");
  EXPECT_TRUE(rows[3].second == "true" || rows[3].second == "false");
  EXPECT_EQ(rows[3].second, aufs_probes(*driver_)->dirperm1 ? "true" : "false");
}

}  // namespace
}  // namespace cowlab
