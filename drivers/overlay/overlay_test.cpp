// The overlay driver on the host kernel: Docker's overlay2 on-disk layout, read-only mounts of
// committed parents (moby#39780), reference-counted get/put, index=off, both mount paths and
// their depth limits (500 lowers via fsconfig "lowerdir+", 128 via mount(2) within a page),
// native whiteouts and changes, probes and options.  Every test runs in a fresh store root; the
// fixture fails the test if a mount is left below it, and then removes everything anyway.
#include "overlay/overlay.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <regex>
#include <string>
#include <vector>

#include "conformance/backing_store.h"
#include "cowlab/changes.h"
#include "cowlab/fs.h"
#include "cowlab/io.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"

namespace cowlab {
namespace {

using testing::BackingStore;

std::string read_text(const std::string& path) {
  auto r = sys::read_file(path);
  return r.ok() ? *r : "<" + r.error().message() + ">";
}

void write_text(const std::string& path, const std::string& content, mode_t mode = 0644) {
  auto fd = sys::open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  ASSERT_TRUE(fd.ok()) << fd.error().message();
  ASSERT_TRUE(sys::write_all(fd->get(), content.data(), content.size()).ok());
}

mode_t perm(const std::string& path) {
  auto st = sys::lstat(path);
  return st.ok() ? (st->st_mode & 07777) : 0;
}

bool present(const std::string& path) {
  auto st = sys::lstat_if_exists(path);
  return st.ok() && st->has_value();
}

std::optional<sys::MountInfo> mount_at(const std::string& path) {
  auto mi = sys::mountinfo();
  if (!mi.ok()) return std::nullopt;
  for (auto it = mi->rbegin(); it != mi->rend(); ++it)
    if (it->mount_point == path) return *it;
  return std::nullopt;
}

struct TarEntry {
  std::string name;
  std::string content;
  char type = 'f';  // f file, d dir
  mode_t mode = 0644;
};

std::string make_tar(const std::vector<TarEntry>& entries) {
  std::string out;
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_open(
      a, &out, nullptr,
      [](struct archive*, void* ud, const void* buf, size_t n) -> la_ssize_t {
        static_cast<std::string*>(ud)->append(static_cast<const char*>(buf), n);
        return static_cast<la_ssize_t>(n);
      },
      nullptr);
  for (const auto& e : entries) {
    struct archive_entry* ae = archive_entry_new();
    archive_entry_set_pathname(ae, e.name.c_str());
    archive_entry_set_mtime(ae, 1700000000, 0);
    if (e.type == 'd') {
      archive_entry_set_filetype(ae, AE_IFDIR);
      archive_entry_set_perm(ae, 0755);
    } else {
      archive_entry_set_filetype(ae, AE_IFREG);
      archive_entry_set_perm(ae, e.mode);
      archive_entry_set_size(ae, static_cast<la_int64_t>(e.content.size()));
    }
    archive_write_header(a, ae);
    if (e.type != 'd' && !e.content.empty())
      archive_write_data(a, e.content.data(), e.content.size());
    archive_entry_free(ae);
  }
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

std::string describe(const std::vector<Change>& changes) {
  std::string out;
  for (const auto& c : changes)
    out += std::string(1, change_kind_letter(c.kind)) + " " + c.path + "\n";
  return out;
}

class OverlayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = testing::make_backing_store("tmpdir");
    ASSERT_TRUE(store.ok()) << store.error().message();
    store_ = std::move(*store);
    auto root = store_->set_up();
    ASSERT_TRUE(root.ok()) << root.error().message();
    root_ = *root;
  }

  void TearDown() override {
    // Drivers release what they hold, then nothing may remain mounted below the root.
    for (auto& d : drivers_) (void)d->cleanup();
    drivers_.clear();
    EXPECT_TRUE(testing::mounts_under(root_).empty()) << "a mount was left below " << root_;
    auto down = store_->tear_down();
    EXPECT_TRUE(down.ok()) << down.error().message();
    EXPECT_TRUE(testing::mounts_under(root_).empty());
  }

  DriverConfig config(std::map<std::string, std::string> options = {}) const {
    return DriverConfig{root_, root_ + "/overlay", std::move(options)};
  }

  Driver* open(OverlayMountApi api = OverlayMountApi::kAuto,
               std::map<std::string, std::string> options = {}) {
    auto d = init_overlay_with_mount_api(config(std::move(options)), api);
    EXPECT_TRUE(d.ok()) << d.error().message();
    if (!d.ok()) return nullptr;
    drivers_.push_back(std::move(*d));
    return drivers_.back().get();
  }

  std::string home() const { return root_ + "/overlay"; }

