// Image checkpoints (RunOptions::checkpoints, `scenario run --repeat`) on the host's drivers:
// a later run starts from a copy of the store the first run's import left — every kind of
// entry, OCI layer aliases and the backing store (btrfs's loop image) intact — and falls back
// to importing the image when it must not or cannot use one.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "core/tar_test_util.h"
#include "cowlab/digest.h"
#include "cowlab/scenario.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "scenario/internal.h"

namespace cowlab::scenario {
namespace {

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // COWLAB_TEST_TMPDIR: the guest's scratch disk (its root is small).
    const char* base = ::getenv("COWLAB_TEST_TMPDIR");
    std::string tmpl =
        std::string(base && *base ? base : "/var/tmp") + "/cowlab-checkpoint-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << tmpl;
    dir_ = tmpl;
    ASSERT_TRUE(sys::mkdir(dir_ + "/work", 0755).ok());
    ASSERT_TRUE(sys::mkdir(dir_ + "/checkpoints", 0700).ok());
  }
  void TearDown() override {
    for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) (void)sys::umount2(*it, 0);
    (void)sys::remove_all(dir_);
  }

  // A fresh filesystem of `fstype` made by `mkfs` on a sparse loop image, mounted at
  // dir_/<name>; unmounted (its autoclear loop device going with it) at TearDown.
  std::string loop_mount(const std::string& name, const std::string& fstype,
                         std::vector<std::string> mkfs) {
    std::string img = dir_ + "/" + name + ".img", mnt = dir_ + "/" + name;
    auto f = sys::open(img, O_WRONLY | O_CREAT | O_EXCL, 0600);
    EXPECT_TRUE(f.ok() && ::ftruncate(f->get(), int64_t{1} << 30) == 0) << img;
    // A guest boots without the loop module (the backing store loads it the same way).
    std::string ignored;
    if (!sys::lstat_if_exists("/dev/loop-control").value_or(std::nullopt))
      (void)sys::run({"modprobe", "loop"}, &ignored);
    auto loop = sys::loop_attach(img, sys::LoopFlags::kAutoclear);
    EXPECT_TRUE(loop.ok()) << (loop.ok() ? "" : loop.error().message());
    if (!loop.ok()) return "";
    mkfs.push_back(loop->device);
    std::string out;
    auto rc = sys::run(mkfs, &out);
    EXPECT_TRUE(rc.ok() && *rc == 0) << mkfs[0] << ": " << out;
    EXPECT_TRUE(sys::mkdir(mnt, 0755).ok());
    auto m = sys::mount(loop->device, mnt, fstype, 0, "");
    EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message());
    if (!m.ok()) return "";
    mounts_.push_back(mnt);
    return mnt;
  }

  std::string write_scenario(const std::string& text) {
    std::string path = dir_ + "/s.yaml";
    EXPECT_TRUE(sys::write_file_atomic(path, text).ok());
    return path;
  }

  // Run `run_no` of the scenario at `path` on `driver`, sharing this test's checkpoints.
  RunResult run_once(const std::string& path, const std::string& driver, int run_no,
                     RunOptions::CheckpointUse use = RunOptions::CheckpointUse::kKeep,
                     const CheckpointCosts& costs = {}, unsigned later_runs = 1) {
    auto s = load(path);
    EXPECT_TRUE(s.ok()) << s.error().message();
    if (!s.ok()) return {};
    RunOptions o;
    o.driver = driver;
    o.work_dir = work_.empty() ? dir_ + "/work" : work_;
    o.run = run_no;
    o.checkpoints = work_.empty() ? dir_ + "/checkpoints" : work_ + "/checkpoints";
    o.checkpoint_use = use;
    o.checkpoint_costs = costs;
    o.later_runs = later_runs;
    auto r = run(**s, o);
    EXPECT_EQ(r.size(), 1u);
    return r.empty() ? RunResult{} : r[0];
  }

  // The work dir holds nothing once a run is over: its backing store is gone.
  void expect_work_dir_empty(const std::string& what) {
    auto left = sys::read_dir(work_.empty() ? dir_ + "/work" : work_);
    ASSERT_TRUE(left.ok());
    for (const auto& e : *left) {
      // A filesystem of the test's own also holds its lost+found and the checkpoints dir.
      if (!work_.empty() && (e.name == "lost+found" || e.name == "checkpoints")) continue;
      ADD_FAILURE() << what << ": left in the work dir: " << e.name;
    }
  }

  // A one-layer OCI image layout at dir_/oci whose layer holds `file` with `content`.
  void write_oci_layout(const std::string& file, const std::string& content) {
    std::string oci = dir_ + "/oci";
    ASSERT_TRUE(sys::mkdir_all(oci + "/blobs/sha256", 0755).ok());
    auto blob = [&](const std::string& bytes) {
      std::string d = sha256_digest(bytes);
      EXPECT_TRUE(sys::write_file_atomic(oci + "/blobs/sha256/" + d.substr(7), bytes).ok());
      return d;
    };
    std::string tar = cowlab::testing::make_tar({{file, 'f', content}});
    std::string layer = blob(tar);
    std::string config_json =
        R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[")" + layer +
        R"("]}})";
    std::string config = blob(config_json);
    std::string manifest_json =
        R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
        config + R"(","size":)" + std::to_string(config_json.size()) +
        R"(},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":")" + layer +
        R"(","size":)" + std::to_string(tar.size()) + "}]}";
    std::string manifest = blob(manifest_json);
    ASSERT_TRUE(
        sys::write_file_atomic(oci + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})").ok());
    ASSERT_TRUE(
        sys::write_file_atomic(
            oci + "/index.json",
            R"({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
                manifest + R"(","size":)" + std::to_string(manifest_json.size()) + "}]}")
            .ok());
  }

  std::string dir_;
  std::string work_;  // the runs' work dir ("" = dir_/work)
  std::vector<std::string> mounts_;
};

