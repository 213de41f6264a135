// `cowlab scenario export --format sh`: a scenario as a standalone POSIX shell script that a
// kernel maintainer can run on a bare system — mount(8), mkdir, setfattr, truncate, stat,
// btrfs, and perl (Essential in Debian) for the system calls whose errno is checked.  Steps
// come from the op table's `to_sh`; `view` expectations are checked with stat/getfattr/ls;
// expectations that need cowlab's store (changes, diff, measurements, digests) are printed
// as skipped, with the reason.  The script exits 0 when every check passed, 1 when one
// failed, 2 when its set-up failed.
#include <fnmatch.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <regex>
#include <set>

#include "cowlab/fs.h"
#include "cowlab/sys.h"
#include "scenario/internal.h"
#include "scenario/ops.h"

namespace cowlab::scenario {

namespace {

std::string field(const Fields& f, const std::string& key, const std::string& fallback = "") {
  auto it = f.find(key);
  return it == f.end() ? fallback : it->second.scalar;
}
bool has(const Fields& f, const std::string& key) {
  return f.count(key) > 0;
}
std::string sq(const std::string& s) {
  return shell_quote(s);
}
std::string hex(const std::string& s) {
  return hex_bytes(s);
}
std::string var(const std::string& id) {
  return shell_var(id);
}

const char* kPrelude = R"SH(set -u
W=${COWLAB_EXPORT_DIR:-/var/tmp}/cowlab-export.$$
failures=0
fail() { printf 'FAIL %s: expected %s, observed %s\n' "$1" "$2" "$3"; failures=$((failures+1)); }
pass() { printf 'ok   %s\n' "$1"; }
skip() { printf 'skip %s\n' "$1"; }
# sys PERL-CODE ARGS...: a system call through perl; its errno lands in $got (0 = success).
sys() { code=$1; shift; perl -MFcntl -MIO::Handle -e "$code" "$@"; got=$?; }
errno_is() { for w in $2; do if [ "$got" = "$w" ]; then pass "$1 errno $got"; return 0; fi; done; fail "$1 errno" "$2" "$got"; }
check_eq() { if [ "$2" = "$3" ]; then pass "$1 = $3"; else fail "$1" "$2" "$3"; fi; }
hexof() { perl -e 'open(F,"<",$ARGV[0]) or exit 1; local $/; my $d=<F>; print unpack("H*",defined $d ? $d : "")' "$1"; }
putfile() { perl -e 'open(F,">",$ARGV[0]) or die "$ARGV[0]: $!\n"; print F pack("H*",$ARGV[1])' "$1" "$2" || die "write $1"; }
typeof() {
  case $(stat -c %F "$1") in
    "regular file"|"regular empty file") echo file ;; directory) echo dir ;; "symbolic link") echo symlink ;;
    fifo) echo fifo ;; "character special file") echo char ;; "block special file") echo block ;; *) echo socket ;;
  esac
}
statf() { stat -c '%i %d %h %B*%b %s %.9Y %.9X %.9Z' "$1" | cut -d' ' -f"$2"; }
die() { echo "set-up failed: $*" >&2; cleanup; exit 2; }
# `when:` and `requires:` are decided here, on the kernel the script runs on (as cowlab's
# runner decides them on its own): kernel_is 'OP:MAJOR*1000+MINOR ...', feature NAME.
KREL=$(uname -r)
KV=$(( $(echo "$KREL" | cut -d. -f1) * 1000 + $(echo "$KREL" | cut -d. -f2 | sed 's/[^0-9].*//') ))
kernel_is() {
  for c in $1; do
    w=${c#*:}
    case ${c%%:*} in
      ">=") [ "$KV" -ge "$w" ] ;; "<=") [ "$KV" -le "$w" ] ;; ">") [ "$KV" -gt "$w" ] ;;
      "<") [ "$KV" -lt "$w" ] ;; *) [ "$KV" -eq "$w" ] ;;
    esac || return 1
  done
}
has_fs() { grep -qw "$1" /proc/filesystems || { modprobe -q "$1" 2>/dev/null; grep -qw "$1" /proc/filesystems; }; }
param_yes() { case $(cat "/sys/module/overlay/parameters/$1" 2>/dev/null) in [Yy1]*) return 0 ;; esac; return 1; }
# The probes of cowlab's features.cpp, one by one.
feature() {
  case $1 in
    overlay.redirect_dir|overlay.metacopy|overlay.index) has_fs overlay; param_yes "${1#overlay.}" ;;
    overlay.new_mount_api) has_fs overlay && [ "$KV" -ge 6007 ] ;;
    btrfs.quota) has_fs btrfs ;;
    dm.thin|dm.deferred_remove) [ -e /sys/module/dm_thin_pool ] || { modprobe -q dm_thin_pool 2>/dev/null; [ -e /sys/module/dm_thin_pool ]; } ;;
    zfs) [ -e /dev/zfs ] || { modprobe -q zfs 2>/dev/null; [ -e /dev/zfs ]; } ;;
    aufs) has_fs aufs ;;
    userns) [ -e /proc/self/ns/user ] && [ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null)" != 0 ] ;;
    drop_caches) [ -w /proc/sys/vm/drop_caches ] ;;
    *) return 1 ;;
  esac
}
)SH";