  std::unique_ptr<BackingStore> store_;
  std::string root_;
  std::vector<std::unique_ptr<Driver>> drivers_;
};

TEST_F(OverlayTest, OnDiskLayoutIsDockersOverlay2) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->create("base", "", {}).ok());
  ASSERT_TRUE(d->create("mid", "base", {}).ok());
  ASSERT_TRUE(d->create_rw("top", "mid", {}).ok());

  EXPECT_EQ(perm(home()), 0710u);
  EXPECT_EQ(perm(home() + "/l"), 0700u);
  // Init's probes leave nothing behind: the home holds l/, the layers and the probe cache
  // (Docker's overlay2 keeps a file of its own there too, backingFsBlockDev).
  auto entries = sys::read_dir(home());
  ASSERT_TRUE(entries.ok());
  std::vector<std::string> names;
  for (const auto& e : *entries) names.push_back(e.name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"base", "l", "mid", "probes", "top"}));

  const std::regex lid_re("[A-Z2-7]{26}");
  std::map<std::string, std::string> lid;
  for (const char* id : {"base", "mid", "top"}) {
    std::string dir = home() + "/" + id;
    EXPECT_EQ(perm(dir), 0710u) << id;
    EXPECT_EQ(perm(dir + "/diff"), 0755u) << id;
    lid[id] = read_text(dir + "/link");
    EXPECT_TRUE(std::regex_match(lid[id], lid_re)) << id << " link: " << lid[id];
    auto target = sys::readlink(home() + "/l/" + lid[id]);
    ASSERT_TRUE(target.ok()) << target.error().message();
    EXPECT_EQ(*target, std::string("../") + id + "/diff");
  }
  EXPECT_NE(lid["base"], lid["mid"]);
  // Parentless: diff and link only.
  EXPECT_FALSE(present(home() + "/base/lower"));
  EXPECT_FALSE(present(home() + "/base/work"));
  // Lower files, nearest first; work dirs 0700.
  EXPECT_EQ(read_text(home() + "/mid/lower"), "l/" + lid["base"]);
  EXPECT_EQ(read_text(home() + "/top/lower"), "l/" + lid["mid"] + ":l/" + lid["base"]);
  EXPECT_EQ(perm(home() + "/mid/work"), 0700u);
  EXPECT_EQ(perm(home() + "/top/work"), 0700u);
  // Committed markers in every parent, none in the leaf.
  EXPECT_TRUE(present(home() + "/base/committed"));
  EXPECT_TRUE(present(home() + "/mid/committed"));
  EXPECT_FALSE(present(home() + "/top/committed"));
  EXPECT_FALSE(present(home() + "/top/merged"));  // made by get()

  auto md = d->metadata("top");
  ASSERT_TRUE(md.ok()) << md.error().message();
  EXPECT_EQ(*md, (KeyValues{{"WorkDir", home() + "/top/work"},
                            {"MergedDir", home() + "/top/merged"},
                            {"UpperDir", home() + "/top/diff"},
                            {"LowerDir", home() + "/mid/diff:" + home() + "/base/diff"}}));
  auto md_base = d->metadata("base");
  ASSERT_TRUE(md_base.ok());
  EXPECT_EQ(md_base->size(), 3u);  // no LowerDir without a parent
}

TEST_F(OverlayTest, CreateErrors) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  auto missing = d->create("x", "nope", {});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind(), ErrorKind::kNotFound) << missing.error().message();
  EXPECT_FALSE(d->exists("x"));
  ASSERT_TRUE(d->create("a", "", {}).ok());
  auto dup = d->create("a", "", {});
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().kind(), ErrorKind::kExists);
  auto ro_size = d->create("b", "a", CreateOpts{"", {{"size", "10M"}}});
  ASSERT_FALSE(ro_size.ok());
  EXPECT_EQ(ro_size.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(ro_size.error().message().find("read-write"), std::string::npos)
      << ro_size.error().message();
  auto rw_size = d->create_rw("b", "a", CreateOpts{"", {{"size", "10M"}}});
  ASSERT_FALSE(rw_size.ok());
  EXPECT_NE(rw_size.error().message().find("pquota"), std::string::npos)
      << rw_size.error().message();
  EXPECT_FALSE(d->exists("b"));
  EXPECT_FALSE(d->create("l", "", {}).ok());  // would be the short-link dir
  auto rm = d->remove("nope");
  ASSERT_FALSE(rm.ok());
  EXPECT_EQ(rm.error().kind(), ErrorKind::kNotFound);
}

TEST_F(OverlayTest, ParentlessGetReturnsDiffWithoutMounting) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->create("base", "", {}).ok());
  auto p = d->get("base", "");
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(*p, home() + "/base/diff");
  EXPECT_FALSE(*sys::is_mountpoint(*p));
  EXPECT_FALSE(present(home() + "/base/merged"));
  EXPECT_TRUE(d->put("base").ok());
  EXPECT_TRUE(testing::mounts_under(root_).empty());
}

TEST_F(OverlayTest, TwoGetsOnePutStayMountedSecondPutUnmounts) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->create("base", "", {}).ok());
  ASSERT_TRUE(d->create_rw("c", "base", {}).ok());
  auto p1 = d->get("c", "");
  ASSERT_TRUE(p1.ok()) << p1.error().message();
  auto p2 = d->get("c", "");
  ASSERT_TRUE(p2.ok());
  EXPECT_EQ(*p1, home() + "/c/merged");
  EXPECT_EQ(*p1, *p2);
  ASSERT_TRUE(d->put("c").ok());
  EXPECT_TRUE(*sys::is_mountpoint(*p1));
  ASSERT_TRUE(d->put("c").ok());
  EXPECT_FALSE(*sys::is_mountpoint(*p1));
  EXPECT_FALSE(present(*p1)) << "put must remove merged (moby#34672)";
}

TEST_F(OverlayTest, CommittedParentMountsReadOnlyAndLeafReadWrite) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->create("base", "", {}).ok());
  write_text(home() + "/base/diff/base.txt", "base");
  ASSERT_TRUE(d->create_rw("mid", "base", {}).ok());
  // Before it has a child, mid mounts read-write with its diff as upper.
  {
    auto p = d->get("mid", "");
    ASSERT_TRUE(p.ok()) << p.error().message();
    write_text(*p + "/mid.txt", "mid");
    EXPECT_EQ(read_text(home() + "/mid/diff/mid.txt"), "mid");
    auto mi = mount_at(*p);
    ASSERT_TRUE(mi.has_value());
    EXPECT_NE(mi->super_options.find("upperdir="), std::string::npos) << mi->super_options;
    ASSERT_TRUE(d->put("mid").ok());
  }
  ASSERT_TRUE(d->create_rw("top", "mid", {}).ok());
  EXPECT_TRUE(present(home() + "/mid/committed"));
  auto pm = d->get("mid", "");
  ASSERT_TRUE(pm.ok()) << pm.error().message();
  auto pt = d->get("top", "");
  ASSERT_TRUE(pt.ok()) << pt.error().message();
  // mid is a lower of top now: read-only, no upperdir (moby#39780).
  auto mi = mount_at(*pm);
  ASSERT_TRUE(mi.has_value());
  EXPECT_EQ(mi->super_options.find("upperdir="), std::string::npos) << mi->super_options;
  EXPECT_EQ(read_text(*pm + "/mid.txt"), "mid");
  EXPECT_EQ(read_text(*pm + "/base.txt"), "base");
  auto w = sys::open(*pm + "/new.txt", O_WRONLY | O_CREAT, 0644);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().err(), EROFS) << w.error().message();
  // top is writable and sees both lowers.
  write_text(*pt + "/top.txt", "top");
  EXPECT_EQ(read_text(home() + "/top/diff/top.txt"), "top");
  EXPECT_EQ(read_text(*pt + "/mid.txt"), "mid");
  EXPECT_EQ(read_text(*pt + "/base.txt"), "base");
  ASSERT_TRUE(d->put("top").ok());
  ASSERT_TRUE(d->put("mid").ok());
}

