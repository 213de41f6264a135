// Fresh backing stores per scenario × driver, and observations of trees and the page cache.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cowlab/digest.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "devicemapper/devicemapper.h"
#include "scenario/internal.h"
#include "vfs/copy.h"

namespace cowlab::scenario {

namespace {

Result<std::string> run_tool(const std::vector<std::string>& argv) {
  std::string out;
  int rc = COWLAB_TRY(sys::run(argv, &out));
  if (rc != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return Error(ErrorKind::kSystem,
                 cmd + ": exit " + std::to_string(rc) + (out.empty() ? "" : ": " + out));
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Size of the loop-backed filesystems: sparse, so only what the scenario writes is used.
constexpr const char* kBackingSize = "8G";

// A mount point is a filesystem given to us whole (a guest's scratch disk); a plain directory
// (/var/tmp on the host) is shared with every other writer on the machine.
Result<bool> is_mount_point(const std::string& dir) {
  auto here = COWLAB_TRY(sys::stat(dir));
  auto parent = COWLAB_TRY(sys::stat(dir + "/.."));
  return here.st_dev != parent.st_dev || here.st_ino == parent.st_ino;
}

void load_loop_module() {
  // Guests boot without the loop module: /dev/loop-control appears once it is loaded.
  if (!sys::lstat_if_exists("/dev/loop-control").value_or(std::nullopt)) {
    std::string ignored;
    (void)sys::run({"modprobe", "loop"}, &ignored);
  }
}

// A sparse image on an autoclear loop device (the device goes away with its last user, the
// mount, even if we die), formatted with `mkfs` and mounted at b.work/mnt.
Result<std::string> loop_filesystem(Backing& b, const std::string& fstype,
                                    const std::vector<std::string>& mkfs) {
  std::string img = b.work + "/" + fstype + ".img";
  COWLAB_TRY(run_tool({"truncate", "-s", kBackingSize, img}));
  load_loop_module();
  auto loop = COWLAB_TRY(sys::loop_attach(img, sys::LoopFlags::kAutoclear));
  b.loop_device = loop.device;
  std::vector<std::string> argv = mkfs;
  argv.push_back(b.loop_device);
  COWLAB_TRY(run_tool(argv));
  std::string mnt = b.work + "/mnt";
  COWLAB_TRY(sys::mkdir(mnt, 0755));
  COWLAB_TRY(sys::mount(b.loop_device, mnt, fstype, 0, ""));
  b.loop_fstype = fstype;
  return mnt;
}

// What release() leaves: nothing (teardown); the files of a store no process holds (quiesce,
// for an image checkpoint); or the pool imported and synced, nothing mounted (sync, for a
// checkpoint cloned while the pool is live: Quiesce::kLive).
enum class Release { kTeardown, kQuiesce, kSync };

// Whether the filesystem of `dir` clones files (FICLONE): xfs with reflink and btrfs do, ext4
// does not.  Tried on a one-byte file of its own, made and removed here.
Result<bool> clones_files(const std::string& dir) {
  const std::string a = dir + "/.clone-probe", c = dir + "/.clone-probe-clone";
  auto probe = [&]() -> Result<void> {
    auto in = COWLAB_TRY(sys::open(a, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    COWLAB_TRY(sys::write_all(in.get(), "x", 1));
    auto out = COWLAB_TRY(sys::open(c, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    return sys::ficlone(out.get(), in.get());
  };
  auto r = probe();
  (void)sys::unlink(a);
  (void)sys::unlink(c);
  if (r.ok()) return true;
  // The answers of a filesystem without reflink (ext4: EOPNOTSUPP; some: EINVAL, ENOTTY).
  int e = r.error().err();
  if (e == EOPNOTSUPP || e == EINVAL || e == ENOTTY || e == EXDEV) return false;
  return std::move(r).error().with_context("probe whether " + dir + " clones files");
}

Result<void> release(const Backing& b, Release how) {
  Result<void> first;
  auto note = [&](Result<void> r) {
    if (!r.ok() && first.ok()) first = std::move(r);
  };
  if (b.work.empty()) return first;
  // Unmount everything under the work dir, deepest first; what is still busy waits for the
  // devices below to go, and is detached lazily if it stays busy.
  std::vector<std::string> busy;
  if (auto mi = sys::mountinfo(); mi.ok()) {
    std::vector<std::string> under;
    for (const auto& m : *mi)
      if (m.mount_point == b.work || m.mount_point.rfind(b.work + "/", 0) == 0)
        under.push_back(m.mount_point);
    std::sort(under.begin(), under.end(),
              [](const auto& a, const auto& c) { return a.size() > c.size(); });
    for (const auto& m : under)
      if (!sys::umount2(m, 0).ok()) busy.push_back(m);
  }
  // A worker killed with a devicemapper store open (its timeout, Ctrl-C) leaves the store's
  // thin devices and pool active: they hold the pool's loop devices and, through their files,
  // the filesystem under the store, so that filesystem's unmount above was refused.
  if (b.driver == "devicemapper") {
    auto removed = remove_store_devices(b.root + "/devicemapper");
    if (!removed.ok()) note(removed.error());
  }
  for (const auto& m : busy) {
    auto r = sys::umount2(m, 0);
    // A lazy detach leaves the filesystem alive until its last user goes: fine for a store
    // being thrown away, not for one whose files are about to be copied as a checkpoint.
    if (!r.ok()) note(how == Release::kTeardown ? sys::umount2(m, MNT_DETACH) : r);
  }
  if (!b.zpool.empty()) {
    // An exported pool's vdev file is complete and consistent (every txg synced, the labels
    // say "exported"), so a copy of it imports as the pool was.  A synced one stays imported:
    // `zpool sync` waits until every txg with dirty data is on the vdev, so a clone taken next
    // holds the store's last write (and would be a crash-consistent state even without it).
    auto r = how == Release::kTeardown  ? run_tool({"zpool", "destroy", "-f", b.zpool})
             : how == Release::kQuiesce ? run_tool({"zpool", "export", b.zpool})
                                        : run_tool({"zpool", "sync", b.zpool});
    if (!r.ok()) note(r.error());
  }
  if (how == Release::kSync) return first;
  // Our btrfs device (autoclear has usually detached it already) and loop devices the driver
  // itself attached to files under the work dir (devicemapper's loop-lvm files).
  if (auto list = sys::loop_devices(); list.ok()) {
    for (const auto& l : *list)
      if (l.device == b.loop_device || l.backing_file.rfind(b.work + "/", 0) == 0) {
        auto r = sys::loop_detach(l.device);
        // ENXIO: its autoclear detached it between the listing and now.
        if (!r.ok() && r.error().err() != ENXIO) note(r);
      }
  }
  if (how == Release::kTeardown) note(sys::remove_all(b.work));
  return first;
}

}  // namespace

Result<Backing> make_backing(const std::string& driver, const std::string& work_parent) {
  Backing b;
  b.driver = driver;
  COWLAB_TRY(sys::mkdir_all(work_parent, 0755));
  b.work = COWLAB_TRY(sys::make_temp_dir(work_parent, "cowlab-scn-" + driver + "-"));
  auto fail = [&](Error e) -> Error {
    (void)teardown_backing(b);
    return std::move(e).with_context("backing store for " + driver);
  };
  if (driver == "btrfs") {
    auto mnt = loop_filesystem(b, "btrfs", {"mkfs.btrfs", "-q", "-f"});
    if (!mnt.ok()) return fail(mnt.error());
    b.root = *mnt + "/root";
  } else if (driver == "zfs") {
    // The module may not be loaded yet (guests boot without it); a missing module shows up as
    // zpool's own "The ZFS modules are not loaded" below.
    std::string ignored;
    (void)sys::run({"modprobe", "zfs"}, &ignored);
    std::string vdev = b.work + "/zpool.img";
    if (auto r = run_tool({"truncate", "-s", kBackingSize, vdev}); !r.ok()) return fail(r.error());
    b.zpool = "cowlab" + std::to_string(::getpid()) + b.work.substr(b.work.size() - 6);
    for (auto& c : b.zpool) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    auto r = run_tool({"zpool", "create", "-f", "-o", "cachefile=none", "-O", "mountpoint=none",
                       "-O", "compression=off", b.zpool, vdev});
    if (!r.ok()) {
      b.zpool.clear();
      return fail(r.error());
    }
    b.root = b.work + "/root";
    b.storage_opts["zfs.fsname"] = b.zpool;
  } else {
    // Space is measured as the used blocks of the store's filesystem: on a directory shared with
    // other writers (the host's /var/tmp) their writes would count (negative copy-up sizes were
    // seen).  Unless the work dir is a filesystem of its own (a guest's scratch disk), make one:
    // sparse ext4 on a loop device, used by nothing but this store.
    auto own = is_mount_point(work_parent);
    if (!own.ok()) return fail(own.error());
    std::string base = b.work;
    if (!*own) {
      auto mnt = loop_filesystem(
          b, "ext4", {"mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"});
      if (!mnt.ok()) return fail(mnt.error());
      base = *mnt;
    }
    b.root = base + "/root";
    if (driver == "devicemapper") {
      // Sparse loop files: large enough for the claims' 1 GiB images, cheap when unused.
      b.storage_opts["dm.loopdatasize"] = "8G";
      b.storage_opts["dm.loopmetadatasize"] = "256M";
      b.storage_opts["dm.basesize"] = "4G";
    }
  }
  return b;
}

Result<void> teardown_backing(const Backing& b) {
  return release(b, Release::kTeardown);
}

const char* quiesce_name(Quiesce q) {
  return q == Quiesce::kLive ? "live" : "released";
}

Result<Quiesce> quiesce_backing(Backing& b) {
  // Only a pool stays live: a loop filesystem's clone would miss what its page cache holds,
  // and a devicemapper pool's metadata is only committed when it is suspended or removed.
  // Where files cannot be cloned (ext4), a copy of a live vdev could be torn: export it.
  bool live = false;
  if (!b.zpool.empty()) live = COWLAB_TRY_CTX(clones_files(b.work), "quiesce " + b.work);
  COWLAB_TRY_CTX(release(b, live ? Release::kSync : Release::kQuiesce),
                 "quiesce the backing store under " + b.work);
  if (live) return Quiesce::kLive;
  b.loop_device.clear();
  return Quiesce::kReleased;
}

Result<void> resume_backing(Backing& b, Quiesce how) {
  if (how == Quiesce::kLive) return {};
  if (!b.loop_fstype.empty()) {
    load_loop_module();
    auto loop = COWLAB_TRY(
        sys::loop_attach(b.work + "/" + b.loop_fstype + ".img", sys::LoopFlags::kAutoclear));
    b.loop_device = loop.device;
    COWLAB_TRY(sys::mount(b.loop_device, b.work + "/mnt", b.loop_fstype, 0, ""));
  }
  if (!b.zpool.empty()) {
    // -d: look for the vdev in this work dir only (a copy of the pool elsewhere has the same
    // guid); cachefile=none as at create, so no other boot imports it; -N: mount nothing (the
    // store mounts its datasets itself, and the pool's are mountpoint=none), which skips a
    // walk of every dataset: 6.7 -> 5.0 s for a 64-layer store's pool under TCG.
    COWLAB_TRY(
        run_tool({"zpool", "import", "-N", "-d", b.work, "-o", "cachefile=none", b.zpool}));
  }
  return {};
}

Result<void> save_checkpoint(const Backing& b, const std::string& dir, const CheckpointMeta& meta,
                             Quiesce how) {
  std::string tmp = dir + ".partial-" + std::to_string(::getpid());
  auto made = [&]() -> Result<void> {
    COWLAB_TRY(sys::mkdir(tmp, 0700));
    COWLAB_TRY(sys::mkdir(tmp + "/work", 0700));
    auto copied = COWLAB_TRY(vfs::copy_tree(b.work, tmp + "/work", vfs::DataCopy::kReflink));
    if (how == Quiesce::kLive && copied.copied != 0)
      return Error::invalid(std::to_string(copied.copied) +
                            " file(s) of the live pool's work dir " + b.work +
                            " were copied, not cloned: the copy could be torn");
    nlohmann::json j = {{"root", b.root.substr(b.work.size() + 1)},
                        {"loop_fstype", b.loop_fstype},
                        {"zpool", b.zpool},
                        {"storage_opts", b.storage_opts},
                        {"aliases", meta.aliases},
                        {"image_digests", meta.image_digests}};
    COWLAB_TRY(sys::write_file_atomic(tmp + "/checkpoint.json", j.dump() + "\n", 0600));
    return sys::rename(tmp, dir);
  }();
  if (!made.ok()) {
    (void)sys::remove_all(tmp);
    return std::move(made).error().with_context("image checkpoint " + dir);
  }
  return {};
}

Result<Backing> restore_backing(const std::string& driver, const std::string& work_parent,
                                const std::string& dir, RunOptions::CheckpointUse use,
                                CheckpointMeta* meta) {
  std::string file = dir + "/checkpoint.json";
  auto text = COWLAB_TRY(sys::read_file(file));
  Backing b;
  b.driver = driver;
  try {
    auto j = nlohmann::json::parse(text);
    b.root = j.at("root").get<std::string>();
    b.loop_fstype = j.at("loop_fstype").get<std::string>();
    b.zpool = j.at("zpool").get<std::string>();
    b.storage_opts = j.at("storage_opts").get<std::map<std::string, std::string>>();
    if (meta) {
      meta->aliases = j.at("aliases").get<std::map<std::string, std::string>>();
      meta->image_digests = j.at("image_digests").get<std::map<std::string, std::string>>();
    }
  } catch (const std::exception& e) {
    return Error::invalid(file + ": not an image checkpoint: " + e.what());
  }
  // Written by save_checkpoint from a path below the work dir; anything else is not ours.
  if (b.root.empty() || b.root[0] == '/' || b.root.find("..") != std::string::npos)
    return Error::invalid(file + ": store root \"" + b.root + "\" is not below the work dir");
  if (b.loop_fstype != "" && b.loop_fstype != "btrfs" && b.loop_fstype != "ext4")
    return Error::invalid(file + ": unknown loop filesystem \"" + b.loop_fstype + "\"");
  b.work = COWLAB_TRY(sys::make_temp_dir(work_parent, "cowlab-scn-" + driver + "-"));
  b.root = b.work + "/" + b.root;
  const std::string pool = b.zpool;
  b.zpool.clear();  // not ours to destroy until it is imported below
  auto fail = [&](Error e) -> Error {
    (void)teardown_backing(b);
    return std::move(e).with_context("restore image checkpoint " + dir);
  };
  if (use == RunOptions::CheckpointUse::kConsume) {
    // The last run that may use it: the checkpoint's tree becomes the work dir (a rename onto
    // the empty directory just made, on the same filesystem), and the rest of it goes.
    auto moved = sys::rename(dir + "/work", b.work);
    (void)sys::remove_all(dir);
    if (!moved.ok()) return fail(moved.error());
  } else if (auto c = vfs::copy_tree(dir + "/work", b.work, vfs::DataCopy::kReflink); !c.ok()) {
    return fail(c.error());
  }
  if (!b.loop_fstype.empty() || !pool.empty()) {
    Backing attach = b;
    attach.zpool = pool;
    auto r = resume_backing(attach, Quiesce::kReleased);
    b.loop_device = attach.loop_device;
    if (!r.ok()) return fail(r.error());
    b.zpool = pool;
  }
  return b;
}

Result<std::string> tree_digest(const std::string& root) {
  Sha256 h;
  std::vector<char> buf(1 << 16);
  std::function<Result<void>(const std::string&)> walk =
      [&](const std::string& rel) -> Result<void> {
    std::string dir = rel.empty() ? root : root + "/" + rel;
    auto entries = COWLAB_TRY(sys::read_dir(dir));
    std::sort(entries.begin(), entries.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    for (const auto& e : entries) {
      std::string r = rel.empty() ? e.name : rel + "/" + e.name;
      std::string p = root + "/" + r;
      auto st = COWLAB_TRY(sys::lstat(p));
      std::ostringstream line;
      line << r << '\0' << std::oct << st.st_mode << std::dec << ' ' << st.st_uid << ':'
           << st.st_gid;
      if (S_ISREG(st.st_mode)) line << ' ' << st.st_size;
      if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) line << ' ' << st.st_rdev;
      if (S_ISLNK(st.st_mode)) line << " -> " << COWLAB_TRY(sys::readlink(p));
      h.update(line.str());
      h.update("\n", 1);
      if (S_ISREG(st.st_mode)) {
        auto fd = COWLAB_TRY(sys::open(p, O_RDONLY | O_NOFOLLOW));
        for (;;) {
          size_t n = COWLAB_TRY(sys::read(fd.get(), buf.data(), buf.size()));
          if (n == 0) break;
          h.update(buf.data(), n);
        }
      }
      if (S_ISDIR(st.st_mode)) COWLAB_TRY(walk(r));
    }
    return {};
  };
  COWLAB_TRY_CTX(walk(""), "digest of " + root);
  return h.finish();
}

Result<uint64_t> page_cache_bytes(const std::string& root) {
  // linux/magic.h: OVERLAYFS_SUPER_MAGIC; aufs's AUFS_SUPER_MAGIC ("aufs", aufs_type.h).
  constexpr long kOverlayMagic = 0x794c7630, kAufsMagic = 0x61756673;
  std::set<std::pair<dev_t, ino_t>> seen;
  uint64_t total = 0;
  std::function<Result<void>(const std::string&, dev_t)> walk = [&](const std::string& dir,
                                                                    dev_t dev) -> Result<void> {
    for (const auto& e : COWLAB_TRY(sys::read_dir(dir))) {
      std::string p = dir + "/" + e.name;
      auto st = sys::lstat(p);
      // Gone between readdir and lstat: nothing of it is cached any more.
      if (!st.ok() && st.error().err() == ENOENT) continue;
      if (!st.ok()) return std::move(st).error();
      if (S_ISDIR(st->st_mode)) {
        if (st->st_dev != dev) {
          auto fs = COWLAB_TRY(sys::statfs(p));
          if (fs.f_type == kOverlayMagic || fs.f_type == kAufsMagic) continue;
        }
        COWLAB_TRY(walk(p, st->st_dev));
      } else if (S_ISREG(st->st_mode) && st->st_size > 0 &&
                 seen.insert({st->st_dev, st->st_ino}).second) {
        // O_NOATIME: looking must not dirty the inode it looks at.
        auto fd = COWLAB_TRY(sys::open(p, O_RDONLY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC));
        total += COWLAB_TRY(sys::resident_bytes(fd.get(), p));
      }
    }
    return {};
  };
  auto top = COWLAB_TRY(sys::lstat(root));
  COWLAB_TRY_CTX(walk(root, top.st_dev), "page cache of the store's files under " + root);
  return total;
}

}  // namespace cowlab::scenario
