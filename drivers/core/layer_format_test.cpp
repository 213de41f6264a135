// The layer applier and exporter against exact expected trees: Docker's four-layer
// TestApplyLayerWhiteouts sequence, the OCI layer.md examples, entry-type round trips,
// reproducible export, and the breakout corpus at the library level.
#include "cowlab/archive.h"

#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <functional>
#include <set>

#include "cowlab/changes.h"
#include "cowlab/digest.h"
#include "cowlab/sys.h"

namespace cowlab {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/var/tmp/cowlab-archive-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    if (auto mi = sys::mountinfo(); mi.ok())
      for (auto it = mi->rbegin(); it != mi->rend(); ++it)
        if (it->mount_point.rfind(path_ + "/", 0) == 0) (void)sys::umount2(it->mount_point, MNT_DETACH);
    (void)sys::remove_all(path_);
  }
  std::string sub(const std::string& name) const {
    std::string p = path_ + "/" + name;
    EXPECT_TRUE(sys::mkdir_all(p, 0755).ok());
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct E {
  std::string name;
  char type = 'f';  // f d l h p(fifo) c b
  std::string data;
  mode_t mode = 0;
  std::string link;
  unsigned dev_major = 0, dev_minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;
  uid_t uid = 0;
  gid_t gid = 0;
};

std::string tar_of(const std::vector<E>& entries) {
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
    archive_entry_set_mtime(ae, 1600000000, 0);
    archive_entry_set_uid(ae, e.uid);
    archive_entry_set_gid(ae, e.gid);
    switch (e.type) {
      case 'd': archive_entry_set_filetype(ae, AE_IFDIR); archive_entry_set_perm(ae, e.mode ? e.mode : 0755); break;
      case 'l': archive_entry_set_filetype(ae, AE_IFLNK); archive_entry_set_symlink(ae, e.link.c_str()); archive_entry_set_perm(ae, 0777); break;
      case 'h': archive_entry_set_filetype(ae, AE_IFREG); archive_entry_set_hardlink(ae, e.link.c_str()); break;
      case 'p': archive_entry_set_filetype(ae, AE_IFIFO); archive_entry_set_perm(ae, e.mode ? e.mode : 0644); break;
      case 'c':
      case 'b':
        archive_entry_set_filetype(ae, e.type == 'c' ? AE_IFCHR : AE_IFBLK);
        archive_entry_set_rdev(ae, makedev(e.dev_major, e.dev_minor));
        archive_entry_set_perm(ae, e.mode ? e.mode : 0600);
        break;
      default:
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_perm(ae, e.mode ? e.mode : 0644);
        archive_entry_set_size(ae, static_cast<la_int64_t>(e.data.size()));
    }
    for (const auto& [k, v] : e.xattrs) archive_entry_xattr_add_entry(ae, k.c_str(), v.data(), v.size());
    archive_write_header(a, ae);
    if (e.type == 'f' && !e.data.empty()) archive_write_data(a, e.data.data(), e.data.size());
    archive_entry_free(ae);
  }
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

// "a", "a/" for dirs, sorted; `.wh..wh.*` aufs metadata skipped.
std::set<std::string> tree(const std::string& root) {
  std::set<std::string> out;
  std::function<void(const std::string&)> walk = [&](const std::string& rel) {
    auto entries = sys::read_dir(rel.empty() ? root : root + "/" + rel);
    if (!entries.ok()) return;
    for (const auto& e : *entries) {
      std::string r = rel.empty() ? e.name : rel + "/" + e.name;
      auto st = sys::lstat(root + "/" + r);
      if (S_ISDIR(st->st_mode)) {
        out.insert(r + "/");
        walk(r);
      } else {
        out.insert(r);
      }
    }
  };
  walk("");
  return out;
}

Result<ApplyStats> apply_tar(const std::string& root, const std::string& tar, WhiteoutFormat f = WhiteoutFormat::kDeleteInPlace,
                         const std::string& scratch = "", const std::vector<std::string>& lowers = {}) {
  StringReader r(tar);
  ApplyOptions o;
  o.format = f;
  o.scratch_dir = scratch;
  o.lower_dirs = lowers;  // overlay: a root opaque marker needs the lowers (archive.h)
  o.context = "apply-diff test";
  return apply_layer(root, r, o);
}

std::vector<E> names(std::initializer_list<const char*> ns) {
  std::vector<E> v;
  for (const char* n : ns) {
    std::string s = n;
    if (!s.empty() && s.back() == '/') v.push_back({s.substr(0, s.size() - 1), 'd'});
    else v.push_back({s});
  }
  return v;
}

// Docker's TestApplyLayerWhiteouts (pkg/archive/diff_test.go).
const std::vector<std::pair<std::vector<E>, std::set<std::string>>>& docker_sequence() {
  static const std::vector<std::pair<std::vector<E>, std::set<std::string>>> k = {
      {names({".baz", "bar/", "bar/bax", "bar/bay/", "baz", "foo/", "foo/.abc", "foo/.bcd/", "foo/.bcd/a", "foo/cde/",
              "foo/cde/def", "foo/cde/efg", "foo/fgh", "foobar"}),
       {".baz", "bar/", "bar/bax", "bar/bay/", "baz", "foo/", "foo/.abc", "foo/.bcd/", "foo/.bcd/a", "foo/cde/",
        "foo/cde/def", "foo/cde/efg", "foo/fgh", "foobar"}},
      {names({".bay", ".wh.baz", "foo/", "foo/.bce", "foo/.wh..wh..opq", "foo/cde/", "foo/cde/efg"}),
       {".bay", ".baz", "bar/", "bar/bax", "bar/bay/", "foo/", "foo/.bce", "foo/cde/", "foo/cde/efg", "foobar"}},
      {names({".bay", ".wh..baz", ".wh.foobar", "foo/", "foo/.abc", "foo/.wh.cde", "bar/"}),
       {".bay", "bar/", "bar/bax", "bar/bay/", "foo/", "foo/.abc", "foo/.bce"}},
      {names({".abc", ".wh..wh..opq", "foobar"}), {".abc", "foobar"}},
  };
  return k;
}

TEST(Archive, DockerWhiteoutSequenceDeleteInPlace) {
  TempDir t;
  std::string root = t.sub("layer");
  int i = 0;
  for (const auto& [entries, expected] : docker_sequence()) {
    auto r = apply_tar(root, tar_of(entries));
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(tree(root), expected) << "after layer " << i;
    ++i;
  }
}

TEST(Archive, DockerWhiteoutSequenceOverlayMatchesThroughARealMount) {
  TempDir t;
  std::vector<std::string> layers;
  int i = 0;
  for (const auto& [entries, expected] : docker_sequence()) {
    std::string dir = t.sub("l" + std::to_string(i));
    auto r = apply_tar(dir, tar_of(entries), WhiteoutFormat::kOverlay, "", layers);
    ASSERT_TRUE(r.ok()) << r.error().message();
    layers.insert(layers.begin(), dir);
    std::string merged = t.sub("m" + std::to_string(i));
    std::string lower;
    for (const auto& l : layers) lower += (lower.empty() ? "" : ":") + l;
    if (layers.size() == 1) {
      EXPECT_EQ(tree(layers[0]), expected);
    } else {
      ASSERT_TRUE(sys::mount("overlay", merged, "overlay", MS_RDONLY, "lowerdir=" + lower).ok());
      EXPECT_EQ(tree(merged), expected) << "after layer " << i;
      // Native changes of the top layer equal the naive comparison of the merged views.
      ASSERT_TRUE(sys::umount2(merged, 0).ok());
    }
    ++i;
  }
}

TEST(Archive, OciSpecOpaqueExample) {
  // layer.md: a/b/c/bar in the base; the next layer makes a/ opaque and adds a/b/c/foo.
  TempDir t;
  std::string root = t.sub("layer");
  ASSERT_TRUE(apply_tar(root, tar_of(names({"a/", "a/b/", "a/b/c/", "a/b/c/bar"}))).ok());
  ASSERT_TRUE(apply_tar(root, tar_of(names({"a/", "a/.wh..wh..opq", "a/b/", "a/b/c/", "a/b/c/foo"}))).ok());
  EXPECT_EQ(tree(root), (std::set<std::string>{"a/", "a/b/", "a/b/c/", "a/b/c/foo"}));
}

TEST(Archive, OpaqueMarkerAfterItsSiblingsKeepsThem) {
  TempDir t;
  std::string root = t.sub("layer");
  ASSERT_TRUE(apply_tar(root, tar_of(names({"d/", "d/lower"}))).ok());
  ASSERT_TRUE(apply_tar(root, tar_of(names({"d/", "d/mine", "d/sub/x", "d/.wh..wh..opq"}))).ok());
  EXPECT_EQ(tree(root), (std::set<std::string>{"d/", "d/mine", "d/sub/", "d/sub/x"}));
}

TEST(Archive, OverlayFormRoundTripsModesOfMarkers) {
  // Docker's TestOverlayTarUntar / TestOverlayTarAUFSUntar.
  TempDir t;
  std::string lower = t.sub("lower"), upper = t.sub("upper");
  ASSERT_TRUE(apply_tar(lower, tar_of(names({"d1/", "d1/old", "d2/", "d2/old", "d3/", "d3/f1"}))).ok());
  std::vector<E> layer = {{"d1", 'd', "", 0700}, {"d1/.wh..wh..opq"}, {"d1/f1", 'f', "x", 0600},
                          {"d2", 'd', "", 0750}, {"d2/.wh..wh..opq"}, {"d2/f1", 'f', "y", 0660},
                          {"d3", 'd', "", 0700}, {"d3/.wh.f1"}};
  ASSERT_TRUE(apply_tar(upper, tar_of(layer), WhiteoutFormat::kOverlay).ok());
  auto st = sys::lstat(upper + "/d3/f1");
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(S_ISCHR(st->st_mode));
  EXPECT_EQ(st->st_rdev, makedev(0, 0));
  EXPECT_EQ(**sys::lgetxattr(upper + "/d1", "trusted.overlay.opaque"), "y");
  EXPECT_FALSE(sys::lgetxattr(upper + "/d3", "trusted.overlay.opaque")->has_value());
  StringWriter w;
  ExportOptions eo;
  eo.format = WhiteoutFormat::kOverlay;
  eo.lower_dirs = {lower};
  ASSERT_TRUE(export_tree(upper, eo, w).ok());
  // Read the markers back with their modes.
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  ASSERT_EQ(archive_read_open_memory(a, w.data().data(), w.data().size()), ARCHIVE_OK);
  std::map<std::string, mode_t> modes;
  std::vector<std::string> order;
  struct archive_entry* e;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    modes[archive_entry_pathname(e)] = archive_entry_perm(e);
    order.push_back(archive_entry_pathname(e));
  }
  archive_read_free(a);
  EXPECT_EQ(modes["d1/.wh..wh..opq"], 0700u);
  EXPECT_EQ(modes["d2/.wh..wh..opq"], 0750u);
  EXPECT_EQ(modes["d3/.wh.f1"], 0600u);
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));
  // An opaque directory with nothing below it gets no marker.
  TempDir t2;
  std::string up2 = t2.sub("upper");
  ASSERT_TRUE(apply_tar(up2, tar_of({{"new", 'd'}, {"new/.wh..wh..opq"}, {"new/f"}}), WhiteoutFormat::kOverlay).ok());
  StringWriter w2;
  ExportOptions eo2;
  eo2.format = WhiteoutFormat::kOverlay;
  eo2.lower_dirs = {lower};
  ASSERT_TRUE(export_tree(up2, eo2, w2).ok());
  EXPECT_EQ(w2.data().find(".wh..wh..opq"), std::string::npos);
}

