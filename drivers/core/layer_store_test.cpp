// Layer store behaviour on real drivers (vfs and overlay on the host): metadata, atomic
// imports, recovery of interrupted operations, cross-process locking and mount references.
#include "cowlab/layer_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <set>

#include "core/tar_test_util.h"
#include "cowlab/digest.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"

namespace cowlab {
namespace {

using testing::TempRoot;

// Tar entries as the layer store tests spell them.
struct TarEntry {
  std::string name;
  std::string content;
  mode_t mode = 0644;
  char type = 'f';  // f file, d dir, l symlink, h hardlink
  std::string link;
};

std::string make_tar(const std::vector<TarEntry>& entries) {
  std::vector<testing::TarEntry> out;
  for (const auto& e : entries) {
    testing::TarEntry t;
    t.name = e.name;
    t.type = e.type;
    t.data = e.content;
    t.mode = e.type == 'f' ? e.mode : 0;
    t.link = e.link;
    out.push_back(t);
  }
  return testing::make_tar(out);
}

std::unique_ptr<LayerStore> open_store(const std::string& root, const std::string& driver) {
  StoreOptions o;
  o.root = root;
  o.driver = driver;
  auto s = LayerStore::open(o);
  EXPECT_TRUE(s.ok()) << s.error().message();
  return s.ok() ? std::move(*s) : nullptr;
}

class LayerStoreTest : public ::testing::TestWithParam<std::string> {};

TEST_P(LayerStoreTest, ImportRecordsDiffIdAndChainId) {
  TempRoot root;
  auto store = open_store(root.path(), GetParam());
  ASSERT_TRUE(store);
  std::string base_tar = make_tar({{"etc", "", 0755, 'd'}, {"etc/hostname", "cowlab\n"}});
  StringReader r1(base_tar);
  auto base = store->import_layer("base", "", r1);
  ASSERT_TRUE(base.ok()) << base.error().message();
  EXPECT_EQ(base->diff_id, sha256_digest(base_tar));
  EXPECT_EQ(base->chain_id, base->diff_id);
  std::string top_tar = make_tar({{"etc/motd", "hello\n"}});
  StringReader r2(top_tar);
  auto top = store->import_layer("top", "base", r2);
  ASSERT_TRUE(top.ok()) << top.error().message();
  EXPECT_EQ(top->chain_id, chain_id(base->diff_id, sha256_digest(top_tar)));
  auto found = store->find_by_chain_id(top->chain_id);
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->id, "top");

  // Metadata survives reopening (it is on disk, written atomically as JSON).
  store.reset();
  auto again = open_store(root.path(), GetParam());
  auto info = again->layer("top");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->parent, "base");
  EXPECT_EQ(info->diff_id, sha256_digest(top_tar));
  auto text = sys::read_file(root.path() + "/layers/top.json");
  ASSERT_TRUE(text.ok());
  auto j = nlohmann::json::parse(*text);
  EXPECT_EQ(j["chain_id"], info->chain_id);
}

TEST_P(LayerStoreTest, FailedImportLeavesNoLayerAndNoFiles) {
  TempRoot root;
  auto store = open_store(root.path(), GetParam());
  ASSERT_TRUE(store);
  std::string home = root.path() + "/" + GetParam();
  auto before = sys::read_dir(home);
  ASSERT_TRUE(before.ok());
  // A valid entry, then an escape: the first entry must not survive.
  std::string evil = make_tar({{"ok.txt", "fine"}, {"../escape.txt", "bad"}});
  StringReader r(evil);
  auto res = store->import_layer("evil", "", r);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().kind(), ErrorKind::kSecurity) << res.error().message();
  EXPECT_NE(res.error().message().find("import-layer evil"), std::string::npos) << res.error().message();
  EXPECT_FALSE(store->exists("evil"));
  EXPECT_FALSE(sys::lstat_if_exists(root.path() + "/layers/evil.json")->has_value());
  EXPECT_FALSE(sys::lstat_if_exists(root.path() + "/escape.txt")->has_value());
  auto tmp = sys::read_dir(root.path() + "/tmp");
  ASSERT_TRUE(tmp.ok());
  EXPECT_TRUE(tmp->empty());
  auto names = [](const std::vector<sys::DirEntry>& v) {
    std::set<std::string> s;
    for (const auto& e : v) s.insert(e.name);
    return s;
  };
  EXPECT_EQ(names(*sys::read_dir(home)), names(*before)) << "the driver's home changed";
  // Garbage input: a clear error naming the input, nothing left.
  StringReader garbage(std::string(1000, 'x'), "garbage.tar");
  auto g = store->import_layer("garbage", "", garbage);
  ASSERT_FALSE(g.ok());
  EXPECT_FALSE(store->exists("garbage"));
  EXPECT_EQ(names(*sys::read_dir(home)), names(*before)) << "the driver's home changed";
}