TEST_F(OverlayTest, IndexOffWhenTheKernelExposesIt) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->create("base", "", {}).ok());
  ASSERT_TRUE(d->create_rw("c", "base", {}).ok());
  auto p = d->get("c", "");
  ASSERT_TRUE(p.ok()) << p.error().message();
  auto mi = mount_at(*p);
  ASSERT_TRUE(mi.has_value());
  bool exposed = present("/sys/module/overlay/parameters/index");
  const OverlayProbes* probes = overlay_probes(*d);
  EXPECT_EQ(probes->index_off, exposed);
  EXPECT_EQ(std::count(probes->mount_options.begin(), probes->mount_options.end(), "index=off"),
            exposed ? 1 : 0);
  // The kernel shows "index=..." only when it differs from the module default, so the mount
  // must show either index=off or nothing, and never index=on.
  EXPECT_EQ(mi->super_options.find("index=on"), std::string::npos) << mi->super_options;
  if (exposed && read_text("/sys/module/overlay/parameters/index").rfind("Y", 0) == 0)
    EXPECT_NE(mi->super_options.find("index=off"), std::string::npos) << mi->super_options;
  ASSERT_TRUE(d->put("c").ok());
}

TEST_F(OverlayTest, RemoveDeletesShortLinkAndUnmounts) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->create("base", "", {}).ok());
  ASSERT_TRUE(d->create_rw("c", "base", {}).ok());
  std::string lid = read_text(home() + "/c/link");
  auto p = d->get("c", "");
  ASSERT_TRUE(p.ok()) << p.error().message();
  ASSERT_TRUE(d->remove("c").ok());
  EXPECT_FALSE(*sys::is_mountpoint(*p));
  EXPECT_FALSE(present(home() + "/c"));
  EXPECT_FALSE(present(home() + "/l/" + lid));
  EXPECT_FALSE(d->exists("c"));
  EXPECT_TRUE(d->exists("base"));
  ASSERT_TRUE(d->remove("base").ok());
  auto left = sys::read_dir(home() + "/l");
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty());
}

// Builds base + `depth` layers; layer i writes layer-i/id into its own diff dir.  Returns the
// ids, base first.
std::vector<std::string> build_chain(Driver& d, const std::string& home, int depth,
                                     const std::string& prefix) {
  std::vector<std::string> ids = {prefix + "base"};
  EXPECT_TRUE(d.create(ids[0], "", {}).ok());
  write_text(home + "/" + ids[0] + "/diff/testfile.txt", "test content");
  for (int i = 1; i <= depth; ++i) {
    std::string id = prefix + std::to_string(i);
    auto r = d.create(id, ids.back(), {});
    EXPECT_TRUE(r.ok()) << r.error().message();
    if (!r.ok()) break;
    std::string dir = home + "/" + id + "/diff/layer-" + std::to_string(i);
    EXPECT_TRUE(sys::mkdir(dir, 0755).ok());
    write_text(dir + "/id", id);
    ids.push_back(id);
  }
  return ids;
}

void expect_chain_visible(const std::string& merged, const std::vector<std::string>& ids) {
  EXPECT_EQ(read_text(merged + "/testfile.txt"), "test content");
  for (size_t i = 1; i < ids.size(); ++i)
    ASSERT_EQ(read_text(merged + "/layer-" + std::to_string(i) + "/id"), ids[i]) << "layer " << i;
}

TEST_F(OverlayTest, NewMountApiMounts500LowersAndRefuses501) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  const OverlayProbes* probes = overlay_probes(*d);
  if (probes->mount_api != OverlayMountApi::kNewApi)
    GTEST_SKIP() << "kernel " << sys::kernel_version().release
                 << " has no fsconfig \"lowerdir+\" (needs Linux 6.7): the new mount API path "
                    "cannot run here";
  EXPECT_EQ(probes->max_lower_layers, 500);
  auto ids = build_chain(*d, home(), 500, "n");
  ASSERT_EQ(ids.size(), 501u);
  std::string lower = read_text(home() + "/n500/lower");
  EXPECT_EQ(std::count(lower.begin(), lower.end(), ':'), 499);

  auto t0 = std::chrono::steady_clock::now();
  auto p = d->get(ids.back(), "");
  auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(p.ok()) << p.error().message();
  std::printf("[ measured ] new mount API: mount of 500 lowers + upper took %.2f ms\n",
              std::chrono::duration<double, std::milli>(t1 - t0).count());
  expect_chain_visible(*p, ids);
  // The 499th layer is committed: read-only with its own diff on top, 500 lowerdirs in all.
  auto p499 = d->get("n499", "");
  ASSERT_TRUE(p499.ok()) << p499.error().message();
  EXPECT_EQ(read_text(*p499 + "/layer-499/id"), "n499");
  EXPECT_FALSE(present(*p499 + "/layer-500"));
  ASSERT_TRUE(d->put("n499").ok());
  ASSERT_TRUE(d->put(ids.back()).ok());

  auto over = d->create("n501", ids.back(), {});
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().kind(), ErrorKind::kNotSupported);
  EXPECT_NE(over.error().message().find(
                "max depth exceeded: 501 lower layers, this kernel's mount path supports 500"),
            std::string::npos)
      << over.error().message();
  EXPECT_FALSE(d->exists("n501"));
  EXPECT_FALSE(present(home() + "/n500/committed")) << "a refused child must not commit its parent";
}

