// The vfs driver (contract in vfs.h), after Docker's daemon/graphdriver/vfs/driver.go.
#include "vfs/vfs.h"

#include <fcntl.h>

#include <optional>
#include <string>
#include <vector>

#include "core/naive_diff.h"
#include "cowlab/fs.h"
#include "cowlab/sys.h"
#include "vfs/copy.h"

namespace cowlab {

namespace {

constexpr const char* kDir = "dir";

Result<void> check_id(const std::string& op, const std::string& id) {
  if (id.empty() || id == "." || id == ".." || id.find('/') != std::string::npos)
    return Error::invalid(op + ": invalid layer id \"" + id + "\"");
  return {};
}

// Whether FICLONE works between two files of the home's filesystem.  A refusal (EOPNOTSUPP on
// ext4, EXDEV, EINVAL) means "no shared extents here"; anything else is a real error.
Result<bool> probe_reflink(const std::string& home) {
  std::string probe = home + "/.reflink-probe";
  (void)sys::remove_all(probe);
  COWLAB_TRY(sys::mkdir(probe, 0700));
  struct Cleanup {
    std::string path;
    ~Cleanup() { (void)sys::remove_all(path); }
  } cleanup{probe};
  auto src = COWLAB_TRY(sys::open(probe + "/src", O_RDWR | O_CREAT | O_EXCL, 0600));
  std::string block(4096, 'r');
  COWLAB_TRY(sys::write_all(src.get(), block.data(), block.size()));
  COWLAB_TRY(sys::fsync(src.get()));
  auto dst = COWLAB_TRY(sys::open(probe + "/dst", O_RDWR | O_CREAT | O_EXCL, 0600));
  auto r = sys::ficlone(dst.get(), src.get());
  if (r.ok()) return true;
  int e = r.error().err();
  if (e == EOPNOTSUPP || e == EXDEV || e == EINVAL || e == ENOTTY || e == ENOSYS) return false;
  return std::move(r).error().with_context("reflink probe");
}

class VfsDriver final : public NaiveDiffDriver {
 public:
  VfsDriver(std::string home, std::string backing_fs)
      : home_(std::move(home)), backing_fs_(std::move(backing_fs)) {}

  std::string name() const override { return "vfs"; }
  std::string home() const override { return home_; }

  Result<void> create(const std::string& id, const std::string& parent,
                      const CreateOpts& opts) override {
    const std::string ctx = "create layer " + id;
    // Docker: "--storage-opt is not supported for vfs on read-only layers".
    if (!opts.storage_opt.empty())
      return Error::invalid(
          ctx + ": storage options are not supported for vfs on read-only layers (got \"" +
          opts.storage_opt.begin()->first + "\")");
    return create_layer(ctx, id, parent);
  }

  Result<void> create_rw(const std::string& id, const std::string& parent,
                         const CreateOpts& opts) override {
    const std::string ctx = "create read-write layer " + id;
    for (const auto& [k, v] : opts.storage_opt) {
      if (k == "size")
        return Error::invalid(
            ctx +
            ": storage option size is not supported by vfs (Docker needs xfs project "
            "quota for it; cowlab's vfs has no quota)");
      return Error::invalid(ctx + ": unknown storage option \"" + k + "\"");
    }
    return create_layer(ctx, id, parent);
  }

  Result<void> remove(const std::string& id) override {
    const std::string ctx = "remove layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    auto st = COWLAB_TRY_CTX(sys::lstat_if_exists(layer_dir(id)), ctx);
    if (!st) return Error::not_found(ctx + ": no such layer");
    COWLAB_TRY_CTX(sys::remove_all(layer_dir(id)), ctx);
    return {};
  }

  Result<std::string> get(const std::string& id, const std::string& mount_label) override {
    (void)mount_label;
    const std::string ctx = "get layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    if (!exists(id)) return Error::not_found(ctx + ": no such layer");
    return layer_dir(id);
  }

  Result<void> put(const std::string& id) override {
    const std::string ctx = "put layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    if (!exists(id)) return Error::not_found(ctx + ": no such layer");
    return {};
  }

  // A vfs layer is a plain directory: get() mounts nothing.
  Result<std::string> mount_dir(const std::string& id) override {
    const std::string ctx = "mount dir of layer " + id;
    COWLAB_TRY(check_id(ctx, id));
    if (!exists(id)) return Error::not_found(ctx + ": no such layer");
    return std::string();
  }