// Every kind of entry a layer can hold, a whiteout and an opaque directory in a second layer,
// and an OCI image whose store id the runner keeps as an alias: what a restore must give back
// exactly, checked through a container on each image and as the layers' own digests.
// The second layer of both images below: a whiteout, an opaque directory and a new entry in it.
const char* kTopLayer = R"(  - id: top
    parent: base
    entries:
      - {path: gone, type: whiteout}
      - {path: d, type: opaque}
      - {path: d/c, content: "c"}
)";

const std::string kRichImage = R"(scenario: rich-image
description: an image with every kind of entry, seen through containers after a restore
layers:
  - id: base
    entries:
      - {path: d, type: dir, mode: "0710", owner: "7:8"}
      - {path: d/a, content: "a"}
      - {path: gone, content: "g"}
      - {path: f, content: "hello", mode: "04755", owner: "1000:1000", mtime: 1234567890, xattrs: {user.k: "hex:00ff"}}
      - {path: h, type: hardlink, target: f}
      - {path: s, type: symlink, target: f}
      - {path: p, type: fifo}
      - {path: nul, type: char, rdev: "1:3"}
      - {path: sparse, size: 64MiB, sparse: true, content: "head"}
)" + std::string(kTopLayer) + R"(  - id: img
    oci: oci
containers: [{id: c1, image: top}, {id: c2, image: img}]
expect:
  - view: {in: c1, path: d, mode: "0710", owner: "7:8", listing: [c]}
  - view: {in: c1, path: gone, exists: false}
  - view: {in: c1, path: f, content: "hello", mode: "04755", owner: "1000:1000", mtime: 1234567890, xattr: {user.k: "hex:00ff"}, nlink: 2}
  - view: {in: c1, path: h, same_inode_as: f}
  - view: {in: c1, path: s, type: symlink, target: f}
  - view: {in: c1, path: p, type: fifo}
  - view: {in: c1, path: nul, type: char}
  - view: {in: c1, path: sparse, size: 64MiB, allocated_max: 1MiB}
  - view: {in: c2, path: from-oci, content: "oci bytes"}
  - image_unchanged: true
)";

std::vector<std::string> phase_names(const RunResult& r) {
  std::vector<std::string> out;
  for (const auto& [k, v] : r.phases_s) out.push_back(k);
  return out;
}

bool has_phase(const RunResult& r, const std::string& name) {
  return r.phases_s.count(name) > 0;
}

