// Image checkpoints (RunOptions::checkpoints, `scenario run --repeat`) on the host's drivers:
// a later run starts from a copy of the store the first run's import left — every kind of
// entry, OCI layer aliases and the backing store (btrfs's loop image) intact — and falls back
// to importing the image when it must not or cannot use one.
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

namespace cowlab::scenario {
namespace {

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/cowlab-checkpoint-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_TRUE(sys::mkdir(dir_ + "/work", 0755).ok());
    ASSERT_TRUE(sys::mkdir(dir_ + "/checkpoints", 0700).ok());
  }
  void TearDown() override { (void)sys::remove_all(dir_); }

  std::string write_scenario(const std::string& text) {
    std::string path = dir_ + "/s.yaml";
    EXPECT_TRUE(sys::write_file_atomic(path, text).ok());
    return path;
  }

  // Run `run_no` of the scenario at `path` on `driver`, sharing this test's checkpoints.
  RunResult run_once(const std::string& path, const std::string& driver, int run_no,
                     RunOptions::CheckpointUse use = RunOptions::CheckpointUse::kKeep) {
    auto s = load(path);
    EXPECT_TRUE(s.ok()) << s.error().message();
    if (!s.ok()) return {};
    RunOptions o;
    o.driver = driver;
    o.work_dir = dir_ + "/work";
    o.run = run_no;
    o.checkpoints = dir_ + "/checkpoints";
    o.checkpoint_use = use;
    auto r = run(**s, o);
    EXPECT_EQ(r.size(), 1u);
    return r.empty() ? RunResult{} : r[0];
  }

  // The work dir holds nothing once a run is over: its backing store is gone.
  void expect_work_dir_empty(const std::string& what) {
    auto left = sys::read_dir(dir_ + "/work");
    ASSERT_TRUE(left.ok());
    for (const auto& e : *left) ADD_FAILURE() << what << ": left in the work dir: " << e.name;
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
};

// Every kind of entry a layer can hold, a whiteout and an opaque directory in a second layer,
// and an OCI image whose store id the runner keeps as an alias: what a restore must give back
// exactly, checked through a container on each image and as the layers' own digests.
const char* kRichImage = R"(scenario: rich-image
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
  - id: top
    parent: base
    entries:
      - {path: gone, type: whiteout}
      - {path: d, type: opaque}
      - {path: d/c, content: "c"}
  - id: img
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
      EXPECT_FALSE(has_phase(later, "layers") || has_phase(later, "backing"))
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

}  // namespace
}  // namespace cowlab::scenario
