// Crash scenarios on the host, without device-mapper: the `crash:` key's validation, phases
// and their names, and the invariant checker on a real vfs store — including the damage a
// power cut leaves (a zero-byte file, a lost layer, a half-removed layer, leftovers), which
// it must report.  The record/replay half runs in guests (tests/vm/crash_test.py).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "core/tar_test_util.h"
#include "cowlab/layer_store.h"
#include "cowlab/scenario.h"
#include "cowlab/sys.h"
#include "crash/internal.h"

namespace cowlab::crash {
namespace {

std::unique_ptr<scenario::Scenario> load_text(const testing::TempRoot& t, const std::string& text,
                                              std::string* error = nullptr) {
  std::string path = t.path() + "/s.yaml";
  EXPECT_TRUE(sys::write_file_atomic(path, text).ok());
  auto s = scenario::load(path);
  if (!s.ok()) {
    if (error) *error = s.error().message();
    return nullptr;
  }
  return std::move(*s);
}

const char* kScenario = R"(scenario: crash-sample
description: two layers, a container, a write and a removal
layers:
  - id: base
    entries:
      - {path: etc, type: dir}
      - {path: etc/hostname, content: "box\n"}
      - {path: big, size: 64KiB, pattern: random, seed: 2}
      - {path: gone, content: "x"}
  - id: top
    parent: base
    entries:
      - {path: gone, type: whiteout}
      - {path: link, type: symlink, target: etc/hostname}
containers:
  - {id: c1, image: top}
steps:
  - {op: write, in: c1, path: big, offset: 10, data: "written"}
  - {op: remove, in: c1}
crash: {steps: [import top, write c1], points: all_flushes_and_random, random: 3}
)";

TEST(CrashScenario, PhasesAndNames) {
  testing::TempRoot t;
  auto s = load_text(t, kScenario);
  ASSERT_TRUE(s);
  const auto& impl = s->impl();
  ASSERT_TRUE(impl.crash.has_value());
  EXPECT_EQ(impl.crash->random, 3);
  auto phases = build_phases(impl.docs[0], t.dir("tars"));
  ASSERT_TRUE(phases.ok()) << phases.error().message();
  std::vector<std::string> names;
  for (const auto& p : *phases) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"import base", "import top", "create c1", "write c1",
                                             "remove c1"}));
  auto crashed = crashed_phases(*phases, *impl.crash);
  ASSERT_TRUE(crashed.ok());
  EXPECT_EQ(*crashed, (std::vector<size_t>{1, 3}));
  scenario::CrashSpec by_index;
  by_index.steps = {"step 5"};
  EXPECT_EQ(*crashed_phases(*phases, by_index), (std::vector<size_t>{4}));
  scenario::CrashSpec unknown;
  unknown.steps = {"import nothing"};
  auto bad = crashed_phases(*phases, unknown);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("no phase named \"import nothing\" (phases: import base,"),
            std::string::npos)
      << bad.error().message();
}

TEST(CrashScenario, BadCrashKeysAreReportedWithTheirLine) {
  testing::TempRoot t;
  std::string base =
      "scenario: x\ndescription: d\nlayers:\n  - {id: b, entries: [{path: f, content: a}]}\n";
  struct Case {
    std::string crash, needle;
  };
  for (const auto& c : std::vector<Case>{
           {"crash: {points: flush}", "missing required key \"steps\""},
           {"crash: {steps: some}", "crash.steps: must be all or a list"},
           {"crash: {steps: all, points: sometimes}",
            "crash.points: must be flush or all_flushes_and_random"},
           {"crash: {steps: all, random: 3}",
            "crash.random: only with points: all_flushes_and_random"},
           {"crash: {steps: all, when: x}", "when"},
       }) {
    std::string err;
    EXPECT_FALSE(load_text(t, base + c.crash + "\n", &err)) << c.crash;
    EXPECT_NE(err.find(c.needle), std::string::npos) << c.crash << ": " << err;
    EXPECT_NE(err.find("s.yaml:5:"), std::string::npos) << err;
  }
  EXPECT_TRUE(load_text(t, base + "crash: {steps: all}\n"));
}

TEST(CrashScenario, UnsupportedOpsAreRefused) {
  testing::TempRoot t;
  auto s = load_text(t, R"(scenario: x
description: d
layers:
  - {id: b, entries: [{path: f, content: a}]}
containers:
  - {id: c1, image: b}
steps:
  - {op: rename, in: c1, from: f, to: g}
crash: {steps: all}
)");
  ASSERT_TRUE(s);
  auto phases = build_phases(s->impl().docs[0], t.dir("tars"));
  ASSERT_FALSE(phases.ok());
  EXPECT_NE(phases.error().message().find("steps[1] (rename): op rename cannot be crashed"),
            std::string::npos)
      << phases.error().message();
}

