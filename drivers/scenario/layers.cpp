// Building layer tars from scenario entries, and reading entry names back.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cstring>

#include "core/archive_internal.h"
#include "cowlab/fs.h"
#include "cowlab/sys.h"
#include "scenario/internal.h"
#include "scenario/ops.h"

namespace cowlab::scenario {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::string field(const Fields& f, const char* key, const std::string& fallback = "") {
  auto it = f.find(key);
  return it == f.end() ? fallback : it->second.scalar;
}

struct ArchiveWriter {
  archive_internal::Utf8Ctype utf8;  // UTF-8 pax names (archive_internal.h)
  struct archive* a = archive_write_new();
  ~ArchiveWriter() { archive_write_free(a); }
  Error err(const std::string& what) const {
    return Error::invalid("write layer tar: " + what + ": " + (archive_error_string(a) ? archive_error_string(a) : "?"));
  }
};

}  // namespace

void Pattern::fill(uint64_t offset, char* buf, size_t len) const {
  if (kind_ == "zero") {
    std::memset(buf, 0, len);
    return;
  }
  if (kind_ == "text") {
    static const char kLine[] = "cowlab generated text line 0123456789 abcdefghijklmnopqrstuvwxyz\n";
    constexpr size_t n = sizeof kLine - 1;
    for (size_t i = 0; i < len; ++i) buf[i] = kLine[(offset + i) % n];
    return;
  }
  // random: 8-byte words, word k = splitmix64(seed * 2^32 + k), so any offset is cheap.
  size_t i = 0;
  while (i < len) {
    uint64_t pos = offset + i;
    uint64_t word = splitmix64((seed_ << 32) ^ (pos / 8));
    size_t in_word = pos % 8;
    size_t take = std::min<size_t>(8 - in_word, len - i);
    std::memcpy(buf + i, reinterpret_cast<const char*>(&word) + in_word, take);
    i += take;
  }
}