TEST_F(CheckpointTest, LaterRunsStartFromTheImageTheFirstRunImported) {
  write_oci_layout("from-oci", "oci bytes");
  std::string path = write_scenario(kRichImage);
  // vfs and overlay on an ext4 of their own (the host's /var/tmp is shared), btrfs on its loop
  // image: the three kinds of backing store the host can make.
  for (const char* driver : {"vfs", "overlay", "btrfs"}) {
    SCOPED_TRACE(driver);
    ASSERT_TRUE(sys::remove_all(dir_ + "/checkpoints").ok());
    ASSERT_TRUE(sys::mkdir(dir_ + "/checkpoints", 0700).ok());
    RunResult first = run_once(path, driver, 1);
    ASSERT_EQ(first.status, Status::kPass) << first.reason << " " << first.to_json_line();
    EXPECT_EQ(first.image_source, "import");
    EXPECT_EQ(first.checkpoint, "saved");
    // Only a zfs pool is ever checkpointed live.
    EXPECT_EQ(first.checkpoint_quiesce, "released");
    EXPECT_TRUE(has_phase(first, "layers") && has_phase(first, "checkpoint"))
        << first.to_json_line();
    expect_work_dir_empty(std::string(driver) + " run 1");
    // Run 3 is the last: it takes the checkpoint instead of copying it.
    for (int run_no = 2; run_no <= 3; ++run_no) {
      auto use = run_no == 3 ? RunOptions::CheckpointUse::kConsume : RunOptions::CheckpointUse::kKeep;
      RunResult later = run_once(path, driver, run_no, use);
      EXPECT_EQ(later.status, Status::kPass)
          << "run " << run_no << ": " << later.reason << " " << later.to_json_line();
      EXPECT_EQ(later.image_source, "checkpoint") << later.to_json_line();
      EXPECT_EQ(later.checkpoint, "");
      EXPECT_TRUE(has_phase(later, "restore")) << later.to_json_line();
      // Nor "digests": image_unchanged compares against the image's digests the first run
      // took before saving the checkpoint.
      EXPECT_FALSE(has_phase(later, "layers") || has_phase(later, "backing") ||
                   has_phase(later, "digests"))
          << later.to_json_line();
      EXPECT_EQ(later.layer_tars_built, 0);
      expect_work_dir_empty(std::string(driver) + " run " + std::to_string(run_no));
      EXPECT_EQ(sys::lstat_if_exists(dir_ + "/checkpoints/1").value_or(std::nullopt).has_value(), run_no == 2)
          << "run " << run_no << ": the checkpoint must stay for a later run, and go with the last";
    }
    auto left = sys::read_dir(dir_ + "/checkpoints");
    ASSERT_TRUE(left.ok());
    EXPECT_TRUE(left->empty()) << "left in the checkpoints dir: " << left->front().name;
  }
}

// The check of the check: a checkpoint that lost part of the image is not silently accepted —
// the restored run fails on exactly what is missing.  The image's file is rewritten in the
// checkpoint's copy of the vfs store.
TEST_F(CheckpointTest, ARestoreThatLostPartOfTheImageFailsTheRun) {
  write_oci_layout("from-oci", "oci bytes");
  std::string path = write_scenario(kRichImage);
  RunResult first = run_once(path, "vfs", 1);
  ASSERT_EQ(first.checkpoint, "saved") << first.to_json_line();
  // Every copy of f in the checkpoint (vfs keeps one per layer) gets other bytes, and the
  // opaque directory its hidden entry back.
  int changed = 0;
  std::function<void(const std::string&)> walk = [&](const std::string& dir) {
    auto entries = sys::read_dir(dir);
    ASSERT_TRUE(entries.ok()) << entries.error().message();
    for (const auto& e : *entries) {
      std::string p = dir + "/" + e.name;
      auto st = sys::lstat(p);
      ASSERT_TRUE(st.ok());
      if (S_ISDIR(st->st_mode)) {
        walk(p);
      } else if (e.name == "f" && S_ISREG(st->st_mode) && st->st_size == 5) {
        ASSERT_TRUE(sys::write_file_atomic(p + ".new", "HELLO").ok());
        ASSERT_TRUE(sys::rename(p + ".new", p).ok());
        ++changed;
      }
    }
  };
  // On the host the vfs store lives in an ext4 image of its own (/var/tmp is shared): the
  // checkpoint's copy of that image is mounted to be changed.
  std::string img = dir_ + "/checkpoints/1/work/ext4.img";
  ASSERT_TRUE(sys::lstat_if_exists(img).value_or(std::nullopt).has_value()) << img;
  auto loop = sys::loop_attach(img, sys::LoopFlags::kAutoclear);
  ASSERT_TRUE(loop.ok()) << loop.error().message();
  ASSERT_TRUE(sys::mkdir(dir_ + "/m", 0700).ok());
  ASSERT_TRUE(sys::mount(loop->device, dir_ + "/m", "ext4", 0, "").ok());
  walk(dir_ + "/m");
  ASSERT_TRUE(sys::umount2(dir_ + "/m", 0).ok());
  ASSERT_GT(changed, 0) << "no copy of f found in the checkpoint";
  RunResult later = run_once(path, "vfs", 2);
  EXPECT_EQ(later.image_source, "checkpoint");
  EXPECT_EQ(later.status, Status::kFail) << later.to_json_line();
  std::vector<std::string> failed;
  for (const auto& f : later.failures) failed.push_back(f.expectation);
  EXPECT_NE(std::find(failed.begin(), failed.end(), "expect 3 view c1:f content"), failed.end())
      << later.to_json_line();
  // image_unchanged compares the image after the run with its digests as the first run
  // imported it: the changed layer differs (with digests taken after the restore it did not).
  EXPECT_TRUE(std::any_of(failed.begin(), failed.end(), [](const std::string& n) {
    return n.find("image_unchanged layer base") != std::string::npos;
  })) << later.to_json_line();
}