TEST_P(LayerStoreTest, InterruptedCreationIsRemovedAtOpen) {
  TempRoot root;
  std::string cache_id;
  {
    auto store = open_store(root.path(), GetParam());
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->create_layer("half", "", LayerKind::kReadOnly).ok());
    // Simulate a crash in the middle of an import: the record says incomplete.
    auto text = sys::read_file(root.path() + "/layers/half.json");
    auto j = nlohmann::json::parse(*text);
    j["incomplete"] = true;
    ASSERT_TRUE(sys::write_file_atomic(root.path() + "/layers/half.json", j.dump()).ok());
    ASSERT_TRUE(sys::write_file_atomic(root.path() + "/tmp/leftover", "x").ok());
    EXPECT_FALSE(store->exists("half"));
    cache_id = j["cache_id"];
    EXPECT_TRUE(store->driver().exists(cache_id));
  }
  auto store = open_store(root.path(), GetParam());
  ASSERT_TRUE(store);
  EXPECT_FALSE(store->driver().exists(cache_id));
  EXPECT_FALSE(sys::lstat_if_exists(root.path() + "/layers/half.json")->has_value());
  EXPECT_FALSE(sys::lstat_if_exists(root.path() + "/tmp/leftover")->has_value());
}

TEST_P(LayerStoreTest, MountReferencesPersistAcrossStoreInstances) {
  TempRoot root;
  std::string path;
  {
    auto store = open_store(root.path(), GetParam());
    ASSERT_TRUE(store->create_layer("base", "", LayerKind::kReadOnly).ok());
    ASSERT_TRUE(store->create_layer("c1", "base", LayerKind::kReadWrite).ok());
    auto p = store->mount("c1");
    ASSERT_TRUE(p.ok()) << p.error().message();
    path = *p;
    auto p2 = store->mount("c1");
    ASSERT_TRUE(p2.ok());
    EXPECT_EQ(*p2, path);
  }
  {
    auto store = open_store(root.path(), GetParam());
    EXPECT_EQ(store->layer("c1")->mount_count, 2);
    auto del = store->delete_layer("c1");
    ASSERT_FALSE(del.ok());
    EXPECT_EQ(del.error().kind(), ErrorKind::kBusy);
    ASSERT_TRUE(store->unmount("c1").ok());
    if (GetParam() == "overlay") EXPECT_TRUE(*sys::is_mountpoint(path));
    ASSERT_TRUE(store->unmount("c1").ok());
    EXPECT_FALSE(*sys::is_mountpoint(path));
    EXPECT_FALSE(store->unmount("c1").ok());
    auto delbase = store->delete_layer("base");
    ASSERT_FALSE(delbase.ok());  // has a child
    ASSERT_TRUE(store->delete_layer("c1").ok());
    ASSERT_TRUE(store->delete_layer("base").ok());
  }
}

