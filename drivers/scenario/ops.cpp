// The definition table of the scenario language: one row per step operation, expectation,
// entry key and top-level key (see ops.h).  Rows run through the sys seam; their shell
// export uses perl (perl-base is Essential in Debian) for calls whose errno matters, and
// coreutils/attr for everything else, so an exported script runs on a bare system.
#include "scenario/ops.h"

// Rows are designated initializers that leave unused members at their defaults.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "cowlab/fs.h"
#include "cowlab/scenario.h"
#include "cowlab/sys.h"
#include "scenario/internal.h"

namespace cowlab::scenario {

namespace {

std::string field(const Fields& f, const std::string& key, const std::string& fallback = "") {
  auto it = f.find(key);
  return it == f.end() ? fallback : it->second.scalar;
}
bool has(const Fields& f, const std::string& key) {
  return f.count(key) > 0;
}
const std::vector<std::string>& list(const Fields& f, const std::string& key) {
  static const std::vector<std::string> empty;
  auto it = f.find(key);
  return it == f.end() ? empty : it->second.list;
}
bool in_list(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}
int code(const Result<void>& r) {
  return r.ok() ? 0 : (r.error().err() ? r.error().err() : EIO);
}
uint64_t size_of(const Fields& f, const std::string& key, uint64_t fallback = 0) {
  return has(f, key) ? *parse_size(field(f, key)) : fallback;
}
mode_t mode_of(const Fields& f, mode_t fallback) {
  return has(f, "mode") ? static_cast<mode_t>(std::stoul(field(f, "mode"), nullptr, 8)) : fallback;
}

// ---- shell quoting ---------------------------------------------------------------------------
std::string sq(const std::string& s) {
  return shell_quote(s);
}
std::string hex(const std::string& s) {
  return hex_bytes(s);
}
// A perl one-liner that exits with the errno of its call ($got afterwards).
std::string perl(const std::string& code, const std::vector<std::string>& args) {
  std::string o = "sys " + sq(code);
  for (const auto& a : args) o += " " + a;
  return o + "\n";
}

// `remove` as the runner and cowlab's drivers do it: the container's descriptors closed (the
// runner's release_handles_of), then the union unmounted as the driver does — overlay
// detaches at once (MNT_DETACH: `umount -l`; copies leaked into other mount namespaces,
// moby#34672), aufs tries five times 0.1 s apart while busy and then detaches (Docker's aufs
// Unmount) — and its directories removed (upper, work, merged: Docker's Remove is a
// RemoveAll); on btrfs its nested subvolumes deepest first (a subvolume's root directory is
// inode 256; moby#9939), then the snapshot itself.  umount(8), rm and btrfs(8) report no
// errno: a failure they say is busy is EBUSY (what umount(2) or the ioctl returned), any
// other EIO.
std::string remove_to_sh(const ShellCall& c) {
  std::string v = shell_var(c.container), err = "\"$W/remove.err\"";
  std::string r = "\"" + c.root + "\"";
  std::string fail = "{ got=" + std::to_string(EIO) + "; grep -q busy " + err +
                     " && got=" + std::to_string(EBUSY) + "; }";
  std::string s = "for n in ${FDS_" + v + ":-}; do eval \"exec $n<&-\"; done; FDS_" + v + "=\n";
  s += "got=0\n";
  if (c.driver == "btrfs") {
    s += "find " + r + " -mindepth 1 -depth -type d -inum 256 -exec btrfs -q subvolume delete {} " +
         "+ >/dev/null 2>" + err + " || " + fail + "\n";
    s += "[ $got = 0 ] && { btrfs -q subvolume delete " + r + " >/dev/null 2>" + err + " || " +
         fail + "; }\n";
    return s;
  }
  std::string unmount = "umount -l " + r + " 2>" + err;
  if (c.driver == "aufs") {
    s += "u=1; i=0; while [ $i -lt 5 ]; do umount " + r + " 2>" + err +
         " && { u=0; break; }; grep -q busy " + err + " || break; sleep 0.1; i=$((i+1)); done\n";
    unmount = "{ [ $u = 0 ] || " + unmount + "; }";
  }
  s += "if " + unmount + "; then rm -rf \"$W/c/\"" + sq(c.container) + " 2>" + err + " || " + fail +
       "; else " + fail + "; fi\n";
  return s;
}

// Content of write/append: data, or size+pattern+seed (as layers.cpp's Pattern).
std::string data_of(const Fields& f) {
  if (has(f, "data")) return decode_bytes(field(f, "data"));
  uint64_t n = size_of(f, "size");
  std::string d(n, '\0');
  Pattern(field(f, "pattern", "random"), std::stoull(field(f, "seed", "1"))).fill(0, d.data(), n);
  return d;
}
// Export of data_of: hex of literal data, or a generator for zero/text; random data cannot
// be reproduced byte for byte by standard tools (documented; content checks would differ).
std::string sh_data_expr(const Fields& f) {
  if (has(f, "data")) return "pack('H*','" + hex(decode_bytes(field(f, "data"))) + "')";
  uint64_t n = size_of(f, "size");
  std::string p = field(f, "pattern", "random");
  if (p == "zero") return "(\"\\0\" x " + std::to_string(n) + ")";
  if (p == "text") {
    return "substr(\"cowlab generated text line 0123456789 abcdefghijklmnopqrstuvwxyz\\n\" x " +
           std::to_string(n / 65 + 1) + ",0," + std::to_string(n) + ")";
  }
  return "join('',map{chr(int(rand(256)))}1.." + std::to_string(n) + ")";
}

int open_flags(const Fields& f) {
  const auto& fl = list(f, "flags");
  int acc = in_list(fl, "rdwr") ? O_RDWR : in_list(fl, "wronly") ? O_WRONLY : O_RDONLY;
  if (in_list(fl, "creat")) acc |= O_CREAT;
  if (in_list(fl, "append")) acc |= O_APPEND;
  if (in_list(fl, "trunc")) acc |= O_TRUNC;
  if (in_list(fl, "excl")) acc |= O_EXCL;
  return acc;
}

const std::vector<std::string> kOpenFlags = {"rdonly", "wronly", "rdwr", "creat",
                                             "append", "trunc",  "excl"};
const std::vector<std::string> kRenameFlags = {"noreplace", "exchange", "whiteout"};
const std::vector<std::string> kFallocModes = {"keep_size", "punch_hole", "zero_range"};
const std::vector<std::string> kPatternNames = {"random", "zero", "text"};

unsigned rename_flags(const Fields& f) {
  unsigned fl = 0;
  for (const auto& s : list(f, "flags"))
    fl |= s == "noreplace" ? RENAME_NOREPLACE : s == "exchange" ? RENAME_EXCHANGE : RENAME_WHITEOUT;
  return fl;
}
int falloc_mode(const Fields& f) {
  int m = 0;
  for (const auto& s : list(f, "mode"))
    m |= s == "keep_size"    ? FALLOC_FL_KEEP_SIZE
         : s == "punch_hole" ? FALLOC_FL_PUNCH_HOLE
                             : FALLOC_FL_ZERO_RANGE;
  return m;
}

const std::map<std::string, uint32_t>& event_bits() {
  static const std::map<std::string, uint32_t> k = {
      {"access", IN_ACCESS},
      {"modify", IN_MODIFY},
      {"attrib", IN_ATTRIB},
      {"close_write", IN_CLOSE_WRITE},
      {"close_nowrite", IN_CLOSE_NOWRITE},
      {"open", IN_OPEN},
      {"moved_from", IN_MOVED_FROM},
      {"moved_to", IN_MOVED_TO},
      {"create", IN_CREATE},
      {"delete", IN_DELETE},
      {"delete_self", IN_DELETE_SELF},
      {"move_self", IN_MOVE_SELF},
  };
  return k;
}

// Shell fd numbers for named fds: 3..9 in order of first appearance (POSIX sh redirections).
int sh_fd(const std::string& name) {
  static std::map<std::string, int> k;
  auto it = k.find(name);
  if (it != k.end()) return it->second;
  int n = 3 + static_cast<int>(k.size()) % 7;
  k[name] = n;
  return n;
}

std::string stat_format() {
  return "%i %d %h %b %s %Y %X %Z %f %u %g";
}

// Writes `d` at `off` (or appends) with short-write retries; errno of the failure.
int write_at(int fd, const std::string& d, off_t off, bool at_position) {
  size_t done = 0;
  while (done < d.size()) {
    ssize_t n = at_position ? ::write(fd, d.data() + done, d.size() - done)
                            : ::pwrite(fd, d.data() + done, d.size() - done,
                                       off + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    done += static_cast<size_t>(n);
  }
  return 0;
}

std::vector<OpDef> make_ops() {
  std::vector<OpDef> t;
  auto add = [&](OpDef d) { t.push_back(std::move(d)); };
  auto data_check = [](const Fields& f,
                       const std::function<void(const Mark&, const std::string&)>& report) {
    if (has(f, "data") && has(f, "size"))
      report(f.at("data").mark, "give either data or size, not both");
    if (!has(f, "data") && !has(f, "size")) report(Mark{}, "needs data or size");
  };
  const FieldSpec pattern{T::kStr, false, kPatternNames};

  add({.name = "write",
       .fields = {{"path", {T::kStr, true}},
                  {"data", {T::kBytes}},
                  {"size", {T::kSize}},
                  {"pattern", pattern},
                  {"seed", {T::kInt}},
                  {"offset", {T::kSize}}},
       .doc = "`path`, `data` or `size`+`pattern`+`seed`, `offset` (default 0; the file is created "
              "if missing, "
              "not truncated; fsync'ed)",
       .run = [](StepCall& c) -> Result<int> {
         auto fd = sys::open(c.path("path"), O_WRONLY | O_CREAT, 0644);
         if (!fd.ok()) return fd.error().err();
         // Short writes are retried: a quota or a full disk shows up as a short write first
         // and as EDQUOT/ENOSPC on the next call.
         int e =
             write_at(fd->get(), data_of(c.f), static_cast<off_t>(size_of(c.f, "offset")), false);
         return e ? e : code(sys::fsync(fd->get()));
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl(
                 "sysopen(F,$ARGV[0],O_WRONLY|O_CREAT,0644) or exit($!+0); my $d=" +
                     sh_data_expr(c.f) + "; sysseek(F," + std::to_string(size_of(c.f, "offset")) +
                     ",0); while(length $d){my $n=syswrite(F,$d); defined $n or exit($!+0); "
                     "substr($d,0,$n)=''} F->sync or exit($!+0); exit 0",
                 {c.path("path")});
           },
       .check = data_check});
  add({.name = "append",
       .fields = {{"path", {T::kStr, true}},
                  {"data", {T::kBytes}},
                  {"size", {T::kSize}},
                  {"pattern", pattern},
                  {"seed", {T::kInt}}},
       .doc = "`path`, `data` or `size`+`pattern`+`seed` (O_APPEND; created if missing; fsync'ed)",
       .run = [](StepCall& c) -> Result<int> {
         auto fd = sys::open(c.path("path"), O_WRONLY | O_CREAT | O_APPEND, 0644);
         if (!fd.ok()) return fd.error().err();
         int e = write_at(fd->get(), data_of(c.f), 0, true);
         return e ? e : code(sys::fsync(fd->get()));
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl(
                 "sysopen(F,$ARGV[0],O_WRONLY|O_CREAT|O_APPEND,0644) or exit($!+0); my $d=" +
                     sh_data_expr(c.f) +
                     "; while(length $d){my $n=syswrite(F,$d); defined $n or exit($!+0); "
                     "substr($d,0,$n)=''} "
                     "F->sync or exit($!+0); exit 0",
                 {c.path("path")});
           },
       .check = data_check});
  add({.name = "truncate",
       .fields = {{"path", {T::kStr, true}}, {"size", {T::kSize, true}}},
       .doc = "`path`, `size`",
       .run = [](StepCall& c) -> Result<int> {
         auto fd = sys::open(c.path("path"), O_WRONLY);
         if (!fd.ok()) return fd.error().err();
         return code(sys::ftruncate(fd->get(), static_cast<off_t>(size_of(c.f, "size"))));
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl("truncate($ARGV[0]," + std::to_string(size_of(c.f, "size")) +
                             ") ? exit 0 : exit($!+0)",
                         {c.path("path")});
           }});
  add({.name = "chmod",
       .fields = {{"path", {T::kStr, true}}, {"mode", {T::kMode, true}}},
       .doc = "`path`, `mode`",
       .run = [](StepCall& c) -> Result<int> {
         return code(sys::fchmodat(AT_FDCWD, c.path("path"), mode_of(c.f, 0)));
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl("chmod(0" + field(c.f, "mode") + ",$ARGV[0]) ? exit 0 : exit($!+0)",
                         {c.path("path")});
           }});
  add({.name = "chown",
       .fields = {{"path", {T::kStr, true}}, {"owner", {T::kOwner, true}}},
       .doc = "`path`, `owner` (\"uid:gid\"; the link itself for a symlink)",
       .run = [](StepCall& c) -> Result<int> {
         std::string o = field(c.f, "owner");
         return code(sys::fchownat(AT_FDCWD, c.path("path"), std::stoul(o.substr(0, o.find(':'))),
                                   std::stoul(o.substr(o.find(':') + 1)), AT_SYMLINK_NOFOLLOW));
       },
       .to_sh =
           [](const ShellCall& c) {
             std::string o = field(c.f, "owner");
             return perl("syscall(" + std::to_string(SYS_fchownat) + ",-100,$ARGV[0]," +
                             o.substr(0, o.find(':')) + "," + o.substr(o.find(':') + 1) +
                             ",0x100)==0 ? exit 0 : exit($!+0)",
                         {c.path("path")});
           }});
  add({.name = "rename",
       .fields = {{"from", {T::kStr, true}},
                  {"to", {T::kStr, true}},
                  {"flags", {T::kList, false, kRenameFlags}}},
       .doc = "`from`, `to`, `flags` (renameat2: `noreplace`, `exchange`, `whiteout`)",
       .run = [](StepCall& c) -> Result<int> {
         unsigned fl = rename_flags(c.f);
         if (fl == 0) return code(sys::renameat(AT_FDCWD, c.path("from"), AT_FDCWD, c.path("to")));
         if (::renameat2(AT_FDCWD, c.path("from").c_str(), AT_FDCWD, c.path("to").c_str(), fl) != 0)
           return errno;
         return 0;
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl("syscall(" + std::to_string(SYS_renameat2) +
                             ",-100,$ARGV[0],-100,$ARGV[1]," + std::to_string(rename_flags(c.f)) +
                             ")==0 ? exit 0 : exit($!+0)",
                         {c.path("from"), c.path("to")});
           }});
  add({.name = "unlink",
       .fields = {{"path", {T::kStr, true}}},
       .doc = "`path`",
       .run = [](StepCall& c) -> Result<int> {
         return code(sys::unlinkat(AT_FDCWD, c.path("path"), 0));
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl("unlink($ARGV[0]) ? exit 0 : exit($!+0)", {c.path("path")});
           }});
  add({.name = "rmdir",
       .fields = {{"path", {T::kStr, true}}},
       .doc = "`path`",
       .run = [](StepCall& c) -> Result<int> {
         return code(sys::unlinkat(AT_FDCWD, c.path("path"), AT_REMOVEDIR));
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl("rmdir($ARGV[0]) ? exit 0 : exit($!+0)", {c.path("path")});
           }});
  add({.name = "mkdir",
       .fields = {{"path", {T::kStr, true}}, {"mode", {T::kMode}}},
       .doc = "`path`, `mode` (default 0755)",
       .run = [](StepCall& c) -> Result<int> {
         return code(sys::mkdirat(AT_FDCWD, c.path("path"), mode_of(c.f, 0755)));
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl("mkdir($ARGV[0],0" + field(c.f, "mode", "755") + ") ? exit 0 : exit($!+0)",
                         {c.path("path")});
           }});
  add({.name = "mknod",
       .fields = {{"path", {T::kStr, true}},
                  {"type", {T::kStr, true, {"fifo", "char", "block"}}},
                  {"rdev", {T::kRdev}},
                  {"mode", {T::kMode}}},
       .doc = "`path`, `type` (`fifo`, `char`, `block`), `rdev` (\"major:minor\" for devices), "
              "`mode` (default 0644)",
       .run = [](StepCall& c) -> Result<int> {
         std::string ty = field(c.f, "type"), rd = field(c.f, "rdev", "0:0");
         mode_t kind = ty == "fifo" ? S_IFIFO : ty == "char" ? S_IFCHR : S_IFBLK;
         dev_t dev = makedev(std::stoul(rd.substr(0, rd.find(':'))),
                             std::stoul(rd.substr(rd.find(':') + 1)));
         return code(sys::mknodat(AT_FDCWD, c.path("path"), kind | mode_of(c.f, 0644), dev));
       },
       .to_sh =
           [](const ShellCall& c) {
             std::string ty = field(c.f, "type"), rd = field(c.f, "rdev", "0:0");
             mode_t kind = ty == "fifo" ? S_IFIFO : ty == "char" ? S_IFCHR : S_IFBLK;
             dev_t dev = makedev(std::stoul(rd.substr(0, rd.find(':'))),
                                 std::stoul(rd.substr(rd.find(':') + 1)));
             return perl("syscall(" + std::to_string(SYS_mknodat) + ",-100,$ARGV[0]," +
                             std::to_string(kind | mode_of(c.f, 0644)) + "," + std::to_string(dev) +
                             ")==0 ? exit 0 : exit($!+0)",
                         {c.path("path")});
           },
       .check =
           [](const Fields& f, const std::function<void(const Mark&, const std::string&)>& report) {
             std::string ty = field(f, "type");
             if ((ty == "char" || ty == "block") && !has(f, "rdev"))
               report(f.at("type").mark, "a device needs rdev");
             if (ty == "fifo" && has(f, "rdev"))
               report(f.at("rdev").mark, "rdev only applies to char and block");
           }});
  add({.name = "link",
       .fields = {{"from", {T::kStr, true}}, {"to", {T::kStr, true}}},
       .doc = "`from` (existing), `to` (new hard link)",
       .run = [](StepCall& c) -> Result<int> {
         return code(sys::linkat(AT_FDCWD, c.path("from"), AT_FDCWD, c.path("to"), 0));
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl("link($ARGV[0],$ARGV[1]) ? exit 0 : exit($!+0)",
                         {c.path("from"), c.path("to")});
           }});
  add({.name = "symlink",
       .fields = {{"target", {T::kStr, true}}, {"path", {T::kStr, true}}},
       .doc = "`target`, `path`",
       .run = [](StepCall& c) -> Result<int> {
         return code(sys::symlinkat(field(c.f, "target"), AT_FDCWD, c.path("path")));
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl("symlink($ARGV[0],$ARGV[1]) ? exit 0 : exit($!+0)",
                         {sq(field(c.f, "target")), c.path("path")});
           }});
  add({.name = "touch",
       .fields = {{"path", {T::kStr, true}}, {"mtime", {T::kInt}}, {"atime", {T::kInt}}},
       .doc = "`path`, `mtime`, `atime` (Unix seconds; unset = now): utimensat(2) on an existing "
              "path, "
              "as touch(1) does (moby#47399)",
       .run = [](StepCall& c) -> Result<int> {
         struct timespec ts[2];
         ts[0] =
             has(c.f, "atime") ? timespec{*int_of(field(c.f, "atime")), 0} : timespec{0, UTIME_NOW};
         ts[1] =
             has(c.f, "mtime") ? timespec{*int_of(field(c.f, "mtime")), 0} : timespec{0, UTIME_NOW};
         return code(sys::utimensat(AT_FDCWD, c.path("path"), ts, AT_SYMLINK_NOFOLLOW));
       },
       .to_sh =
           [](const ShellCall& c) {
             std::string a = has(c.f, "atime") ? field(c.f, "atime") : "time",
                         m = has(c.f, "mtime") ? field(c.f, "mtime") : "time";
             if (!has(c.f, "atime") && !has(c.f, "mtime"))
               return perl("utime(undef,undef,$ARGV[0]) ? exit 0 : exit($!+0)", {c.path("path")});
             return perl("utime(" + a + "," + m + ",$ARGV[0]) ? exit 0 : exit($!+0)",
                         {c.path("path")});
           }});
  add({.name = "fallocate",
       .fields = {{"path", {T::kStr, true}},
                  {"offset", {T::kSize}},
                  {"length", {T::kSize, true}},
                  {"mode", {T::kList, false, kFallocModes}}},
       .doc = "`path`, `offset` (default 0), `length`, `mode` (list of `keep_size`, `punch_hole`, "
              "`zero_range`; "
              "punch_hole needs keep_size)",
       .run = [](StepCall& c) -> Result<int> {
         auto fd = sys::open(c.path("path"), O_WRONLY);
         if (!fd.ok()) return fd.error().err();
         return code(sys::fallocate(fd->get(), falloc_mode(c.f),
                                    static_cast<off_t>(size_of(c.f, "offset")),
                                    static_cast<off_t>(size_of(c.f, "length"))));
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl("open(F,'+<',$ARGV[0]) or exit($!+0); syscall(" +
                             std::to_string(SYS_fallocate) + ",fileno(F)," +
                             std::to_string(falloc_mode(c.f)) + "," +
                             std::to_string(size_of(c.f, "offset")) + "," +
                             std::to_string(size_of(c.f, "length")) + ")==0 ? exit 0 : exit($!+0)",
                         {c.path("path")});
           }});
  add({.name = "setxattr",
       .fields = {{"path", {T::kStr, true}},
                  {"name", {T::kStr, true}},
                  {"value", {T::kBytes, true}}},
       .doc = "`path`, `name`, `value` (`hex:` prefix for binary values)",
       .run = [](StepCall& c) -> Result<int> {
         return code(
             sys::lsetxattr(c.path("path"), field(c.f, "name"), decode_bytes(field(c.f, "value"))));
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl("my $v=pack('H*','" + hex(decode_bytes(field(c.f, "value"))) +
                             "'); syscall(" + std::to_string(SYS_lsetxattr) +
                             ",$ARGV[0],$ARGV[1],$v,length($v),0)==0 ? exit 0 : exit($!+0)",
                         {c.path("path"), sq(field(c.f, "name"))});
           }});
  add({.name = "removexattr",
       .fields = {{"path", {T::kStr, true}}, {"name", {T::kStr, true}}},
       .doc = "`path`, `name`",
       .run = [](StepCall& c) -> Result<int> {
         return code(sys::lremovexattr(c.path("path"), field(c.f, "name")));
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl("syscall(" + std::to_string(SYS_lremovexattr) +
                             ",$ARGV[0],$ARGV[1])==0 ? exit 0 : exit($!+0)",
                         {c.path("path"), sq(field(c.f, "name"))});
           }});
  add({.name = "read",
       .fields = {{"path", {T::kStr, true}}},
       .doc = "`path` (reads the whole file)",
       .run = [](StepCall& c) -> Result<int> {
         auto fd = sys::open(c.path("path"), O_RDONLY);
         if (!fd.ok()) return fd.error().err();
         std::vector<char> buf(1 << 20);
         for (;;) {
           auto n = sys::read(fd->get(), buf.data(), buf.size());
           if (!n.ok()) return n.error().err();
           if (*n == 0) return 0;
         }
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl(
                 "open(F,'<',$ARGV[0]) or exit($!+0); while(sysread(F,my $b,1<<20)){} exit 0",
                 {c.path("path")});
           }});
  add({.name = "lookup",
       .fields = {{"path", {T::kStr, true}}, {"repeat", {T::kInt}}, {"distinct", {T::kBool}}},
       .doc = "`path`, `repeat` (stat N times, 1..10000000; for latency), `distinct: true` (stat "
              "PATH-0..PATH-N-1, "
              "names that exist nowhere, so each lookup walks every layer)",
       .run = [](StepCall& c) -> Result<int> {
         // distinct: names that exist nowhere, so every lookup walks every layer instead of
         // hitting the dentry cache (the cost the aufs claim is about).
         int64_t n = *int_of(field(c.f, "repeat", "1000"));
         bool distinct = field(c.f, "distinct", "false") == "true";
         for (int64_t i = 0; i < n; ++i) {
           auto st =
               sys::lstat(distinct ? c.path("path") + "-" + std::to_string(i) : c.path("path"));
           if (!st.ok() && !(distinct && st.error().err() == ENOENT)) return st.error().err();
         }
         return 0;
       },
       // The same lstat(2) calls and errno; what the script cannot give is the step's time
       // (`measure:` expectations are skipped there, as every measurement).
       .to_sh =
           [](const ShellCall& c) {
             return perl(
                 "my ($p,$n,$d)=@ARGV; for my $i (0..$n-1) { next if lstat($d ? \"$p-$i\" : "
                 "$p); exit($!+0) unless $d && $!+0 == " +
                     std::to_string(ENOENT) + " } exit 0",
                 {c.path("path"), field(c.f, "repeat", "1000"),
                  field(c.f, "distinct", "false") == "true" ? "1" : "0"});
           },
       .check =
           [](const Fields& f, const std::function<void(const Mark&, const std::string&)>& report) {
             if (has(f, "repeat")) {
               int64_t n = *int_of(field(f, "repeat"));
               if (n < 1 || n > 10000000)
                 report(f.at("repeat").mark, "repeat: must be 1..10000000");
             }
           }});
  add({.name = "open",
       .fields = {{"path", {T::kStr, true}},
                  {"fd", {T::kStr, true}},
                  {"flags", {T::kList, false, kOpenFlags}},
                  {"mode", {T::kMode}}},
       .doc = "`path`, `fd` (a name; the descriptor stays open across steps until `close` or the "
              "end), `flags` "
              "(list of `rdonly` (default), `wronly`, `rdwr`, `creat`, `append`, `trunc`, `excl`), "
              "`mode`",
       .run = [](StepCall& c) -> Result<int> {
         int fl = open_flags(c.f);
         int fd = ::open(c.path("path").c_str(), fl | O_CLOEXEC, mode_of(c.f, 0644));
         if (fd < 0) return errno;
         c.env.fds()[field(c.f, "fd")] = OpenFile{fd, c.container, field(c.f, "path"), fl};
         return 0;
       },
       .to_sh =
           [](const ShellCall& c) {
             int fl = open_flags(c.f);
             int n = sh_fd(field(c.f, "fd"));
             std::string redir = (fl & O_ACCMODE) == O_RDONLY ? "<"
                                 : (fl & O_APPEND)            ? ">>"
                                 : (fl & O_ACCMODE) == O_RDWR ? "<>"
                                                              : ">";
             // The errno is probed by perl first: a failed `exec` redirection ends a POSIX shell.
             return perl("sysopen(F,$ARGV[0]," + std::to_string(fl & ~(O_TRUNC | O_EXCL)) + ",0" +
                             field(c.f, "mode", "644") + ") ? exit 0 : exit($!+0)",
                         {c.path("path")}) +
                    "if [ \"$got\" = 0 ]; then exec " + std::to_string(n) + redir + c.path("path") +
                    "; FDS_" + shell_var(c.container) + "=\"${FDS_" + shell_var(c.container) +
                    ":-} " + std::to_string(n) + "\"; fi\n";
           }});
  add({.name = "close",
       .target = Target::kNone,
       .fields = {{"fd", {T::kStr, true}}},
       .doc = "`fd`",
       .run = [](StepCall& c) -> Result<int> {
         auto it = c.env.fds().find(field(c.f, "fd"));
         int r = ::close(it->second.fd);
         c.env.fds().erase(it);
         return r == 0 ? 0 : errno;
       },
       .to_sh =
           [](const ShellCall& c) {
             return "exec " + std::to_string(sh_fd(field(c.f, "fd"))) + "<&-; got=0\n";
           }});
  add({.name = "fd_write",
       .target = Target::kNone,
       .fields = {{"fd", {T::kStr, true}}, {"data", {T::kBytes, true}}, {"offset", {T::kSize}}},
       .doc =
           "`fd`, `data`, `offset` (pwrite there; unset = write(2) at the descriptor's position)",
       .run = [](StepCall& c) -> Result<int> {
         const OpenFile& of = c.env.fds().at(field(c.f, "fd"));
         return write_at(of.fd, decode_bytes(field(c.f, "data")),
                         static_cast<off_t>(size_of(c.f, "offset")), !has(c.f, "offset"));
       },
       .to_sh =
           [](const ShellCall& c) {
             std::string seek =
                 has(c.f, "offset")
                     ? "sysseek(F," + std::to_string(size_of(c.f, "offset")) + ",0); "
                     : "";
             return perl("open(F,'+<&=" + std::to_string(sh_fd(field(c.f, "fd"))) +
                             "') or open(F,'>>&=" + std::to_string(sh_fd(field(c.f, "fd"))) +
                             "') or exit($!+0); " + seek + "my $d=pack('H*','" +
                             hex(decode_bytes(field(c.f, "data"))) +
                             "'); defined syswrite(F,$d) or exit($!+0); exit 0",
                         {});
           }});
  add({.name = "fd_read",
       .target = Target::kNone,
       .fields = {{"fd", {T::kStr, true}},
                  {"offset", {T::kSize}},
                  {"size", {T::kSize}},
                  {"content", {T::kBytes}}},
       .doc = "`fd`, `offset` (default 0), `size` (default: to the end), `content` (what the read "
              "must return; a "
              "difference is a failure)",
       .run = [](StepCall& c) -> Result<int> {
         const OpenFile& of = c.env.fds().at(field(c.f, "fd"));
         uint64_t off = size_of(c.f, "offset"), want = size_of(c.f, "size", UINT64_MAX);
         std::string got;
         std::vector<char> buf(1 << 16);
         while (got.size() < want) {
           ssize_t n = ::pread(of.fd, buf.data(), std::min<uint64_t>(buf.size(), want - got.size()),
                               static_cast<off_t>(off + got.size()));
           if (n < 0) {
             if (errno == EINTR) continue;
             return errno;
           }
           if (n == 0) break;
           got.append(buf.data(), static_cast<size_t>(n));
         }
         if (has(c.f, "content") && got != decode_bytes(field(c.f, "content")))
           c.env.fail(c.what + " content", "\"" + decode_bytes(field(c.f, "content")) + "\"",
                      "\"" + got.substr(0, 200) + "\"");
         return 0;
       },
       .to_sh =
           [](const ShellCall& c) {
             std::string n = std::to_string(sh_fd(field(c.f, "fd")));
             // As the runner: up to `size` bytes, or to the end, in 64 KiB reads (one read of
             // "the rest" would make perl allocate that much).
             std::string len = has(c.f, "size") ? std::to_string(size_of(c.f, "size")) : "-1";
             std::string s = "obs=$(perl -e 'open(F,\"<&=" + n + "\") or open(F,\"+<&=" + n +
                             "\") or exit(1); sysseek(F," + std::to_string(size_of(c.f, "offset")) +
                             ",0); my ($b,$want)=(\"\"," + len +
                             "); while ($want < 0 || length($b) < $want) { my $n = 65536; $n = "
                             "$want - length($b) if $want >= 0 && $want - length($b) < $n; "
                             "sysread(F,my $c,$n) or last; $b .= $c } print unpack(\"H*\",$b)'); "
                             "got=0\n";
             if (has(c.f, "content"))
               s += "check_eq " + sq(c.what + " content") + " " +
                    sq(hex(decode_bytes(field(c.f, "content")))) + " \"$obs\"\n";
             return s;
           }});
  add({.name = "fsync",
       .target = Target::kNone,
       .fields = {{"fd", {T::kStr, true}}},
       .doc = "`fd`",
       .run = [](StepCall& c) -> Result<int> {
         return code(sys::fsync(c.env.fds().at(field(c.f, "fd")).fd));
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl("syscall(" + std::to_string(SYS_fsync) + "," +
                             std::to_string(sh_fd(field(c.f, "fd"))) + ")==0 ? exit 0 : exit($!+0)",
                         {});
           }});
  add({.name = "mmap",
       .target = Target::kNone,
       .fields = {{"fd", {T::kStr, true}},
                  {"map", {T::kStr, true}},
                  {"length", {T::kSize, true}},
                  {"offset", {T::kSize}}},
       .doc = "`fd`, `map` (a name), `length`, `offset`: mmap(MAP_SHARED), readable, and writable "
              "if the fd is",
       .run = [](StepCall& c) -> Result<int> {
         const OpenFile& of = c.env.fds().at(field(c.f, "fd"));
         size_t len = size_of(c.f, "length");
         int prot = PROT_READ | ((of.flags & O_ACCMODE) == O_RDWR ? PROT_WRITE : 0);
         void* p = ::mmap(nullptr, len, prot, MAP_SHARED, of.fd,
                          static_cast<off_t>(size_of(c.f, "offset")));
         if (p == MAP_FAILED) return errno;
         c.env.maps()[field(c.f, "map")] = Mapping{p, len};
         return 0;
       },
       .no_export = "perl-base and the shell have no mmap(2), and no standard tool maps a file"});
  add({.name = "map_write",
       .target = Target::kNone,
       .fields = {{"map", {T::kStr, true}}, {"offset", {T::kSize}}, {"data", {T::kBytes, true}}},
       .doc = "`map`, `offset`, `data`: stores into the mapping (no msync)",
       .run = [](StepCall& c) -> Result<int> {
         const Mapping& m = c.env.maps().at(field(c.f, "map"));
         std::string d = decode_bytes(field(c.f, "data"));
         uint64_t off = size_of(c.f, "offset");
         if (off + d.size() > m.length) return EFAULT;
         std::memcpy(static_cast<char*>(m.addr) + off, d.data(), d.size());
         return 0;
       },
       .no_export = "needs a mapping (`mmap`)"});
  add({.name = "map_read",
       .target = Target::kNone,
       .fields = {{"map", {T::kStr, true}}, {"offset", {T::kSize}}, {"content", {T::kBytes, true}}},
       .doc = "`map`, `offset`, `content` (what the mapping must hold there; a difference is a "
              "failure)",
       .run = [](StepCall& c) -> Result<int> {
         const Mapping& m = c.env.maps().at(field(c.f, "map"));
         std::string want = decode_bytes(field(c.f, "content"));
         uint64_t off = size_of(c.f, "offset");
         if (off + want.size() > m.length) return EFAULT;
         std::string got(static_cast<const char*>(m.addr) + off, want.size());
         if (got != want) c.env.fail(c.what + " content", "\"" + want + "\"", "\"" + got + "\"");
         return 0;
       },
       .no_export = "needs a mapping (`mmap`)"});
  add({.name = "msync",
       .target = Target::kNone,
       .fields = {{"map", {T::kStr, true}}},
       .doc = "`map` (MS_SYNC)",
       .run = [](StepCall& c) -> Result<int> {
         const Mapping& m = c.env.maps().at(field(c.f, "map"));
         return ::msync(m.addr, m.length, MS_SYNC) == 0 ? 0 : errno;
       },
       .no_export = "needs a mapping (`mmap`)"});
  add({.name = "munmap",
       .target = Target::kNone,
       .fields = {{"map", {T::kStr, true}}},
       .doc = "`map`",
       .run = [](StepCall& c) -> Result<int> {
         auto it = c.env.maps().find(field(c.f, "map"));
         int r = ::munmap(it->second.addr, it->second.length);
         c.env.maps().erase(it);
         return r == 0 ? 0 : errno;
       },
       .no_export = "needs a mapping (`mmap`)"});
  add({.name = "watch",
       .fields = {{"path", {T::kStr, true}}, {"watch", {T::kStr, true}}},
       .doc = "`path`, `watch` (a name): an inotify watch for every event on PATH, held until the "
              "end (`tail -f`)",
       .run = [](StepCall& c) -> Result<int> {
         int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
         if (fd < 0) return errno;
         if (::inotify_add_watch(fd, c.path("path").c_str(), IN_ALL_EVENTS) < 0) {
           int e = errno;
           ::close(fd);
           return e;
         }
         c.env.watches()[field(c.f, "watch")] = fd;
         return 0;
       },
       .no_export = "no standard tool holds an inotify watch (inotifywait is inotify-tools, not "
                    "installed by default)"});
  add({.name = "events",
       .target = Target::kNone,
       .fields = {{"watch", {T::kStr, true}},
                  {"includes", {T::kList, false, {}}},
                  {"excludes", {T::kList, false, {}}}},
       .doc = "`watch`, `includes` / `excludes` (event names: access, modify, attrib, close_write, "
              "close_nowrite, "
              "open, moved_from, moved_to, create, delete, delete_self, move_self): the events "
              "queued since the "
              "last `events` must include / exclude these",
       .run = [](StepCall& c) -> Result<int> {
         int fd = c.env.watches().at(field(c.f, "watch"));
         uint32_t seen = 0;
         alignas(struct inotify_event) char buf[8192];
         for (;;) {
           ssize_t n = ::read(fd, buf, sizeof buf);
           if (n < 0) {
             if (errno == EINTR) continue;
             if (errno == EAGAIN) break;
             return errno;
           }
           for (ssize_t i = 0; i < n;) {
             auto* ev = reinterpret_cast<struct inotify_event*>(buf + i);
             seen |= ev->mask;
             i += static_cast<ssize_t>(sizeof(struct inotify_event) + ev->len);
           }
         }
         std::string got;
         for (const auto& [name, bit] : event_bits())
           if (seen & bit) got += (got.empty() ? "" : ", ") + name;
         for (const auto& e : list(c.f, "includes"))
           if (!(seen & event_bits().at(e)))
             c.env.fail(c.what + " includes " + e, e, "[" + got + "]");
         for (const auto& e : list(c.f, "excludes"))
           if (seen & event_bits().at(e))
             c.env.fail(c.what + " excludes " + e, "no " + e, "[" + got + "]");
         return 0;
       },
       .no_export = "reads a `watch` (no standard tool holds an inotify watch)",
       .check =
           [](const Fields& f, const std::function<void(const Mark&, const std::string&)>& report) {
             for (const char* k : {"includes", "excludes"})
               if (has(f, k))
                 for (const auto& e : f.at(k).list)
                   if (!event_bits().count(e)) {
                     std::string known;
                     for (const auto& [n, b] : event_bits())
                       known += (known.empty() ? "" : ", ") + n;
                     report(f.at(k).mark, std::string(k) + ": unknown event \"" + e +
                                              "\" (expected one of: " + known + ")");
                   }
           }});
  add({.name = "stat",
       .fields = {{"path", {T::kStr, true}}, {"as", {T::kStr, true}}},
       .doc = "`path`, `as` (a name): lstat now and keep the result for `view`'s `since:`; records "
              "the measurements "
              "`stat.NAME.ino`, `.dev`, `.nlink`, `.blocks` (allocated bytes), `.size`, `.mtime`, "
              "`.atime`, `.ctime`",
       .run = [](StepCall& c) -> Result<int> {
         auto st = sys::lstat(c.path("path"));
         if (!st.ok()) return st.error().err();
         std::string n = "stat." + field(c.f, "as") + ".";
         c.env.record(n + "ino", static_cast<double>(st->st_ino));
         c.env.record(n + "dev", static_cast<double>(st->st_dev));
         c.env.record(n + "nlink", static_cast<double>(st->st_nlink));
         c.env.record(n + "blocks", static_cast<double>(st->st_blocks) * 512);
         c.env.record(n + "size", static_cast<double>(st->st_size));
         c.env.record(n + "mtime",
                      static_cast<double>(st->st_mtim.tv_sec) + st->st_mtim.tv_nsec / 1e9);
         c.env.record(n + "atime",
                      static_cast<double>(st->st_atim.tv_sec) + st->st_atim.tv_nsec / 1e9);
         c.env.record(n + "ctime",
                      static_cast<double>(st->st_ctim.tv_sec) + st->st_ctim.tv_nsec / 1e9);
         return 0;
       },
       .to_sh =
           [](const ShellCall& c) {
             return "CAP_" + field(c.f, "as") + "=$(stat -c " +
                    sq("%i %d %h %B*%b %s %.9Y %.9X %.9Z") + " " + c.path("path") +
                    " 2>/dev/null); got=$?\n";
           },
       .records =
           [](const Fields& f) {
             std::vector<std::string> out;
             for (const auto& k : stat_fields()) out.push_back("stat." + field(f, "as") + "." + k);
             return out;
           }});
  add({.name = "open_rw_after_ro",
       .fields = {{"path", {T::kStr, true}}},
       .doc = "`path`: opens read-only, then read-write, OVERWRITES the first 16 bytes with "
              "`cowlab-rw-marker` "
              "through the second fd and reads them through the first; a stale first fd is "
              "reported as ESTALE "
              "(moby#10180; `open`/`fd_write`/`fd_read` say the same explicitly)",
       .run = [](StepCall& c) -> Result<int> {
         auto ro = sys::open(c.path("path"), O_RDONLY);
         if (!ro.ok()) return ro.error().err();
         auto rw = sys::open(c.path("path"), O_RDWR);
         if (!rw.ok()) return rw.error().err();
         const char marker[] = "cowlab-rw-marker";
         if (::pwrite(rw->get(), marker, sizeof marker - 1, 0) < 0) return errno;
         char got[sizeof marker] = {};
         auto n = sys::pread(ro->get(), got, sizeof marker - 1, 0);
         if (!n.ok()) return n.error().err();
         return std::memcmp(got, marker, sizeof marker - 1) == 0 ? 0 : ESTALE;
       },
       .to_sh =
           [](const ShellCall& c) {
             return perl(
                 "open(R,'<',$ARGV[0]) or exit($!+0); open(W,'+<',$ARGV[0]) or exit($!+0); "
                 "syswrite(W,'cowlab-rw-marker') or exit($!+0); sysread(R,my $b,16); "
                 "exit($b eq 'cowlab-rw-marker' ? 0 : " +
                     std::to_string(ESTALE) + ")",
                 {c.path("path")});
           }});
  add({.name = "subvolume_create",
       .fields = {{"path", {T::kStr, true}}},
       .doc = "`path`: create a btrfs subvolume inside the container (moby#9939)",
       .run = [](StepCall& c) -> Result<int> {
         return code(sys::btrfs_create_subvolume(c.path("path")));
       },
       .to_sh =
           [](const ShellCall& c) {
             return "btrfs -q subvolume create " + c.path("path") + " >/dev/null 2>&1; got=$?\n";
           }});
  add({.name = "commit",
       .fields = {{"as", {T::kStr, true}}},
       .doc = "`as` (a name): turn the container into a layer (its diff imported on its image, as "
              "`docker commit`); "
              "records `commit.NAME.size` (tar bytes), `commit.NAME.time` (seconds), "
              "`commit.NAME.space` (bytes "
              "allocated by the import)",
       .run = [](StepCall& c) { return c.env.commit(c.container, field(c.f, "as")); },
       .no_export = "turns a container into a layer through cowlab's store (its diff and import); "
                    "its measurements are the point",
       .records =
           [](const Fields& f) {
             std::string n = "commit." + field(f, "as") + ".";
             return std::vector<std::string>{n + "size", n + "time", n + "space"};
           },
       .in_build = false});
  add({.name = "drop_caches",
       .target = Target::kNone,
       .doc = "no `in`; sync and drop the page cache",
       .run = [](StepCall& c) { return c.env.drop_caches(); },
       .to_sh =
           [](const ShellCall&) {
             return std::string("sync; echo 3 > /proc/sys/vm/drop_caches; got=$?\n");
           }});
  add({.name = "reopen",
       .target = Target::kNone,
       .doc = "no `in`; close and reopen the store (persistence across restarts)",
       .run = [](StepCall& c) { return c.env.reopen(); },
       .no_export = "closes and reopens cowlab's store (its metadata and mounts); a script has no "
                    "store",
       .in_build = false});
  add({.name = "hold_mount",
       .doc = "`in`: keep the container's mount alive in another mount namespace until the "
              "scenario ends "
              "(moby#16112, moby#27381)",
       .run = [](StepCall& c) { return c.env.hold_mount(c.container); },
       // unshare(1) does what sys::spawn_mount_holder does: unshare(CLONE_NEWNS), then every
       // mount made private (--propagation private) so the parent's unmounts stay out; the
       // step ends once the holder's namespace exists (it has another /proc/PID/ns/mnt).
       .to_sh =
           [](const ShellCall&) {
             return std::string(
                 "unshare --mount --propagation private sleep 2147483647 & h=$!; "
                 "HOLDERS=\"${HOLDERS:-} $h\"; got=1; i=0\n"
                 "while [ $i -lt 100 ] && kill -0 $h 2>/dev/null; do\n"
                 "  if [ \"$(readlink /proc/$h/ns/mnt)\" != \"$(readlink /proc/$$/ns/mnt)\" ]; "
                 "then "
                 "got=0; break; fi\n"
                 "  sleep 0.1; i=$((i+1))\n"
                 "done\n");
           },
       .in_build = false});
  add({.name = "remove",
       .doc = "`in`: delete containers (unmounted first); later steps and expectations may not "
              "name them",
       .run = [](StepCall& c) -> Result<int> {
         std::string detail;
         return c.env.remove(c.container, &detail);
       },
       .to_sh = [](const ShellCall& c) { return remove_to_sh(c); },
       .in_build = false});
  add({.name = "crash_kernel",
       .target = Target::kNone,
       .doc = "no `in`; panics the guest kernel through sysrq (tests the harness's panic handling; "
              "refused outside "
              "a cowlab guest)",
       .run = [](StepCall& c) { return c.env.crash_kernel(); },
       .no_export = "panics the kernel to test cowlab's guest harness; nothing to reproduce"});
  return t;
}

std::vector<ExpectDef> make_expects() {
  std::vector<ExpectDef> t;
  const std::vector<std::string> kStat = stat_fields();
  t.push_back(
      {.name = "view",
       .fields = {{"in", {T::kStr, true}},
                  {"path", {T::kStr, true}},
                  {"exists", {T::kBool}},
                  {"type",
                   {T::kStr, false, {"file", "dir", "symlink", "fifo", "char", "block", "socket"}}},
                  {"content", {T::kBytes}},
                  {"size", {T::kSize}},
                  {"mode", {T::kMode}},
                  {"owner", {T::kOwner}},
                  {"target", {T::kStr}},
                  {"digest", {T::kStr}},
                  {"same_inode_as", {T::kStr}},
                  {"xattr", {T::kBytesMap}},
                  {"xattr_absent", {T::kList}},
                  {"nlink", {T::kInt}},
                  {"allocated_min", {T::kSize}},
                  {"allocated_max", {T::kSize}},
                  {"mtime", {T::kInt}},
                  {"listing", {T::kList}},
                  {"listing_includes", {T::kList}},
                  {"listing_excludes", {T::kList}},
                  {"since", {T::kStr}},
                  {"same", {T::kList, false, kStat}},
                  {"changed", {T::kList, false, kStat}}},
       .doc = "`in`, `path`, `exists`, `type`, `content` (`hex:` ok), `size`, `mode`, `owner`, "
              "`target`, `digest`, "
              "`same_inode_as` (another path now), `xattr` (name → value, `hex:` ok), "
              "`xattr_absent`, `nlink`, "
              "`allocated_min`/`allocated_max` (st_blocks × 512), `mtime`, `listing` (readdir "
              "names, sorted, "
              "without . and ..) / `listing_includes` / `listing_excludes`, `since` (a `stat` "
              "step's name) with "
              "`same` / `changed` (lists of ino, dev, nlink, blocks, size, mtime, atime, ctime)",
       .check = [](ExpectEnv& e, const Fields& f, const std::string& w) { return e.view(f, w); },
       .to_sh = view_to_sh});
  t.push_back(
      {.name = "changes",
       .fields = {{"in", {T::kStr, true}}, {"equals", {T::kList}}, {"includes", {T::kList}}},
       .doc = "`in`, `equals` (the whole list, in order) or `includes` (these lines among others): "
              "`cowlab changes` lines \"A|C|D /path\"",
       .check = [](ExpectEnv& e, const Fields& f, const std::string& w) { return e.changes(f, w); },
       .no_export = "cowlab's change detection"});
  t.push_back(
      {.name = "diff",
       .fields = {{"in", {T::kStr, true}}, {"entries", {T::kList}}, {"includes", {T::kList}}},
       .doc = "`in`, `entries` (the diff tar's entry names, in order; directories end in /) or "
              "`includes` "
              "(these names among others)",
       .check = [](ExpectEnv& e, const Fields& f, const std::string& w) { return e.diff(f, w); },
       .no_export = "cowlab's layer diff"});
  t.push_back(
      {.name = "measure",
       .shape = Shape::kNamed,
       .fields = {{"name", {T::kStr, true}}, {"min", {T::kSize}}, {"max", {T::kSize}}},
       .doc = "NAME, with `min` / `max` beside it (sizes, numbers, or FACTOR*SIZE)",
       .check = [](ExpectEnv& e, const Fields& f, const std::string& w) { return e.measure(f, w); },
       .no_export = "cowlab's measurements"});
  t.push_back(
      {.name = "ratio",
       .fields = {{"of", {T::kStr, true}},
                  {"to", {T::kStr, true}},
                  {"min", {T::kNumber}},
                  {"max", {T::kNumber}}},
       .doc = "`of`, `to` (measurement names), `min` / `max`",
       .check = [](ExpectEnv& e, const Fields& f, const std::string& w) { return e.ratio(f, w); },
       .no_export = "cowlab's measurements"});
  t.push_back({.name = "image_unchanged",
               .shape = Shape::kBool,
               .fields = {{"value", {T::kBool, true}}},
               .doc = "true: every image layer byte-for-byte as imported",
               .check = [](ExpectEnv& e, const Fields& f,
                           const std::string& w) { return e.image_unchanged(f, w); },
               .no_export = "digests of cowlab's layers"});
  t.push_back({.name = "unaffected",
               .shape = Shape::kList,
               .fields = {{"containers", {T::kList, true}}},
               .doc = "[ids]: these containers' views unchanged by the steps",
               .check = [](ExpectEnv& e, const Fields& f,
                           const std::string& w) { return e.unaffected(f, w); },
               .no_export = "tree digests taken by cowlab before the steps"});
  return t;
}

}  // namespace

std::string StepCall::path(const char* key) const {
  return root + "/" + field(f, key);
}
std::string ShellCall::path(const char* key) const {
  return "\"" + root + "\"/" + sq(field(f, key));
}

std::string decode_bytes(const std::string& v) {
  if (v.rfind("hex:", 0) != 0) return v;
  std::string h = v.substr(4), out;
  for (size_t i = 0; i + 1 < h.size(); i += 2)
    out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}
bool valid_bytes(const std::string& v) {
  if (v.rfind("hex:", 0) != 0) return true;
  std::string h = v.substr(4);
  return h.size() % 2 == 0 && std::all_of(h.begin(), h.end(), ::isxdigit);
}

const std::vector<OpDef>& op_table() {
  static const std::vector<OpDef> t = make_ops();
  return t;
}
const OpDef* find_op(const std::string& name) {
  for (const auto& d : op_table())
    if (d.name == name) return &d;
  return nullptr;
}
const std::vector<ExpectDef>& expect_table() {
  static const std::vector<ExpectDef> t = make_expects();
  return t;
}
const ExpectDef* find_expect(const std::string& name) {
  for (const auto& d : expect_table())
    if (d.name == name) return &d;
  return nullptr;
}

const std::vector<std::string>& stat_fields() {
  static const std::vector<std::string> k = {"ino",  "dev",   "nlink", "blocks",
                                             "size", "mtime", "atime", "ctime"};
  return k;
}
const std::vector<std::string>& event_names() {
  static const std::vector<std::string> k = [] {
    std::vector<std::string> v;
    for (const auto& [n, b] : event_bits()) v.push_back(n);
    return v;
  }();
  return k;
}
const std::vector<std::string>& feature_names() {
  static const std::vector<std::string> k = {"overlay.redirect_dir",
                                             "overlay.metacopy",
                                             "overlay.index",
                                             "overlay.new_mount_api",
                                             "btrfs.quota",
                                             "dm.thin",
                                             "dm.deferred_remove",
                                             "zfs",
                                             "aufs",
                                             "userns",
                                             "drop_caches"};
  return k;
}

const std::vector<KeyDoc>& entry_table() {
  static const std::vector<KeyDoc> k = {
      {"path", {T::kStr, true}, "required; relative to the layer root"},
      {"type",
       {T::kStr,
        false,
        {"file", "dir", "symlink", "hardlink", "fifo", "char", "block", "whiteout", "opaque"}},
       "`file` (default), `dir`, `symlink`, `hardlink`, `fifo`, `char`, `block`, `whiteout` (OCI "
       "`.wh.` entry for "
       "`path`), `opaque` (`path/.wh..wh..opq`)"},
      {"content", {T::kBytes}, "file content (string; `hex:` for binary)"},
      {"size", {T::kSize}, "generated content instead: `size: 64MiB` with `pattern` and `seed`"},
      {"pattern",
       {T::kStr, false, {"random", "zero", "text"}},
       "`random` (seeded, reproducible; default), `zero` (whole zero blocks are stored as holes) "
       "or `text`"},
      {"seed", {T::kInt}, "seed of `random`"},
      {"sparse",
       {T::kBool},
       "`true`: a sparse tar entry (GNU sparse 1.0 in pax) of `size` bytes whose only data is "
       "`content` at "
       "offset 0 — the rest is a hole (`tar --sparse`)"},
      {"target", {T::kStr}, "symlink target or hard-link target path"},
      {"mode",
       {T::kMode},
       "octal string or number (`\"0755\"`, `04755`); default 0644 files, 0755 dirs"},
      {"owner", {T::kOwner}, "`\"uid:gid\"`"},
      {"mtime", {T::kInt}, "Unix seconds"},
      {"xattrs", {T::kBytesMap}, "mapping name → value (`hex:` prefix for binary values)"},
      {"rdev", {T::kRdev}, "`\"major:minor\"` for devices"},
  };
  return k;
}

const std::vector<KeyDoc>& top_level_table() {
  static const std::vector<KeyDoc> k = {
      {"scenario",
       {T::kStr, true},
       "string, required: unique name (`[a-z0-9][a-z0-9-]*`); by convention the file name"},
      {"description",
       {T::kStr, true},
       "string, required: what behaviour this checks, in a sentence or two"},
      {"groups",
       {T::kList},
       "list of names: tags for selection (`claims`, `whiteout`, `regression`, `quick`, …)"},
      {"links", {T::kList}, "list of URLs: upstream reports; required for the `regression` group"},
      {"requires",
       {T::kMap},
       "mapping: where the scenario can run at all (see below); otherwise *skip* with the reason"},
      {"options",
       {T::kMap},
       "mapping storage-opt key → value for this scenario (`overlay.mountopt: "
       "\"metacopy=on,redirect_dir=on\"`, "
       "`dm.basesize: 20G`, `btrfs.min_space: 10M`, `zfs.fsname: ...`); keys of other drivers are "
       "ignored"},
      {"timeout", {T::kInt}, "seconds: per scenario × driver; default 300"},
      {"crash", {T::kMap}, "mapping: power-cut testing of the scenario's phases (docs/crash.md)"},
      {"sweep",
       {T::kMap},
       "mapping name → list: run once per value; `${name}` is substituted in every string; at most "
       "64 points"},
      {"layers", {T::kList, true}, "list, required: the image layers, base first"},
      {"containers", {T::kList}, "list: read-write layers on an image layer"},
      {"steps", {T::kList}, "list: operations, in order"},
      {"expect", {T::kList}, "list: checks made after the steps"},
  };
  return k;
}

Schema schema_of(const std::vector<KeyDoc>& table) {
  Schema s;
  for (const auto& k : table) s[k.key] = k.spec;
  return s;
}

std::vector<std::string> reference_rows(const std::string& table) {
  return doc_rows(table);
}

std::vector<std::string> doc_rows(const std::string& table) {
  std::vector<std::string> rows;
  if (table == "steps")
    for (const auto& d : op_table()) rows.push_back("| `" + d.name + "` | " + d.doc + " |");
  if (table == "expect")
    for (const auto& d : expect_table()) rows.push_back("| `" + d.name + "` | " + d.doc + " |");
  if (table == "entries")
    for (const auto& d : entry_table()) rows.push_back("| `" + d.key + "` | " + d.doc + " |");
  if (table == "top")
    for (const auto& d : top_level_table()) rows.push_back("| `" + d.key + "` | " + d.doc + " |");
  // What `scenario export` cannot write as shell, and why: the rows' own `no_export`.
  if (table == "no-export-steps")
    for (const auto& d : op_table())
      if (!d.to_sh) rows.push_back("| `" + d.name + "` | " + d.no_export + " |");
  if (table == "no-export-expect")
    for (const auto& d : expect_table())
      if (!d.to_sh) rows.push_back("| `" + d.name + "` | " + d.no_export + " |");
  return rows;
}

std::string shell_quote(const std::string& s) {
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return o + "'";
}

std::string shell_var(const std::string& id) {
  std::string v;
  for (char c : id) v += isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return v;
}

std::string hex_bytes(const std::string& s) {
  static const char* d = "0123456789abcdef";
  std::string o;
  for (unsigned char c : s) {
    o += d[c >> 4];
    o += d[c & 15];
  }
  return o;
}

}  // namespace cowlab::scenario