Result<void> write_entries_tar(const std::vector<Entry>& entries, const std::string& path) {
  ArchiveWriter w;
  archive_write_set_format_pax_restricted(w.a);
  if (archive_write_open_filename(w.a, path.c_str()) != ARCHIVE_OK) return w.err(path);
  std::vector<char> buf(1 << 20);
  for (const auto& e : entries) {
    const Fields& f = e.fields;
    std::string type = field(f, "type", "file");
    bool sparse = field(f, "sparse", "false") == "true";
    std::string name = field(f, "path");
    while (!name.empty() && name.back() == '/') name.pop_back();
    if (type == "whiteout") {
      auto slash = name.find_last_of('/');
      name = slash == std::string::npos ? ".wh." + name : name.substr(0, slash + 1) + ".wh." + name.substr(slash + 1);
    } else if (type == "opaque") {
      name = (name == "." || name.empty()) ? ".wh..wh..opq" : name + "/.wh..wh..opq";
    }
    struct archive_entry* ae = archive_entry_new();
    struct Free {
      struct archive_entry* e;
      ~Free() { archive_entry_free(e); }
    } free_entry{ae};
    archive_entry_set_pathname(ae, name.c_str());
    int64_t mtime = std::stoll(field(f, "mtime", "1700000000"));
    archive_entry_set_mtime(ae, mtime, 0);
    std::string owner = field(f, "owner", "0:0");
    archive_entry_set_uid(ae, std::stoll(owner.substr(0, owner.find(':'))));
    archive_entry_set_gid(ae, std::stoll(owner.substr(owner.find(':') + 1)));
    mode_t def_mode = type == "dir" ? 0755 : type == "symlink" ? 0777 : 0644;
    mode_t mode = f.count("mode") ? static_cast<mode_t>(std::stoul(field(f, "mode"), nullptr, 8)) : def_mode;
    if (type == "whiteout" || type == "opaque") mode = 0600;
    archive_entry_set_perm(ae, mode);
    uint64_t size = 0;
    if (type == "dir") {
      archive_entry_set_filetype(ae, AE_IFDIR);
    } else if (type == "symlink") {
      archive_entry_set_filetype(ae, AE_IFLNK);
      archive_entry_set_symlink(ae, field(f, "target").c_str());
    } else if (type == "hardlink") {
      archive_entry_set_filetype(ae, AE_IFREG);
      archive_entry_set_hardlink(ae, field(f, "target").c_str());
    } else if (type == "fifo") {
      archive_entry_set_filetype(ae, AE_IFIFO);
    } else if (type == "char" || type == "block") {
      archive_entry_set_filetype(ae, type == "char" ? AE_IFCHR : AE_IFBLK);
      std::string rdev = field(f, "rdev");
      archive_entry_set_rdev(ae, makedev(std::stoul(rdev.substr(0, rdev.find(':'))),
                                         std::stoul(rdev.substr(rdev.find(':') + 1))));
    } else {
      archive_entry_set_filetype(ae, AE_IFREG);
      if (f.count("size"))
        size = *parse_size(field(f, "size"));
      else if (f.count("content"))
        size = decode_bytes(field(f, "content")).size();
      archive_entry_set_size(ae, static_cast<la_int64_t>(size));
      // A sparse entry declares its one data region (the content at offset 0); the pax
      // writer then records GNU sparse 1.0 and leaves the rest out as a hole.
      if (sparse) {
        uint64_t data = f.count("content") ? decode_bytes(field(f, "content")).size() : 0;
        archive_entry_sparse_add_entry(ae, 0, static_cast<la_int64_t>(data));
        if (data < size) archive_entry_sparse_add_entry(ae, static_cast<la_int64_t>(size), 0);
      }
    }
    if (f.count("xattrs")) {
      for (const auto& [k, v] : f.at("xattrs").map) {
        std::string value = decode_bytes(v);
        archive_entry_xattr_add_entry(ae, k.c_str(), value.data(), value.size());
      }
    }
    if (archive_write_header(w.a, ae) < ARCHIVE_WARN) return w.err("header " + name);
    if (type == "file") {
      if (sparse) {
        // The writer takes the whole logical file and skips what falls in holes.
        std::string c = f.count("content") ? decode_bytes(field(f, "content")) : "";
        if (!c.empty() && archive_write_data(w.a, c.data(), c.size()) < 0)
          return w.err("data " + name);
        std::fill(buf.begin(), buf.end(), 0);
        for (uint64_t off = c.size(); off < size;) {
          size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
          if (archive_write_data(w.a, buf.data(), n) < 0) return w.err("data " + name);
          off += n;
        }
      } else if (f.count("content")) {
        std::string c = decode_bytes(field(f, "content"));
        if (!c.empty() && archive_write_data(w.a, c.data(), c.size()) < 0) return w.err("data " + name);
      } else if (size > 0) {
        Pattern p(field(f, "pattern", "random"), std::stoull(field(f, "seed", "1")));
        for (uint64_t off = 0; off < size;) {
          size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
          p.fill(off, buf.data(), n);
          if (archive_write_data(w.a, buf.data(), n) < 0) return w.err("data " + name);
          off += n;
        }
      }
    }
  }
  if (archive_write_close(w.a) != ARCHIVE_OK) return w.err("close " + path);
  return {};
}

Result<std::vector<std::string>> tar_entry_names(const std::string& tar) {
  archive_internal::Utf8Ctype utf8;  // UTF-8 pax names (archive_internal.h)
  struct archive* a = archive_read_new();
  struct Free {
    struct archive* a;
    ~Free() { archive_read_free(a); }
  } free_archive{a};
  archive_read_support_format_tar(a);
  if (archive_read_open_memory(a, tar.data(), tar.size()) != ARCHIVE_OK)
    return Error::invalid(std::string("read diff tar: ") + archive_error_string(a));
  std::vector<std::string> names;
  struct archive_entry* e;
  for (;;) {
    int r = archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return Error::invalid(std::string("read diff tar: ") + archive_error_string(a));
    std::string n = archive_entry_pathname(e);
    while (n.size() > 1 && n.back() == '/') n.pop_back();
    if (archive_entry_filetype(e) == AE_IFDIR) n += "/";
    names.push_back(n);
  }
  return names;
}

}  // namespace cowlab::scenario