TEST_F(OverlayTest, LegacyMountPathFits128LowersInAPageAndRefuses129) {
  Driver* d = open(OverlayMountApi::kLegacy);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(overlay_probes(*d)->mount_api, OverlayMountApi::kLegacy);
  EXPECT_EQ(overlay_probes(*d)->max_lower_layers, 128);
  auto ids = build_chain(*d, home(), 128, "o");
  ASSERT_EQ(ids.size(), 129u);
  // With absolute paths the lowerdir list alone is larger than a page: only the relative
  // short-link form fits.
  size_t absolute = 128 * (home().size() + std::string("/l/").size() + 26 + 1);
  EXPECT_GT(absolute, static_cast<size_t>(sys::page_size()));

  auto t0 = std::chrono::steady_clock::now();
  auto p = d->get(ids.back(), "");
  auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(p.ok()) << p.error().message();
  std::printf("[ measured ] mount(2) path: mount of 128 lowers + upper took %.2f ms\n",
              std::chrono::duration<double, std::milli>(t1 - t0).count());
  expect_chain_visible(*p, ids);
  write_text(*p + "/written.txt", "rw");
  EXPECT_EQ(read_text(home() + "/" + ids.back() + "/diff/written.txt"), "rw");
  ASSERT_TRUE(d->put(ids.back()).ok());

  auto over = d->create("o129", ids.back(), {});
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().kind(), ErrorKind::kNotSupported);
  EXPECT_NE(over.error().message().find(
                "max depth exceeded: 129 lower layers, this kernel's mount path supports 128"),
            std::string::npos)
      << over.error().message();

  // A layer made deeper by the new API (a store moved to an older kernel) is refused at mount
  // time with the same clear error.
  Driver* modern = open(OverlayMountApi::kAuto);
  ASSERT_NE(modern, nullptr);
  if (overlay_probes(*modern)->mount_api != OverlayMountApi::kNewApi)
    return;  // nothing deeper to make
  ASSERT_TRUE(modern->create("o129", ids.back(), {}).ok());
  auto deep = d->get("o129", "");
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.error().message().find("max depth exceeded: 129 lower layers"), std::string::npos)
      << deep.error().message();
  EXPECT_FALSE(present(home() + "/o129/merged"));
}

TEST_F(OverlayTest, StatusKeysAreExactAndEachIsAProbe) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  auto st = d->status();
  std::vector<std::string> keys;
  for (const auto& [k, v] : st) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"Backing Filesystem", "Supports d_type",
                                            "Using metacopy", "Native Overlay Diff", "userxattr"}));
  auto fs = backing_fs_name(home());
  ASSERT_TRUE(fs.ok());
  EXPECT_EQ(st[0].second, *fs);
  EXPECT_EQ(st[1].second, "true");  // ext4 and friends fill d_type
  // Without a metacopy mount option the kernel's default decides; the probe must agree.
  std::string metacopy_param = read_text("/sys/module/overlay/parameters/metacopy");
  EXPECT_EQ(st[2].second, metacopy_param.rfind("Y", 0) == 0 ? "true" : "false");
  // Native diff fails only when redirect_dir is on (opaque copy-up was fixed in 4.8).
  std::string redirect_param = read_text("/sys/module/overlay/parameters/redirect_dir");
  EXPECT_EQ(st[3].second, redirect_param.rfind("Y", 0) == 0 ? "false" : "true")
      << overlay_probes(*d)->naive_diff_reason;
  EXPECT_EQ(st[4].second, *sys::in_initial_user_namespace() ? "false" : "true");
}

TEST_F(OverlayTest, MetacopyMountOptionIsSeenByTheProbe) {
  // metacopy=on makes the chmod probe find a metacopy xattr; it also turns on redirects,
  // which native diff cannot express.
  Driver* d = open(OverlayMountApi::kAuto, {{"overlay.mountopt", "metacopy=on"}});
  ASSERT_NE(d, nullptr);
  auto st = d->status();
  EXPECT_EQ(st[2], (std::pair<std::string, std::string>{"Using metacopy", "true"}));
  EXPECT_EQ(st[3], (std::pair<std::string, std::string>{"Native Overlay Diff", "false"}))
      << overlay_probes(*d)->naive_diff_reason;
}

// Every cowlab command is a process of its own, so init keeps its probe results in
// <home>/probes: a second init on the same home reuses them (no probe mounts), a different
// mount option or a damaged file probes again, and the answers are the same either way.
TEST_F(OverlayTest, ProbeResultsAreCachedPerBootKernelAndOptions) {
  Driver* first = open();
  ASSERT_NE(first, nullptr);
  const std::string cache = home() + "/probes";
  auto text = sys::read_file(cache);
  ASSERT_TRUE(text.ok()) << "no probe cache after init";
  EXPECT_NE(text->find("boot "), std::string::npos);
  EXPECT_NE(text->find("|kernel " + sys::kernel_version().release), std::string::npos);
  auto mtime_of = [&] { return sys::lstat(cache)->st_mtim; };
  // Make a rewrite visible in the mtime.
  struct timespec old_times[2] = {{1, 0}, {1, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, cache.c_str(), old_times, 0), 0);

  Driver* second = open();
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(mtime_of().tv_sec, 1) << "a cache hit must not probe or rewrite the cache";
  EXPECT_EQ(second->status(), first->status());
  EXPECT_EQ(overlay_probes(*second)->mount_api, overlay_probes(*first)->mount_api);

  // Other mount options: another fingerprint, so the probes run again and the cache is rewritten.
  Driver* other = open(OverlayMountApi::kAuto, {{"overlay.mountopt", "metacopy=on"}});
  ASSERT_NE(other, nullptr);
  EXPECT_NE(mtime_of().tv_sec, 1);
  EXPECT_EQ(other->status()[2], (std::pair<std::string, std::string>{"Using metacopy", "true"}));

  // The cache's name is part of the layout: no layer may take it.
  const std::string before_clash = sys::read_file(cache).value_or("");
  auto clash = second->create("probes", "", {});
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(clash.error().message().find("reserved"), std::string::npos) << clash.error().message();
  EXPECT_EQ(sys::read_file(cache).value_or(""), before_clash)
      << "a refused create must leave the cache alone";

  // A damaged cache is ignored and replaced.
  ASSERT_TRUE(sys::write_file_atomic(cache, "garbage\n").ok());
  Driver* again = open();
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->status(), first->status());
  auto rewritten = sys::read_file(cache);
  ASSERT_TRUE(rewritten.ok());
  EXPECT_EQ(*rewritten, *text);
}

