#include "core/tar_test_util.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>

#include "conformance/backing_store.h"
#include "cowlab/digest.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"

namespace cowlab::testing {

namespace {

la_ssize_t append_cb(struct archive*, void* ud, const void* buf, size_t n) {
  static_cast<std::string*>(ud)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

std::string hex(const std::string& bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}

}  // namespace

// A raw ustar header block (libarchive cannot write PAX global headers).
static std::string raw_header(const std::string& name, char typeflag, size_t size) {
  std::string h(512, '\0');
  std::memcpy(h.data(), name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf(h.data() + 100, 8, "%07o", 0644);
  std::snprintf(h.data() + 108, 8, "%07o", 0);
  std::snprintf(h.data() + 116, 8, "%07o", 0);
  std::snprintf(h.data() + 124, 12, "%011zo", size);
  std::snprintf(h.data() + 136, 12, "%011o", 0);
  std::memcpy(h.data() + 257,
              "ustar\0"
              "00",
              8);
  return patch_header(h, 0, typeflag);
}

std::string make_tar(const std::vector<TarEntry>& entries) {
  // Leading PAX global headers ('g') are written as raw blocks before the rest.
  if (!entries.empty() && entries.front().type == 'g') {
    std::string rec = "18 comment=global\n";
    std::string block = raw_header(entries.front().name, 'g', rec.size()) + rec;
    block.resize(1024, '\0');
    return block + make_tar(std::vector<TarEntry>(entries.begin() + 1, entries.end()));
  }
  std::string out;
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_set_format_option(a, "pax", "xattrheader", "SCHILY");
  archive_write_set_bytes_in_last_block(a, 1);
  archive_write_open(a, &out, nullptr, append_cb, nullptr);
  for (const auto& e : entries) {
    struct archive_entry* ae = archive_entry_new();
    archive_entry_set_pathname(ae, e.name.c_str());
    archive_entry_set_mtime(ae, e.mtime, 0);
    archive_entry_set_uid(ae, e.uid);
    archive_entry_set_gid(ae, e.gid);
    switch (e.type) {
      case 'd':
        archive_entry_set_filetype(ae, AE_IFDIR);
        archive_entry_set_perm(ae, e.mode ? e.mode : 0755);
        break;
      case 'l':
        archive_entry_set_filetype(ae, AE_IFLNK);
        archive_entry_set_perm(ae, 0777);
        archive_entry_set_symlink(ae, e.link.c_str());
        break;
      case 'h':
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_perm(ae, e.mode ? e.mode : 0644);
        archive_entry_set_hardlink(ae, e.link.c_str());
        archive_entry_set_size(ae, 0);
        break;
      case 'p':
        archive_entry_set_filetype(ae, AE_IFIFO);
        archive_entry_set_perm(ae, e.mode ? e.mode : 0644);
        break;
      case 'c':
      case 'b':
        archive_entry_set_filetype(ae, e.type == 'c' ? AE_IFCHR : AE_IFBLK);
        archive_entry_set_perm(ae, e.mode ? e.mode : 0600);
        archive_entry_set_rdevmajor(ae, e.dev_major);
        archive_entry_set_rdevminor(ae, e.dev_minor);
        break;
      default:
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_perm(ae, e.mode ? e.mode : 0644);
        archive_entry_set_size(ae, static_cast<la_int64_t>(e.data.size()));
        break;
    }
    for (const auto& [k, v] : e.xattrs)
      archive_entry_xattr_add_entry(ae, k.c_str(), v.data(), v.size());
    archive_write_header(a, ae);
    if (e.type == 'f' && !e.data.empty()) archive_write_data(a, e.data.data(), e.data.size());
    archive_entry_free(ae);
  }
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

std::vector<TarEntry> names(std::initializer_list<const char*> list) {
  std::vector<TarEntry> out;
  for (const char* n : list) {
    std::string s = n;
    if (!s.empty() && s.back() == '/')
      out.push_back({s.substr(0, s.size() - 1), 'd'});
    else
      out.push_back({s});
  }
  return out;
}

std::string patch_header(std::string tar, size_t offset, char typeflag,
                         const char* checksum_override) {
  char* h = tar.data() + offset;
  if (typeflag) h[156] = typeflag;
  if (checksum_override) {
    std::memcpy(h + 148, checksum_override, 8);
    return tar;
  }
  std::memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (int i = 0; i < 512; ++i) sum += static_cast<unsigned char>(h[i]);
  std::snprintf(h + 148, 8, "%06o", sum);
  h[155] = ' ';
  return tar;
}

std::vector<size_t> header_offsets(const std::string& tar) {
  std::vector<size_t> out;
  size_t off = 0;
  while (off + 512 <= tar.size()) {
    const char* h = tar.data() + off;
    if (std::memcmp(h + 257, "ustar", 5) != 0) break;
    out.push_back(off);
    uint64_t size = std::strtoull(std::string(h + 124, 12).c_str(), nullptr, 8);
    off += 512 + (size + 511) / 512 * 512;
  }
  return out;
}

std::vector<ReadEntry> read_tar(const std::string& tar) {
  std::vector<ReadEntry> out;
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_memory(a, tar.data(), tar.size()), ARCHIVE_OK);
  struct archive_entry* e = nullptr;
  int r;
  while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
    ReadEntry re;
    re.name = archive_entry_pathname(e);
    if (archive_entry_hardlink(e)) {
      re.type = 'h';
      re.link = archive_entry_hardlink(e);
    } else {
      switch (archive_entry_filetype(e)) {
        case AE_IFREG:
          re.type = 'f';
          break;
        case AE_IFDIR:
          re.type = 'd';
          break;
        case AE_IFLNK:
          re.type = 'l';
          re.link = archive_entry_symlink(e);
          break;
        case AE_IFIFO:
          re.type = 'p';
          break;
        case AE_IFCHR:
          re.type = 'c';
          break;
        case AE_IFBLK:
          re.type = 'b';
          break;
      }
    }
    re.perm = archive_entry_perm(e);
    re.uid = archive_entry_uid(e);
    re.gid = archive_entry_gid(e);
    re.size = archive_entry_size(e);
    re.mtime = archive_entry_mtime(e);
    re.has_atime = archive_entry_atime_is_set(e);
    re.has_ctime = archive_entry_ctime_is_set(e);
    const char* uname = archive_entry_uname(e);
    const char* gname = archive_entry_gname(e);
    re.has_uname = (uname && *uname) || (gname && *gname);
    archive_entry_xattr_reset(e);
    const char* xn;
    const void* xv;
    size_t xl;
    while (archive_entry_xattr_next(e, &xn, &xv, &xl) == ARCHIVE_OK)
      re.xattrs.emplace_back(xn, std::string(static_cast<const char*>(xv), xl));
    if (re.type == 'f' && re.size > 0) {
      re.data.resize(static_cast<size_t>(re.size));
      EXPECT_EQ(archive_read_data(a, re.data.data(), re.data.size()), re.size);
    }
    out.push_back(std::move(re));
  }
  EXPECT_EQ(r, ARCHIVE_EOF) << archive_error_string(a);
  archive_read_free(a);
  return out;
}

// ---- TempRoot ---------------------------------------------------------------------------------
TempRoot::TempRoot() {
  std::string tmpl = test_tmp_base() + "/cowlab-archive-test-XXXXXX";
  char* p = ::mkdtemp(tmpl.data());
  EXPECT_NE(p, nullptr) << "mkdtemp " << tmpl << ": " << std::strerror(errno);
  path_ = tmpl;
}

TempRoot::~TempRoot() {
  if (path_.empty()) return;
  bool leaked = false;
  for (const auto& m : mounts_under(path_)) {
    auto r = sys::umount2(m, MNT_DETACH);
    leaked = true;
    if (!r.ok()) ADD_FAILURE() << "cannot detach " << m << ": " << r.error().message();
  }
  EXPECT_FALSE(leaked) << "a mount was left below " << path_ << " (detached now)";
  auto r = sys::remove_all(path_);
  EXPECT_TRUE(r.ok()) << r.error().message();
}

std::string TempRoot::dir(const std::string& name) const {
  std::string p = path_ + "/" + name;
  auto r = sys::mkdir_all(p, 0755);
  EXPECT_TRUE(r.ok()) << r.error().message();
  return p;
}

Result<void> TempRoot::mount_overlay(const std::string& merged,
                                     const std::vector<std::string>& lowers,
                                     const std::string& upper, const std::string& work) const {
  if (upper.empty() && lowers.size() == 1) {
    COWLAB_TRY(sys::mount(lowers[0], merged, "", MS_BIND, ""));
    return sys::mount("", merged, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "");
  }
  std::string data = "lowerdir=";
  for (size_t i = 0; i < lowers.size(); ++i) data += (i ? ":" : "") + lowers[i];
  if (!upper.empty()) data += ",upperdir=" + upper + ",workdir=" + work;
  // index=off: layer dirs are reused across mounts in one test (moby#34672's fix).
  data += ",index=off";
  return sys::mount("overlay", merged, "overlay", upper.empty() ? MS_RDONLY : 0, data);
}

Result<void> TempRoot::unmount(const std::string& merged) const {
  return sys::umount2(merged, 0);
}

// ---- trees ------------------------------------------------------------------------------------
namespace {
// Calls `fn(relative path, lstat)` for every entry below `root`, parents before children; an
// unreadable directory or an entry that cannot be lstat'ed fails the test.
void walk_tree(const std::string& root,
               const std::function<void(const std::string&, const struct stat&)>& fn) {
  std::function<void(const std::string&)> walk = [&](const std::string& rel) {
    auto entries = sys::read_dir(rel.empty() ? root : root + "/" + rel);
    if (!entries.ok()) {
      ADD_FAILURE() << entries.error().message();
      return;
    }
    for (const auto& e : *entries) {
      std::string r = rel.empty() ? e.name : rel + "/" + e.name;
      auto st = sys::lstat(root + "/" + r);
      if (!st.ok()) {
        ADD_FAILURE() << st.error().message();
        continue;
      }
      fn(r, *st);
      if (S_ISDIR(st->st_mode)) walk(r);
    }
  };
  walk("");
}
}  // namespace

std::set<std::string> tree_names(const std::string& root) {
  std::set<std::string> out;
  walk_tree(root, [&](const std::string& rel, const struct stat& st) {
    out.insert(S_ISDIR(st.st_mode) ? rel + "/" : rel);
  });
  return out;
}

std::vector<std::string> snapshot(const std::string& root, bool with_mtime) {
  std::vector<std::pair<std::string, struct stat>> all;
  walk_tree(root,
            [&](const std::string& rel, const struct stat& st) { all.emplace_back(rel, st); });
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::map<std::pair<dev_t, ino_t>, std::string> first;
  std::vector<std::string> out;
  for (const auto& [rel, st] : all) {
    std::string abs = root + "/" + rel;
    char type = S_ISDIR(st.st_mode)    ? 'd'
                : S_ISLNK(st.st_mode)  ? 'l'
                : S_ISCHR(st.st_mode)  ? 'c'
                : S_ISBLK(st.st_mode)  ? 'b'
                : S_ISFIFO(st.st_mode) ? 'p'
                : S_ISSOCK(st.st_mode) ? 's'
                                       : 'f';
    char buf[160];
    std::snprintf(buf, sizeof buf, " %c %04o %u:%u", type, st.st_mode & 07777, st.st_uid,
                  st.st_gid);
    std::string line = rel + buf;
    if (type == 'f') line += " size=" + std::to_string(st.st_size);
    if (with_mtime && type != 'l') line += " mtime=" + std::to_string(st.st_mtim.tv_sec);
    if (type == 'c' || type == 'b')
      line += " dev=" + std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
    if (type == 'l') line += " -> " + sys::readlink(abs).value_or("?");
    auto xnames = sys::llistxattr(abs);
    if (xnames.ok()) {
      std::sort(xnames->begin(), xnames->end());
      for (const auto& x : *xnames) {
        if (x.rfind("trusted.overlay.", 0) == 0) continue;
        auto v = sys::lgetxattr(abs, x);
        line += " xattr:" + x + "=" + hex(v.ok() && v->has_value() ? **v : "");
      }
    }
    if (type != 'd' && st.st_nlink > 1) {
      auto [it, inserted] = first.emplace(std::make_pair(st.st_dev, st.st_ino), rel);
      if (!inserted) line += " =link " + it->second;
    }
    if (type == 'f') {
      auto content = sys::read_file(abs);
      line += " " + (content.ok() ? sha256_digest(*content).substr(7, 16) : "unreadable");
    }
    out.push_back(line);
  }
  return out;
}

Result<ApplyStats> apply_tar(const std::string& root, const std::string& tar, WhiteoutFormat format,
                             ApplyMode mode, const std::string& scratch,
                             const std::vector<std::string>& lower_dirs) {
  StringReader r(tar, "test.tar");
  ApplyOptions o;
  o.mode = mode;
  o.format = format;
  o.scratch_dir = scratch;
  o.lower_dirs = lower_dirs;
  o.context = "apply-diff layer test";
  return apply_layer(root, r, o);
}

void write_file(const std::string& path, const std::string& content, mode_t mode) {
  auto fd = sys::open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  ASSERT_TRUE(fd.ok()) << fd.error().message();
  ASSERT_TRUE(sys::write_all(fd->get(), content.data(), content.size()).ok());
  ASSERT_TRUE(sys::fchmod(fd->get(), mode).ok());
}

void set_mtime(const std::string& path, int64_t sec, long nsec) {
  struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
  auto r = sys::utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW);
  ASSERT_TRUE(r.ok()) << r.error().message();
}

Result<size_t> TrickleReader::read(void* buf, size_t len) {
  size_t n = std::min({len, step_, data_.size() - pos_});
  std::memcpy(buf, data_.data() + pos_, n);
  pos_ += n;
  return n;
}

bool killed_at(const char* point, const std::function<void()>& op) {
  auto child = sys::fork_child([&](int) -> int {
    ::setenv("COWLAB_TEST_KILL_AT", point, 1);
    op();
    return 0;
  });
  if (!child.ok()) return false;
  auto status = sys::wait_child(*child, -1, nullptr);
  return status.ok() && *status == 128 + SIGKILL;
}

}  // namespace cowlab::testing