TEST(Archive, EveryEntryTypeRoundTripsAndExportIsReproducible) {
  TempDir t;
  std::string a = t.sub("a"), b = t.sub("b");
  std::string cap("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  std::vector<E> entries = {
      {"dir", 'd', "", 01705, "", 0, 0, {}, 1, 2},
      {"dir/file", 'f', "content", 04755, "", 0, 0, {{"user.k", "v"}, {"security.capability", cap}}, 7, 8},
      {"dir/link", 'h', "", 0, "dir/file"},
      {"sym", 'l', "", 0, "dir/file"},
      {"abs", 'l', "", 0, "/etc/passwd"},
      {"fifo", 'p', "", 0640},
      {"chr", 'c', "", 0600, "", 12, 5},
      {"blk", 'b', "", 0600, "", 12, 5},
  };
  auto s = apply_tar(a, tar_of(entries));
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->size, 7);
  auto st = *sys::lstat(a + "/dir/file");
  EXPECT_EQ(st.st_mode & 07777, 04755u);
  EXPECT_EQ(st.st_uid, 7u);
  EXPECT_EQ(st.st_gid, 8u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1600000000);
  EXPECT_EQ((*sys::lstat(a + "/dir/link")).st_ino, st.st_ino);
  EXPECT_EQ((*sys::lstat(a + "/dir")).st_mode & 07777, 01705u);
  EXPECT_EQ((*sys::lstat(a + "/dir")).st_mtim.tv_sec, 1600000000);
  EXPECT_EQ(*sys::readlink(a + "/abs"), "/etc/passwd");
  EXPECT_TRUE(S_ISFIFO((*sys::lstat(a + "/fifo")).st_mode));
  EXPECT_EQ((*sys::lstat(a + "/blk")).st_rdev, makedev(12, 5));
  EXPECT_EQ(**sys::lgetxattr(a + "/dir/file", "security.capability"), cap);
  EXPECT_EQ(**sys::lgetxattr(a + "/dir/file", "user.k"), "v");
  StringWriter w1, w2;
  ASSERT_TRUE(export_tree(a, {}, w1).ok());
  ASSERT_TRUE(export_tree(a, {}, w2).ok());
  EXPECT_EQ(w1.data(), w2.data()) << "export is not reproducible";
  ASSERT_TRUE(apply_tar(b, w1.data()).ok());
  auto ch = changes_dirs(b, a);
  ASSERT_TRUE(ch.ok());
  EXPECT_TRUE(ch->empty()) << ch->size() << " differences, first " << (ch->empty() ? "" : ch->front().path);
  EXPECT_EQ((*sys::lstat(b + "/dir/link")).st_ino, (*sys::lstat(b + "/dir/file")).st_ino);
}