  bool exists(const std::string& id) override {
    if (!check_id("exists", id).ok()) return false;
    auto st = sys::lstat_if_exists(layer_dir(id));
    return st.ok() && st->has_value() && S_ISDIR((*st)->st_mode);
  }
  Result<std::vector<std::string>> list() override {
    return COWLAB_TRY_CTX(subdirectories(home_ + "/" + kDir), "vfs: list layers");
  }

  KeyValues status() override {
    auto r = reflink();
    return {{"Backing Filesystem", backing_fs_},
            {"Reflink", r.ok() ? (*r ? "true" : "false") : "unknown (" + r.error().message() + ")"}};
  }

  Result<KeyValues> metadata(const std::string& id) override {
    if (!exists(id)) return Error::not_found("metadata of layer " + id + ": no such layer");
    return KeyValues{};  // Docker's vfs GetMetadata returns nothing
  }

  Result<void> cleanup() override { return {}; }

  WhiteoutFormat whiteout_format() const override { return WhiteoutFormat::kDeleteInPlace; }
  bool supports_quota() const override { return false; }

 protected:
  std::string scratch_dir() const override { return home_ + "/tmp"; }

 private:
  std::string layer_dir(const std::string& id) const { return home_ + "/" + kDir + "/" + id; }

  Result<void> create_layer(const std::string& ctx, const std::string& id,
                            const std::string& parent) {
    COWLAB_TRY(check_id(ctx, id));
    if (!parent.empty()) {
      COWLAB_TRY(check_id(ctx, parent));
      if (!exists(parent))
        return Error::not_found(ctx + ": parent layer " + parent + " does not exist");
    }
    std::string dir = layer_dir(id);
    auto made = sys::mkdir(dir, 0755);
    if (!made.ok()) {
      if (made.error().err() == EEXIST)
        return Error(ErrorKind::kExists, ctx + ": layer exists", EEXIST);
      return std::move(made).error().with_context(ctx);
    }
    auto r = populate(dir, parent);
    if (!r.ok()) {
      (void)sys::remove_all(dir);
      return std::move(r).error().with_context(ctx);
    }
    return {};
  }

  Result<void> populate(const std::string& dir, const std::string& parent) {
    COWLAB_TRY(sys::fchmodat(sys::kCwd, dir, 0755));  // umask-proof: graphtest wants 0755
    if (parent.empty()) return {};
    bool clone = COWLAB_TRY(reflink());
    auto stats = COWLAB_TRY(vfs::copy_tree(
        layer_dir(parent), dir, clone ? vfs::DataCopy::kReflink : vfs::DataCopy::kCopyRange));
    (void)stats;
    return {};
  }

  // Probed when first needed, not at init: the probe writes a file, and opening a store
  // must work on a full or read-only filesystem (to list, diff, delete or wipe).
  Result<bool> reflink() {
    if (!reflink_) reflink_ = COWLAB_TRY_CTX(probe_reflink(home_), "vfs");
    return *reflink_;
  }

  std::string home_;
  std::string backing_fs_;
  std::optional<bool> reflink_;
};

}  // namespace

Result<std::unique_ptr<Driver>> init_vfs(const DriverConfig& config) {
  for (const auto& [key, value] : config.options) {
    if (key == "vfs.size")
      return Error::invalid(
          "vfs: option vfs.size is not supported (quotas need xfs project quota, which "
          "cowlab's vfs does not implement)");
    return Error::invalid("vfs: unknown option \"" + key + "\"");
  }
  const std::string& home = config.home;
  std::string backing_fs = COWLAB_TRY_CTX(backing_fs_name(home), "vfs init");
  bool fresh = !COWLAB_TRY(sys::lstat_if_exists(home)).has_value();
  struct FreshHomeGuard {
    std::string path;
    bool armed;
    ~FreshHomeGuard() {
      if (armed) (void)sys::remove_all(path);
    }
  } guard{home, fresh};
  COWLAB_TRY_CTX(sys::mkdir_all(home + "/" + kDir, 0700), "vfs init");
  // Only a home with other permissions is changed: init writes nothing on an existing home.
  if ((COWLAB_TRY_CTX(sys::stat(home), "vfs init").st_mode & 07777) != 0700)
    COWLAB_TRY_CTX(sys::fchmodat(sys::kCwd, home, 0700), "vfs init");
  guard.armed = false;
  return std::unique_ptr<Driver>(std::make_unique<VfsDriver>(home, std::move(backing_fs)));
}

}  // namespace cowlab