std::vector<std::string> probe_dirs_in(const std::string& home) {
  std::vector<std::string> out;
  auto entries = sys::read_dir(home);
  if (entries.ok())
    for (const auto& e : *entries)
      if (e.name.rfind(".probe-", 0) == 0) out.push_back(e.name);
  std::sort(out.begin(), out.end());
  return out;
}

// Issue 11: readers (DriverAccess::kShared) run at once, and each whose cached probe results are
// stale probes in a .probe-<random> dir of its own.  A reader must leave every other probe dir
// alone — it may be another reader's, in use — and remove only its own; only a writer
// (kExclusive: nobody else runs) removes what killed inits left.  Before, every init removed
// all of them: a reader unmounted and deleted another reader's probe while it ran.
TEST_F(OverlayTest, OnlyTheWriterRemovesProbeDirsReadersLeaveOthersAlone) {
  ASSERT_NE(open(), nullptr);
  // Another reader's probe in progress: its dir, a file and a mount in it.
  const std::string other = home() + "/.probe-0123456789ab";
  ASSERT_TRUE(sys::mkdir_all(other + "/merged", 0700).ok());
  write_text(other + "/lower", "in use");
  ASSERT_TRUE(sys::mount("probe-in-use", other + "/merged", "tmpfs", 0, "").ok());
  struct Unmount {
    std::string path;
    ~Unmount() {
      if (mount_at(path)) (void)sys::umount2(path, MNT_DETACH);
    }
  } unmount{other + "/merged"};
  // This reader's cached results are stale too (another boot), so it probes for itself.
  ASSERT_TRUE(sys::write_file_atomic(home() + "/probes", "stale\n").ok());

  DriverConfig shared = config();
  shared.access = DriverAccess::kShared;
  auto reader = init_overlay(shared);
  ASSERT_TRUE(reader.ok()) << reader.error().message();
  drivers_.push_back(std::move(*reader));
  EXPECT_EQ(read_text(other + "/lower"), "in use") << "a reader removed another reader's probe dir";
  EXPECT_TRUE(mount_at(other + "/merged")) << "a reader unmounted another reader's probe mount";
  EXPECT_EQ(probe_dirs_in(home()), std::vector<std::string>{".probe-0123456789ab"})
      << "the reader left its own probe dir behind";
  EXPECT_NE(read_text(home() + "/probes"), "stale\n") << "the reader did not cache its probes";

  // A writer runs alone: what is there is a killed init's leftover, and it goes.
  ASSERT_NE(open(), nullptr);
  EXPECT_FALSE(mount_at(other + "/merged")) << "the writer left a stale probe mount";
  EXPECT_TRUE(probe_dirs_in(home()).empty()) << "the writer left a stale probe dir";
}

// A read-only store cannot be probed (each probe writes in the home) and cannot change: after a
// reboot its readers use the results the last writer cached, whatever boot they were probed on,
// and without any they fail saying so.  Before, the reader's probe failed with EROFS.
TEST_F(OverlayTest, ReadersOfAReadOnlyHomeUseTheCachedProbes) {
  Driver* writer = open();
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->create("base", "", {}).ok());
  const KeyValues status = writer->status();
  const std::string cache = home() + "/probes";
  auto text = sys::read_file(cache);
  ASSERT_TRUE(text.ok()) << text.error().message();
  // The results of another boot.
  ASSERT_TRUE(sys::write_file_atomic(cache, "boot another" + text->substr(text->find('\n'))).ok());
  const std::string saved = *sys::read_file(cache);

  ASSERT_TRUE(sys::mount(root_, root_, "", MS_BIND, "").ok());
  struct Unmount {
    std::string path;
    ~Unmount() { (void)sys::umount2(path, MNT_DETACH); }
  } unmount{root_};
  ASSERT_TRUE(sys::mount("", root_, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "").ok());
  DriverConfig shared = config();
  shared.access = DriverAccess::kShared;
  {
    auto reader = init_overlay(shared);
    ASSERT_TRUE(reader.ok()) << reader.error().message();
    EXPECT_EQ((*reader)->status(), status);
    EXPECT_TRUE((*reader)->exists("base"));
    (void)(*reader)->cleanup();
  }
  EXPECT_EQ(read_text(cache), saved);
  EXPECT_TRUE(probe_dirs_in(home()).empty());

  // No results at all: the reader says why it cannot open the home.
  ASSERT_TRUE(sys::umount2(root_, MNT_DETACH).ok());
  ASSERT_TRUE(sys::unlink(cache).ok());
  ASSERT_TRUE(sys::mount(root_, root_, "", MS_BIND, "").ok());
  ASSERT_TRUE(sys::mount("", root_, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "").ok());
  auto refused = init_overlay(shared);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("is read-only and holds no probe results"),
            std::string::npos)
      << refused.error().message();
}

TEST_F(OverlayTest, OptionErrors) {
  auto unknown = init_overlay(config({{"overlay.bogus", "1"}}));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(unknown.error().message().find("overlay.bogus"), std::string::npos);
  auto size = init_overlay(config({{"overlay.size", "10G"}}));
  ASSERT_FALSE(size.ok());
  EXPECT_EQ(size.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(size.error().message().find("xfs"), std::string::npos) << size.error().message();
  auto bad_size = init_overlay(config({{"overlay2.size", "ten"}}));
  ASSERT_FALSE(bad_size.ok());
  EXPECT_NE(bad_size.error().message().find("ten"), std::string::npos);
  auto layer_key = init_overlay(config({{"overlay.mountopt", "lowerdir=/etc"}}));
  ASSERT_FALSE(layer_key.ok());
  EXPECT_EQ(layer_key.error().kind(), ErrorKind::kInvalid);
  // A refused init leaves no home behind (a non-empty home would pin the driver).
  EXPECT_FALSE(present(home()));
}

TEST_F(OverlayTest, RefusesAnOverlayBackingFilesystem) {
  // A store root inside an overlay mount: overlay cannot put its upper dirs there.
  for (const char* dir : {"/ovl", "/ovl/lower", "/ovl/upper", "/ovl/work", "/ovl/merged"})
    ASSERT_TRUE(sys::mkdir(root_ + dir, 0755).ok());
  ASSERT_TRUE(sys::mount("overlay", root_ + "/ovl/merged", "overlay", 0,
                         "lowerdir=" + root_ + "/ovl/lower,upperdir=" + root_ +
                             "/ovl/upper,workdir=" + root_ + "/ovl/work")
                  .ok());
  std::string inner = root_ + "/ovl/merged/store";
  auto r = init_overlay(DriverConfig{inner, inner + "/overlay", {}});
  ASSERT_TRUE(sys::umount2(root_ + "/ovl/merged", MNT_DETACH).ok());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kNotSupported);
  EXPECT_NE(r.error().message().find("overlayfs"), std::string::npos) << r.error().message();
}