// A build step whose cases depend on the run number builds a different image on another run:
// that image is not checkpointed, and the later run builds its own.
TEST_F(CheckpointTest, AnImageThatDependsOnTheRunIsImportedByEveryRun) {
  std::string path = write_scenario(R"(scenario: run-dependent-build
description: a build step that writes something else on run 2
layers:
  - id: base
    entries: [{path: f, content: "base"}]
  - id: built
    parent: base
    build:
      - op: write
        path: f
        data: "run 1"
        cases:
          - when: {runs: [2]}
            data: "run 2"
containers: [{id: c1, image: built}]
expect:
  - view: {in: c1, path: f, content: "run 1"}
    cases:
      - when: {runs: [2]}
        content: "run 2"
)");
  RunResult first = run_once(path, "vfs", 1);
  EXPECT_EQ(first.status, Status::kPass) << first.to_json_line();
  EXPECT_EQ(first.checkpoint, "not saved: layer built's build step 1 depends on the run number");
  RunResult second = run_once(path, "vfs", 2);
  EXPECT_EQ(second.status, Status::kPass) << second.to_json_line();
  EXPECT_EQ(second.image_source, "import");
  auto left = sys::read_dir(dir_ + "/checkpoints");
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty()) << left->front().name;
}

// A checkpoint pays when the later runs' restores cost less than their imports would, by more
// than the save: measured on zfs in the default matrix, a small image's pool restored in 0.8-1.8
// s where creating and filling it took 0.6-0.9 s, so its --repeat 3 cost 3.4-4.7x one run.
TEST(CheckpointCosts, ACheckpointPaysOnlyWhereRestoringBeatsImporting) {
  CheckpointCosts none;
  EXPECT_TRUE(none.pays(0.01, 1)) << "nothing measured yet: save one, to measure it";
  EXPECT_FALSE(none.pays(5.0, 0)) << "no later run would restore it";
  // A zfs-like driver: a small image (0.8 s to prepare) restores in 1.0-1.2 s, a large one
  // (20.8 s) in 3.2 s; the restores of one cell attach to its own save.
  auto saved = [](const char* scenario, double layers, double save) {
    RunResult r;
    r.scenario = scenario;
    r.phases_s = {{"backing", 0.4}, {"layers", layers}, {"checkpoint", save}};
    return r;
  };
  auto restored = [](const char* scenario, double restore) {
    RunResult r;
    r.scenario = scenario;
    r.image_source = "checkpoint";
    r.phases_s = {{"restore", restore}, {"containers", 0.5}};
    return r;
  };
  CheckpointCosts zfs;
  zfs.add(saved("small", 0.4, 0.4));
  zfs.add(saved("large", 20.4, 0.8));
  zfs.add(restored("small", 1.2));
  zfs.add(restored("large", 3.2));
  zfs.add(restored("small", 1.0));
  zfs.add(restored("other", 9.0));  // no save of its own counted: ignored
  ASSERT_EQ(zfs.points.size(), 2u);
  EXPECT_EQ(zfs.points[0].restores, 2u);
  // At the small image: its costs.  2 * (0.8 - 1.1) < 0.4.
  auto small = zfs.estimate(0.8);
  ASSERT_TRUE(small);
  EXPECT_DOUBLE_EQ(small->restore_s, 1.1);
  EXPECT_DOUBLE_EQ(small->save_s, 0.4);
  EXPECT_FALSE(zfs.pays(0.8, 2));
  EXPECT_FALSE(zfs.pays(0.9, 2));
  // Below every measured image nothing is known either: saved, and so measured.
  EXPECT_FALSE(zfs.estimate(0.5));
  EXPECT_TRUE(zfs.pays(0.5, 2));
  // Between the two: linear.  At 10.8 s, halfway: save 0.6 s, restore 2.15 s, so it pays.
  auto mid = zfs.estimate(10.8);
  ASSERT_TRUE(mid);
  EXPECT_NEAR(mid->save_s, 0.6, 1e-9);
  EXPECT_NEAR(mid->restore_s, 2.15, 1e-9);
  EXPECT_TRUE(zfs.pays(10.8, 1));
  // Nor above every measured image.
  EXPECT_FALSE(zfs.estimate(30));
  EXPECT_TRUE(zfs.pays(30, 1));
  EXPECT_EQ(zfs.why_not(0.8, 2),
            "preparing the image took 0.80 s; a checkpoint would save less than it costs over 2 "
            "later run(s) (saving one takes 0.40 s, restoring one 1.10 s, as estimated from this "
            "driver's 2 checkpoint(s) so far)");
  // A vfs-like driver, whose costs grow with the image: its first, 64 MiB image's costs say
  // nothing about a small one's.  A mean over both refused most small images in the default
  // matrix, and so did carrying the big one's costs below it: 18 small vfs cells cost 3.14x
  // one run instead of 2.06x.
  CheckpointCosts vfs;
  vfs.add(saved("big", 2.4, 2.6));
  vfs.add(restored("big", 1.15));
  EXPECT_TRUE(vfs.pays(0.28, 2)) << "smaller than any measured: saved and measured";
  vfs.add(saved("tiny", 0.05, 0.05));
  vfs.add(restored("tiny", 0.03));
  EXPECT_TRUE(vfs.pays(0.5, 2));
  EXPECT_TRUE(vfs.pays(0.45, 1));
}

