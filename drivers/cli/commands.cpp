#include "cli/commands.h"

#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "cowlab/archive.h"
#include "cowlab/command_line.h"
#include "cowlab/fs.h"
#include "cowlab/harness/reduce_guest.h"
#include "cowlab/harness/stop.h"
#include "cowlab/log.h"
#include "cowlab/layer_store.h"
#include "cowlab/registry.h"
#include "cowlab/scenario.h"
#include "cowlab/sys.h"

namespace cowlab::cli {

namespace {

using json = nlohmann::json;

// Prints an error as "cowlab: <message>" and returns the exit status for it.
int report(const Error& e, const std::string& root) {
  spdlog::error("cowlab: {}", e.message());
  // Without root the default store root cannot even be created, and no driver but vfs can
  // mount: say what to do instead of leaving the user with a bare EACCES.
  if ((e.err() == EACCES || e.err() == EPERM) && ::geteuid() != 0)
    spdlog::error(
        "hint: cowlab needs root for {} and for every driver but vfs; run it as root (sudo), or give a directory you "
        "own with --root DIR (or COWLAB_ROOT) to use vfs",
        root);
  return e.kind() == ErrorKind::kUsage ? kExitUsage : kExitError;
}

// The store options of the command line.  Readers take the store lock shared (and work on a
// read-only store), writers exclusive.
Result<StoreOptions> store_options(const CommandContext& g, LockMode lock) {
  StoreOptions so;
  so.root = g.root;
  so.driver = g.driver;
  // Benchmark knob (bench/store_lock_bench.py): readers lock exclusively, as before issue 11,
  // so shared and exclusive reader locking are measured side by side in one run.
  const char* reader_lock = std::getenv("COWLAB_BENCH_READER_LOCK");
  if (lock == LockMode::kShared && reader_lock && std::string_view(reader_lock) == "exclusive")
    lock = LockMode::kExclusive;
  so.lock = lock;
  so.lock_timeout_s = g.lock_timeout;
  so.on_lock_wait = [](const std::string& line) { spdlog::info("cowlab: {}", line); };
  so.storage_opts = COWLAB_TRY(parse_storage_opts(g.storage_opts));
  so.priority = split_list(g.priority);
  return so;
}

Result<std::unique_ptr<LayerStore>> open_store(const CommandContext& g,
                                               LockMode lock = LockMode::kExclusive) {
  auto so = COWLAB_TRY(store_options(g, lock));
  auto store = COWLAB_TRY(LayerStore::open(so));
  for (const auto& line : store->recovered()) spdlog::warn("cowlab: recovered: {}", line);
  for (const auto& line : store->not_recovered())
    spdlog::warn("cowlab: not recovered (read-only store; left out): {}", line);
  return store;
}

json damaged_json(const DamagedLayer& d) {
  return json{{"id", escape_for_message(d.id)}, {"damaged", true}, {"reason", d.reason}, {"file", d.file}};
}

json layer_json(const LayerInfo& l) {
  return json{{"id", l.id},
              {"cache_id", l.cache_id},
              {"parent", l.parent},
              {"read_write", l.kind == LayerKind::kReadWrite},
              {"size", l.size},
              {"diff_id", l.diff_id},
              {"chain_id", l.chain_id},
              {"compressed_digest", l.compressed_digest},
              {"created", l.created},
              {"mount_count", l.mount_count},
              {"mount_point", l.mount_point}};
}

std::string kind_word(ChangeKind k) {
  return k == ChangeKind::kAdd ? "add" : k == ChangeKind::kDelete ? "delete" : "modify";
}

// Where `diff` writes: stdout, or PATH opened for writing *through* it as the shell's `>`
// does — a symlink is followed (a dangling one gets its target created), a device or
// /proc/self/fd/N is written in place, an existing file is truncated, never replaced.
//
// Whether this command created the file is decided by open(O_CREAT|O_EXCL) itself, not by
// looking first: between a stat() and the open() another process may create the path (then a
// failed diff removed that process's file) or a dangling symlink may be the path (then the
// created file was its target while the symlink was removed).  When the diff fails, only the
// regular file this command created is removed, and only while its name still refers to it:
// the directory is held open (a rename of the directory does not redirect the removal) and
// the name's device and inode must be those of the file created.  The removal itself is two
// calls (fstatat, unlinkat), so a file renamed onto the name between them could still go;
// POSIX has no unlink-if-same-inode.
class OutputFile final : public Writer {
 public:
  static Result<std::unique_ptr<OutputFile>> open(const std::string& path) {
    std::unique_ptr<OutputFile> o(new OutputFile());
    o->path_ = path;
    if (path.empty() || path == "-") {
      o->fd_ = 1;
      return o;
    }
    std::string p = path;
    // Symlink hops and retries after the path vanished between two calls, as Linux's
    // MAXSYMLINKS bounds a path walk.
    for (int tries = 0; tries < 40; ++tries) {
      auto made = sys::open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (made.ok()) {
        COWLAB_TRY(o->remember_created(p, made->get()));
        o->fd_ = made->release();
        return o;
      }
      if (made.error().err() != EEXIST) return std::move(made).error();
      // Something is there (O_EXCL does not follow a symlink): open it through.
      auto there = sys::open(p, O_WRONLY | O_TRUNC | O_CLOEXEC);
      if (there.ok()) {
        o->fd_ = there->release();
        return o;
      }
      if (there.error().err() != ENOENT) return std::move(there).error();
      // ENOENT: p is a symlink whose target does not exist yet (the shell creates it), or p
      // was removed since the O_EXCL open (try again).
      auto link = sys::readlink(p);
      if (!link.ok()) {
        if (link.error().err() == ENOENT || link.error().err() == EINVAL) continue;
        return std::move(link).error();
      }
      p = (*link)[0] == '/' ? *link : parent_of(p) + "/" + *link;
    }
    return Error::from_errno("open", path, ELOOP);
  }
  ~OutputFile() override {
    if (fd_ > 1) ::close(fd_);
    if (dir_ && !committed_) {
      auto st = sys::fstatat(dir_->get(), created_name_, AT_SYMLINK_NOFOLLOW);
      if (st.ok() && S_ISREG(st->st_mode) && st->st_dev == created_dev_ &&
          st->st_ino == created_ino_)
        (void)sys::unlinkat(dir_->get(), created_name_, 0);
    }
  }
  Result<void> write(const void* buf, size_t len) override { return sys::write_all(fd_, buf, len); }
  std::string name() const override { return path_.empty() ? "-" : path_; }
  // A pipe or socket may block for as long as its reader likes: stage the diff first.
  bool may_block() const {
    auto st = sys::fstat(fd_);
    return st.ok() && (S_ISFIFO(st->st_mode) || S_ISSOCK(st->st_mode));
  }
  Result<void> commit() {
    if (fd_ > 1) {
      auto st = COWLAB_TRY(sys::fstat(fd_));
      if (S_ISREG(st.st_mode)) COWLAB_TRY(sys::fsync(fd_));
    }
    committed_ = true;
    return {};
  }