// Paths longer than fsconfig's 256-byte string limit still mount on both paths (the new API
// goes through /proc/self/fd/<home fd>; mount(2) has a page).
TEST_F(OverlayTest, LongStoreRootMountsOnBothPaths) {
  std::string deep = root_;
  while (deep.size() < root_.size() + 300)
    deep += "/a-rather-long-directory-name-to-pass-256-bytes";
  ASSERT_TRUE(sys::mkdir_all(deep, 0755).ok());
  for (OverlayMountApi api : {OverlayMountApi::kAuto, OverlayMountApi::kLegacy}) {
    SCOPED_TRACE(overlay_mount_api_name(api));
    std::string store = deep + (api == OverlayMountApi::kAuto ? "/auto" : "/legacy");
    auto d = init_overlay_with_mount_api(DriverConfig{store, store + "/overlay", {}}, api);
    ASSERT_TRUE(d.ok()) << d.error().message();
    std::string home = store + "/overlay";
    EXPECT_GT(home.size() + std::string("/l/").size() + 26, 255u);
    ASSERT_TRUE((*d)->create("base", "", {}).ok());
    write_text(home + "/base/diff/f", "from base");
    ASSERT_TRUE((*d)->create("mid", "base", {}).ok());
    ASSERT_TRUE((*d)->create_rw("top", "mid", {}).ok());
    for (const char* id : {"mid", "top"}) {
      auto p = (*d)->get(id, "");
      ASSERT_TRUE(p.ok()) << p.error().message();
      EXPECT_EQ(read_text(*p + "/f"), "from base");
      ASSERT_TRUE((*d)->put(id).ok());
    }
    EXPECT_TRUE(testing::mounts_under(store).empty());
  }
}

// Inside a user namespace overlay keeps its metadata in user.overlay.* ("userxattr", Linux
// 5.11+): the probe must notice, every mount must say so, and opaque dirs must carry the user
// xattr.  Runs in a forked child with its own user and mount namespaces, so its mounts vanish
// with it; the child reports failures on a pipe.
TEST_F(OverlayTest, UserNamespaceUsesUserxattr) {
  if (!sys::kernel_version().at_least(5, 11))
    GTEST_SKIP() << "kernel " << sys::kernel_version().release << " has no userxattr (needs 5.11)";
  ASSERT_TRUE(sys::mkdir(home(), 0755).ok());  // reachable by the namespace's root
  auto child = sys::fork_child([&](int out_fd) -> int {
    auto fail = [&](const std::string& why) {
      (void)!::write(out_fd, why.data(), why.size());
      ::_exit(1);
    };
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
      fail("unshare: " + std::string(strerror(errno)));
    auto put_map = [&](const std::string& file, const std::string& text) {
      auto fd = sys::open(file, O_WRONLY);
      if (!fd.ok() || !sys::write_all(fd->get(), text.data(), text.size()).ok())
        fail("write " + file);
    };
    put_map("/proc/self/setgroups", "deny");
    put_map("/proc/self/uid_map", "0 0 1");
    put_map("/proc/self/gid_map", "0 0 1");
    if (!sys::mount("", "/", "", MS_REC | MS_PRIVATE, "").ok()) fail("make / private");
    auto in_init = sys::in_initial_user_namespace();
    if (!in_init.ok() || *in_init) fail("still in the initial user namespace");
    auto d = init_overlay(DriverConfig{root_, home(), {}});
    if (!d.ok()) fail("init: " + d.error().message());
    auto st = (*d)->status();
    if (st[4] != std::pair<std::string, std::string>{"userxattr", "true"})
      fail("status: " + st[4].second);
    const OverlayProbes* probes = overlay_probes(**d);
    if (std::count(probes->mount_options.begin(), probes->mount_options.end(), "userxattr") != 1)
      fail("mount options lack userxattr");
    if (!(*d)->create("base", "", {}).ok() || !sys::mkdir(home() + "/base/diff/dir", 0755).ok())
      fail("create base");
    if (!(*d)->create_rw("c", "base", {}).ok()) fail("create c");
    auto p = (*d)->get("c", "");
    if (!p.ok()) fail("get: " + p.error().message());
    auto mi = mount_at(*p);
    if (!mi || mi->super_options.find("userxattr") == std::string::npos)
      fail("mount lacks userxattr");
    // Replacing a lower dir makes an opaque upper dir.
    if (!sys::rmdir(*p + "/dir").ok() || !sys::mkdir(*p + "/dir", 0755).ok()) fail("replace dir");
    auto opaque = sys::lgetxattr(home() + "/c/diff/dir", "user.overlay.opaque");
    if (!opaque.ok() || opaque->value_or("") != "y")
      fail("no user.overlay.opaque on the replaced dir");
    if (!(*d)->put("c").ok()) fail("put");
    return 0;
  });
  ASSERT_TRUE(child.ok()) << child.error().message();
  std::string report;
  auto status = sys::wait_child(*child, -1, &report);
  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_EQ(*status, 0) << report;
}

// An xfs image on a loop device, mounted with the given options; always unmounted and
// detached, even when the test fails.
class XfsLoop {
 public:
  XfsLoop(std::string dir) : dir_(std::move(dir)) {}
  ~XfsLoop() { unmount(); }

