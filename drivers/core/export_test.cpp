// The exporter: reproducible bytes, bytewise order with parents first, normalised headers,
// OCI whiteouts, overlay and aufs native trees converted back (opaque markers only where a
// lower layer has the directory), hard links to the first name in sorted order, xattrs.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "core/tar_test_util.h"
#include "cowlab/archive.h"
#include "cowlab/changes.h"
#include "cowlab/sys.h"

namespace cowlab {
namespace {

using testing::apply_tar;
using testing::make_tar;
using testing::names;
using testing::read_tar;
using testing::ReadEntry;
using testing::TarEntry;
using testing::TempRoot;
using testing::tree_names;

std::string export_of(const std::string& dir, const ExportOptions& o = {}) {
  StringWriter w;
  auto r = export_tree(dir, o, w);
  EXPECT_TRUE(r.ok()) << r.error().message();
  return w.take();
}

std::vector<std::string> entry_names(const std::string& tar) {
  std::vector<std::string> out;
  for (const auto& e : read_tar(tar)) out.push_back(e.name);
  return out;
}

const ReadEntry* find(const std::vector<ReadEntry>& entries, const std::string& name) {
  for (const auto& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

TEST(ArchiveExport, SameTreeGivesTheSameBytesWhateverHowItWasMade) {
  TempRoot t;
  std::string a = t.dir("a"), b = t.dir("b");
  // The same tree made in different orders, at different times, with different inodes.
  std::vector<TarEntry> entries = {
      {"z", 'f', "zzz"},        {"a", 'd'},
      {"a/x", 'f', "x"},        {"a-b", 'f', "ab"},
      {"a/y", 'l', "", 0, "x"}, {"m", 'f', "m", 0600, "", 0, 0, 1000, 1000}};
  ASSERT_TRUE(apply_tar(a, make_tar(entries)).ok());
  std::reverse(entries.begin(), entries.end());
  entries.insert(entries.begin(), {"a", 'd'});
  ASSERT_TRUE(apply_tar(b, make_tar(entries)).ok());
  ASSERT_EQ(::utimensat(AT_FDCWD, a.c_str(), nullptr, 0), 0);
  std::string first = export_of(a);
  EXPECT_EQ(export_of(a), first) << "two exports of one tree differ";
  EXPECT_EQ(export_of(b), first) << "two equal trees export differently";
}

TEST(ArchiveExport, EntriesAreSortedBytewiseWithParentsFirstAndHeadersNormalised) {
  TempRoot t;
  std::string a = t.dir("a");
  ASSERT_TRUE(
      apply_tar(a, make_tar({{"b"}, {"a-b"}, {"a", 'd'}, {"a/x"}, {"A"}, {"a/.hidden"}, {"é"}}))
          .ok());
  ASSERT_TRUE(sys::mkdir(a + "/late", 0700).ok());
  testing::write_file(a + "/late/file", "now", 0640);
  testing::set_mtime(a + "/late/file", 1700000123, 987654321);
  std::string tar = export_of(a);
  EXPECT_EQ(entry_names(tar), (std::vector<std::string>{"A", "a/", "a-b", "a/.hidden", "a/x", "b",
                                                        "late/", "late/file", "é"}));
  for (const auto& e : read_tar(tar)) {
    EXPECT_FALSE(e.has_atime) << e.name;
    EXPECT_FALSE(e.has_ctime) << e.name;
    EXPECT_FALSE(e.has_uname) << e.name;
  }
  auto late = *find(read_tar(tar), "late/file");
  EXPECT_EQ(late.mtime, 1700000123) << "mtime truncated to seconds";
  EXPECT_EQ(late.perm, 0640u);
  EXPECT_EQ(late.data, "now");
  // The archive ends with its two zero blocks, not padded to a 10 KiB record.
  ASSERT_GE(tar.size(), 1024u);
  EXPECT_EQ(tar.size() % 512, 0u);
  EXPECT_EQ(tar.substr(tar.size() - 1024), std::string(1024, '\0'));
  EXPECT_NE(tar.substr(tar.size() - 1536, 512), std::string(512, '\0'));
}

TEST(ArchiveExport, HardLinksPointAtTheFirstNameInSortedOrder) {
  TempRoot t;
  std::string a = t.dir("a");
  testing::write_file(a + "/b", "shared", 0644);
  ASSERT_TRUE(sys::mkdir(a + "/a", 0755).ok());
  ASSERT_TRUE(sys::linkat(AT_FDCWD, a + "/b", AT_FDCWD, a + "/a/x", 0).ok());
  ASSERT_TRUE(sys::linkat(AT_FDCWD, a + "/b", AT_FDCWD, a + "/c", 0).ok());
  auto entries = read_tar(export_of(a));
  ASSERT_NE(find(entries, "a/x"), nullptr);
  EXPECT_EQ(find(entries, "a/x")->type, 'f');
  EXPECT_EQ(find(entries, "a/x")->data, "shared");
  EXPECT_EQ(find(entries, "b")->type, 'h');
  EXPECT_EQ(find(entries, "b")->link, "a/x");
  EXPECT_EQ(find(entries, "c")->link, "a/x");
  EXPECT_EQ(find(entries, "c")->size, 0);
}

TEST(ArchiveExport, XattrsAreKeptExceptOverlayMetadata) {
  TempRoot t;
  std::string a = t.dir("a");
  const std::string cap(
      "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  testing::write_file(a + "/f", "x", 0755);
  ASSERT_TRUE(sys::lsetxattr(a + "/f", "security.capability", cap).ok());
  ASSERT_TRUE(sys::lsetxattr(a + "/f", "user.b", "2").ok());
  ASSERT_TRUE(sys::lsetxattr(a + "/f", "user.a", "1").ok());
  ASSERT_TRUE(sys::lsetxattr(a + "/f", "trusted.overlay.origin", "o").ok());
  ASSERT_TRUE(sys::mkdir(a + "/d", 0755).ok());
  ASSERT_TRUE(sys::lsetxattr(a + "/d", "trusted.overlay.opaque", "y").ok());
  auto entries = read_tar(export_of(a));
  using X = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(find(entries, "f")->xattrs,
            (X{{"security.capability", cap}, {"user.a", "1"}, {"user.b", "2"}}));
  EXPECT_TRUE(find(entries, "d/")->xattrs.empty());
  EXPECT_EQ(find(entries, "d/.wh..wh..opq"), nullptr)
      << "a delete-in-place tree has no opaque dirs";
}

TEST(ArchiveExport, SocketsAreSkipped) {
  TempRoot t;
  std::string a = t.dir("a");
  int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  std::string path = a + "/sock";
  ASSERT_LT(path.size(), sizeof addr.sun_path);
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(::bind(s, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr), 0);
  ::close(s);
  testing::write_file(a + "/f", "x");
  EXPECT_EQ(entry_names(export_of(a)), (std::vector<std::string>{"f"}));
}

// A native overlay upper dir (whiteouts as 0/0 devices, an opaque dir) goes out in OCI form.
TEST(ArchiveExport, OverlayTreeConvertsBackToOciWhiteouts) {
  TempRoot t;
  std::string lower = t.dir("lower"), upper = t.dir("upper");
  ASSERT_TRUE(apply_tar(lower, make_tar(names({"old/", "old/x", "gone", "d/", "d/y"}))).ok());
  ASSERT_TRUE(sys::mknodat(AT_FDCWD, upper + "/gone", S_IFCHR, makedev(0, 0)).ok());
  ASSERT_TRUE(sys::mkdir(upper + "/old", 0750).ok());
  ASSERT_TRUE(sys::fchmodat(AT_FDCWD, upper + "/old", 0750).ok());
  ASSERT_TRUE(sys::fchownat(AT_FDCWD, upper + "/old", 3, 4, 0).ok());
  testing::set_mtime(upper + "/old", 1600000000, 5);
  ASSERT_TRUE(sys::lsetxattr(upper + "/old", "trusted.overlay.opaque", "y").ok());
  ASSERT_TRUE(sys::mkdir(upper + "/fresh", 0755).ok());  // opaque too, but new: nothing below
  ASSERT_TRUE(sys::lsetxattr(upper + "/fresh", "trusted.overlay.opaque", "y").ok());
  ASSERT_TRUE(sys::mkdir(upper + "/d", 0755).ok());
  ASSERT_TRUE(sys::mknodat(AT_FDCWD, upper + "/d/y", S_IFCHR, makedev(0, 0)).ok());
  ASSERT_TRUE(sys::mknodat(AT_FDCWD, upper + "/realdev", S_IFCHR | 0600, makedev(1, 3)).ok());
  ExportOptions o;
  o.format = WhiteoutFormat::kOverlay;
  o.lower_dirs = {lower};
  auto entries = read_tar(export_of(upper, o));
  std::vector<std::string> got;
  for (const auto& e : entries) got.push_back(e.name);
  EXPECT_EQ(got, (std::vector<std::string>{".wh.gone", "d/", "d/.wh.y", "fresh/", "old/",
                                           "old/.wh..wh..opq", "realdev"}));
  for (const char* wh : {".wh.gone", "d/.wh.y"}) {
    const auto* e = find(entries, wh);
    EXPECT_EQ(e->type, 'f');
    EXPECT_EQ(e->perm, 0600u);
    EXPECT_EQ(e->uid, 0u);
    EXPECT_EQ(e->gid, 0u);
    EXPECT_EQ(e->mtime, 0);
    EXPECT_EQ(e->size, 0);
  }
  const auto* opq = find(entries, "old/.wh..wh..opq");
  EXPECT_EQ(opq->type, 'f');
  EXPECT_EQ(opq->perm, 0750u);
  EXPECT_EQ(opq->uid, 3u);
  EXPECT_EQ(opq->gid, 4u);
  EXPECT_EQ(opq->mtime, 1600000000);
  EXPECT_TRUE(find(entries, "old/")->xattrs.empty()) << "trusted.overlay.* never leaves the layer";
  EXPECT_EQ(find(entries, "realdev")->type, 'c');
  // A parentless export never emits an opaque marker.
  o.lower_dirs.clear();
  EXPECT_EQ(find(read_tar(export_of(upper, o)), "old/.wh..wh..opq"), nullptr);
  // userxattr layers keep the marker in user.overlay.opaque.
  std::string user = t.dir("user");
  ASSERT_TRUE(sys::mkdir(user + "/old", 0755).ok());
  ASSERT_TRUE(sys::lsetxattr(user + "/old", "user.overlay.opaque", "y").ok());
  ExportOptions uo;
  uo.format = WhiteoutFormat::kOverlay;
  uo.overlay_ns = OverlayXattrNs::kUser;
  uo.lower_dirs = {lower};
  auto user_entries = read_tar(export_of(user, uo));
  ASSERT_NE(find(user_entries, "old/.wh..wh..opq"), nullptr);
  EXPECT_TRUE(find(user_entries, "old/")->xattrs.empty());
}

TEST(ArchiveExport, AufsTreeKeepsWhiteoutsAndDropsAufsMetadata) {
  TempRoot t;
  std::string lower = t.dir("lower"), upper = t.dir("upper");
  ASSERT_TRUE(apply_tar(lower, make_tar(names({"d/", "d/old", "x"}))).ok());
  ASSERT_TRUE(apply_tar(upper,
                        make_tar(names({".wh..wh.plnk/", ".wh..wh.aufs", ".wh..wh.orph/", "d/",
                                        "new/", "new/f"})),
                        WhiteoutFormat::kDeleteInPlace)
                  .ok());
  // aufs's own metadata, as the branch would hold it.
  ASSERT_TRUE(sys::mkdir(upper + "/.wh..wh.plnk", 0700).ok());
  testing::write_file(upper + "/.wh..wh.plnk/12.34", "pseudo link");
  testing::write_file(upper + "/.wh..wh.aufs", "");
  testing::write_file(upper + "/.wh.x", "", 0444);
  testing::write_file(upper + "/d/.wh..wh..opq", "", 0444);
  testing::write_file(upper + "/new/.wh..wh..opq", "", 0444);
  ExportOptions o;
  o.format = WhiteoutFormat::kAufs;
  o.lower_dirs = {lower};
  auto entries = read_tar(export_of(upper, o));
  std::vector<std::string> got;
  for (const auto& e : entries) got.push_back(e.name);
  EXPECT_EQ(got, (std::vector<std::string>{".wh.x", "d/", "d/.wh..wh..opq", "new/", "new/f"}));
  EXPECT_EQ(find(entries, ".wh.x")->perm, 0600u);
}

// layer.md "Representing Changes": the changeset of rootfs-c9d-v1.s1 against rootfs-c9d-v1.
TEST(ArchiveExport, ExportChangesOfTheOciChangesetExample) {
  TempRoot t;
  std::string v1 = t.dir("v1"), s1 = t.dir("s1");
  const auto base =
      names({"etc/", "etc/my-app-config", "bin/", "bin/my-app-binary", "bin/my-app-tools"});
  ASSERT_TRUE(apply_tar(v1, make_tar(base)).ok());
  ASSERT_TRUE(apply_tar(s1, make_tar(base)).ok());
  ASSERT_TRUE(sys::unlink(s1 + "/etc/my-app-config").ok());
  ASSERT_TRUE(sys::mkdir(s1 + "/etc/my-app.d", 0755).ok());
  testing::write_file(s1 + "/etc/my-app.d/default.cfg", "cfg");
  testing::write_file(s1 + "/bin/my-app-tools", "new tools", 0755);
  auto ch = changes_dirs(s1, v1);
  ASSERT_TRUE(ch.ok()) << ch.error().message();
  StringWriter w;
  ASSERT_TRUE(export_changes(s1, *ch, w).ok());
  EXPECT_EQ(entry_names(w.data()),
            (std::vector<std::string>{"bin/", "bin/my-app-tools", "etc/", "etc/.wh.my-app-config",
                                      "etc/my-app.d/", "etc/my-app.d/default.cfg"}));
  // Applying the exported changes to a copy of v1 gives s1.
  std::string copy = t.dir("copy");
  ASSERT_TRUE(apply_tar(copy, make_tar(base)).ok());
  ASSERT_TRUE(apply_tar(copy, w.data()).ok());
  auto diff = changes_dirs(copy, s1);
  ASSERT_TRUE(diff.ok());
  EXPECT_TRUE(diff->empty()) << diff->front().path;
  StringWriter again;
  ASSERT_TRUE(export_changes(s1, *ch, again).ok());
  EXPECT_EQ(again.data(), w.data());
}

TEST(ArchiveExport, ExportChangesLinksWithinTheSetAndFailsOnAMissingPath) {
  TempRoot t;
  std::string a = t.dir("a");
  testing::write_file(a + "/one", "1");
  ASSERT_TRUE(sys::linkat(AT_FDCWD, a + "/one", AT_FDCWD, a + "/two", 0).ok());
  StringWriter w;
  ASSERT_TRUE(export_changes(a, {{"/two", ChangeKind::kAdd}, {"/one", ChangeKind::kAdd}}, w).ok());
  auto entries = read_tar(w.data());
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].name, "one");
  EXPECT_EQ(entries[0].data, "1");
  EXPECT_EQ(entries[1].type, 'h');
  EXPECT_EQ(entries[1].link, "one");
  StringWriter w2;
  auto r = export_changes(a, {{"/missing", ChangeKind::kAdd}}, w2);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().err(), ENOENT);
  EXPECT_NE(r.error().message().find("missing"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace cowlab