TEST(Archive, DigestReaderCoversTrailingPaddingAndCompressionIsDetected) {
  std::string tar = tar_of(names({"a", "b/"}));
  tar += std::string(4096, '\0');  // extra zero blocks after the end marker
  TempDir t;
  StringReader r(tar);
  DigestReader d(r);
  ApplyOptions o;
  ASSERT_TRUE(apply_layer(t.sub("x"), d, o).ok());
  EXPECT_EQ(*d.drain_and_digest(), sha256_digest(tar));
  std::string gz;
  {
    struct archive* a = archive_write_new();
    archive_write_add_filter_gzip(a);
    archive_write_set_format_raw(a);
    archive_write_open(
        a, &gz, nullptr,
        [](struct archive*, void* ud, const void* buf, size_t n) -> la_ssize_t {
          static_cast<std::string*>(ud)->append(static_cast<const char*>(buf), n);
          return static_cast<la_ssize_t>(n);
        },
        nullptr);
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_filetype(e, AE_IFREG);
    archive_write_header(a, e);
    archive_write_data(a, tar.data(), tar.size());
    archive_entry_free(e);
    archive_write_close(a);
    archive_write_free(a);
  }
  auto plain = decompress(std::make_unique<StringReader>(gz));
  ASSERT_TRUE(plain.ok()) << plain.error().message();
  std::string back;
  char buf[8192];
  for (;;) {
    auto n = (*plain)->read(buf, sizeof buf);
    ASSERT_TRUE(n.ok());
    if (*n == 0) break;
    back.append(buf, *n);
  }
  EXPECT_EQ(back, tar);
}

