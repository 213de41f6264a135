// The invariants checked at every crash state (cowlab/crash.h lists them).
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cowlab/digest.h"
#include "cowlab/io.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "cowlab/sys_text.h"
#include "core/archive_internal.h"
#include "crash/internal.h"

namespace cowlab::crash {

namespace {

std::string normalise(std::string p) {
  while (p.rfind("./", 0) == 0) p.erase(0, 2);
  while (!p.empty() && p[0] == '/') p.erase(0, 1);
  while (!p.empty() && p.back() == '/') p.pop_back();
  return p == "." ? "" : p;
}

std::string base_name(const std::string& p) {
  auto s = p.find_last_of('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

Result<Manifest> manifest_of(struct archive* a, const std::string& what) {
  Manifest m;
  struct archive_entry* e = nullptr;
  std::vector<char> buf(1 << 16);
  for (;;) {
    int r = archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK) return Error::invalid(what + ": " + archive_error_string(a));
    std::string path = normalise(archive_entry_pathname(e) ? archive_entry_pathname(e) : "");
    if (path.empty()) continue;
    ManifestEntry me;
    std::string base = base_name(path);
    if (const char* hl = archive_entry_hardlink(e)) {
      me.type = 'h';
      me.target = normalise(hl);
    } else if (base == ".wh..wh..opq") {
      me.type = 'o';
    } else if (base.rfind(".wh.", 0) == 0) {
      me.type = 'w';
    } else {
      switch (archive_entry_filetype(e)) {
        case AE_IFREG: {
          me.type = 'f';
          Sha256 h;
          uint64_t n = 0;
          for (;;) {
            la_ssize_t got = archive_read_data(a, buf.data(), buf.size());
            if (got < 0) return Error::invalid(what + ": " + path + ": " + archive_error_string(a));
            if (got == 0) break;
            h.update(buf.data(), static_cast<size_t>(got));
            n += static_cast<uint64_t>(got);
          }
          me.size = n;
          me.digest = h.finish();
          break;
        }
        case AE_IFDIR:
          me.type = 'd';
          break;
        case AE_IFLNK:
          me.type = 'l';
          me.target = archive_entry_symlink(e) ? archive_entry_symlink(e) : "";
          break;
        default:
          me.type = 'c';
          break;
      }
    }
    m[path] = std::move(me);
  }
  return m;
}

using ArchivePtr = std::unique_ptr<struct archive, int (*)(struct archive*)>;
ArchivePtr new_reader() {
  ArchivePtr a(archive_read_new(), archive_read_free);
  archive_read_support_format_tar(a.get());
  archive_read_support_filter_all(a.get());
  return a;
}

// Regular files below `root` (relative path → size, digest).  Symlinks are not followed.
Result<Manifest> tree_files(const std::string& root) {
  Manifest m;
  std::vector<char> buf(1 << 16);
  std::function<Result<void>(const std::string&)> walk =
      [&](const std::string& rel) -> Result<void> {
    std::string dir = rel.empty() ? root : root + "/" + rel;
    for (const auto& e : COWLAB_TRY(sys::read_dir(dir))) {
      std::string r = rel.empty() ? e.name : rel + "/" + e.name;
      auto st = COWLAB_TRY(sys::lstat(root + "/" + r));
      if (S_ISDIR(st.st_mode)) {
        COWLAB_TRY(walk(r));
      } else if (S_ISREG(st.st_mode)) {
        auto fd = COWLAB_TRY(sys::open(root + "/" + r, O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        Sha256 h;
        for (;;) {
          size_t n = COWLAB_TRY(sys::read(fd.get(), buf.data(), buf.size()));
          if (n == 0) break;
          h.update(buf.data(), n);
        }
        m[r] = ManifestEntry{'f', static_cast<uint64_t>(st.st_size), h.finish(), ""};
      }
    }
    return {};
  };
  COWLAB_TRY(walk(""));
  return m;
}

std::string describe(const ManifestEntry& e) {
  switch (e.type) {
    case 'f':
      return "regular file of " + std::to_string(e.size) + " bytes (" + e.digest.substr(7, 12) +
             ")";
    case 'l':
      return "symlink to " + e.target;
    case 'h':
      return "hard link to " + e.target;
    case 'w':
      return "whiteout";
    case 'o':
      return "opaque marker";
    case 'd':
      return "directory";
    default:
      return "special file";
  }
}

// What is wrong with an exported layer against its tar ("" = nothing).
std::string compare_layer(const Manifest& want, const Manifest& got, bool native_opaque) {
  auto resolve = [&](const std::string& path) -> const ManifestEntry* {
    auto it = got.find(path);
    for (int hops = 0; it != got.end() && it->second.type == 'h' && hops < 8; ++hops)
      it = got.find(it->second.target);
    return it == got.end() ? nullptr : &it->second;
  };
  for (const auto& [path, w] : want) {
    const ManifestEntry* g = nullptr;
    switch (w.type) {
      case 'd':
      case 'c':
        continue;  // directories and devices are not part of the content invariant
      case 'o':
        if (!native_opaque) continue;  // delete-in-place drivers export what it removed instead
        [[fallthrough]];
      case 'w':
      case 'l':
        g = got.count(path) ? &got.at(path) : nullptr;
        if (!g) return path + ": missing (want " + describe(w) + ")";
        if (g->type != w.type || g->target != w.target)
          return path + ": " + describe(*g) + ", want " + describe(w);
        continue;
      case 'h':
        if (!got.count(path)) return path + ": missing (want " + describe(w) + ")";
        continue;
      case 'f':
        g = resolve(path);
        if (!g) return path + ": missing (want " + describe(w) + ")";
        if (g->type != 'f' || g->size != w.size || g->digest != w.digest)
          return path + ": " + describe(*g) + ", want " + describe(w);
        continue;
    }
  }
  for (const auto& [path, g] : got)
    if (g.type == 'f' && !want.count(path))
      return path + ": " + describe(g) + " that the layer's tar does not have";
  return "";
}

}  // namespace

Result<Manifest> read_manifest(const std::string& tar) {
  archive_internal::Utf8Ctype utf8;  // UTF-8 pax names (archive_internal.h)
  auto a = new_reader();
  if (archive_read_open_filename(a.get(), tar.c_str(), 1 << 16) != ARCHIVE_OK)
    return Error::invalid("read " + tar + ": " + archive_error_string(a.get()));
  return manifest_of(a.get(), tar);
}

Result<Manifest> read_manifest_from_string(const std::string& bytes) {
  archive_internal::Utf8Ctype utf8;  // UTF-8 pax names (archive_internal.h)
  auto a = new_reader();
  if (archive_read_open_memory(a.get(), bytes.data(), bytes.size()) != ARCHIVE_OK)
    return Error::invalid(std::string("read exported diff: ") + archive_error_string(a.get()));
  return manifest_of(a.get(), "exported diff");
}

static bool is_cache_id(const std::string& name) {
  return name.size() == 32 && name.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// zfs: the dataset the driver keeps its layers below (status() "Parent Dataset").
static Result<std::string> zfs_parent_dataset(Driver& d) {
  for (const auto& [k, v] : d.status())
    if (k == "Parent Dataset" && !v.empty()) return v;
  return Error::corrupt("orphan check: zfs status names no parent dataset");
}

// zfs: the filesystems directly below the driver's parent dataset (status() "Parent Dataset"),
// <fsname>/<cache id>.
static Result<std::set<std::string>> zfs_layer_datasets(Driver& d) {
  std::string parent = COWLAB_TRY(zfs_parent_dataset(d));
  std::string out;
  int rc = COWLAB_TRY(
      sys::run({"zfs", "list", "-H", "-o", "name", "-t", "filesystem", "-d", "1", parent}, &out));
  if (rc != 0)
    return Error(ErrorKind::kSystem,
                 "zfs list " + parent + ": exit " + std::to_string(rc) + ": " + out);
  std::set<std::string> ids;
  for (std::string name : sys::split_lines(out)) {
    if (name.rfind(parent + "/", 0) != 0) continue;
    name.erase(0, parent.size() + 1);
    if (is_cache_id(name)) ids.insert(name);
  }
  return ids;
}

std::vector<std::string> zfs_stray_snapshots(const std::string& zfs_list_output,
                                             const std::string& parent) {
  std::vector<std::string> out;
  for (const std::string& line : sys::split_lines(zfs_list_output)) {
    auto tab = line.find('\t');
    std::string name = line.substr(0, tab);
    std::string clones = tab == std::string::npos ? "" : line.substr(tab + 1);
    while (!clones.empty() && (clones.back() == ' ' || clones.back() == '\r')) clones.pop_back();
    if (name.rfind(parent + "/", 0) != 0 || name.find('@') == std::string::npos) continue;
    if (clones.empty() || clones == "-") out.push_back(name);
  }
  return out;
}

// zfs: the snapshots of the layer datasets, each with its clones.  The driver keeps a
// snapshot only as the origin of a child (destroyed deferred: it goes with the clone), so one
// without a clone is data no layer holds: a leak.
static Result<std::vector<std::string>> zfs_snapshot_leaks(Driver& d) {
  std::string parent = COWLAB_TRY(zfs_parent_dataset(d));
  std::string out;
  int rc = COWLAB_TRY(sys::run(
      {"zfs", "list", "-H", "-p", "-o", "name,clones", "-t", "snapshot", "-d", "2", parent}, &out));
  if (rc != 0)
    return Error(ErrorKind::kSystem,
                 "zfs list snapshots of " + parent + ": exit " + std::to_string(rc) + ": " + out);
  return zfs_stray_snapshots(out, parent);
}

// The cache ids a driver holds data for, read from its home's layout (Docker's layouts:
// vfs dir/<id>, overlay <id>/ beside l/ and the layers l/'s short links point to, btrfs
// subvolumes/<id>, aufs diff/<id>, mnt/<id> and layers/<id> — create makes them in that order,
// so a cut create leaves directories without the layers file —, devicemapper metadata/<id>
// device records not marked deleted, zfs <fsname>/<id> datasets).  Read from the layout, not
// asked of the driver (Driver::list): the oracle must not share the code it checks.  Cache ids
// are 32 hex digits.
static Result<std::set<std::string>> driver_layer_dirs(const std::string& root,
                                                       const std::string& driver, Driver& d) {
  if (driver == "zfs") return zfs_layer_datasets(d);
  static const std::map<std::string, std::vector<std::string>> kLayerDirs = {
      {"vfs", {"dir"}},
      {"overlay", {""}},
      {"btrfs", {"subvolumes"}},
      {"devicemapper", {"metadata"}},
      {"aufs", {"diff", "mnt", "layers"}}};
  auto it = kLayerDirs.find(driver);
  if (it == kLayerDirs.end())
    return Error::not_supported("orphan check: no layout known for driver " + driver);
  std::set<std::string> out;
  for (const auto& sub : it->second) {
    std::string dir = root + "/" + driver + (sub.empty() ? "" : "/" + sub);
    if (!COWLAB_TRY(sys::lstat_if_exists(dir))) continue;
    for (const auto& e : COWLAB_TRY(sys::read_dir(dir))) {
      std::string id = e.name;
      // aufs layers/<id>.tmp-*: a cut write of the layers file is the layer's data too.
      if (driver == "aufs" && sys::is_atomic_write_temp_name(id)) id.resize(id.rfind(".tmp-"));
      if (!is_cache_id(id)) continue;
      if (driver == "devicemapper") {
        auto text = COWLAB_TRY(sys::read_file(dir + "/" + e.name));
        auto j = nlohmann::json::parse(text, nullptr, false);
        if (j.is_object() && j.value("deleted", false)) continue;  // deferred deletion pending
      }
      out.insert(id);
    }
  }
  if (driver == "overlay") {
    // l/<short id> -> ../<id>/diff: a link left behind names the layer it was made for.
    std::string links = root + "/overlay/l";
    if (COWLAB_TRY(sys::lstat_if_exists(links))) {
      for (const auto& e : COWLAB_TRY(sys::read_dir(links))) {
        auto t = sys::readlink(links + "/" + e.name);
        if (!t.ok() || t->rfind("../", 0) != 0) continue;
        std::string id = t->substr(
            3, t->find('/', 3) == std::string::npos ? std::string::npos : t->find('/', 3) - 3);
        if (is_cache_id(id)) out.insert(id);
      }
    }
  }
  return out;
}

std::vector<Finding> check_state(const std::string& root, const std::string& driver,
                                 const std::map<std::string, std::string>& storage_opts,
                                 const Expectation& want) {
  std::vector<Finding> out;
  const auto& phases = *want.phases;
  auto fail = [&](const std::string& invariant, const std::string& observed) {
    Finding f;
    f.phase = want.running ? phases[*want.running].name : "";
    f.invariant = invariant;
    f.observed = observed;
    out.push_back(std::move(f));
  };

  // Layer id → what the scenario did to it, from the phases that finished or were running.
  std::map<std::string, size_t> creator;  // id → phase that creates it
  std::set<std::string> removed, removing, known;
  for (size_t i = 0; i < phases.size(); ++i) {
    const auto& p = phases[i];
    if (p.kind == PhaseKind::kImport || p.kind == PhaseKind::kCreate) {
      creator[p.id] = i;
      known.insert(p.id);
    }
    if (p.kind == PhaseKind::kRemove) {
      if (want.done.count(i)) removed.insert(p.id);
      if (want.running == i) removing.insert(p.id);
    }
  }

  StoreOptions so;
  so.root = root;
  so.driver = driver;
  so.storage_opts = storage_opts;
  auto opened = LayerStore::open(so);
  if (!opened.ok()) {
    fail("store-opens", opened.error().message());
    return out;
  }
  auto& store = **opened;
  std::vector<std::string> mounted;  // layer ids we mounted, released at the end

  auto listed_r = store.layers();
  if (!listed_r.ok()) {
    fail("store-opens", "layers: " + listed_r.error().message());
    (void)store.driver().cleanup();
    return out;
  }
  std::map<std::string, LayerInfo> listed;
  for (const auto& l : *listed_r) {
    if (l.incomplete) {
      fail("no-leftovers", "layer " + l.id + " is still marked incomplete after recovery");
      continue;
    }
    listed[l.id] = l;
  }

  for (const auto& [id, info] : listed)
    if (!known.count(id))
      fail("no-unknown-layer", "layer " + id + " is listed but the scenario never created it");

  for (const auto& [id, phase] : creator) {
    bool created = want.done.count(phase) > 0;
    bool is_listed = listed.count(id) > 0;
    if (created && !removed.count(id) && !removing.count(id) && !is_listed)
      fail("committed-present",
           "layer " + id + " is not listed although \"" + phases[phase].name + "\" had finished");
    if (removed.count(id) && is_listed)
      fail("removed-gone", "layer " + id + " is listed although its removal had finished");
    if (!is_listed) continue;
    if (!created && want.running != phase)
      fail("no-unknown-layer",
           "layer " + id + " is listed before \"" + phases[phase].name + "\" started");
    const Phase& p = phases[phase];
    if (p.kind == PhaseKind::kImport) {
      StringWriter w;
      auto d = store.diff(id, std::nullopt, w);
      if (!d.ok()) {
        fail("layer-content", "layer " + id + ": export failed: " + d.error().message());
        continue;
      }
      auto got = read_manifest_from_string(w.data());
      if (!got.ok()) {
        fail("layer-content", "layer " + id + ": " + got.error().message());
        continue;
      }
      auto it = want.manifests.find(id);
      if (it == want.manifests.end()) continue;
      bool native = store.driver().whiteout_format() != WhiteoutFormat::kDeleteInPlace;
      std::string bad = compare_layer(it->second, *got, native);
      if (!bad.empty()) fail("layer-content", "layer " + id + ": " + bad);
    } else {
      // A container: it must mount and show its image's files, plus its committed writes.
      auto croot = store.mount(id);
      if (!croot.ok()) {
        fail("container-content", "container " + id + ": mount failed: " + croot.error().message());
        continue;
      }
      mounted.push_back(id);
      std::map<std::string, std::string> written;  // path → expected content (finished writes)
      std::set<std::string> torn;                  // written by the running phase
      for (size_t i = 0; i < phases.size(); ++i) {
        const auto& w = phases[i];
        if (w.kind != PhaseKind::kWrite || w.id != id) continue;
        if (want.running == i) torn.insert(w.path);
        if (!want.done.count(i)) continue;
        if (!written.count(w.path)) {
          // Start from what the image holds.
          auto iroot = store.mount(p.parent);
          std::string base;
          if (iroot.ok()) {
            mounted.push_back(p.parent);
            auto text = sys::read_file(*iroot + "/" + w.path);
            if (text.ok()) base = *text;
          }
          written[w.path] = base;
        }
        std::string& c = written[w.path];
        uint64_t off = w.offset == UINT64_MAX ? c.size() : w.offset;
        if (c.size() < off + w.data.size()) c.resize(off + w.data.size(), '\0');
        c.replace(off, w.data.size(), w.data);
      }
      auto iroot = store.mount(p.parent);
      if (!iroot.ok()) {
        fail("container-content", "image " + p.parent + " of container " + id +
                                      ": mount failed: " + iroot.error().message());
        continue;
      }
      mounted.push_back(p.parent);
      auto image_files = tree_files(*iroot);
      auto container_files = tree_files(*croot);
      if (!image_files.ok() || !container_files.ok()) {
        fail("container-content", "container " + id + ": walk failed: " +
                                      (!image_files.ok() ? image_files.error().message()
                                                         : container_files.error().message()));
        continue;
      }
      for (const auto& [path, e] : *image_files) {
        if (written.count(path) || torn.count(path)) continue;
        auto it = container_files->find(path);
        if (it == container_files->end()) {
          fail("container-content", "container " + id + ": " + path + " of the image is missing");
          break;
        }
        if (it->second.size != e.size || it->second.digest != e.digest) {
          fail("container-content", "container " + id + ": " + path + ": " + describe(it->second) +
                                        ", image has " + describe(e));
          break;
        }
      }
      for (const auto& [path, content] : written) {
        if (torn.count(path)) continue;
        auto it = container_files->find(path);
        std::string wantd = sha256_digest(content);
        if (it == container_files->end())
          fail("committed-present",
               "container " + id + ": " + path + " written and fsync()ed is missing");
        else if (it->second.digest != wantd)
          fail("committed-present", "container " + id + ": " + path + ": " + describe(it->second) +
                                        ", want " + std::to_string(content.size()) + " bytes (" +
                                        wantd.substr(7, 12) + ")");
      }
    }
  }

  // Orphans: driver data that no layer names (cache id or an intent's) after recovery —
  // what an interrupted create, applydiff or delete would leak if recovery missed it.  Read
  // while the driver is still up (zfs asks its status for the parent dataset).
  std::set<std::string> named;
  for (const auto& l : *listed_r) named.insert({l.cache_id, l.intent.cache_id});
  if (auto held = driver_layer_dirs(root, driver, store.driver()); !held.ok())
    fail("no-orphans", held.error().message());
  else
    for (const auto& cache : *held)
      if (!named.count(cache))
        fail("no-orphans", "driver data " + cache + " belongs to no layer after recovery");
  if (driver == "zfs") {
    if (auto snaps = zfs_snapshot_leaks(store.driver()); !snaps.ok())
      fail("no-orphans", snaps.error().message());
    else
      for (const auto& snap : *snaps)
        fail("no-orphans", "zfs snapshot " + snap + " has no clone after recovery");
  }

  for (auto it = mounted.rbegin(); it != mounted.rend(); ++it) {
    auto u = store.unmount(*it);
    if (!u.ok()) fail("no-leftovers", "unmount " + *it + ": " + u.error().message());
  }
  if (auto c = store.driver().cleanup(); !c.ok())
    fail("no-leftovers", "driver cleanup: " + c.error().message());

  // Leftovers of recovery.
  if (auto tmp = sys::read_dir(root + "/tmp"); tmp.ok() && !tmp->empty())
    fail("no-leftovers", "tmp/ holds " + tmp->front().name + " after recovery");
  // Temp files of interrupted metadata writes: the layer store's and devicemapper's.
  for (const std::string dir : {"layers", "devicemapper/metadata"})
    if (auto meta = sys::read_dir(root + "/" + dir); meta.ok())
      for (const auto& e : *meta)
        if (sys::is_atomic_write_temp_name(e.name))
          fail("no-leftovers", dir + "/" + e.name + " left after recovery");
  if (auto mi = sys::mountinfo(); mi.ok())
    for (const auto& m : *mi)
      if (m.mount_point.rfind(root + "/", 0) == 0)
        fail("no-leftovers",
             "mount " + m.mount_point + " (" + m.fstype + ") left after the store was released");
  if (auto loops = sys::loop_devices(); loops.ok())
    for (const auto& l : *loops)
      if (l.backing_file.rfind(root + "/", 0) == 0)
        fail("no-leftovers", "loop device " + l.device + " on " + l.backing_file +
                                 " left after the store was released");
  return out;
}

}  // namespace cowlab::crash