// A run whose checkpoint would not pay saves none and says why; the later runs import the
// image.  (Before, every first run saved one: zfs's small cells cost more with it than without.)
TEST_F(CheckpointTest, ACheckpointThatWouldCostMoreThanItSavesIsNotSaved) {
  std::string path = write_scenario(R"(scenario: small
description: one file
layers:
  - id: base
    entries: [{path: f, content: "x"}]
containers: [{id: c1, image: base}]
expect:
  - view: {in: c1, path: f, content: "x"}
)");
  // Images that took 0 and 100 s to prepare both restored in 50 s: this small one's import
  // is between them, and no import here is that slow.
  CheckpointCosts slow;
  slow.points.push_back({0, 0.5, 100, 2});
  slow.points.push_back({100, 0.5, 100, 2});
  RunResult first = run_once(path, "vfs", 1, RunOptions::CheckpointUse::kKeep, slow, 2);
  EXPECT_EQ(first.status, Status::kPass) << first.to_json_line();
  EXPECT_EQ(first.checkpoint.rfind("not saved: preparing the image took ", 0), 0u)
      << first.checkpoint;
  EXPECT_NE(first.checkpoint.find("restoring one 50.00 s"), std::string::npos) << first.checkpoint;
  EXPECT_FALSE(has_phase(first, "checkpoint")) << first.to_json_line();
  EXPECT_EQ(first.checkpoint_quiesce, "");
  auto left = sys::read_dir(dir_ + "/checkpoints");
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty()) << left->front().name;
  RunResult second = run_once(path, "vfs", 2, RunOptions::CheckpointUse::kKeep, slow, 1);
  EXPECT_EQ(second.status, Status::kPass) << second.to_json_line();
  EXPECT_EQ(second.image_source, "import");
  EXPECT_TRUE(has_phase(second, "layers")) << second.to_json_line();
  // With no later run to serve, none is saved whatever it costs.
  RunResult last = run_once(path, "vfs", 3, RunOptions::CheckpointUse::kKeep, {}, 0);
  EXPECT_EQ(last.checkpoint, "not saved: no later run would start from it");
  expect_work_dir_empty("after the runs");
}