TEST(Archive, BreakoutsAreRefusedBeforeAnythingOutsideChanges) {
  TempDir t;
  std::string victim = t.sub("victim");
  ASSERT_TRUE(sys::write_file_atomic(victim + "/hello", "hello victim").ok());
  std::vector<std::vector<E>> cases = {
      {{"../victim/dotdot"}},
      {{"/../victim/slash-dotdot"}},
      {{"dotdot", 'h', "", 0, "../victim/hello"}},
      {{"loophole-victim", 'h', "", 0, "../victim"}, {"loophole-victim/file"}},
      {{"loophole-victim", 'l', "", 0, "../victim"}, {"loophole-victim/file"}},
      {{"dir", 'd'}, {"dir/loophole", 'l', "", 0, "../../victim"}, {"dir/loophole/newfile"}},
      {{"real", 'd'}, {"alias", 'l', "", 0, "real"}, {"alias/file", 'f', "x"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    for (auto mode : {ApplyMode::kValidateOnly, ApplyMode::kApply}) {
      std::string root = t.sub("root" + std::to_string(i) + (mode == ApplyMode::kApply ? "a" : "v"));
      StringReader r(tar_of(cases[i]));
      ApplyOptions o;
      o.mode = mode;
      o.context = "apply-diff layer t";
      auto res = apply_layer(root, r, o);
      ASSERT_FALSE(res.ok()) << "case " << i;
      EXPECT_EQ(res.error().kind(), ErrorKind::kSecurity) << res.error().message();
      EXPECT_NE(res.error().message().find("apply-diff layer t: entry \""), std::string::npos) << res.error().message();
    }
  }
  EXPECT_EQ(tree(victim), (std::set<std::string>{"hello"}));
  EXPECT_EQ(*sys::read_file(victim + "/hello"), "hello victim");
  // "..gitme" is a fine name; a symlink to an absolute path is fine.
  std::string ok = t.sub("ok");
  EXPECT_TRUE(apply_tar(ok, tar_of({{"..gitme", 'f', "x"}, {"abs", 'l', "", 0, "/etc/shadow"}})).ok());
  // A symlink already in the tree (e.g. from a parent copied by vfs) is resolved inside the
  // root, never outside it.
  std::string pre = t.sub("pre");
  ASSERT_TRUE(sys::symlinkat("/" + std::string("../../../../") + victim, AT_FDCWD, pre + "/escape").ok());
  auto r = apply_tar(pre, tar_of({{"escape/planted", 'f', "evil"}}));
  EXPECT_EQ(tree(victim), (std::set<std::string>{"hello"}));
}

TEST(Archive, MalformedTarsAreInvalid) {
  TempDir t;
  std::string good = tar_of({{"a", 'f', std::string(5000, 'x')}});
  for (const std::string& bad : {std::string(1024, '\x01'), good.substr(0, 1024),
                                 good.substr(0, 148) + "99999999" + good.substr(156)}) {
    auto r = apply_tar(t.sub("m"), bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid) << r.error().message();
  }
  auto dotwh = apply_tar(t.sub("w"), tar_of({{".wh."}}));
  ASSERT_FALSE(dotwh.ok());
  EXPECT_NE(dotwh.error().message().find(".wh."), std::string::npos);
}

TEST(Changes, GraphtestChangesGivesExactly21) {
  // graphtest DriverTestChanges(20): addManyFiles(20, 3) in base; changeManyFiles(20, 6).
  TempDir t;
  std::string base = t.sub("base"), upper = t.sub("upper");
  for (const auto& root : {base, upper}) {
    ASSERT_TRUE(sys::mkdir_all(root + "/directory-0", 0755).ok());
    for (int j = 0; j < 20; ++j)
      ASSERT_TRUE(sys::write_file_atomic(root + "/directory-0/file-" + std::to_string(j), std::string(64, 'a' + j % 26)).ok());
  }
  // Same mtimes in both trees so only the deliberate changes differ.
  ASSERT_EQ(std::system(("touch -d @1600000000 " + base + "/directory-0/* " + upper + "/directory-0/*").c_str()), 0);
  int mods = 0, adds = 0, dels = 0;
  for (int j = 0; j < 20; ++j) {
    std::string f = upper + "/directory-0/file-" + std::to_string(j);
    switch (j % 3) {
      case 0: ASSERT_TRUE(sys::write_file_atomic(f, std::string(65, 'z')).ok()); ++mods; break;
      case 1: ASSERT_TRUE(sys::write_file_atomic(upper + "/directory-0/file-6-" + std::to_string(j), "n").ok()); ++adds; break;
      case 2: ASSERT_TRUE(sys::unlink(f).ok()); ++dels; break;
    }
  }
  auto ch = changes_dirs(upper, base);
  ASSERT_TRUE(ch.ok());
  EXPECT_EQ(ch->size(), 21u);
  EXPECT_EQ(mods + adds + dels + 1, 21);
  EXPECT_EQ(ch->front(), (Change{"/directory-0", ChangeKind::kModify}));
}

TEST(Changes, OverlayNativeEqualsNaiveOnARealMount) {
  TempDir t;
  std::string lower = t.sub("lower"), upper = t.sub("upper"), work = t.sub("work"), merged = t.sub("merged"),
              lowcopy = t.sub("lowcopy");
  ASSERT_TRUE(apply_tar(lower, tar_of(names({"etc/", "etc/a", "etc/b", "opt/", "opt/x/", "opt/x/y", "keep"}))).ok());
  ASSERT_TRUE(apply_tar(lowcopy, tar_of(names({"etc/", "etc/a", "etc/b", "opt/", "opt/x/", "opt/x/y", "keep"}))).ok());
  ASSERT_TRUE(sys::mount("overlay", merged, "overlay", 0,
                         "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work).ok());
  ASSERT_TRUE(sys::write_file_atomic(merged + "/etc/a", "changed").ok());
  ASSERT_TRUE(sys::unlink(merged + "/etc/b").ok());
  ASSERT_TRUE(sys::remove_all(merged + "/opt/x").ok());
  ASSERT_TRUE(sys::mkdir(merged + "/new", 0755).ok());
  ASSERT_TRUE(sys::write_file_atomic(merged + "/new/f", "f").ok());
  auto naive = changes_dirs(merged, lowcopy);
  ASSERT_TRUE(sys::umount2(merged, 0).ok());
  auto native = changes_overlay(upper, {lower}, OverlayXattrNs::kTrusted);
  ASSERT_TRUE(naive.ok() && native.ok()) << (native.ok() ? "" : native.error().message());
  EXPECT_EQ(*native, *naive);
  std::vector<Change> expected = {{"/etc", ChangeKind::kModify}, {"/etc/a", ChangeKind::kModify},
                                  {"/etc/b", ChangeKind::kDelete}, {"/new", ChangeKind::kAdd},
                                  {"/new/f", ChangeKind::kAdd},    {"/opt", ChangeKind::kModify},
                                  {"/opt/x", ChangeKind::kDelete}};
  EXPECT_EQ(*native, expected);
}

}  // namespace
}  // namespace cowlab