// mount(2) copies at most one page of option data and aufs dropped what was cut off
// (moby#9151): as cowlab's aufs driver, the branches that fit (terminating NUL included) go
// into the mount and the rest are appended one by one with `remount,append:`.
const char* kAufsMount = R"SH(# aufs_mount TARGET RW-BRANCH RO-BRANCH... (top first)
aufs_mount() {
  t=$1; o="br=$2=rw"; shift 2
  tail=",dio,xino=/dev/shm/aufs.xino"
  while [ $# -gt 0 ]; do
    n="$o:$1=ro+wh"
    [ $(( ${#n} + ${#tail} + 1 )) -le 4096 ] || break
    o=$n; shift
  done
  mount -t aufs -o "$o$tail" none "$t" || return 1
  for b in "$@"; do mount -o "remount,append:$b=ro+wh" "$t" || return 1; done
}
)SH";

// A kernel constraint (">=5.11 <6.7") as kernel_is's words ("'>=:5011 <:6007'"): the
// prelude compares numbers only, so the script never parses a version string itself.
std::string kernel_words(const std::string& constraint) {
  static const std::regex re("(>=|<=|==|<|>)\\s*([0-9]+)\\.([0-9]+)");
  std::string words;
  for (std::sregex_iterator it(constraint.begin(), constraint.end(), re), end; it != end; ++it)
    words += (words.empty() ? "" : " ") + std::string((*it)[1]) + ":" +
             std::to_string(std::stol((*it)[2]) * 1000 + std::stol((*it)[3]));
  return sq(words);
}

// The shell condition of a `when:` for `driver`: nullopt when it cannot hold (another
// driver, a later run of --repeat), "true" when nothing is left to decide at run time.
std::optional<std::string> sh_condition(const Condition& c, const std::string& driver) {
  auto has = [](const auto& v, const auto& x) {
    return std::find(v.begin(), v.end(), x) != v.end();
  };
  if (!c.drivers.empty() && !has(c.drivers, driver)) return std::nullopt;
  if (has(c.not_drivers, driver)) return std::nullopt;
  if (!c.runs.empty() && !has(c.runs, 1)) return std::nullopt;  // the script is one run
  std::string cond;
  auto add = [&](const std::string& part) { cond += (cond.empty() ? "" : " && ") + part; };
  if (!c.kernel.empty()) add("kernel_is " + kernel_words(c.kernel));
  for (const auto& f : c.features) add("feature " + sq(f));
  for (const auto& f : c.without) add("! feature " + sq(f));
  return cond.empty() ? "true" : cond;
}

// The ways an item's `cases:` can resolve for `driver`, in order; the last one's condition
// is "true" (what applies when no earlier condition holds).
struct Branch {
  std::string condition;
  Fields fields;
  std::string skip;
  std::string label;  // "case 2", "case 3 (default)", "" = no case
};
std::vector<Branch> branches(const Item& item, const std::string& driver) {
  std::vector<Branch> out;
  int n = 0;
  for (const auto& cs : item.cases) {
    ++n;
    std::string cond = "true";
    if (cs.when) {
      auto c = sh_condition(*cs.when, driver);
      if (!c) continue;
      cond = *c;
    }
    Branch b{cond, item.fields, "", "case " + std::to_string(n) + (cs.when ? "" : " (default)")};
    for (const auto& [k, v] : cs.fields) {
      if (k == "skip")
        b.skip = v.scalar;
      else
        b.fields[k] = v;
    }
    out.push_back(std::move(b));
    if (cond == "true") return out;
  }
  out.push_back({"true", item.fields, "", ""});
  return out;
}

// `if c1; then ...; elif c2; then ...; else ...; fi` over the branches; one branch whose
// condition is "true" is emitted without the if.
std::string choose(const std::vector<Branch>& bs, const std::string& what,
                   const std::function<std::string(const Branch&)>& code) {
  auto body = [&](const Branch& b) {
    std::string s = b.label.empty() ? "" : "echo " + sq("case " + what + ": " + b.label) + "\n";
    return s + (b.skip.empty() ? code(b) : "skip " + sq(what + ": " + b.skip) + "\n");
  };
  if (bs.size() == 1) return body(bs[0]);
  std::string s;
  for (size_t i = 0; i < bs.size(); ++i) {
    if (i + 1 == bs.size())
      s += "else\n";
    else
      s += std::string(i == 0 ? "if " : "elif ") + bs[i].condition + "; then\n";
    s += body(bs[i]);
  }
  return s + "fi\n";
}

struct Exporter {
  const Doc& doc;
  std::string driver;
  std::string out;
  std::vector<std::string> mounts;  // for cleanup, innermost last

  Result<void> layers() {
    for (const auto& l : doc.layers) {
      if (l.source != LayerSource::kEntries)
        return Error::invalid(
            "layer " + l.id +
            ": only `entries:` layers can be exported (tar/oci/build need cowlab)");
      std::string dir =
          driver == "btrfs" ? "\"$W/mnt/" + l.id + "\"" : "\"$W/layers/" + l.id + "\"";
      out += "\n# layer " + l.id + (l.parent.empty() ? "" : " (on " + l.parent + ")") + "\n";
      out += "L_" + var(l.id) + "=" + dir + "\n";
      if (driver == "btrfs") {
        if (l.parent.empty())
          out += "btrfs -q subvolume create $L_" + var(l.id) + " >/dev/null || die \"subvolume " +
                 l.id + "\"\n";
        else
          out += "btrfs -q subvolume snapshot $L_" + var(l.parent) + " $L_" + var(l.id) +
                 " >/dev/null || die \"snapshot " + l.id + "\"\n";
      } else {
        out += "mkdir -p $L_" + var(l.id) + " || die mkdir\n";
      }
      std::string mtimes;
      std::set<std::string> created;
      for (const auto& e : l.entries) COWLAB_TRY(entry(e, "$L_" + var(l.id), mtimes, created));
      out += mtimes;
    }
    return {};
  }

  Result<void> entry(const Entry& e, const std::string& root, std::string& mtimes,
                     std::set<std::string>& created) {
    const Fields& f = e.fields;
    std::string type = field(f, "type", "file");
    std::string rel = field(f, "path");
    while (rel.size() > 1 && rel.back() == '/') rel.pop_back();
    std::string p = "\"" + root + "\"/" + sq(rel);
    auto slash = rel.find_last_of('/');
    if (type == "whiteout" && created.count(rel)) {
      // The OCI layer spec: "Files that are present in the same layer as a whiteout file can
      // only be hidden by whiteout files in subsequent layers" — cowlab's applier keeps the
      // entry, so the script writes no whiteout (one would hide or delete it here).
      out += "# whiteout of " + rel + ": an entry of this layer, which it does not hide\n";
      return {};
    }
    if (type != "whiteout" && type != "opaque") created.insert(rel);
    if (slash != std::string::npos)
      out += "mkdir -p \"" + root + "\"/" + sq(rel.substr(0, slash)) + "\n";
    if (type == "whiteout" || type == "opaque") {
      if (driver == "btrfs") {
        // The snapshot holds the parent's files: a whiteout deletes, an opaque dir empties.
        out += "rm -rf " + p + "\n";
        if (type == "opaque") out += "mkdir -p " + p + "\n";
      } else if (driver == "overlay") {
        if (type == "whiteout")
          out += "rm -rf " + p + "; mknod " + p + " c 0 0 || die whiteout\n";
        else
          out += "mkdir -p " + p + " && setfattr -n trusted.overlay.opaque -v y " + p +
                 " || die opaque\n";
      } else {  // aufs
        std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
        std::string dirp = slash == std::string::npos ? "" : rel.substr(0, slash + 1);
        if (type == "whiteout")
          out += ": > \"" + root + "\"/" + sq(dirp + ".wh." + name) + " || die whiteout\n";
        else
          out += "mkdir -p " + p + " && : > " + p + "/.wh..wh..opq || die opaque\n";
      }
      return {};
    }
    // A whiteout of the same path earlier in this layer (or the parent's, on aufs) followed
    // by a new entry: the new entry replaces the whiteout, and a directory becomes opaque so
    // the lower directory's entries stay hidden (what cowlab's applier does).
    std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
    std::string wh =
        "\"" + root + "\"/" +
        sq((slash == std::string::npos ? "" : rel.substr(0, slash + 1)) + ".wh." + name);
    if (driver == "overlay" && type == "dir")
      out += "if [ -c " + p + " ]; then rm -f " + p + " && mkdir " + p +
             " && setfattr -n trusted.overlay.opaque -v y " + p + "; fi\n";
    if (driver == "aufs") {
      if (type == "dir")
        out += "if [ -e " + wh + " ]; then rm -f " + wh + "; mkdir -p " + p + "; : > " + p +
               "/.wh..wh..opq; fi\n";
      else
        out += "rm -f " + wh + "\n";
    }
    if (type == "dir") {
      out += "mkdir -p " + p + " || die mkdir\n";
    } else if (type == "symlink") {
      out += "rm -rf " + p + "; ln -s " + sq(field(f, "target")) + " " + p + " || die symlink\n";
    } else if (type == "hardlink") {
      out += "rm -rf " + p + "; ln \"" + root + "\"/" + sq(field(f, "target")) + " " + p +
             " || die link\n";
    } else if (type == "fifo") {
      out += "rm -rf " + p + "; mkfifo " + p + " || die mkfifo\n";
    } else if (type == "char" || type == "block") {
      std::string rd = field(f, "rdev");
      out += "rm -rf " + p + "; mknod " + p + (type == "char" ? " c " : " b ") +
             rd.substr(0, rd.find(':')) + " " + rd.substr(rd.find(':') + 1) + " || die mknod\n";
    } else {
      out += "rm -rf " + p + "\n";
      bool sparse = field(f, "sparse") == "true";
      if (has(f, "content"))
        // Quoted: an empty file's hex is "" and must still be putfile's second argument.
        out += "putfile " + p + " '" + hex(decode_bytes(field(f, "content"))) + "'\n";
      if (has(f, "size")) {
        uint64_t size = *parse_size(field(f, "size"));
        std::string pattern = field(f, "pattern", "random");
        if (sparse || pattern == "zero") {
          // cowlab's applier stores whole zero blocks as holes: truncate(1) does the same.
          out += (has(f, "content") ? "" : ": > " + p + "; ") + std::string("truncate -s ") +
                 std::to_string(size) + " " + p + " || die truncate\n";
        } else if (pattern == "text") {
          out +=
              "perl -e 'print substr(\"cowlab generated text line 0123456789 "
              "abcdefghijklmnopqrstuvwxyz\\n\" x " +
              std::to_string(size / 65 + 1) + ",0," + std::to_string(size) + ")' > " + p +
              " || die write\n";
        } else {
          // Not cowlab's seeded bytes: `random` content is random here too (see docs).
          out += "head -c " + std::to_string(size) + " /dev/urandom > " + p + " || die write\n";
        }
      }
      if (!has(f, "content") && !has(f, "size")) out += ": > " + p + " || die create\n";
    }
    if (type != "symlink" && type != "hardlink") {
      std::string owner = field(f, "owner", "0:0");
      out += "chown -h " + owner + " " + p + "\n";
      mode_t def = type == "dir" ? 0755 : 0644;
      std::string mode = has(f, "mode") ? field(f, "mode") : (def == 0755 ? "0755" : "0644");
      if (type != "symlink") out += "chmod " + mode + " " + p + "\n";
    } else if (type == "symlink") {
      out += "chown -h " + field(f, "owner", "0:0") + " " + p + "\n";
    }
    if (has(f, "xattrs"))
      for (const auto& [k, v] : f.at("xattrs").map)
        out += "setfattr -h -n " + sq(k) + " -v 0x" + hex(decode_bytes(v)) + " " + p +
               " || die setfattr\n";
    if (type != "hardlink")
      mtimes = "touch -h -d @" + field(f, "mtime", "1700000000") + " " + p + "\n" + mtimes;
    return {};
  }

  std::vector<std::string> chain(const std::string& image) {
    std::vector<std::string> ids;  // top first
    std::string cur = image;
    while (!cur.empty()) {
      ids.push_back(cur);
      std::string parent;
      for (const auto& l : doc.layers)
        if (l.id == cur) parent = l.parent;
      cur = parent;
    }
    return ids;
  }

  Result<void> containers(const std::map<std::string, std::string>& options) {
    for (const auto& c : doc.containers) {
      bool on_layer = std::any_of(doc.layers.begin(), doc.layers.end(),
                                  [&](const LayerDef& l) { return l.id == c.image; });
      if (!on_layer)
        return Error::invalid("container " + c.id +
                              ": a container on a container cannot be exported");
      if (!c.size.empty())
        out += "# container " + c.id + ": size " + c.size + " (quota) is not reproduced\n";
      std::string v = var(c.id);
      out += "\n# container " + c.id + " on " + c.image + "\n";
      if (driver == "btrfs") {
        out += "ROOT_" + v + "=\"$W/mnt/c-" + c.id + "\"\n";
        out += "btrfs -q subvolume snapshot $L_" + var(c.image) + " \"$ROOT_" + v +
               "\" >/dev/null || die \"snapshot " + c.id + "\"\n";
        continue;
      }
      std::string base = "\"$W/c/" + c.id + "\"";
      out += "mkdir -p " + base + "/upper " + base + "/work " + base + "/merged || die mkdir\n";
      out += "ROOT_" + v + "=" + base + "/merged\n";
      std::string lowers;
      for (const auto& id : chain(c.image)) {
        if (driver == "overlay")
          lowers += (lowers.empty() ? "" : ":") + std::string("$L_") + var(id);
        else
          lowers += " \"$L_" + var(id) + "\"";
      }
      if (driver == "overlay") {
        // As cowlab's overlay driver: index=off (a copy of a mount must not fail on the
        // index's uuid check), then the scenario's overlay.mountopt.
        std::string opts = "lowerdir=" + lowers + ",upperdir=" + base + "/upper,workdir=" + base +
                           "/work,index=off";
        auto mo = options.find("overlay.mountopt");
        if (mo != options.end()) opts += "," + mo->second;
        out += "mount -t overlay overlay -o \"" + opts + "\" \"$ROOT_" + v + "\" || die \"mount " +
               c.id + "\"\n";
      } else {
        out += "aufs_mount \"$ROOT_" + v + "\" " + base + "/upper" + lowers + " || die \"mount " +
               c.id + "\"\n";
      }
      mounts.push_back("\"$ROOT_" + v + "\"");
    }
    return {};
  }

  std::vector<std::string> targets(const Fields& f) {
    std::vector<std::string> out_ids;
    auto it = f.find("in");
    if (it == f.end()) return out_ids;
    for (const auto& pat : it->second.list)
      for (const auto& c : doc.containers)
        if (::fnmatch(pat.c_str(), c.id.c_str(), 0) == 0 &&
            std::find(out_ids.begin(), out_ids.end(), c.id) == out_ids.end())
          out_ids.push_back(c.id);
    return out_ids;
  }

  Result<void> steps() {
    for (const auto& st : doc.steps) {
      const OpDef& def = *find_op(st.kind);
      std::string what = "step " + std::to_string(st.index) + " " + st.kind;
      if (!def.to_sh) return Error::invalid(what + ": cannot be exported to sh: " + def.no_export);
      out += "\n# " + what + "\n";
      out += choose(branches(st, driver), what, [&](const Branch& b) {
        const Fields& f = b.fields;
        std::string want;
        if (has(f, "errno"))
          for (const auto& e : f.at("errno").list)
            want += (want.empty() ? "" : " ") + std::to_string(errno_from_name(e));
        else
          want = "0";
        if (def.target == Target::kNone)
          return def.to_sh(ShellCall{f, "", driver, what}) + "errno_is " + sq(what) + " " +
                 sq(want) + "\n";
        std::string code;
        for (const auto& id : targets(f)) {
          code += def.to_sh(ShellCall{f, "$ROOT_" + var(id), driver, what + " in " + id, id});
          code += "errno_is " + sq(what + " in " + id) + " " + sq(want) + "\n";
        }
        return code;
      });
    }
    return {};
  }

  void expectations() {
    for (const auto& e : doc.expect) {
      const ExpectDef& def = *find_expect(e.kind);
      std::string what = "expect " + std::to_string(e.index) + " " + e.kind;
      out += "\n# " + what + "\n";
      out += choose(branches(e, driver), what, [&](const Branch& b) -> std::string {
        const Fields& f = b.fields;
        if (!def.to_sh) return "skip " + sq(what + ": needs cowlab (" + def.no_export + ")") + "\n";
        bool container = std::any_of(doc.containers.begin(), doc.containers.end(),
                                     [&](const ContainerDef& c) { return c.id == field(f, "in"); });
        if (!container)
          return "skip " +
                 sq(what + ": a view of layer " + field(f, "in") + " needs cowlab's mount of it") +
                 "\n";
        return def.to_sh(ShellCall{f, "$ROOT_" + var(field(f, "in")), driver, what});
      });
    }
  }
};

}  // namespace

// The `view` row's shell form (ops.cpp refers to it).
std::string view_to_sh(const ShellCall& c) {
  const Fields& f = c.f;
  std::string w = c.what + " " + field(f, "in") + ":" + field(f, "path");
  std::string s = "P=" + c.path("path") + "\n";
  s += "if [ -e \"$P\" ] || [ -L \"$P\" ]; then ex=true; else ex=false; fi\n";
  s += "check_eq " + sq(w + " exists") + " " + field(f, "exists", "true") + " $ex\n";
  if (field(f, "exists", "true") != "true") return s;
  s += "if [ $ex = true ]; then\n  :\n";  // a view that checks only existence has no body
  auto eq = [&](const std::string& name, const std::string& want, const std::string& observed) {
    s += "  check_eq " + sq(w + " " + name) + " " + sq(want) + " \"" + observed + "\"\n";
  };
  if (has(f, "type")) eq("type", field(f, "type"), "$(typeof \"$P\")");
  if (has(f, "content"))
    eq("content (hex)", hex(decode_bytes(field(f, "content"))), "$(hexof \"$P\")");
  if (has(f, "size"))
    eq("size", std::to_string(*parse_size(field(f, "size"))), "$(stat -c %s \"$P\")");
  if (has(f, "mode")) {
    char m[16];
    std::snprintf(m, sizeof m, "%o",
                  static_cast<unsigned>(std::stoul(field(f, "mode"), nullptr, 8)));
    eq("mode", m, "$(stat -c %a \"$P\")");
  }
  if (has(f, "owner")) eq("owner", field(f, "owner"), "$(stat -c %u:%g \"$P\")");
  if (has(f, "target")) eq("target", field(f, "target"), "$(readlink \"$P\")");
  if (has(f, "digest"))
    eq("digest", field(f, "digest"), "sha256:$(sha256sum < \"$P\" | cut -d' ' -f1)");
  if (has(f, "same_inode_as"))  // both sides are observed: the expected one too, not quoted
    s += "  check_eq " + sq(w + " same_inode_as " + field(f, "same_inode_as")) +
         " \"$(stat -c %d:%i \"" + c.root + "\"/" + sq(field(f, "same_inode_as")) +
         ")\" \"$(stat -c %d:%i \"$P\")\"\n";
  if (has(f, "xattr"))
    for (const auto& [k, v] : f.at("xattr").map)
      eq("xattr " + k + " (hex)", hex(decode_bytes(v)),
         "$(getfattr -h --absolute-names --only-values -n " + sq(k) +
             " \"$P\" 2>/dev/null | od -An -tx1 -v | tr -d ' \\n')");
  if (has(f, "xattr_absent"))
    for (const auto& k : f.at("xattr_absent").list)
      eq("xattr_absent " + k, "absent",
         "$(getfattr -h --absolute-names -n " + sq(k) +
             " \"$P\" >/dev/null 2>&1 && echo present || echo absent)");
  if (has(f, "nlink")) eq("nlink", field(f, "nlink"), "$(stat -c %h \"$P\")");
  if (has(f, "mtime")) eq("mtime", field(f, "mtime"), "$(stat -c %Y \"$P\")");
  for (const char* k : {"allocated_min", "allocated_max"}) {
    if (!has(f, k)) continue;
    std::string bound = std::to_string(static_cast<uint64_t>(*parse_size(field(f, k))));
    s += "  a=$(( $(stat -c '%b * %B' \"$P\") ))\n";
    s += std::string("  if [ \"$a\" ") + (std::string(k) == "allocated_min" ? "-ge" : "-le") + " " +
         bound + " ]; then pass " + sq(w + " allocated " + bound) + "; else fail " +
         sq(w + " allocated") + " " +
         sq(std::string(std::string(k) == "allocated_min" ? ">= " : "<= ") + bound) +
         " \"$a\"; fi\n";
  }
  if (has(f, "listing")) {
    std::vector<std::string> want = f.at("listing").list;
    std::sort(want.begin(), want.end());
    std::string joined;
    for (const auto& x : want) joined += (joined.empty() ? "" : " ") + x;
    eq("listing", joined, "$(ls -A \"$P\" | LC_ALL=C sort | tr '\\n' ' ' | sed 's/ $//')");
  }
  for (const char* k : {"listing_includes", "listing_excludes"}) {
    if (!has(f, k)) continue;
    bool inc = std::string(k) == "listing_includes";
    for (const auto& x : f.at(k).list)
      eq(std::string(k) + " " + x, inc ? "present" : "absent",
         "$([ -e \"$P\"/" + sq(x) + " ] || [ -L \"$P\"/" + sq(x) +
             " ] && echo present || echo absent)");
  }
  if (has(f, "since")) {
    static const std::map<std::string, int> col = {{"ino", 1},    {"dev", 2},  {"nlink", 3},
                                                   {"blocks", 4}, {"size", 5}, {"mtime", 6},
                                                   {"atime", 7},  {"ctime", 8}};
    std::string cap = "$CAP_" + field(f, "since");
    for (const char* key : {"same", "changed"}) {
      if (!has(f, key)) continue;
      for (const auto& k : f.at(key).list) {
        std::string then =
            "$(echo \"" + cap + "\" | cut -d' ' -f" + std::to_string(col.at(k)) + ")";
        std::string now = "$(statf \"$P\" " + std::to_string(col.at(k)) + ")";
        if (std::string(key) == "same") {
          s += "  check_eq " + sq(w + " " + k + " same since " + field(f, "since")) + " \"" + then +
               "\" \"" + now + "\"\n";
        } else {
          s += "  if [ \"" + then + "\" != \"" + now + "\" ]; then pass " +
               sq(w + " " + k + " changed") + "; else fail " +
               sq(w + " " + k + " changed since " + field(f, "since")) + " \"not " + then +
               "\" \"" + now + "\"; fi\n";
        }
      }
    }
  }
  s += "fi\n";
  return s;
}

Result<std::string> export_shell(const Scenario& scenario, const std::string& driver) {
  const Scenario::Impl& s = scenario.impl();
  if (driver != "overlay" && driver != "aufs" && driver != "btrfs")
    return Error::usage("scenario export: --driver must be overlay, aufs or btrfs (got \"" +
                        driver + "\")");
  if (s.docs.size() != 1)
    return Error::usage("scenario export: " + s.file + " has " + std::to_string(s.docs.size()) +
                        " sweep points; export one point (replace the sweep by its values)");
  const Doc& doc = s.docs[0];
  const Requirements& req = s.requires_;
  auto listed = [](const std::vector<std::string>& v, const std::string& x) {
    return std::find(v.begin(), v.end(), x) != v.end();
  };
  if ((!req.drivers.empty() && !listed(req.drivers, driver)) || listed(req.not_drivers, driver))
    return Error::invalid("scenario export: " + s.name + " does not apply to " + driver +
                          " (its requires: names the drivers it runs on)");
  Exporter ex{doc, driver, "", {}};
  std::string head = "#!/bin/sh\n# " + s.name + ": exported by `cowlab scenario export " + s.file +
                     " --driver " + driver + " --format sh`.\n";
  std::string desc = s.description;
  std::replace(desc.begin(), desc.end(), '\n', ' ');
  head += "# " + desc + "\n";
  for (const auto& l : s.links) head += "# " + l + "\n";
  head +=
      "# `requires:` and `cases:` are decided when it runs, on that kernel; needs root, "
      "perl, coreutils, attr" +
      std::string(driver == "btrfs" ? ", btrfs-progs" : "") +
      ".  Exit: 0 every check passed, 1 a check failed, 2 set-up failed, 3 the scenario "
      "does not apply to this kernel.\n";
  auto options = options_for(doc.options, driver);
  // `requires:` kernel and features: a kernel the scenario does not apply to is a skip, as
  // in cowlab's results (exit 3 so that it is never read as a pass).
  std::string requires_sh;
  auto not_applicable = [&](const std::string& cond, const std::string& why) {
    requires_sh += "if ! " + cond + "; then echo " + sq(s.name + ": skip: " + why) +
                   "\" ($KREL)\"; exit 3; fi\n";
  };
  if (!req.kernel.empty())
    not_applicable("kernel_is " + kernel_words(req.kernel), "needs kernel " + req.kernel);
  for (const auto& f : req.features)
    not_applicable("feature " + sq(f), "needs kernel feature " + f);
  ex.out = head + kPrelude + requires_sh;
  if (driver == "aufs") ex.out += kAufsMount;
  std::string cleanup = "cleanup() {\n";
  std::string setup;
  if (driver == "btrfs") {
    setup =
        "mkdir -p \"$W/mnt\" || die mkdir\ntruncate -s 1G \"$W/btrfs.img\" && mkfs.btrfs -q "
        "\"$W/btrfs.img\" >/dev/null "
        "|| die mkfs.btrfs\nmount -o loop \"$W/btrfs.img\" \"$W/mnt\" || die \"mount btrfs\"\n";
  }
  std::string body;
  std::swap(ex.out, body);
  COWLAB_TRY(ex.layers());
  COWLAB_TRY(ex.containers(options));
  // Descriptors opened by the steps are closed before the unmounts.
  for (int fd = 3; fd <= 9; ++fd) cleanup += "  exec " + std::to_string(fd) + "<&- 2>/dev/null\n";
  // Mount holders (`hold_mount`) end before the unmounts.
  cleanup += "  for h in ${HOLDERS:-}; do kill \"$h\" 2>/dev/null; wait \"$h\" 2>/dev/null; done\n";
  for (auto it = ex.mounts.rbegin(); it != ex.mounts.rend(); ++it)
    cleanup += "  umount " + *it + " 2>/dev/null\n";
  if (driver == "btrfs") cleanup += "  umount \"$W/mnt\" 2>/dev/null\n";
  cleanup += "  rm -rf \"$W\"\n}\n";
  std::string layers_and_containers;
  std::swap(ex.out, layers_and_containers);
  COWLAB_TRY(ex.steps());
  ex.expectations();
  std::string checks = ex.out;
  std::string script =
      body + cleanup + "mkdir -p \"$W\" || die mkdir\n" + setup + layers_and_containers + checks;
  script += "\ncleanup\nif [ $failures -gt 0 ]; then echo \"" + s.name +
            ": $failures check(s) failed\"; exit 1; fi\necho \"" + s.name +
            ": all checks passed\"\nexit 0\n";
  return script;
}

}  // namespace cowlab::scenario