// A checkpoint that does not restore costs the run its shortcut, never its result: it imports
// the image itself and says why, and the failed restore leaves nothing in the work dir.  The
// unusable checkpoint is replaced by the one that run saves.  (Before, the run's own save then
// failed with ENOTEMPTY on the old one, and every later run tried the broken one again.)
TEST_F(CheckpointTest, ACheckpointThatDoesNotRestoreIsImportedInstead) {
  std::string path = write_scenario(R"(scenario: small
description: one file
layers: [{id: base, entries: [{path: f, content: "x"}]}]
containers: [{id: c1, image: base}]
expect:
  - view: {in: c1, path: f, content: "x"}
)");
  RunResult first = run_once(path, "overlay", 1);
  ASSERT_EQ(first.checkpoint, "saved") << first.to_json_line();
  std::string meta = dir_ + "/checkpoints/1/checkpoint.json";
  auto text = sys::read_file(meta);
  ASSERT_TRUE(text.ok());
  // A store root outside the work dir is refused before anything is copied.
  std::string bad = *text;
  auto at = bad.find("\"root\":\"");
  ASSERT_NE(at, std::string::npos) << bad;
  bad.insert(at + 8, "../");
  ASSERT_TRUE(sys::write_file_atomic(meta, bad).ok());
  RunResult second = run_once(path, "overlay", 2);
  EXPECT_EQ(second.status, Status::kPass) << second.to_json_line();
  EXPECT_EQ(second.image_source, "import");
  EXPECT_NE(second.checkpoint.find("not restored: "), std::string::npos) << second.checkpoint;
  EXPECT_NE(second.checkpoint.find("is not below the work dir"), std::string::npos)
      << second.checkpoint;
  EXPECT_TRUE(has_phase(second, "layers"));
  expect_work_dir_empty("after the refused restore");
  EXPECT_NE(sys::read_file(meta).value_or(""), bad) << "the refused checkpoint was kept";
  RunResult again = run_once(path, "overlay", 3);
  EXPECT_EQ(again.image_source, "checkpoint") << again.to_json_line();
  EXPECT_EQ(again.status, Status::kPass) << again.to_json_line();
  // Not JSON at all: the same.
  ASSERT_TRUE(sys::write_file_atomic(meta, "{").ok());
  // ... on the last run, which saves no checkpoint for nobody.
  RunResult third = run_once(path, "overlay", 4, RunOptions::CheckpointUse::kConsume);
  EXPECT_EQ(third.status, Status::kPass) << third.to_json_line();
  EXPECT_NE(third.checkpoint.find("not an image checkpoint"), std::string::npos)
      << third.checkpoint;
  expect_work_dir_empty("after the unreadable checkpoint");
  EXPECT_EQ(third.checkpoint.find("saved"), std::string::npos) << third.checkpoint;
  auto left = sys::read_dir(dir_ + "/checkpoints");
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty()) << "left in the checkpoints dir: " << left->front().name;
}

// The check a live checkpoint rests on: after Quiesce::kLive every file must be cloned, since a
// copy of a pool's vdev made while the pool is imported could be torn.  On ext4 (no reflink)
// the save is refused and leaves nothing; on btrfs (reflink) the same save is made.  A save
// after Quiesce::kReleased copies where it cannot clone.
TEST_F(CheckpointTest, ALiveCheckpointIsMadeOfClonesOrNotAtAll) {
  for (const char* fs : {"ext4", "btrfs"}) {
    SCOPED_TRACE(fs);
    std::string mnt = fs == std::string("ext4")
                          ? loop_mount("ext4", "ext4", {"mkfs.ext4", "-q", "-F"})
                          : loop_mount("btrfs", "btrfs", {"mkfs.btrfs", "-q", "-f"});
    ASSERT_FALSE(mnt.empty());
    Backing b;
    b.driver = "zfs";
    b.work = mnt + "/w";
    b.root = b.work + "/root";
    b.zpool = "notimported";
    ASSERT_TRUE(sys::mkdir_all(b.root, 0700).ok());
    ASSERT_TRUE(sys::write_file_atomic(b.work + "/zpool.img", std::string(1 << 16, 'z')).ok());
    ASSERT_TRUE(sys::write_file_atomic(b.root + "/empty", "").ok());
    const std::string ck = mnt + "/ck";
    auto live = save_checkpoint(b, ck, {}, Quiesce::kLive);
    auto entries = sys::read_dir(mnt);
    ASSERT_TRUE(entries.ok());
    if (fs == std::string("ext4")) {
      ASSERT_FALSE(live.ok()) << "a live pool's vdev was copied byte by byte on ext4";
      EXPECT_NE(live.error().message().find("1 file(s) of the live pool's work dir " + b.work +
                                            " were copied, not cloned"),
                std::string::npos)
          << live.error().message();
      // Nothing of the refused save: no checkpoint, no partial one.
      for (const auto& e : *entries) EXPECT_TRUE(e.name == "w" || e.name == "lost+found") << e.name;
      auto copied = save_checkpoint(b, ck, {}, Quiesce::kReleased);
      EXPECT_TRUE(copied.ok()) << copied.error().message();
    } else {
      EXPECT_TRUE(live.ok()) << live.error().message();
    }
    EXPECT_EQ(sys::read_file(ck + "/work/zpool.img").value_or(""), std::string(1 << 16, 'z'));
  }
}