 private:
  OutputFile() = default;
  static std::string parent_of(const std::string& p) {
    auto slash = p.rfind('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : p.substr(0, slash);
  }
  // Records what removal on failure may remove: the file just created at `p` (open on `fd`).
  Result<void> remember_created(const std::string& p, int fd) {
    auto st = sys::fstat(fd);
    auto dir = sys::open(parent_of(p), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (!st.ok() || !dir.ok()) {
      (void)sys::unlink(p);  // nothing can have replaced it yet: it was created a moment ago
      return st.ok() ? std::move(dir).error() : std::move(st).error();
    }
    auto slash = p.rfind('/');
    created_name_ = slash == std::string::npos ? p : p.substr(slash + 1);
    created_dev_ = st->st_dev;
    created_ino_ = st->st_ino;
    dir_ = std::move(*dir);
    return {};
  }

  std::string path_;
  int fd_ = -1;
  // The file this command created: its directory, its name there, its identity.
  std::optional<sys::Fd> dir_;
  std::string created_name_;
  dev_t created_dev_ = 0;
  ino_t created_ino_ = 0;
  bool committed_ = false;
};

// `scenario reduce --against-*`: what a difference is between.  A difference is between two
// drivers on one kernel or one driver on two kernels (changing both would not say which
// change made it), and both sides must name something else than the other.
std::optional<Error> reduce_against_usage(const std::string& driver, const std::string& profile,
                                          const std::string& against_driver,
                                          const std::string& against_profile) {
  if (!against_driver.empty() && !against_profile.empty())
    return Error::usage(
        "scenario reduce: --against-driver and --against-profile together; a difference is "
        "between two drivers (on one kernel) or two kernels (one driver), not both");
  if (!against_driver.empty() && !find_driver(against_driver))
    return Error::usage("scenario reduce: unknown driver \"" + against_driver +
                        "\" (--against-driver)");
  if (!against_driver.empty() && against_driver == driver)
    return Error::usage("scenario reduce: --against-driver " + against_driver +
                        " is --driver itself; name the other driver of the difference");
  if (!against_profile.empty() && profile.empty())
    return Error::usage(
        "scenario reduce: --against-profile " + against_profile +
        " needs --profile (the kernel it is compared with; the host's kernel is no profile)");
  if (!against_profile.empty() && against_profile == profile)
    return Error::usage("scenario reduce: --against-profile " + against_profile +
                        " is --profile itself; name the other kernel of the difference");
  return std::nullopt;
}

void print_kv(const std::string& driver, const KeyValues& kv) {
  std::printf(" Storage Driver: %s\n", driver.c_str());
  for (const auto& [k, v] : kv) std::printf("  %s: %s\n", k.c_str(), v.c_str());
}

}  // namespace

void StorageCommands::fail(const Error& e) { g.status = report(e, g.root); }

StorageCommands::StorageCommands(CLI::App& app, CommandContext& ctx) : g(ctx) {

  // info
  auto* info = app.add_subcommand("info", "selected driver and its status (like docker info)");
  info->add_flag("--all", info_all, "list every driver with usable/unusable and why");
  info->callback([&] {
    if (info_all) {
      // Under the store's shared lock, every driver opened as a reader: probing never tears
      // down what another command uses (devicemapper's pool under a running diff).
      auto so = store_options(g, LockMode::kShared);
      if (!so.ok()) return fail(so.error());
      auto tried = LayerStore::probe_drivers(*so);
      if (!tried.ok()) return fail(tried.error());
      const auto& probes = *tried;
      if (g.json) {
        json arr = json::array();
        for (const auto& p : probes) arr.push_back({{"driver", p.name}, {"usable", p.usable}, {"reason", p.reason}});
        std::cout << arr.dump(2) << "\n";
      } else {
        for (const auto& p : probes)
          std::printf("%-13s %-9s %s\n", p.name.c_str(), p.usable ? "usable" : "unusable", p.reason.c_str());
      }
      return;
    }
    auto store = open_store(g, LockMode::kShared);
    if (!store.ok()) return fail(store.error());
    Driver& d = (*store)->driver();
    KeyValues kv = d.status();
    auto damaged = (*store)->damaged();
    if (!damaged.ok()) return fail(damaged.error());
    if (g.json) {
      json rows = json::array();
      for (const auto& [k, v] : kv) rows.push_back({k, v});
      json skipped = json::array();
      for (const auto& p : (*store)->selection())
        if (!p.usable) skipped.push_back({{"driver", p.name}, {"reason", p.reason}});
      json dam = json::array();
      for (const auto& x : *damaged) dam.push_back(damaged_json(x));
      std::cout << json{{"driver", d.name()},
                        {"driver_status", rows},
                        {"root", g.root},
                        {"skipped", skipped},
                        {"damaged_layers", dam}}
                       .dump(2)
                << "\n";
    } else {
      print_kv(d.name(), kv);
      std::printf(" Root Dir: %s\n", (*store)->root().c_str());
      for (const auto& p : (*store)->selection())
        if (!p.usable) std::printf(" Skipped %s: %s\n", p.name.c_str(), p.reason.c_str());
      if (!damaged->empty()) {
        std::printf(" Damaged Layers: %zu (delete-layer ID or wipe removes them)\n", damaged->size());
        for (const auto& x : *damaged) std::printf("  %s: %s\n", escape_for_message(x.id).c_str(), x.reason.c_str());
      }
    }
  });

  // layers
  auto* layers = app.add_subcommand("layers", "list layers");
  layers->callback([&] {
    auto store = open_store(g, LockMode::kShared);
    if (!store.ok()) return fail(store.error());
    auto all = (*store)->layers();
    if (!all.ok()) return fail(all.error());
    auto damaged = (*store)->damaged();
    if (!damaged.ok()) return fail(damaged.error());
    std::set<std::string> damaged_ids;
    for (const auto& d : *damaged) damaged_ids.insert(d.id);
    if (g.json) {
      json arr = json::array();
      for (const auto& l : *all)
        if (!l.incomplete && !damaged_ids.count(l.id)) arr.push_back(layer_json(l));
      for (const auto& d : *damaged) arr.push_back(damaged_json(d));
      std::cout << arr.dump(2) << "\n";
      return;
    }
    for (const auto& d : *damaged) std::printf("%s damaged: %s\n", escape_for_message(d.id).c_str(), d.reason.c_str());
    for (const auto& l : *all) {
      if (l.incomplete || damaged_ids.count(l.id)) continue;
      std::printf("%s%s%s%s\n", l.id.c_str(), l.parent.empty() ? "" : (" parent=" + l.parent).c_str(),
                  l.kind == LayerKind::kReadWrite ? " rw" : "", l.diff_id.empty() ? "" : (" " + l.diff_id).c_str());
    }
  });

  // create-layer
  auto* create = app.add_subcommand("create-layer", "create an empty layer");
  create->add_option("ID", cl_id)->required();
  create->add_option("--parent", cl_parent, "parent layer");
  create->add_flag("--rw", cl_rw, "read-write (container) layer");
  create->add_option("--opt", cl_opts, "per-layer option KEY=VALUE (size=50M)");
  create->callback([&] {
    auto store = open_store(g);
    if (!store.ok()) return fail(store.error());
    CreateOpts co;
    auto opts = parse_storage_opts(cl_opts);
    if (!opts.ok()) return fail(opts.error());
    co.storage_opt = *opts;
    auto r = (*store)->create_layer(cl_id, cl_parent, cl_rw ? LayerKind::kReadWrite : LayerKind::kReadOnly, co);
    if (!r.ok()) return fail(r.error());
    if (g.json) std::cout << layer_json(*r).dump(2) << "\n";
    else std::printf("%s\n", r->id.c_str());
  });

  // import-layer
  auto* import = app.add_subcommand("import-layer", "create a layer from a layer tar (tar, tar.gz, tar.zst; - = stdin)");
  import->add_option("ID", il_id)->required();
  import->add_option("FILE", il_file)->required();
  import->add_option("--parent", il_parent, "parent layer");
  import->callback([&] {
    const std::string ctx = "import-layer " + escape_for_message(il_id);
    if (auto v = validate_layer_id(il_id); !v.ok()) return fail(v.error().with_context(ctx));
    // The input is read to its end before the store lock is taken: a slow pipe never holds
    // the store.
    auto in = open_reader(il_file);
    if (!in.ok()) return fail(in.error().with_context(ctx));
    auto staged = StagedInput::stage(g.root, **in);
    if (!staged.ok()) return fail(staged.error().with_context(ctx));
    auto store = open_store(g);
    if (!store.ok()) return fail(store.error());
    auto r = (*store)->import_layer(il_id, il_parent, **staged);
    if (!r.ok()) return fail(r.error());
    if (g.json) std::cout << layer_json(*r).dump(2) << "\n";
    else std::printf("%s %s %lld\n", r->id.c_str(), r->diff_id.c_str(), static_cast<long long>(r->size));
  });

  // applydiff
  auto* applydiff = app.add_subcommand("applydiff", "apply a layer tar to an existing layer");
  applydiff->add_option("ID", ad_id)->required();
  applydiff->add_option("FILE", ad_file)->required();
  applydiff->callback([&] {
    const std::string ctx = "applydiff " + escape_for_message(ad_id);
    if (auto v = validate_layer_id(ad_id); !v.ok()) return fail(v.error().with_context(ctx));
    auto in = open_reader(ad_file);
    if (!in.ok()) return fail(in.error().with_context(ctx));
    auto staged = StagedInput::stage(g.root, **in);
    if (!staged.ok()) return fail(staged.error().with_context(ctx));
    auto store = open_store(g);
    if (!store.ok()) return fail(store.error());
    auto r = (*store)->apply_diff(ad_id, **staged);
    if (!r.ok()) return fail(r.error());
    if (g.json) std::cout << json{{"id", ad_id}, {"size", *r}}.dump() << "\n";
    else std::printf("%lld\n", static_cast<long long>(*r));
  });

  // diff / changes / diffsize share --parent handling.
  auto* diff = app.add_subcommand("diff", "export a layer's changes as an OCI layer tar");
  diff->add_option("ID", df_id)->required();
  diff->add_option("--parent", df_parent, "compare against this layer (default: the layer's parent; \"\" = nothing)");
  diff->add_option("-o,--output", df_out, "output file (default stdout)");
  diff->callback([&] {
    const std::string ctx = "diff " + escape_for_message(df_id);
    if (auto v = validate_layer_id(df_id); !v.ok()) return fail(v.error().with_context(ctx));
    if (df_out.empty() && isatty(1))
      return fail(Error::usage(ctx + ": refusing to write a tar to a terminal; use -o FILE"));
    auto out = OutputFile::open(df_out);
    if (!out.ok()) return fail(out.error().with_context(ctx));
    auto store = open_store(g, LockMode::kShared);
    if (!store.ok()) return fail(store.error());
    // To a pipe, the diff is staged in the store's tmp/ and copied out after the lock is
    // released (a reader that stops reading must not hold the store).  A read-only store has
    // no tmp/ to stage in: there it is written directly (only readers can run anyway).
    std::optional<sys::Fd> spool;
    if ((*out)->may_block()) {
      auto fd = sys::open((*store)->root() + "/tmp", O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
      if (fd.ok()) spool = std::move(*fd);
    }
    if (spool) {
      FdWriter w(spool->get(), "staged diff");
      auto r = (*store)->diff(df_id, df_parent, w);
      if (!r.ok()) return fail(r.error());
      store->reset();  // releases the store lock
      if (::lseek(spool->get(), 0, SEEK_SET) != 0)
        return fail(Error::from_errno("lseek", "staged diff", errno).with_context(ctx));
      std::vector<char> buf(1 << 20);
      for (;;) {
        auto n = sys::read(spool->get(), buf.data(), buf.size());
        if (!n.ok()) return fail(n.error().with_context(ctx));
        if (*n == 0) break;
        auto w2 = (*out)->write(buf.data(), *n);
        if (!w2.ok()) return fail(w2.error().with_context(ctx + ": write " + (*out)->name()));
      }
    } else {
      auto r = (*store)->diff(df_id, df_parent, **out);
      if (!r.ok()) return fail(r.error());
    }
    auto c = (*out)->commit();
    if (!c.ok()) return fail(c.error().with_context(ctx));
  });

  auto* changes = app.add_subcommand("changes", "list changes (A/C/D path)");
  changes->add_option("ID", ch_id)->required();
  changes->add_option("--parent", ch_parent, "compare against this layer (default: the layer's parent)");
  changes->callback([&] {
    auto store = open_store(g, LockMode::kShared);
    if (!store.ok()) return fail(store.error());
    auto r = (*store)->changes(ch_id, ch_parent);
    if (!r.ok()) return fail(r.error());
    if (g.json) {
      json arr = json::array();
      for (const auto& c : *r) arr.push_back({{"path", c.path}, {"kind", kind_word(c.kind)}});
      std::cout << arr.dump(2) << "\n";
    } else {
      for (const auto& c : *r) std::printf("%c %s\n", change_kind_letter(c.kind), c.path.c_str());
    }
  });

  auto* diffsize = app.add_subcommand("diffsize", "bytes of added and modified files");
  diffsize->add_option("ID", ds_id)->required();
  diffsize->add_option("--parent", ds_parent, "compare against this layer (default: the layer's parent)");
  diffsize->callback([&] {
    auto store = open_store(g, LockMode::kShared);
    if (!store.ok()) return fail(store.error());
    auto r = (*store)->diff_size(ds_id, ds_parent);
    if (!r.ok()) return fail(r.error());
    if (g.json) std::cout << json{{"id", ds_id}, {"size", *r}}.dump() << "\n";
    else std::printf("%lld\n", static_cast<long long>(*r));
  });

  auto* mount = app.add_subcommand("mount", "mount a layer and print its path");
  mount->add_option("ID", mt_id)->required();
  mount->callback([&] {
    auto store = open_store(g);
    if (!store.ok()) return fail(store.error());
    auto r = (*store)->mount(mt_id);
    if (!r.ok()) return fail(r.error());
    if (g.json) std::cout << json{{"id", mt_id}, {"path", *r}}.dump() << "\n";
    else std::printf("%s\n", r->c_str());
  });

  auto* unmount = app.add_subcommand("unmount", "release a mount reference");
  unmount->add_option("ID", um_id)->required();
  unmount->callback([&] {
    auto store = open_store(g);
    if (!store.ok()) return fail(store.error());
    auto r = (*store)->unmount(um_id);
    if (!r.ok()) return fail(r.error());
  });

  auto* exists = app.add_subcommand("exists", "exit 0 if the layer exists, 1 if not");
  exists->add_option("ID", ex_id)->required();
  exists->callback([&] {
    if (auto v = validate_layer_id(ex_id); !v.ok()) return fail(v.error().with_context("exists"));
    auto store = open_store(g, LockMode::kShared);
    if (!store.ok()) return fail(store.error());
    bool there = (*store)->exists(ex_id);
    if (g.json) std::cout << json{{"id", ex_id}, {"exists", there}}.dump() << "\n";
    g.status = there ? kExitOk : kExitError;
  });

  auto* del = app.add_subcommand("delete-layer", "delete a layer");
  del->add_option("ID", dl_id)->required();
  del->callback([&] {
    auto store = open_store(g);
    if (!store.ok()) return fail(store.error());
    const size_t reported = (*store)->recovered().size();
    auto r = (*store)->delete_layer(dl_id);
    // Data of damaged metadata that the deletion collected.
    for (size_t i = reported; i < (*store)->recovered().size(); ++i)
      spdlog::warn("cowlab: recovered: {}", (*store)->recovered()[i]);
    if (!r.ok()) return fail(r.error());
  });

  auto* wipe = app.add_subcommand("wipe", "delete every layer and the driver's home");
  wipe->callback([&] {
    auto store = open_store(g);
    if (!store.ok()) return fail(store.error());
    auto r = (*store)->wipe();
    if (!r.ok()) return fail(r.error());
  });

  auto* image = app.add_subcommand("import-image", "import an OCI image layout or a docker save tar");
  image->add_option("PATH", im_path)->required();
  image->add_option("--ref", im_ref, "image tag or manifest digest when the input holds several");
  image->callback([&] {
    auto store = open_store(g);
    if (!store.ok()) return fail(store.error());
    auto r = import_image(**store, im_path, im_ref);
    if (!r.ok()) return fail(r.error());
    if (g.json) {
      json arr = json::array();
      for (size_t i = 0; i < r->layers.size(); ++i) {
        auto j = layer_json(r->layers[i]);
        j["reused"] = static_cast<bool>(r->reused[i]);
        arr.push_back(j);
      }
      std::cout << json{{"format", r->source_format}, {"reference", r->reference}, {"layers", arr}}.dump(2) << "\n";
    } else {
      std::printf("%s %s\n", r->source_format.c_str(), r->reference.c_str());
      for (size_t i = 0; i < r->layers.size(); ++i)
        std::printf("  %s %s%s\n", r->layers[i].id.c_str(), r->layers[i].diff_id.c_str(), r->reused[i] ? " (reused)" : "");
    }
  });

  // scenario check / run
  auto* scn = app.add_subcommand("scenario", "validate and run scenario files on this host");
  auto* check = scn->add_subcommand("check", "validate scenario files (FILE|DIR...)");
  check->add_option("FILES", sc_files, "scenario files or directories")->required();
  check->callback([&] {
    auto files = scenario::collect_files(sc_files);
    if (!files.ok()) return fail(files.error());
    int bad = 0;
    for (const auto& f : *files) {
      auto s = scenario::load(f);
      if (!s.ok()) {
        ++bad;
        spdlog::error("{}", s.error().message());
      }
    }
    std::printf("%zu scenario files, %d invalid\n", files->size(), bad);
    if (bad) g.status = kExitError;
  });
  auto* sschema = scn->add_subcommand(
      "schema", "print the language's reference table (docs/scenarios.md rows)");
  sschema
      ->add_option("TABLE", schema_table,
                    "top, entries, steps, expect, no-export-steps or no-export-expect")
      ->check(CLI::IsMember(
          {"top", "entries", "steps", "expect", "no-export-steps", "no-export-expect"}));
  sschema->callback([&] {
    for (const auto& row : scenario::reference_rows(schema_table)) std::printf("%s\n", row.c_str());
  });
  auto* sexp = scn->add_subcommand(
      "export", "write a scenario as a standalone shell script (no cowlab needed)");
  sexp->add_option("FILE", exp_file, "scenario file")->required();
  sexp->add_option("--driver", exp_driver, "overlay, aufs or btrfs")->required();
  sexp->add_option("--format", exp_format, "output format (sh)");
  sexp->add_option("-o,--out", exp_out, "write the script here (mode 0755) instead of stdout");
  sexp->callback([&] {
    if (exp_format != "sh")
      return fail(Error::usage("scenario export: unknown --format \"" + exp_format + "\" (sh)"));
    auto s = scenario::load(exp_file);
    if (!s.ok()) return fail(s.error());
    auto script = scenario::export_shell(**s, exp_driver);
    if (!script.ok()) return fail(script.error().with_context("scenario export " + exp_file));
    if (exp_out.empty() || exp_out == "-") {
      std::fwrite(script->data(), 1, script->size(), stdout);
      return;
    }
    auto w = sys::write_file_atomic(exp_out, *script, 0755);
    if (!w.ok()) return fail(w.error().with_context("scenario export -o"));
  });
  auto* sred = scn->add_subcommand(
      "reduce",
      "shrink a failing (or differing) scenario to a minimal one with the same failure");
  sred->add_option("FILE", red_file, "scenario file")->required();
  sred->add_option("--driver", red_driver, "the driver it fails on")->required();
  sred->add_option("--work-dir", red_work, "where backing stores are created (default /var/tmp)");
  sred->add_option("-o,--out", red_out, "write the reduced scenario here instead of stdout");
  sred->add_option("--profile,-p", red_profile,
                   "reduce in a guest of this kernel profile (built: cowlab vm build)");
  sred->add_option("--timeout", red_timeout,
                   "with --profile: seconds the whole reduction may take (default 14400)")
      ->check(CLI::PositiveNumber);
  sred->add_option("--against-driver", red_against_driver,
                   "reduce the difference between --driver and this driver (same kernel)");
  sred->add_option("--against-profile", red_against_profile,
                   "with --profile: reduce the difference between the two profiles' kernels");
  sred->callback([&] {
    if (!find_driver(red_driver))
      return fail(Error::usage("scenario reduce: unknown driver \"" + red_driver + "\""));
    if (auto bad = reduce_against_usage(red_driver, red_profile, red_against_driver,
                                        red_against_profile))
      return fail(*bad);
    if (!red_profile.empty()) {
      if (!red_work.empty())
        return fail(Error::usage(
            "scenario reduce: --work-dir is for host runs; with --profile the candidates run on "
            "the guest's scratch disk"));
      harness::GuestReduceOptions go;
      go.file = red_file;
      go.driver = red_driver;
      go.profile = red_profile;
      go.against_driver = red_against_driver;
      go.against_profile = red_against_profile;
      go.storage_opts = g.storage_opts;
      go.timeout = std::chrono::seconds(red_timeout);
      // The guest reducer's progress arrives in raw chunks: relayed line by line as progress.
      auto pending = std::make_shared<std::string>();
      go.on_stderr = [pending](std::string_view b) {
        pending->append(b);
        for (size_t nl; (nl = pending->find('\n')) != std::string::npos; pending->erase(0, nl + 1))
          spdlog::info("{}", pending->substr(0, nl));
      };
      // An interrupt stops the guest and unwinds (QEMU killed, scratch disks and the
      // candidates' directory removed) instead of killing cowlab and leaving them behind.
      harness::install_stop_signal_handlers();
      auto r = harness::reduce_in_guest(go);
      if (harness::stop_requested() && harness::stop_signal()) {
        spdlog::error("cowlab scenario reduce: interrupted");
        g.status = 128 + harness::stop_signal();
        return;
      }
      if (!r.ok()) return fail(r.error());
      spdlog::info("reduce: done in {} {} guest(s) (kernel {}) in {:.0f} s", r->guests, red_profile,
                   r->kernel_release, r->seconds);
      if (red_out.empty() || red_out == "-") {
        std::fwrite(r->yaml.data(), 1, r->yaml.size(), stdout);
        return;
      }
      auto w = sys::write_file_atomic(red_out, r->yaml, 0644);
      if (!w.ok()) return fail(w.error().with_context("scenario reduce -o"));
      return;
    }
    scenario::ReduceOptions ro;
    ro.run.driver = red_driver;
    ro.run.work_dir = red_work;
    auto opts = parse_storage_opts(g.storage_opts);
    if (!opts.ok()) return fail(opts.error());
    ro.run.storage_opts = *opts;
    ro.progress = [](const std::string& line) { spdlog::info("reduce: {}", line); };
    if (!red_against_driver.empty()) {
      scenario::ReduceSide side;
      side.label = red_against_driver;
      side.run = ro.run;
      side.run.driver = red_against_driver;
      ro.against = side;
    }
    auto r = scenario::reduce(red_file, ro);
    if (!r.ok()) return fail(r.error());
    if (r->difference.empty())
      spdlog::info("reduce: kept failure \"{}\" after {} runs", r->failure, r->runs);
    else
      spdlog::info("reduce: kept difference \"{}\" ({}) after {} runs", r->failure, r->difference,
                   r->runs);
    if (red_out.empty() || red_out == "-") {
      std::fwrite(r->yaml.data(), 1, r->yaml.size(), stdout);
      return;
    }
    auto w = sys::write_file_atomic(red_out, r->yaml, 0644);
    if (!w.ok()) return fail(w.error().with_context("scenario reduce -o"));
  });
  auto* srun = scn->add_subcommand("run", "run scenarios against host drivers; JSON lines on stdout");
  srun->add_option("FILES", run_files,
                   "scenario files or directories (run before any from --queue)");
  srun->add_option("--queue", run_queue,
                   "also run the scenario files read from FILE (a FIFO, a virtio-serial port), one "
                   "per line, asking for each by writing {\"event\":\"next\"} to the output first; "
                   "an empty line or the end of FILE ends the run (the matrix's guests take their "
                   "work this way, one scenario at a time)");
  srun->add_option("--work-dir", run_work, "where backing stores are created (default /var/tmp)");
  srun->add_option("--out", run_out, "write JSON lines here instead of stdout");
  srun->add_flag("--keep", run_keep, "keep the backing store of a failed scenario for debugging");
  srun->add_option("--repeat", run_repeat,
                   "run each scenario N times, each on a fresh store (results carry \"run\": 1..N)")
      ->check(CLI::Range(1u, 1000u));
  srun->add_option("--rerun-failures", run_rerun,
                   "rerun a scenario that did not pass up to K more times, stopping at its first pass "
                   "(those results carry \"rerun\": true); a cell that fails and then passes is flaky and "
                   "does not make the exit status 1")
      ->check(CLI::Range(0u, 1000u));
  srun->add_option("--repeat-from", run_repeat_from,
                   "where the later runs of a cell (repeats, reruns) get the image: \"checkpoint\" "
                   "(default: a copy of the store saved right after the first run's import, so each "
                   "run still starts on a store no other run touched) or \"import\" (every run "
                   "imports the layers again, to repeat the import itself)")
      ->check(CLI::IsMember({"checkpoint", "import"}));
  srun->add_flag("--events", run_events,
                 "also write {\"event\":\"start\",...} before each scenario (the matrix uses it to "
                 "know which scenario a crashed guest was running)");
  srun->callback([&] {
    if (run_files.empty() && run_queue.empty())
      return fail(Error::usage("scenario run: no scenario FILES and no --queue"));
    // Files given on the command line are all loaded (and so checked) before anything runs.
    auto files = run_files.empty() ? Result<std::vector<std::string>>(std::vector<std::string>())
                                   : scenario::collect_files(run_files);
    if (!files.ok()) return fail(files.error());
    std::vector<std::unique_ptr<scenario::Scenario>> loaded;
    for (const auto& f : *files) {
      auto s = scenario::load(f);
      if (!s.ok()) return fail(s.error());
      loaded.push_back(std::move(*s));
    }
    // The global --driver (before or after `scenario run`) picks the drivers; default: all.
    auto drivers = parse_driver_list(g.driver.empty() ? "all" : g.driver);
    if (!drivers.ok()) return fail(drivers.error().with_context("scenario run --driver"));
    // Results stream out line by line (the matrix reads them from a virtio-serial port while
    // the run goes on), so --out is opened for appending, not replaced atomically.
    int out_fd = 1;
    sys::Fd out_owned;
    if (!run_out.empty() && run_out != "-") {
      auto fd = sys::open(run_out, O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (!fd.ok()) return fail(fd.error().with_context("scenario run --out"));
      out_owned = std::move(*fd);
      out_fd = out_owned.get();
    }
    FdWriter out_writer(out_fd, run_out.empty() ? "-" : run_out);
    Writer* out = &out_writer;
    // --queue: opened before the first request, so an answer never reaches a closed port.
    sys::Fd queue_fd;
    if (!run_queue.empty()) {
      auto fd = sys::open(run_queue, O_RDONLY | O_CLOEXEC);
      if (!fd.ok()) return fail(fd.error().with_context("scenario run --queue"));
      queue_fd = std::move(*fd);
    }
    std::string queue_buf;
    // The next line of the queue, without its newline; nullopt at the end.  Bytes read past the
    // line (a writer that sent several at once) wait for the next request.
    auto queue_line = [&]() -> Result<std::optional<std::string>> {
      for (;;) {
        if (auto nl = queue_buf.find('\n'); nl != std::string::npos) {
          std::string line = queue_buf.substr(0, nl);
          queue_buf.erase(0, nl + 1);
          return std::optional<std::string>(std::move(line));
        }
        char chunk[512];
        size_t n = COWLAB_TRY_CTX(sys::read(queue_fd.get(), chunk, sizeof chunk),
                                  "scenario run --queue " + run_queue);
        if (n == 0) {
          if (queue_buf.empty()) return std::optional<std::string>();
          return std::optional<std::string>(std::exchange(queue_buf, std::string()));
        }
        queue_buf.append(chunk, n);
      }
    };
    std::map<std::string, int> counts;
    // Per cell (scenario, driver, sweep point): did any run pass, did any not?  The exit status
    // follows the matrix's rule (docs/regressions.md): a cell fails only when no run of it
    // passed; one that failed and passed (on a repeat or a rerun) is flaky, counted apart, and
    // does not fail the command.
    struct CellRuns {
      bool passed = false, bad = false;
    };
    std::map<std::string, CellRuns> cells;
    size_t total = loaded.size() * drivers->size(), n = 0;
    // Ctrl-C (or SIGTERM/SIGHUP) stops the run in progress: its worker, in a process group of
    // its own that the terminal's signal never reaches, is killed, its backing store torn
    // down (mounts, loop devices, pool), the layer tars removed; the finished runs stay
    // reported.  Killed by the signal instead, cowlab left the worker running as an orphan
    // and its store mounted under the work dir.
    harness::install_stop_signal_handlers();
    bool interrupted = false;
    // Per driver, what its image checkpoints have cost in this command so far: a later cell
    // saves one only where restoring it beats importing the image (CheckpointCosts).
    std::map<std::string, scenario::CheckpointCosts> checkpoint_costs;
    size_t next_loaded = 0;
    std::unique_ptr<scenario::Scenario> from_queue;
    for (;;) {
      if (interrupted || harness::stop_requested()) break;
      const scenario::Scenario* s = nullptr;
      if (next_loaded < loaded.size()) {
        s = loaded[next_loaded++].get();
      } else if (queue_fd.get() >= 0) {
        static const std::string kRequest = json{{"event", "next"}}.dump() + "\n";
        auto asked = out->write(kRequest.data(), kRequest.size());
        if (!asked.ok())
          return fail(asked.error().with_context("scenario run --queue: ask for work"));
        auto line = queue_line();
        if (!line.ok()) return fail(line.error());
        if (!*line || (*line)->empty()) break;
        auto loaded_one = scenario::load(**line);
        if (!loaded_one.ok()) return fail(loaded_one.error().with_context("scenario run --queue"));
        from_queue = std::move(*loaded_one);
        s = from_queue.get();
        total += drivers->size();
      } else {
        break;
      }
      // The scenario's layer tars, built by its first run and imported by every later one (its
      // repeats, its other drivers): generating a layer's bytes is work the store under test
      // never sees.  On the work dir, gone when the scenario's runs are.
      const std::string work = run_work.empty() ? "/var/tmp" : run_work;
      auto tars = [&]() -> Result<std::string> {
        COWLAB_TRY(sys::mkdir_all(work, 0755));
        return sys::make_temp_dir(work, "cowlab-layer-tars-");
      }();
      if (!tars.ok())
        return fail(tars.error().with_context("scenario run: layer tars for " + s->file()));
      struct RemoveTars {
        std::string dir;
        ~RemoveTars() { (void)sys::remove_all(dir); }
      } remove_tars{*tars};
      for (const auto& d : *drivers) {
        if (interrupted) break;
        ++n;
        // Repeats run one after the other, each through scenario::run (a fresh store on a
        // fresh backing store every time); the matrix folds them into one verdict per cell.
        // The later runs start from a checkpoint of the store the first import left (in this
        // cell's own directory, removed with its last run) instead of importing the image again.
        std::string checkpoints;
        if (run_repeat + run_rerun > 1 && run_repeat_from == "checkpoint") {
          auto dir = sys::make_temp_dir(work, "cowlab-checkpoints-");
          if (!dir.ok())
            return fail(
                dir.error().with_context("scenario run: image checkpoints for " + s->file()));
          checkpoints = *dir;
        }
        struct RemoveCheckpoints {
          std::string dir;
          ~RemoveCheckpoints() {
            if (!dir.empty()) (void)sys::remove_all(dir);
          }
        } remove_checkpoints{checkpoints};
        bool clean_run_seen = false, last_bad = false;
        for (unsigned run_no = 1; run_no <= run_repeat + run_rerun; ++run_no) {
          bool rerun = run_no > run_repeat;
          // Reruns only for a cell that has not passed yet, and only until it passes once.
          if (rerun && (clean_run_seen || !last_bad)) break;
          if (harness::stop_requested()) {
            interrupted = true;
            break;
          }
          last_bad = false;
          if (run_events) {
            json ev = {
                {"event", "start"}, {"scenario", s->name()}, {"file", s->file()}, {"driver", d}};
            if (run_repeat > 1 || run_rerun > 0) ev["run"] = run_no;
            std::string evs = ev.dump() + "\n";
            auto w = out->write(evs.data(), evs.size());
            if (!w.ok()) return fail(w.error());
          }
          scenario::RunOptions ro;
          ro.driver = d;
          ro.work_dir = run_work;
          ro.keep = run_keep;
          ro.run = static_cast<int>(run_no);
          ro.layer_tars = *tars;
          ro.checkpoints = checkpoints;
          // The last run this cell may make takes the checkpoint instead of copying it.
          if (run_no == run_repeat + run_rerun)
            ro.checkpoint_use = scenario::RunOptions::CheckpointUse::kConsume;
          ro.checkpoint_costs = checkpoint_costs[d];
          // The repeats still to come; a rerun comes only after a failure, so at most one is
          // counted on.
          ro.later_runs =
              run_no < run_repeat ? run_repeat - run_no : (run_no < run_repeat + run_rerun ? 1 : 0);
          ro.stop = [] { return harness::stop_requested(); };
          auto opts = parse_storage_opts(g.storage_opts);
          if (!opts.ok()) return fail(opts.error());
          ro.storage_opts = *opts;
          for (const auto& r : scenario::run(*s, ro)) {
            checkpoint_costs[d].add(r);
            // A signal during the backing store's tools (mkfs, zpool: they share the terminal's
            // process group) fails the run with their death: not a result either.
            if (r.interrupted || harness::stop_requested()) {
              spdlog::error("scenario run: {} on {} interrupted; its store was torn down",
                            s->name(), d);
              continue;
            }
            std::string line = r.to_json_line();
            if (run_repeat > 1 || run_rerun > 0) {
              json j = json::parse(line);
              j["run"] = run_no;
              if (rerun) j["rerun"] = true;
              line = j.dump();
            }
            line += "\n";
            std::string sweep;
            for (const auto& [k, v] : r.sweep) sweep += " " + k + "=" + v;
            CellRuns& cell = cells[s->file() + '\0' + d + '\0' + sweep];
            if (r.status != scenario::Status::kPass && r.status != scenario::Status::kSkip) {
              last_bad = true;
              cell.bad = true;
            } else {
              cell.passed = true;
            }
            auto w = out->write(line.data(), line.size());
            if (!w.ok()) return fail(w.error());
            counts[scenario::status_name(r.status)]++;
            spdlog::info("[{}/{}] {:<40} {:<13} {:<7} {:6.1f}s{}{}", n, total, s->name(), d,
                         scenario::status_name(r.status), r.duration_s, sweep,
                         r.reason.empty() ? "" : "  " + r.reason);
            for (const auto& f : r.failures)
              spdlog::info("      {}: expected {}, observed {}", f.expectation, f.expected,
                           f.observed);
          }
          if (!last_bad) clean_run_seen = true;
        }
      }
    }
    std::string summary;
    for (const auto& [k, v] : counts) summary += " " + k + "=" + std::to_string(v);
    int flaky = 0, failing = 0;
    for (const auto& [key, c] : cells) {
      if (c.bad && c.passed) ++flaky;
      if (c.bad && !c.passed) ++failing;
    }
    if (flaky) summary += " (flaky cells=" + std::to_string(flaky) + ": failed, then passed)";
    spdlog::info("scenarios:{}", summary);
    if (interrupted || harness::stop_requested()) {
      spdlog::error("cowlab scenario run: interrupted by signal {}", harness::stop_signal());
      g.status = 128 + (harness::stop_signal() ? harness::stop_signal() : SIGINT);
      return;
    }
    if (failing) g.status = kExitError;
  });
}

}  // namespace cowlab::cli