TEST(CrashRun, BadInputsAreErrorsNamingTheInput) {
  testing::TempRoot t;
  std::string file = t.path() + "/s.yaml";
  ASSERT_TRUE(sys::write_file_atomic(file, kScenario).ok());
  Options o;
  o.driver = "vfs";
  // A regular file, not /dev/null: the refusal is the same, and no test ever hands a real
  // device node to code that may write or clean up.
  o.device = t.path() + "/not-a-device";
  ASSERT_TRUE(sys::write_file_atomic(o.device, "").ok());
  o.work_dir = t.dir("work");
  auto r = run(file, o);
  EXPECT_EQ(r.status, "error");
  EXPECT_NE(r.reason.find("crash device stack on " + o.device + ": not a block device"),
            std::string::npos)
      << r.reason;
  EXPECT_EQ(r.crashed, (std::vector<std::string>{"import top", "write c1"}));
  EXPECT_EQ(r.states_checked, 0u);
  // No partial state: the tars it wrote are gone again.
  EXPECT_FALSE(sys::lstat_if_exists(o.work_dir + "/crash-sample-vfs").value().has_value());
  // zfs is supported since the runner's zfs backing (03de6d7): it reaches the same device check.
  o.driver = "zfs";
  r = run(file, o);
  EXPECT_EQ(r.status, "error");
  EXPECT_NE(r.reason.find("not a block device"), std::string::npos) << r.reason;
  o.driver = "vfs";
  r = run(t.path() + "/missing.yaml", o);
  EXPECT_EQ(r.status, "error");
  EXPECT_NE(r.reason.find("missing.yaml"), std::string::npos) << r.reason;
}

// The checker against a vfs store in the state each phase leaves, then against damage.
class CheckerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = load_text(t_, kScenario);
    ASSERT_TRUE(s);
    scenario_ = std::move(s);
    phases_ = build_phases(scenario_->impl().docs[0], t_.dir("tars")).value();
    root_ = t_.dir("store");
    for (const auto& p : phases_)
      if (p.kind == PhaseKind::kImport) manifests_[p.id] = read_manifest(p.tar).value();
  }
  // Runs phases [0, n) on the store.
  void run(size_t n) {
    StoreOptions so{root_, driver_, {}, {}};
    auto store = LayerStore::open(so).value();
    for (size_t i = 0; i < n; ++i) ASSERT_TRUE(perform(*store, phases_[i]).ok()) << phases_[i].name;
    ASSERT_TRUE(store->driver().cleanup().ok());
  }
  std::vector<Finding> check(std::set<size_t> done, std::optional<size_t> running = std::nullopt) {
    Expectation e;
    e.phases = &phases_;
    e.done = std::move(done);
    e.running = running;
    e.manifests = manifests_;
    return check_state(root_, driver_, {}, e);
  }
  std::string cache_id(const std::string& id) {
    StoreOptions so{root_, driver_, {}, {}};
    return LayerStore::open(so).value()->layer(id).value().cache_id;
  }
  static std::string summary(const std::vector<Finding>& fs) {
    std::string s;
    for (const auto& f : fs) s += f.invariant + ": " + f.observed + "\n";
    return s;
  }

  testing::TempRoot t_;
  std::unique_ptr<scenario::Scenario> scenario_;
  std::vector<Phase> phases_;
  std::string root_;
  std::string driver_ = "vfs";
  std::map<std::string, Manifest> manifests_;
};

TEST_F(CheckerTest, IntactStatesPass) {
  run(4);  // imports, create, write
  EXPECT_EQ(summary(check({0, 1, 2, 3})), "");
  // Mid-removal of c1: present and intact is fine.
  EXPECT_EQ(summary(check({0, 1, 2, 3}, 4)), "");
  run(0);
}

TEST_F(CheckerTest, ZeroByteFileInACompleteLayerIsCaught) {
  run(2);
  // What ext4 leaves when the layer's data was never synced: the inode without its blocks.
  std::string big = root_ + "/vfs/dir/" + cache_id("base") + "/big";
  ASSERT_TRUE(sys::open(big, O_WRONLY | O_TRUNC).ok());
  auto fs = check({0, 1});
  ASSERT_FALSE(fs.empty());
  EXPECT_EQ(fs[0].invariant, "layer-content");
  EXPECT_NE(fs[0].observed.find("layer base: big: regular file of 0 bytes"), std::string::npos)
      << summary(fs);
}

TEST_F(CheckerTest, LostCommittedLayerAndUnfinishedRemovalAreCaught) {
  run(2);
  // "import top" had finished but the layer is gone.
  ASSERT_TRUE(sys::unlink(root_ + "/layers/top.json").ok());
  auto fs = check({0, 1});
  ASSERT_EQ(fs.size(), 2u) << summary(fs);
  EXPECT_EQ(fs[0].invariant, "committed-present");
  EXPECT_EQ(fs[1].invariant, "no-orphans") << "its data stayed without it";
  // Before "import top" started, a listed top is unknown; after base's removal, base is listed.
  run(0);
}