// zfs in a guest (the zfs unit suite of vm-zfs-suites): on a work dir whose filesystem clones
// files (xfs with reflink, as the matrix gives zfs) the pool is checkpointed without an export
// ("live"); on one that does not (ext4) it is exported first ("released").  Either way the later
// runs start from the checkpoint and see the whole image, and no pool or file is left.
TEST_F(CheckpointTest, ZfsPoolIsCheckpointedLiveWhereTheScratchClonesFiles) {
  if (!sys::lstat_if_exists("/dev/zfs").value_or(std::nullopt))
    GTEST_SKIP() << "skipped: no /dev/zfs (zfs runs in guests: ctest vm-zfs-suites)";
  // Two layers, a whiteout and an opaque directory, checked through a container (kRichImage
  // takes a minute here under TCG; the restore of every kind of entry is the host tests' job).
  std::string path = write_scenario(R"(scenario: zfs-image
description: a two-layer image seen through a container after a restore
layers:
  - id: base
    entries:
      - {path: d/a, content: "a"}
      - {path: gone, content: "g"}
      - {path: f, content: "hello", mode: "04755", owner: "1000:1000", xattrs: {user.k: "v"}}
)" + std::string(kTopLayer) + R"(containers: [{id: c1, image: top}]
expect:
  - view: {in: c1, path: d, listing: [c]}
  - view: {in: c1, path: gone, exists: false}
  - view: {in: c1, path: f, content: "hello", mode: "04755", owner: "1000:1000", xattr: {user.k: "v"}}
  - image_unchanged: true
)");
  auto pools = [] {
    std::string out;
    (void)sys::run({"zpool", "list", "-H", "-o", "name"}, &out);
    return out;
  };
  const std::string pools_before = pools();
  for (const char* fs : {"ext4", "xfs"}) {
    SCOPED_TRACE(fs);
    if (fs == std::string("ext4")) {
      work_ = loop_mount("ext4", "ext4", {"mkfs.ext4", "-q", "-F"});
    } else {
      work_ = loop_mount("xfs", "xfs", {"mkfs.xfs", "-q", "-f", "-m", "reflink=1"});
    }
    ASSERT_FALSE(work_.empty());
    // Beside the stores, as `scenario run` makes them: a clone needs the same filesystem.
    ASSERT_TRUE(sys::mkdir(work_ + "/checkpoints", 0700).ok());
    RunResult first = run_once(path, "zfs", 1);
    ASSERT_EQ(first.status, Status::kPass) << first.to_json_line();
    EXPECT_EQ(first.checkpoint, "saved") << first.to_json_line();
    EXPECT_EQ(first.checkpoint_quiesce, fs == std::string("xfs") ? "live" : "released");
    expect_work_dir_empty(std::string(fs) + " run 1");
    for (int run_no = 2; run_no <= 3; ++run_no) {
      auto use =
          run_no == 3 ? RunOptions::CheckpointUse::kConsume : RunOptions::CheckpointUse::kKeep;
      RunResult later = run_once(path, "zfs", run_no, use);
      EXPECT_EQ(later.status, Status::kPass) << "run " << run_no << ": " << later.to_json_line();
      EXPECT_EQ(later.image_source, "checkpoint") << later.to_json_line();
      expect_work_dir_empty(std::string(fs) + " run " + std::to_string(run_no));
    }
    auto left = sys::read_dir(work_ + "/checkpoints");
    ASSERT_TRUE(left.ok());
    EXPECT_TRUE(left->empty()) << "left in the checkpoints dir: " << left->front().name;
    EXPECT_EQ(pools(), pools_before) << "a pool was left";
  }
}

}  // namespace
}  // namespace cowlab::scenario