  // kNotSupported when mkfs.xfs or loop devices are missing.
  Result<void> format() {
    COWLAB_TRY(sys::mkdir_all(dir_ + "/mnt", 0755));
    {
      auto fd = COWLAB_TRY(sys::open(dir_ + "/xfs.img", O_WRONLY | O_CREAT | O_TRUNC, 0600));
      COWLAB_TRY(sys::ftruncate(fd.get(), 512 << 20));  // sparse; xfs needs >= 300 MiB
    }
    std::string out;
    auto rc = sys::run({"mkfs.xfs", "-q", "-f", dir_ + "/xfs.img"}, &out);
    if (!rc.ok()) return Error::not_supported("mkfs.xfs is not installed (package xfsprogs)");
    if (*rc != 0) return Error(ErrorKind::kSystem, "mkfs.xfs failed: " + out);
    return {};
  }
  Result<std::string> mount(const std::string& options) {
    auto loop = COWLAB_TRY(sys::loop_attach(dir_ + "/xfs.img", sys::LoopFlags::kAutoclear));
    device_ = loop.device;
    COWLAB_TRY(sys::mount(device_, dir_ + "/mnt", "xfs", 0, options));
    return dir_ + "/mnt";
  }
  void unmount() {
    if (device_.empty()) return;
    for (const auto& m : testing::mounts_under(dir_ + "/mnt")) (void)sys::umount2(m, MNT_DETACH);
    (void)sys::loop_detach(device_);  // autoclear would too, but not necessarily by now
    device_.clear();
  }

 private:
  std::string dir_;
  std::string device_;
};

// graphtest's SetQuota for overlay over xfs with pquota: 25 MiB fit in a 50M layer, 50 MiB
// do not; without pquota a size is refused.
TEST_F(OverlayTest, SizeNeedsXfsProjectQuotaAndIsEnforced) {
  XfsLoop xfs(root_ + "/xfs");
  auto formatted = xfs.format();
  if (!formatted.ok() && formatted.error().kind() == ErrorKind::kNotSupported)
    GTEST_SKIP() << formatted.error().message();
  ASSERT_TRUE(formatted.ok()) << formatted.error().message();
  {
    auto mnt = xfs.mount("");
    ASSERT_TRUE(mnt.ok()) << mnt.error().message();
    auto refused = init_overlay(DriverConfig{*mnt, *mnt + "/overlay", {{"overlay.size", "50M"}}});
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().kind(), ErrorKind::kInvalid);
    EXPECT_NE(refused.error().message().find("pquota"), std::string::npos)
        << refused.error().message();
    xfs.unmount();
  }
  auto mnt = xfs.mount("prjquota");
  if (!mnt.ok() && mnt.error().err() == EINVAL) {
    xfs.unmount();
    GTEST_SKIP() << "kernel " << sys::kernel_version().release
                 << " mounts xfs but refuses prjquota (built without CONFIG_XFS_QUOTA): "
                 << mnt.error().message() << "; quota enforcement not checked here";
  }
  ASSERT_TRUE(mnt.ok()) << mnt.error().message();
  {
    auto d = init_overlay(DriverConfig{*mnt, *mnt + "/overlay", {}});
    ASSERT_TRUE(d.ok()) << d.error().message();
    EXPECT_TRUE((*d)->supports_quota());
    EXPECT_TRUE(overlay_probes(**d)->quota);
    EXPECT_EQ((*d)->status()[0].second, "xfs");
    ASSERT_TRUE((*d)->create("base", "", {}).ok());
    ASSERT_TRUE((*d)->create_rw("limited", "base", CreateOpts{"", {{"size", "50M"}}}).ok());
    ASSERT_TRUE((*d)->create_rw("free", "base", {}).ok());
    auto p = (*d)->get("limited", "");
    ASSERT_TRUE(p.ok()) << p.error().message();
    std::string chunk(1 << 20, 'q');
    auto write_mib = [&](const std::string& path, int mib) -> int {
      auto fd = sys::open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (!fd.ok()) return fd.error().err();
      for (int i = 0; i < mib; ++i)
        if (auto w = sys::write_all(fd->get(), chunk.data(), chunk.size()); !w.ok())
          return w.error().err();
      if (auto f = sys::fsync(fd->get()); !f.ok()) return f.error().err();
      return 0;
    };
    EXPECT_EQ(write_mib(*p + "/smallfile", 25), 0);
    int big = write_mib(*p + "/bigfile", 50);
    EXPECT_TRUE(big == EDQUOT || big == ENOSPC) << "50 MiB into a 50M layer gave errno " << big;
    ASSERT_TRUE((*d)->put("limited").ok());
    // Another layer has no limit.
    auto pf = (*d)->get("free", "");
    ASSERT_TRUE(pf.ok());
    EXPECT_EQ(write_mib(*pf + "/bigfile", 60), 0);
    ASSERT_TRUE((*d)->put("free").ok());
    ASSERT_TRUE((*d)->cleanup().ok());
  }
  xfs.unmount();
  EXPECT_TRUE(testing::mounts_under(root_ + "/xfs").empty());
  EXPECT_TRUE(testing::loop_devices_backed_under(root_ + "/xfs").empty());
}

// ---- diffs (need the archive and changes implementations) --------------------------------------

TEST_F(OverlayTest, ApplyDiffStoresNativeWhiteoutsAndOpaqueDirs) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(overlay_probes(*d)->native_diff) << overlay_probes(*d)->naive_diff_reason;
  ASSERT_TRUE(d->create("base", "", {}).ok());
  StringReader base_tar(
      make_tar({{"a", "", 'd'}, {"a/x", "x"}, {"a/y", "y"}, {"b", "b"}, {"keep", "k"}}));
  auto applied = d->apply_diff("base", "", base_tar);
  ASSERT_TRUE(applied.ok()) << applied.error().message();
  ASSERT_TRUE(d->create("child", "base", {}).ok());
  // The opaque marker stands after a/z: it still applies first and never hides a/z.
  StringReader child_tar(
      make_tar({{"a", "", 'd'}, {"a/z", "z"}, {"a/.wh..wh..opq", ""}, {".wh.b", ""}}));
  applied = d->apply_diff("child", "base", child_tar);
  ASSERT_TRUE(applied.ok()) << applied.error().message();

  std::string diff = home() + "/child/diff";
  auto wh = sys::lstat(diff + "/b");
  ASSERT_TRUE(wh.ok()) << wh.error().message();
  EXPECT_TRUE(S_ISCHR(wh->st_mode));
  EXPECT_EQ(wh->st_rdev, makedev(0, 0));
  auto opq = sys::lgetxattr(diff + "/a", "trusted.overlay.opaque");
  ASSERT_TRUE(opq.ok());
  EXPECT_EQ(opq->value_or(""), "y");
  EXPECT_FALSE(present(diff + "/.wh.b"));
  EXPECT_FALSE(present(diff + "/a/.wh..wh..opq"));

  auto p = d->get("child", "");
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(read_text(*p + "/a/z"), "z");
  EXPECT_FALSE(present(*p + "/a/x"));
  EXPECT_FALSE(present(*p + "/b"));
  EXPECT_EQ(read_text(*p + "/keep"), "k");
  ASSERT_TRUE(d->put("child").ok());

  auto ch = d->changes("child", "base");
  ASSERT_TRUE(ch.ok()) << ch.error().message();
  EXPECT_EQ(describe(*ch), "C /a\nD /a/x\nD /a/y\nA /a/z\nD /b\n");
}