TEST_F(CheckerTest, MissingWhiteoutAndCommittedWriteAreCaught) {
  run(4);
  // The write of "write c1" (fsync()ed) lost.
  std::string c1 = root_ + "/vfs/dir/" + cache_id("c1") + "/big";
  auto fd = sys::open(c1, O_WRONLY).value();
  ASSERT_TRUE(sys::pwrite_all(fd.get(), "XXXXXXX", 7, 10).ok());
  fd.reset();
  auto fs = check({0, 1, 2, 3});
  ASSERT_FALSE(fs.empty());
  EXPECT_EQ(fs[0].invariant, "committed-present") << summary(fs);
  EXPECT_NE(fs[0].observed.find("container c1: big:"), std::string::npos) << summary(fs);
  // With the write still running the same state is a torn write, not a failure.
  EXPECT_EQ(summary(check({0, 1, 2}, 3)), "");
  // top's whiteout of "gone" undone (vfs deletes in place: the file reappears).
  ASSERT_TRUE(sys::write_file_atomic(root_ + "/vfs/dir/" + cache_id("top") + "/gone", "x").ok());
  std::string all = summary(check({0, 1, 2}, 3));
  EXPECT_NE(all.find("layer-content: layer top: .wh.gone: missing (want whiteout)"),
            std::string::npos)
      << all;
  // c1 was copied before: the image now shows a file the container lacks.
  EXPECT_NE(all.find("container-content: container c1: gone of the image is missing"),
            std::string::npos)
      << all;
}

TEST_F(CheckerTest, RemovedLayerStillListedAndLeftoversAreCaught) {
  run(5);  // c1 removed
  EXPECT_EQ(summary(check({0, 1, 2, 3, 4})), "");
  // Claim base's removal finished although it is listed; and leave a temp metadata file.
  std::vector<Phase> more = phases_;
  Phase rm;
  rm.name = "remove base";
  rm.kind = PhaseKind::kRemove;
  rm.id = "base";
  more.push_back(rm);
  // A mount below the root that recovery does not know of.
  std::string junk = t_.dir("store/vfs/junk");
  ASSERT_TRUE(sys::mount("tmpfs", junk, "tmpfs", 0, "").ok());
  Expectation e;
  e.phases = &more;
  e.done = {0, 1, 2, 3, 4, 5};
  e.manifests = manifests_;
  auto fs = check_state(root_, "vfs", {}, e);
  std::string all = summary(fs);
  EXPECT_NE(all.find("removed-gone: layer base is listed although its removal had finished"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("no-leftovers: mount " + junk + " (tmpfs) left"), std::string::npos) << all;
  ASSERT_TRUE(sys::umount2(junk, 0).ok());
}

TEST_F(CheckerTest, OrphanedDriverDataIsCaught) {
  run(2);
  EXPECT_EQ(summary(check({0, 1})), "");
  // Data of a layer whose metadata is gone: what a create whose record was lost leaves.
  const std::string orphan = "0123456789abcdef0123456789abcdef";
  ASSERT_TRUE(sys::mkdir(root_ + "/vfs/dir/" + orphan, 0755).ok());
  std::string all = summary(check({0, 1}));
  EXPECT_NE(all.find("no-orphans: driver data " + orphan + " belongs to no layer"),
            std::string::npos)
      << all;
}

// overlay's short links name the layer they lead to: one left behind by a create cut before its
// link file was written (l/<lid> -> ../<id>/diff, no layer <id>) is that layer's orphaned data.
TEST_F(CheckerTest, OrphanedOverlayShortLinkIsCaught) {
  if (geteuid() != 0) GTEST_SKIP() << "skipped: overlay's init needs root";
  driver_ = "overlay";
  run(2);
  EXPECT_EQ(summary(check({0, 1})), "");
  const std::string orphan = "0123456789abcdef0123456789abcdef";
  ASSERT_TRUE(sys::symlinkat("../" + orphan + "/diff", sys::kCwd,
                             root_ + "/overlay/l/ABCDEFGHIJKLMNOPQRSTUVWXYZ")
                  .ok());
  std::string all = summary(check({0, 1}));
  EXPECT_NE(all.find("no-orphans: driver data " + orphan + " belongs to no layer"),
            std::string::npos)
      << all;
}

// zfs (whose checks run only in guests): a snapshot without a clone below the parent dataset
// is a leak — the driver keeps one only as a live child's origin — whatever its name.
TEST(CrashCheck, ZfsSnapshotWithoutACloneIsALeak) {
  const std::string out =
      "pool/store/aaaa@bbbb\tpool/store/bbbb\n"   // a live child's origin
      "pool/store/aaaa@cccc\t\n"                  // cut before the clone
      "pool/store/aaaa@1764694712123456789\t-\n"  // the clock-named kind
      "pool/other/x@y\t\n"                        // not below this store's parent
      "pool/store@manual\t\n";                    // the parent's own, not a layer's
  EXPECT_EQ(
      zfs_stray_snapshots(out, "pool/store"),
      (std::vector<std::string>{"pool/store/aaaa@cccc", "pool/store/aaaa@1764694712123456789"}));
  EXPECT_EQ(zfs_stray_snapshots("", "pool/store"), std::vector<std::string>{});
}

}  // namespace
}  // namespace cowlab::crash