TEST_P(LayerStoreTest, ConcurrentProcessesSerialiseOnTheStoreLock) {
  TempRoot root;
  { ASSERT_TRUE(open_store(root.path(), GetParam())); }
  constexpr int kProcs = 4, kLayers = 5;
  std::vector<sys::Child> children;
  for (int p = 0; p < kProcs; ++p) {
    auto child = sys::fork_child([&](int) -> int {
      int failures = 0;
      for (int i = 0; i < kLayers; ++i) {
        StoreOptions o;
        o.root = root.path();
        o.driver = GetParam();
        auto s = LayerStore::open(o);
        if (!s.ok()) {
          ++failures;
          continue;
        }
        std::string id = "p" + std::to_string(p) + "-" + std::to_string(i);
        std::string tar = make_tar({{"f" + std::to_string(i), id}});
        StringReader r(tar);
        if (!(*s)->import_layer(id, "", r).ok()) ++failures;
      }
      return failures;
    });
    ASSERT_TRUE(child.ok()) << child.error().message();
    children.push_back(std::move(*child));
  }
  for (auto& child : children) {
    auto status = sys::wait_child(child, -1, nullptr);
    ASSERT_TRUE(status.ok()) << status.error().message();
    EXPECT_EQ(*status, 0);
  }
  auto store = open_store(root.path(), GetParam());
  auto all = store->layers();
  ASSERT_TRUE(all.ok()) << all.error().message();
  EXPECT_EQ(all->size(), static_cast<size_t>(kProcs * kLayers));
  for (const auto& l : *all) EXPECT_FALSE(l.incomplete) << l.id;
}

TEST_P(LayerStoreTest, ApplyDiffRefusesBadTarWithoutTouchingTheLayer) {
  TempRoot root;
  auto store = open_store(root.path(), GetParam());
  ASSERT_TRUE(store->create_layer("c", "", LayerKind::kReadWrite).ok());
  std::string tar = make_tar({{"first.txt", "would be written"}, {"dir", "", 0755, 'd'},
                              {"dir/loophole", "", 0777, 'l', "../../victim"},
                              {"dir/loophole/newfile", "pwned"}});
  StringReader r(tar);
  auto res = store->apply_diff("c", r);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().kind(), ErrorKind::kSecurity) << res.error().message();
  auto ch = store->changes("c", std::nullopt);
  ASSERT_TRUE(ch.ok()) << ch.error().message();
  EXPECT_TRUE(ch->empty()) << "layer was modified by a refused tar";
}

TEST_P(LayerStoreTest, WipeRemovesEverything) {
  TempRoot root;
  auto store = open_store(root.path(), GetParam());
  ASSERT_TRUE(store->create_layer("a", "", LayerKind::kReadOnly).ok());
  ASSERT_TRUE(store->create_layer("b", "a", LayerKind::kReadWrite).ok());
  ASSERT_TRUE(store->mount("b").ok());
  ASSERT_TRUE(store->wipe().ok());
  EXPECT_TRUE(store->layers()->empty());
  EXPECT_FALSE(sys::lstat_if_exists(root.path() + "/" + GetParam())->has_value());
}

TEST_P(LayerStoreTest, LayerIdsAreFreeOfDriverReservedNames) {
  // overlay reserves "l" in its home, devicemapper "base": layer ids map to cache ids.
  TempRoot root;
  auto store = open_store(root.path(), GetParam());
  for (const char* id : {"l", "base", "backingFsBlockDev"}) {
    auto r = store->create_layer(id, "", LayerKind::kReadOnly);
    ASSERT_TRUE(r.ok()) << id << ": " << r.error().message();
    EXPECT_EQ(r->cache_id.size(), 32u);
    EXPECT_NE(r->cache_id, r->id);
  }
}

INSTANTIATE_TEST_SUITE_P(HostDrivers, LayerStoreTest, ::testing::Values("vfs", "overlay"),
                         [](const auto& info) { return info.param; });

TEST(LayerId, Validation) {
  EXPECT_TRUE(validate_layer_id("base").ok());
  EXPECT_TRUE(validate_layer_id("3f2a.b_c-d").ok());
  EXPECT_FALSE(validate_layer_id("").ok());
  EXPECT_FALSE(validate_layer_id("../x").ok());
  EXPECT_FALSE(validate_layer_id("a/b").ok());
  EXPECT_FALSE(validate_layer_id(".hidden").ok());
  EXPECT_FALSE(validate_layer_id(std::string(129, 'a')).ok());
}

}  // namespace
}  // namespace cowlab