// An opaque marker at the top of a tar hides every lower entry, although overlayfs ignores
// the opaque xattr on a layer's root: the driver hands its lowers to the applier.
TEST_F(OverlayTest, RootOpaqueMarkerHidesTheLowerLayers) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(overlay_probes(*d)->native_diff) << overlay_probes(*d)->naive_diff_reason;
  ASSERT_TRUE(d->create("base", "", {}).ok());
  write_text(home() + "/base/diff/a", "a");
  ASSERT_TRUE(sys::mkdir(home() + "/base/diff/dir", 0755).ok());
  ASSERT_TRUE(d->create("child", "base", {}).ok());
  StringReader tar(make_tar({{".wh..wh..opq", ""}, {"c", "c"}}));
  auto applied = d->apply_diff("child", "base", tar);
  ASSERT_TRUE(applied.ok()) << applied.error().message();
  auto p = d->get("child", "");
  ASSERT_TRUE(p.ok()) << p.error().message();
  auto entries = sys::read_dir(*p);
  ASSERT_TRUE(entries.ok());
  std::vector<std::string> names;
  for (const auto& e : *entries) names.push_back(e.name);
  EXPECT_EQ(names, std::vector<std::string>{"c"});
  ASSERT_TRUE(d->put("child").ok());
}

TEST_F(OverlayTest, NativeChangesEqualNaiveChanges) {
  Driver* d = open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(overlay_probes(*d)->native_diff) << overlay_probes(*d)->naive_diff_reason;
  ASSERT_TRUE(d->create("base", "", {}).ok());
  std::string base = home() + "/base/diff";
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(sys::mkdir(base + "/directory-" + std::to_string(i), 0755).ok());
    for (int j = 0; j < 6; ++j)
      write_text(base + "/directory-" + std::to_string(i) + "/file-" + std::to_string(j),
                 "seed3-" + std::to_string(j), 0755);
  }
  ASSERT_TRUE(sys::mkdir(base + "/gone", 0755).ok());
  write_text(base + "/gone/inner", "x");
  ASSERT_TRUE(d->create_rw("upper", "base", {}).ok());
  auto p = d->get("upper", "");
  ASSERT_TRUE(p.ok()) << p.error().message();
  // Graphtest's changeManyFiles: j%3 == 0 rewrite, 1 add, 2 delete; plus a dir removal, a
  // chmod (metadata-only copy-up) and a new directory.
  for (int i = 0; i < 3; ++i) {
    std::string dir = *p + "/directory-" + std::to_string(i);
    for (int j = 0; j < 6; ++j) {
      std::string f = dir + "/file-" + std::to_string(j);
      if (j % 3 == 0) write_text(f, "seed6-changed-" + std::to_string(j), 0755);
      if (j % 3 == 1) write_text(dir + "/file-6-" + std::to_string(j), "added", 0644);
      if (j % 3 == 2) ASSERT_TRUE(sys::unlink(f).ok());
    }
  }
  ASSERT_TRUE(sys::remove_all(*p + "/gone").ok());
  ASSERT_TRUE(sys::fchmodat(sys::kCwd, *p + "/directory-0/file-1", 0600).ok());
  ASSERT_TRUE(sys::mkdir(*p + "/newdir", 0700).ok());
  write_text(*p + "/newdir/f", "new");
  ASSERT_TRUE(d->put("upper").ok());

  auto native = d->changes("upper", "base");
  ASSERT_TRUE(native.ok()) << native.error().message();
  // The naive computation, as Docker's NaiveDiffDriver does it: compare the mounted trees.
  auto pu = d->get("upper", "");
  ASSERT_TRUE(pu.ok());
  auto pb = d->get("base", "");
  ASSERT_TRUE(pb.ok());
  auto naive = changes_dirs(*pu, *pb);
  ASSERT_TRUE(d->put("base").ok());
  ASSERT_TRUE(d->put("upper").ok());
  ASSERT_TRUE(naive.ok()) << naive.error().message();
  EXPECT_EQ(describe(*native), describe(*naive));
  EXPECT_GE(native->size(), 20u);

  // Native diff carries exactly those changes: applied onto a sibling it rebuilds upper.
  StringWriter out;
  ASSERT_TRUE(d->diff("upper", "base", out).ok());
  auto size = d->diff_size("upper", "base");
  ASSERT_TRUE(size.ok()) << size.error().message();
  ASSERT_TRUE(d->create_rw("copy", "base", {}).ok());
  StringReader in(out.take());
  auto applied = d->apply_diff("copy", "base", in);
  ASSERT_TRUE(applied.ok()) << applied.error().message();
  EXPECT_EQ(*applied, *size);
  auto again = d->changes("copy", "base");
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(describe(*again), describe(*native));

  // Against a non-parent the driver falls back to the naive path: copy vs upper are equal.
  auto cross = d->changes("copy", "upper");
  ASSERT_TRUE(cross.ok()) << cross.error().message();
  EXPECT_EQ(describe(*cross), "") << "upper and its replayed copy differ";
}

}  // namespace
}  // namespace cowlab
