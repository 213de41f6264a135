// The layer store.  Metadata is one JSON file per layer, replaced atomically; the store lock
// serialises processes; "incomplete" marks layers whose creation or deletion did not finish.
#include "cowlab/layer_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>

#include "cowlab/archive.h"
#include "cowlab/digest.h"
#include "cowlab/fs.h"
#include "cowlab/sys.h"

namespace cowlab {

namespace {

using json = nlohmann::json;

constexpr const char* kLayersDir = "layers";
constexpr const char* kTmpDir = "tmp";

json to_json(const LayerInfo& l) {
  return json{{"id", l.id},
              {"cache_id", l.cache_id},
              {"parent", l.parent},
              {"kind", l.kind == LayerKind::kReadWrite ? "rw" : "ro"},
              {"size", l.size},
              {"diff_id", l.diff_id},
              {"chain_id", l.chain_id},
              {"compressed_digest", l.compressed_digest},
              {"created", l.created},
              {"mount_count", l.mount_count},
              {"mount_point", l.mount_point},
              {"incomplete", l.incomplete}};
}

Result<LayerInfo> from_json(const std::string& text, const std::string& file) {
  try {
    json j = json::parse(text);
    LayerInfo l;
    l.id = j.at("id").get<std::string>();
    l.cache_id = j.value("cache_id", l.id);
    l.parent = j.value("parent", "");
    l.kind = j.value("kind", "ro") == "rw" ? LayerKind::kReadWrite : LayerKind::kReadOnly;
    l.size = j.value("size", int64_t{-1});
    l.diff_id = j.value("diff_id", "");
    l.chain_id = j.value("chain_id", "");
    l.compressed_digest = j.value("compressed_digest", "");
    l.created = j.value("created", int64_t{0});
    l.mount_count = j.value("mount_count", 0);
    l.mount_point = j.value("mount_point", "");
    l.incomplete = j.value("incomplete", false);
    return l;
  } catch (const std::exception& e) {
    return Error::corrupt("layer metadata " + file + ": " + e.what());
  }
}

// Test-only fault hook (power-cut tests, tests/vm/crash): COWLAB_TEST_FAULT=skip-layer-sync
// drops the data barrier before a layer is marked complete, the bug of moby#17618, so the
// crash test can show it catches a store that commits before its data is durable.
bool fault_skip_layer_sync() {
  const char* f = ::getenv("COWLAB_TEST_FAULT");
  return f != nullptr && std::string_view(f) == "skip-layer-sync";
}

Result<std::string> new_cache_id() {
  unsigned char b[16];
  COWLAB_TRY(sys::random_bytes(b, sizeof b));
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : b) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

}  // namespace

Result<void> validate_layer_id(const std::string& id) {
  auto bad = [&](const char* why) {
    return Error::invalid("invalid layer id \"" + id + "\": " + why);
  };
  if (id.empty()) return bad("empty");
  if (id.size() > 128) return bad("longer than 128 bytes");
  if (!isalnum(static_cast<unsigned char>(id[0]))) return bad("must start with a letter or digit");
  for (char c : id)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-')
      return bad("only letters, digits, '_', '.' and '-' are allowed");
  return {};
}

Result<std::unique_ptr<LayerStore>> LayerStore::open(const StoreOptions& options) {
  if (options.root.empty() || options.root[0] != '/')
    return Error::usage("store root must be an absolute path, got \"" + options.root + "\"");
  std::unique_ptr<LayerStore> s(new LayerStore());
  s->root_ = options.root;
  while (s->root_.size() > 1 && s->root_.back() == '/') s->root_.pop_back();
  COWLAB_TRY_CTX(sys::mkdir_all(s->root_, 0700), "open store");
  COWLAB_TRY_CTX(sys::mkdir_all(s->root_ + "/" + kLayersDir, 0700), "open store");
  COWLAB_TRY_CTX(sys::mkdir_all(s->root_ + "/" + kTmpDir, 0700), "open store");
  auto lock = COWLAB_TRY_CTX(sys::open(s->root_ + "/lock", O_RDWR | O_CREAT, 0600), "open store");
  COWLAB_TRY_CTX(sys::flock(lock.get(), LOCK_EX), "lock store " + s->root_);
  s->lock_fd_ = lock.release();

  SelectOptions so;
  so.root = s->root_;
  so.driver = options.driver;
  so.priority = options.priority;
  so.options = options.storage_opts;
  s->driver_ = COWLAB_TRY(select_driver(so, &s->tried_));
  COWLAB_TRY_CTX(s->recover(), "recover store " + s->root_);
  return s;
}

LayerStore::~LayerStore() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

Result<void> LayerStore::recover() {
  // Staging leftovers: we hold the exclusive lock, so nothing else is using tmp/.
  auto tmp_entries = COWLAB_TRY(sys::read_dir(root_ + "/" + kTmpDir));
  for (const auto& e : tmp_entries)
    COWLAB_TRY(sys::remove_all(root_ + "/" + kTmpDir + "/" + e.name));
  // Layers whose creation or deletion was interrupted.  Children first, so a parent's
  // removal is not refused by the driver.
  auto all = COWLAB_TRY(layers());
  std::vector<LayerInfo> broken;
  for (auto& l : all)
    if (l.incomplete) broken.push_back(l);
  std::set<std::string> parents;
  for (auto& l : all) parents.insert(l.parent);
  std::sort(broken.begin(), broken.end(), [&](const LayerInfo& a, const LayerInfo& b) {
    return parents.count(a.id) < parents.count(b.id);  // leaves first
  });
  for (const auto& l : broken) {
    if (driver_->exists(l.cache_id)) {
      if (l.mount_count > 0) (void)driver_->put(l.cache_id);
      COWLAB_TRY_CTX(driver_->remove(l.cache_id), "remove interrupted layer " + l.id);
    }
    COWLAB_TRY(remove_info(l.id));
  }
  return {};
}

// The data barrier before a layer is marked complete: syncfs(2) of the filesystem holding the
// driver's home writes back every dirty page and inode there and flushes the device's cache.
// The fsync of the metadata file alone does not: on ext4 it leaves other files' delayed
// allocations unwritten (the zero-length files after a crash of moby#17618), on btrfs it logs
// only that file.  This covers the drivers whose layers live in the home (vfs, overlay, btrfs,
// aufs) and the files behind devicemapper's loop-backed pool; devicemapper's and zfs's
// apply_diff also unmount the layer, which writes it back to their pools.
Result<void> LayerStore::sync_layer(const LayerInfo& info) {
  if (fault_skip_layer_sync()) return {};
  const std::string home = driver_->home();
  const std::string ctx = "sync layer " + info.id;
  auto fd = COWLAB_TRY_CTX(sys::open(home, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ctx);
  if (::syncfs(fd.get()) != 0) return Error::from_errno("syncfs", home, errno).with_context(ctx);
  return {};
}

Result<void> LayerStore::write_info(const LayerInfo& info) {
  return sys::write_file_atomic(root_ + "/" + kLayersDir + "/" + info.id + ".json",
                                to_json(info).dump(2) + "\n", 0600);
}

Result<void> LayerStore::remove_info(const std::string& id) {
  auto r = sys::unlink(root_ + "/" + kLayersDir + "/" + id + ".json");
  if (!r.ok() && r.error().err() != ENOENT) return r;
  return {};
}

Result<std::vector<LayerInfo>> LayerStore::layers() {
  auto entries = COWLAB_TRY(sys::read_dir(root_ + "/" + kLayersDir));
  std::vector<LayerInfo> out;
  for (const auto& e : entries) {
    if (e.name.size() < 6 || e.name.compare(e.name.size() - 5, 5, ".json") != 0) continue;
    std::string file = root_ + "/" + kLayersDir + "/" + e.name;
    auto text = COWLAB_TRY(sys::read_file(file));
    out.push_back(COWLAB_TRY(from_json(text, file)));
  }
  std::sort(out.begin(), out.end(), [](const LayerInfo& a, const LayerInfo& b) {
    return a.created != b.created ? a.created < b.created : a.id < b.id;
  });
  return out;
}

Result<LayerInfo> LayerStore::layer(const std::string& id) {
  COWLAB_TRY(validate_layer_id(id));
  std::string file = root_ + "/" + kLayersDir + "/" + id + ".json";
  auto text = sys::read_file(file);
  if (!text.ok()) {
    if (text.error().err() == ENOENT) return Error::not_found("layer " + id + ": no such layer");
    return std::move(text).error();
  }
  auto info = COWLAB_TRY(from_json(*text, file));
  if (info.incomplete)
    return Error::not_found("layer " + id + ": incomplete (interrupted operation)");
  return info;
}

bool LayerStore::exists(const std::string& id) {
  return layer(id).ok();
}

Result<std::optional<LayerInfo>> LayerStore::find_by_chain_id(const std::string& chain_id) {
  auto all = COWLAB_TRY(layers());
  for (auto& l : all)
    if (!l.incomplete && l.chain_id == chain_id) return std::optional<LayerInfo>(l);
  return std::optional<LayerInfo>();
}

Result<std::vector<std::string>> LayerStore::ancestors(const std::string& id) {
  std::vector<std::string> out;
  auto cur = COWLAB_TRY(layer(id));
  std::set<std::string> seen{id};
  while (!cur.parent.empty()) {
    if (!seen.insert(cur.parent).second)
      return Error::corrupt("layer " + id + ": parent chain loops at " + cur.parent);
    out.push_back(cur.parent);
    cur = COWLAB_TRY_CTX(layer(cur.parent), "ancestors of " + id);
  }
  return out;
}

Result<LayerInfo> LayerStore::create_layer(const std::string& id, const std::string& parent,
                                           LayerKind kind, const CreateOpts& opts) {
  auto info = COWLAB_TRY(create_incomplete(id, parent, kind, opts, "create-layer " + id));
  // The layer's files (vfs copies the parent's) must be durable before it is listed.
  COWLAB_TRY_CTX(sync_layer(info), "create-layer " + id);
  info.incomplete = false;
  COWLAB_TRY_CTX(write_info(info), "create-layer " + id);
  return info;
}

Result<LayerInfo> LayerStore::create_incomplete(const std::string& id, const std::string& parent,
                                                LayerKind kind, const CreateOpts& opts,
                                                const std::string& ctx) {
  COWLAB_TRY_CTX(validate_layer_id(id), ctx);
  {
    std::string file = root_ + "/" + kLayersDir + "/" + id + ".json";
    if (COWLAB_TRY(sys::lstat_if_exists(file)).has_value())
      return Error(ErrorKind::kExists, ctx + ": layer already exists", EEXIST);
  }
  LayerInfo info;
  info.id = id;
  info.parent = parent;
  info.kind = kind;
  info.created = static_cast<int64_t>(::time(nullptr));
  info.incomplete = true;
  info.cache_id = COWLAB_TRY_CTX(new_cache_id(), ctx);
  std::string parent_cache;
  if (!parent.empty()) parent_cache = COWLAB_TRY_CTX(layer(parent), ctx).cache_id;
  COWLAB_TRY_CTX(write_info(info), ctx);
  auto r = kind == LayerKind::kReadWrite ? driver_->create_rw(info.cache_id, parent_cache, opts)
                                         : driver_->create(info.cache_id, parent_cache, opts);
  if (!r.ok()) {
    if (driver_->exists(info.cache_id)) (void)driver_->remove(info.cache_id);
    (void)remove_info(id);
    return std::move(r).error().with_context(ctx);
  }
  return info;
}

Result<LayerInfo> LayerStore::import_layer(const std::string& id, const std::string& parent,
                                           Reader& tar) {
  const std::string ctx = "import-layer " + id;
  LayerInfo parent_info;
  if (!parent.empty()) parent_info = COWLAB_TRY_CTX(layer(parent), ctx);
  auto info = COWLAB_TRY(create_incomplete(id, parent, LayerKind::kReadOnly, {}, ctx));
  // From here on, any failure removes the layer again: an import is all or nothing.
  auto undo = [&](Error e) -> Error {
    if (driver_->exists(info.cache_id)) {
      auto rr = driver_->remove(info.cache_id);
      if (!rr.ok()) {
        // Leave the incomplete record so the next open finishes the removal.
        return std::move(e).with_context(ctx + " (cleanup failed: " + rr.error().message() + ")");
      }
    }
    (void)remove_info(id);
    return std::move(e).with_context(ctx);
  };
  DigestReader raw(tar);
  Compression compression = Compression::kNone;
  auto plain = decompress(std::make_unique<BorrowedReader>(raw), &compression);
  if (!plain.ok()) return undo(plain.error());
  // An uncompressed layer's DiffID is its blob digest: hash its bytes once, not twice.
  std::optional<DigestReader> uncompressed;
  if (compression != Compression::kNone) uncompressed.emplace(**plain);
  Reader& stream = uncompressed ? static_cast<Reader&>(*uncompressed) : **plain;
  auto applied = driver_->apply_diff(info.cache_id, parent_info.cache_id, stream);
  if (!applied.ok()) return undo(applied.error());
  auto compressed = raw.drain_and_digest();
  if (!compressed.ok()) return undo(compressed.error());
  auto diff_id = uncompressed ? uncompressed->drain_and_digest() : compressed;
  if (!diff_id.ok()) return undo(diff_id.error());

  info.size = *applied;
  info.diff_id = *diff_id;
  info.compressed_digest = *compressed;
  if (parent.empty()) {
    info.chain_id = info.diff_id;
  } else if (!parent_info.chain_id.empty()) {
    info.chain_id = chain_id(parent_info.chain_id, info.diff_id);
  }
  // Data before commit: the metadata write below is fsync()ed, but on ext4 that does not
  // write other files' delayed allocations, and on btrfs it logs only the metadata file; a
  // power cut after it would list the layer with zero-byte or missing files.
  if (auto sy = sync_layer(info); !sy.ok()) return undo(sy.error());
  info.incomplete = false;
  if (auto w = write_info(info); !w.ok()) return undo(w.error());
  return info;
}

Result<int64_t> LayerStore::apply_diff(const std::string& id, Reader& tar) {
  const std::string ctx = "apply-diff layer " + id;
  auto info = COWLAB_TRY_CTX(layer(id), ctx);
  for (const auto& l : COWLAB_TRY(layers()))
    if (l.parent == id)
      return Error(ErrorKind::kBusy,
                   ctx + ": layer has children (" + l.id + "); changing it would change them",
                   EBUSY);

  // Spool the (decompressed) input inside the store, validate it, then apply it.
  std::string spool = root_ + "/" + kTmpDir + "/applydiff-" + id + ".tar";
  struct Unlink {
    std::string p;
    ~Unlink() { (void)sys::unlink(p); }
  } cleanup{spool};
  {
    auto plain = COWLAB_TRY_CTX(decompress(std::make_unique<BorrowedReader>(tar)), ctx);
    auto fd = COWLAB_TRY_CTX(sys::open(spool, O_WRONLY | O_CREAT | O_TRUNC, 0600), ctx);
    std::vector<char> buf(1 << 20);
    for (;;) {
      size_t n = COWLAB_TRY_CTX(plain->read(buf.data(), buf.size()), ctx);
      if (n == 0) break;
      COWLAB_TRY_CTX(sys::write_all(fd.get(), buf.data(), n), ctx + ": spool " + spool);
    }
  }
  {
    auto fd = COWLAB_TRY_CTX(sys::open(spool, O_RDONLY), ctx);
    FdReader r(fd.get(), tar.name());
    ApplyOptions vo;
    vo.mode = ApplyMode::kValidateOnly;
    vo.context = ctx;
    COWLAB_TRY(apply_layer("", r, vo));
  }
  auto fd = COWLAB_TRY_CTX(sys::open(spool, O_RDONLY), ctx);
  FdReader r(fd.get(), tar.name());
  DigestReader digest(r);
  std::string parent_cache;
  if (!info.parent.empty()) parent_cache = COWLAB_TRY_CTX(layer(info.parent), ctx).cache_id;
  int64_t size = COWLAB_TRY_CTX(driver_->apply_diff(info.cache_id, parent_cache, digest), ctx);
  (void)COWLAB_TRY(digest.drain_and_digest());
  // The layer's content no longer matches the tar it was imported from.
  info.diff_id.clear();
  info.chain_id.clear();
  info.compressed_digest.clear();
  info.size = size;
  COWLAB_TRY_CTX(sync_layer(info), ctx);
  COWLAB_TRY_CTX(write_info(info), ctx);
  return size;
}

Result<void> LayerStore::diff(const std::string& id, const std::optional<std::string>& parent,
                              Writer& out) {
  auto info = COWLAB_TRY_CTX(layer(id), "diff " + id);
  std::string p = parent ? *parent : info.parent;
  std::string pc = p.empty() ? "" : COWLAB_TRY_CTX(layer(p), "diff " + id).cache_id;
  return driver_->diff(info.cache_id, pc, out);
}

Result<std::vector<Change>> LayerStore::changes(const std::string& id,
                                                const std::optional<std::string>& parent) {
  auto info = COWLAB_TRY_CTX(layer(id), "changes " + id);
  std::string p = parent ? *parent : info.parent;
  std::string pc = p.empty() ? "" : COWLAB_TRY_CTX(layer(p), "changes " + id).cache_id;
  return driver_->changes(info.cache_id, pc);
}

Result<int64_t> LayerStore::diff_size(const std::string& id,
                                      const std::optional<std::string>& parent) {
  auto info = COWLAB_TRY_CTX(layer(id), "diffsize " + id);
  std::string p = parent ? *parent : info.parent;
  std::string pc = p.empty() ? "" : COWLAB_TRY_CTX(layer(p), "diffsize " + id).cache_id;
  return driver_->diff_size(info.cache_id, pc);
}

Result<std::string> LayerStore::mount(const std::string& id) {
  auto info = COWLAB_TRY_CTX(layer(id), "mount " + id);
  if (info.mount_count > 0 && !info.mount_point.empty()) {
    info.mount_count++;
    COWLAB_TRY_CTX(write_info(info), "mount " + id);
    return info.mount_point;
  }
  std::string path = COWLAB_TRY_CTX(driver_->get(info.cache_id, ""), "mount " + id);
  info.mount_count = 1;
  info.mount_point = path;
  if (auto w = write_info(info); !w.ok()) {
    (void)driver_->put(info.cache_id);
    return std::move(w).error().with_context("mount " + id);
  }
  return path;
}

Result<void> LayerStore::unmount(const std::string& id) {
  auto info = COWLAB_TRY_CTX(layer(id), "unmount " + id);
  if (info.mount_count <= 0) return Error::invalid("unmount " + id + ": layer is not mounted");
  if (info.mount_count == 1) COWLAB_TRY_CTX(driver_->put(info.cache_id), "unmount " + id);
  info.mount_count--;
  if (info.mount_count == 0) info.mount_point.clear();
  return write_info(info);
}

Result<void> LayerStore::delete_layer(const std::string& id) {
  const std::string ctx = "delete-layer " + id;
  auto info = COWLAB_TRY_CTX(layer(id), ctx);
  for (const auto& l : COWLAB_TRY(layers()))
    if (l.parent == id && !l.incomplete)
      return Error(ErrorKind::kBusy, ctx + ": layer has a child (" + l.id + ")", EBUSY);
  if (info.mount_count > 0)
    return Error(ErrorKind::kBusy,
                 ctx + ": layer is mounted (" + std::to_string(info.mount_count) +
                     " references; unmount it first)",
                 EBUSY);
  // Mark first: a crash from here on is finished by the next open().
  info.incomplete = true;
  COWLAB_TRY_CTX(write_info(info), ctx);
  if (driver_->exists(info.cache_id)) COWLAB_TRY_CTX(driver_->remove(info.cache_id), ctx);
  return remove_info(id);
}

Result<void> LayerStore::wipe() {
  auto all = COWLAB_TRY(layers());
  // Repeatedly delete leaves until nothing is left.
  while (!all.empty()) {
    std::set<std::string> parents;
    for (const auto& l : all) parents.insert(l.parent);
    bool progressed = false;
    for (auto& l : all) {
      if (parents.count(l.id)) continue;
      if (!l.incomplete) {
        while (l.mount_count > 0) {
          COWLAB_TRY_CTX(unmount(l.id), "wipe");
          l.mount_count--;
        }
      }
      l.incomplete = true;
      COWLAB_TRY_CTX(write_info(l), "wipe");
      if (driver_->exists(l.cache_id)) COWLAB_TRY_CTX(driver_->remove(l.cache_id), "wipe");
      COWLAB_TRY(remove_info(l.id));
      progressed = true;
    }
    if (!progressed) return Error::corrupt("wipe: layer parent chain loops");
    all = COWLAB_TRY(layers());
  }
  COWLAB_TRY_CTX(driver_->cleanup(), "wipe");
  COWLAB_TRY_CTX(sys::remove_all(root_ + "/" + driver_->name()), "wipe");
  return {};
}

}  // namespace cowlab
