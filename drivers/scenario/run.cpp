// The scenario runner.  One scenario × driver × sweep point runs in a forked worker so a
// hung kernel operation becomes a timeout instead of a hung runner; the parent owns the
// backing store and tears it down whatever happened in the worker.
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "cowlab/digest.h"
#include "cowlab/fs.h"
#include "cowlab/layer_store.h"
#include "cowlab/sys.h"
#include "cowlab/sys_process.h"
#include "cowlab/units.h"
#include "cowlab/view.h"
#include "scenario/internal.h"
#include "scenario/ops.h"

namespace cowlab::scenario {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string field(const Fields& f, const std::string& key, const std::string& fallback = "") {
  auto it = f.find(key);
  return it == f.end() ? fallback : it->second.scalar;
}
bool has(const Fields& f, const std::string& key) {
  return f.count(key) > 0;
}

// A number from a size-or-number field: "64MiB" → bytes, "0.25" → 0.25.
double number(const std::string& s) {
  auto star = s.find('*');
  if (star != std::string::npos)
    return std::strtod(s.substr(0, star).c_str(), nullptr) * number(s.substr(star + 1));
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end && *end == 0) return v;
  auto r = parse_size(s);
  return r.ok() ? static_cast<double>(*r) : NAN;
}

std::string fmt_number(double v) {
  std::ostringstream o;
  if (std::fabs(v) >= 1e6 && std::fabs(v - std::round(v)) < 1e-9) {
    o << static_cast<long long>(v);
  } else {
    o.precision(6);
    o << v;
  }
  return o.str();
}

// Why the image of `doc` must not be checkpointed ("" when it may): a build step whose cases
// depend on the run number builds a different image on different runs of `--repeat`.
std::string checkpoint_refusal(const Doc& doc) {
  for (const auto& l : doc.layers)
    for (const auto& st : l.build)
      for (const auto& c : st.cases)
        if (c.when && !c.when->runs.empty())
          return "layer " + l.id + "'s build step " + std::to_string(st.index) +
                 " depends on the run number";
  return "";
}

class Runner : public StepEnv, public ExpectEnv {
 public:
  Runner(const Scenario::Impl& s, const Doc& doc, const Backing& b, RunResult& out)
      : s_(s), doc_(doc), b_(b), out_(out) {
    auto kv = sys::kernel_version();
    ctx_.driver = b.driver;
    ctx_.kernel_major = kv.major;
    ctx_.kernel_minor = kv.minor;
    ctx_.features = &probed_features(b.driver);
  }
  void set_run(int run) { ctx_.run = run; }
  void set_layer_tars(const std::string& dir) { layer_tars_ = dir; }
  // Save the store as the image import leaves it to `dir` (RunOptions::checkpoints).
  void set_checkpoint(const std::string& dir) { checkpoint_ = dir; }
  // What this driver's checkpoints have cost so far and how many later runs this one would
  // serve: the checkpoint is saved only when it pays (CheckpointCosts::pays).
  void set_checkpoint_costs(const CheckpointCosts& costs, unsigned later_runs) {
    costs_ = costs;
    later_runs_ = later_runs;
  }
  // The backing is a restored image checkpoint: the image is in the store already.
  void set_restored(CheckpointMeta meta) {
    restored_ = true;
    aliases_ = std::move(meta.aliases);
    restored_digests_ = std::move(meta.image_digests);
  }
  ~Runner() override {
    for (pid_t p : holders_) (void)sys::kill_child(p);
    release_handles();
  }

  // Runs everything; returns an error only when the scenario could not be carried out
  // (status "error"); failed expectations are recorded in out_.failures.
  Result<void> run() {
    auto r = run_scenario();
    if (!r.ok() && store_) {
      // A failed scenario still releases what it holds — mounts, and the driver's devices and
      // pools (a devicemapper pool keeps its loop devices bound, which unmounting the work dir
      // cannot undo) — so the backing store comes apart cleanly.
      for (pid_t p : holders_) (void)sys::kill_child(p);
      holders_.clear();
      release_handles();
      (void)unmount_all();
      (void)store_->wipe();
    }
    return r;
  }

 private:
  Result<void> run_scenario() {
    auto t = Clock::now();
    // Each phase's time is recorded as it ends, so a run that fails still shows where it got.
    auto phase = [&](const char* name) {
      auto now = Clock::now();
      out_.phases_s[name] += std::chrono::duration<double>(now - t).count();
      t = now;
    };
    COWLAB_TRY(open_store());
    phase("open");
    if (!restored_) {
      for (const auto& l : doc_.layers) COWLAB_TRY_CTX(build_layer(l), "layer " + l.id);
      phase("layers");
    }
    // The digests that image_unchanged and unaffected compare against, taken only when an
    // expectation compares them: a layer's digest is its whole diff exported and hashed, a
    // container's its whole tree read, and on a 144 MiB image those two took 45 % of the
    // run (create-cost-vs-image-size on btrfs, 11.9 s of 26 s under TCG).  The image's are
    // part of preparing it: a restored run compares against the digests the run that saved
    // the checkpoint took of the image as imported, which also catches a restore that
    // changed the image.
    const DigestNeeds needs = digest_needs();
    if (needs.image) {
      bool all = restored_;
      for (const auto& l : doc_.layers) all = all && restored_digests_.count(l.id);
      if (all) {
        for (const auto& l : doc_.layers) image_digests_[l.id] = restored_digests_[l.id];
      } else {
        for (const auto& l : doc_.layers) image_digests_[l.id] = COWLAB_TRY(layer_digest(l.id));
        phase("digests");
      }
    }
    // The phase is the save's: a checkpoint refused before any work (it would not pay, the
    // image depends on the run) has none, so CheckpointCosts counts only real saves.
    if (!restored_ && !checkpoint_.empty() &&
        COWLAB_TRY_CTX(checkpoint_image(), "image checkpoint"))
      phase("checkpoint");
    for (const auto& c : doc_.containers) COWLAB_TRY_CTX(create_container(c), "container " + c.id);
    // Every container is mounted before the first step, digested or not: a timed step must
    // not time a mount.
    for (const auto& c : doc_.containers) {
      std::string path = COWLAB_TRY(mount(c.id));
      if (needs.containers.count(c.id)) {
        auto d0 = Clock::now();
        container_digests_[c.id] = COWLAB_TRY(tree_digest(path));
        auto spent = Clock::now() - d0;
        out_.phases_s["digests"] += std::chrono::duration<double>(spent).count();
        t += spent;  // not the containers' phase
      }
    }
    phase("containers");
    for (const auto& st : doc_.steps) COWLAB_TRY(step(st, ""));
    phase("steps");
    for (const auto& e : doc_.expect) COWLAB_TRY(expectation(e));
    phase("expect");
    auto done = finish();
    phase("finish");
    return done;
  }

  // Which digests the expectations compare: image_unchanged (any case of it) needs every
  // image layer's, unaffected the listed containers' (any case's list).
  struct DigestNeeds {
    bool image = false;
    std::set<std::string> containers;
  };
  DigestNeeds digest_needs() const {
    DigestNeeds n;
    auto note = [&](const std::string& kind, const Fields& f) {
      if (kind == "image_unchanged") n.image = true;
      if (kind == "unaffected") {
        auto it = f.find("containers");
        if (it != f.end()) n.containers.insert(it->second.list.begin(), it->second.list.end());
      }
    };
    for (const auto& e : doc_.expect) {
      note(e.kind, e.fields);
      for (const auto& c : e.cases) note(e.kind, c.fields);
    }
    return n;
  }

  // Closes the store, quiesces its backing, copies it to checkpoint_, and brings both back.
  // A copy that fails (a full scratch disk) only costs the later runs their shortcut: they
  // import the image themselves; the reason is in the result.  Returns false when it refused
  // before doing any of that (the reason in out_.checkpoint).
  Result<bool> checkpoint_image() {
    std::string refused = checkpoint_refusal(doc_);
    // The layers phase is the image's alone: a build step that measured or failed made a
    // result the later runs would not make again.
    if (refused.empty() && (!out_.measurements.empty() || !out_.failures.empty()))
      refused = "the image's build steps recorded measurements or failures";
    // What a restored run does not redo: make the backing store, import the layers, digest
    // the image.  A checkpoint costing more than that (a small image on zfs) is not saved.
    if (refused.empty()) {
      double import_s = 0;
      for (const char* p : {"backing", "layers", "digests"})
        if (auto it = out_.phases_s.find(p); it != out_.phases_s.end()) import_s += it->second;
      if (!costs_.pays(import_s, later_runs_)) refused = costs_.why_not(import_s, later_runs_);
    }
    // A restore that failed before this run's import stays in the record.
    const std::string was = out_.checkpoint.empty() ? "" : " (" + out_.checkpoint + ")";
    if (!refused.empty()) {
      out_.checkpoint = "not saved: " + refused + was;
      return false;
    }
    for (pid_t p : holders_) (void)sys::kill_child(p);
    holders_.clear();
    release_handles();
    COWLAB_TRY(unmount_all());
    store_.reset();
    const Quiesce how = COWLAB_TRY(quiesce_backing(b_));
    auto saved = save_checkpoint(b_, checkpoint_, {aliases_, image_digests_}, how);
    COWLAB_TRY_CTX(resume_backing(b_, how), "resume the backing store after the checkpoint");
    COWLAB_TRY(open_store());
    out_.checkpoint = (saved.ok() ? "saved" : "not saved: " + saved.error().message()) + was;
    if (saved.ok()) out_.checkpoint_quiesce = quiesce_name(how);
    return true;
  }

  Result<void> open_store() {
    StoreOptions so;
    so.root = b_.root;
    so.driver = b_.driver;
    so.storage_opts = b_.storage_opts;
    store_ = COWLAB_TRY(LayerStore::open(so));
    // What the driver reports about itself (overlay's "Using metacopy", index, userxattr ...):
    // the features in effect for this run, next to the options that asked for them.
    for (const auto& [k, v] : store_->driver().status()) out_.driver_status[k] = v;
    return {};
  }

  std::string layer_store_id(const std::string& id) const {
    auto it = aliases_.find(id);
    return it == aliases_.end() ? id : it->second;
  }

  Result<std::string> mount(const std::string& id) {
    auto it = mounted_.find(id);
    if (it != mounted_.end()) return it->second;
    std::string path = COWLAB_TRY(store_->mount(layer_store_id(id)));
    mounted_[id] = path;
    return path;
  }

  Result<void> unmount_all() {
    for (auto it = mounted_.begin(); it != mounted_.end();) {
      COWLAB_TRY(store_->unmount(layer_store_id(it->first)));
      it = mounted_.erase(it);
    }
    return {};
  }

  Result<std::string> layer_digest(const std::string& id) {
    StringWriter w;
    COWLAB_TRY(store_->diff(layer_store_id(id), std::nullopt, w));
    return sha256_digest(w.data());
  }

  std::string scratch(const std::string& name) const { return b_.work + "/" + name; }

  Result<void> build_layer(const LayerDef& l) {
    std::string parent = l.parent.empty() ? "" : layer_store_id(l.parent);
    switch (l.source) {
      case LayerSource::kEntries: {
        // Without a shared directory the tar is this run's own, deleted after the import.
        const bool own = layer_tars_.empty();
        std::string tar = own ? scratch("layer-" + l.id + ".tar") : COWLAB_TRY(shared_layer_tar(l));
        if (own) {
          COWLAB_TRY(write_entries_tar(l.entries, tar));
          ++out_.layer_tars_built;
        }
        auto fd = COWLAB_TRY(sys::open(tar, O_RDONLY));
        FdReader r(fd.get(), tar);
        COWLAB_TRY(store_->import_layer(l.id, parent, r));
        if (own) (void)sys::unlink(tar);
        return {};
      }
      case LayerSource::kTar: {
        auto fd = COWLAB_TRY(sys::open(l.path, O_RDONLY));
        FdReader r(fd.get(), l.path);
        COWLAB_TRY(store_->import_layer(l.id, parent, r));
        return {};
      }
      case LayerSource::kOci: {
        auto img = COWLAB_TRY(import_image(*store_, l.path));
        if (img.layers.empty()) return Error::invalid("image " + l.path + " has no layers");
        aliases_[l.id] = img.layers.back().id;
        return {};
      }
      case LayerSource::kBuild: {
        // docker build/commit: run the steps in a container on the parent, export its diff
        // and import that as the layer.
        std::string tmp = "build-" + l.id;
        COWLAB_TRY(store_->create_layer(tmp, parent, LayerKind::kReadWrite));
        std::string path = COWLAB_TRY(store_->mount(tmp));
        mounted_[tmp] = path;
        for (const auto& st : l.build) COWLAB_TRY(step(st, tmp));
        release_handles_of(tmp);
        COWLAB_TRY(store_->unmount(tmp));
        mounted_.erase(tmp);
        std::string tar = scratch("build-" + l.id + ".tar");
        {
          auto fd = COWLAB_TRY(sys::open(tar, O_WRONLY | O_CREAT | O_TRUNC, 0600));
          FdWriter w(fd.get(), tar);
          COWLAB_TRY(store_->diff(tmp, std::nullopt, w));
        }
        COWLAB_TRY(store_->delete_layer(tmp));
        auto fd = COWLAB_TRY(sys::open(tar, O_RDONLY));
        FdReader r(fd.get(), tar);
        COWLAB_TRY(store_->import_layer(l.id, parent, r));
        (void)sys::unlink(tar);
        return {};
      }
    }
    return {};
  }

  // The layer's tar in layer_tars_, named by the digest of its entries: built (to a temporary
  // name, then renamed, so a run killed while writing never leaves a short tar under the real
  // name) when no earlier run left it there.
  Result<std::string> shared_layer_tar(const LayerDef& l) {
    Sha256 h;
    auto put = [&](const std::string& s) {
      std::string len = std::to_string(s.size()) + ":";
      h.update(len);
      h.update(s);
    };
    for (const auto& e : l.entries) {
      put("entry");
      for (const auto& [k, v] : e.fields) {
        put(k);
        put(std::to_string(static_cast<int>(v.kind)));
        put(v.scalar);
        put(std::to_string(v.list.size()));
        for (const auto& x : v.list) put(x);
        put(std::to_string(v.map.size()));
        for (const auto& [mk, mv] : v.map) {
          put(mk);
          put(mv);
        }
      }
    }
    std::string digest = h.finish();
    std::string tar = layer_tars_ + "/" + digest.substr(digest.find(':') + 1) + ".tar";
    if (COWLAB_TRY(sys::lstat_if_exists(tar))) {
      ++out_.layer_tars_reused;
      return tar;
    }
    std::string tmp = tar + ".partial-" + std::to_string(::getpid());
    auto written = write_entries_tar(l.entries, tmp);
    if (!written.ok()) {
      (void)sys::unlink(tmp);
      return std::move(written).error();
    }
    COWLAB_TRY(sys::rename(tmp, tar));
    ++out_.layer_tars_built;
    return tar;
  }

  Result<void> create_container(const ContainerDef& c) {
    CreateOpts opts;
    if (!c.size.empty()) opts.storage_opt["size"] = c.size;
    // Write back the image layers first: a btrfs snapshot (and a zfs snapshot's txg sync)
    // flushes the source's dirty data, so right after an import the create would be timed
    // with the image's write-back in it — a cost of the import, not of the create.
    auto timed_create = [&](const std::string& id) -> Result<double> {
      ::sync();
      auto t0 = Clock::now();
      COWLAB_TRY(store_->create_layer(id, layer_store_id(c.image), LayerKind::kReadWrite, opts));
      return std::chrono::duration<double>(Clock::now() - t0).count();
    };
    ::sync();
    uint64_t before = COWLAB_TRY(store_->driver().space_used());
    double secs = COWLAB_TRY(timed_create(c.id));
    uint64_t after = COWLAB_TRY(store_->driver().space_used());
    // More samples: siblings on the same image, timed the same way, removed only after all
    // were timed (a removal in between — btrfs's cleaner deleting a subvolume in the
    // background — would be timed with the next create).  The scenario never sees them.
    std::vector<std::string> siblings;
    Result<void> sampled = [&]() -> Result<void> {
      for (int k = 1; k < c.samples; ++k) {
        std::string id = c.id + ".sample-" + std::to_string(k);
        double t = COWLAB_TRY_CTX(timed_create(id),
                                  "container " + c.id + ": timing sample " + std::to_string(k + 1));
        siblings.push_back(id);
        secs = std::min(secs, t);
      }
      return {};
    }();
    for (const auto& id : siblings) {
      auto d = store_->delete_layer(id);
      if (!d.ok() && sampled.ok())
        sampled = std::move(d).error().with_context("container " + c.id +
                                                    ": removing timing sample " + id);
    }
    COWLAB_TRY(std::move(sampled));
    out_.measurements["create." + c.id + ".space"] =
        static_cast<double>(after) - static_cast<double>(before);
    out_.measurements["create." + c.id + ".time"] = secs;
    out_.units["create." + c.id + ".space"] = "bytes";
    out_.units["create." + c.id + ".time"] = "s";
    return {};
  }

  std::vector<std::string> targets(const Fields& f, const std::string& implicit) {
    if (!implicit.empty()) return {implicit};
    std::vector<std::string> out;
    auto it = f.find("in");
    if (it == f.end()) return out;
    for (const auto& pat : it->second.list)
      for (const auto& c : doc_.containers)
        if (::fnmatch(pat.c_str(), c.id.c_str(), 0) == 0 &&
            std::find(out.begin(), out.end(), c.id) == out.end())
          out.push_back(c.id);
    return out;
  }

  // ---- StepEnv: state held across steps and store-level operations ----------------------
  std::map<std::string, OpenFile>& fds() override { return fds_; }
  std::map<std::string, Mapping>& maps() override { return maps_; }
  std::map<std::string, int>& watches() override { return watches_; }
  void record(const std::string& m, double v) override { out_.measurements[m] = v; }
  void fail(const std::string& what, const std::string& expected,
            const std::string& observed) override {
    out_.failures.push_back({what, expected, observed});
  }
  Result<int> drop_caches() override {
    ::sync();
    auto fd = COWLAB_TRY(sys::open("/proc/sys/vm/drop_caches", O_WRONLY));
    COWLAB_TRY(sys::write_all(fd.get(), "3", 1));
    return 0;
  }
  Result<int> crash_kernel() override {
    // For testing the harness's panic detection: only inside a cowlab guest, never on a host.
    if (!std::getenv("COWLAB_PAYLOAD"))
      return Error::invalid("refusing to crash the kernel outside a cowlab guest");
    ::sync();
    auto fd = COWLAB_TRY(sys::open("/proc/sysrq-trigger", O_WRONLY));
    COWLAB_TRY(sys::write_all(fd.get(), "c", 1));
    return 0;
  }
  Result<int> reopen() override {
    // Descriptors, mappings and watches keep the old mounts busy: they end with the store.
    release_handles();
    store_.reset();
    COWLAB_TRY(open_store());
    return 0;
  }
  Result<int> hold_mount(const std::string& id) override {
    COWLAB_TRY(mount(id));
    holders_.push_back(COWLAB_TRY(sys::spawn_mount_holder()));
    return 0;
  }
  Result<int> remove(const std::string& id, std::string* detail) override {
    release_handles_of(id);
    if (mounted_.count(id)) {
      auto u = store_->unmount(layer_store_id(id));
      if (!u.ok()) {
        *detail = u.error().message();
        return u.error().err() ? u.error().err() : EIO;
      }
      mounted_.erase(id);
    }
    auto d = store_->delete_layer(layer_store_id(id));
    if (!d.ok()) {
      *detail = d.error().message();
      return d.error().err() ? d.error().err() : EIO;
    }
    removed_.insert(id);
    return 0;
  }
  // docker commit: the container's diff imported as a layer on the container's image.  The
  // cost of this is where chmod-only changes and sparse-file bloat show (issue 13).
  Result<int> commit(const std::string& id, const std::string& as) override {
    std::string tar = scratch("commit-" + as + ".tar");
    std::string parent;
    for (const auto& c : doc_.containers)
      if (c.id == id) parent = layer_store_id(c.image);
    ::sync();
    uint64_t before = COWLAB_TRY(store_->driver().space_used());
    auto t0 = Clock::now();
    {
      auto fd = COWLAB_TRY(sys::open(tar, O_WRONLY | O_CREAT | O_TRUNC, 0600));
      FdWriter w(fd.get(), tar);
      COWLAB_TRY(store_->diff(layer_store_id(id), std::nullopt, w));
    }
    auto fd = COWLAB_TRY(sys::open(tar, O_RDONLY));
    FdReader r(fd.get(), tar);
    COWLAB_TRY(store_->import_layer("commit-" + as, parent, r));
    ::sync();
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    uint64_t after = COWLAB_TRY(store_->driver().space_used());
    auto st = COWLAB_TRY(sys::fstat(fd.get()));
    (void)sys::unlink(tar);
    record("commit." + as + ".size", static_cast<double>(st.st_size));
    record("commit." + as + ".time", secs);
    record("commit." + as + ".space", static_cast<double>(after) - static_cast<double>(before));
    return 0;
  }

  void release_handles_of(const std::string& container) {
    for (auto it = fds_.begin(); it != fds_.end();) {
      if (it->second.container != container) {
        ++it;
        continue;
      }
      ::close(it->second.fd);
      it = fds_.erase(it);
    }
  }
  void release_handles() {
    for (auto& [n, m] : maps_) ::munmap(m.addr, m.length);
    maps_.clear();
    for (auto& [n, f] : fds_) ::close(f.fd);
    fds_.clear();
    for (auto& [n, fd] : watches_) ::close(fd);
    watches_.clear();
  }

  Result<void> step(const Item& st, const std::string& implicit_target) {
    std::string skip, branch;
    Fields f = resolve(st, ctx_, &skip, &branch);
    std::string what = (implicit_target.empty() ? "step " : "build step ") +
                       std::to_string(st.index) + " " + st.kind;
    if (!branch.empty()) out_.branches[what] = branch;
    if (!skip.empty()) {
      out_.branches[what] = branch + ": skip";
      return {};
    }
    const OpDef& def = *find_op(st.kind);
    std::vector<int> want;
    if (has(f, "errno"))
      for (const auto& e : f.at("errno").list) want.push_back(errno_from_name(e));
    else
      want.push_back(0);
    uint64_t space0 = 0, cache0 = 0;
    bool m_space = has(f, "measure.space"), m_cache = has(f, "measure.page_cache"),
         m_time = has(f, "measure.time");
    if (m_space) space0 = COWLAB_TRY(store_->driver().space_used());
    if (m_cache) cache0 = COWLAB_TRY(page_cache_bytes(store_->root()));
    auto t0 = Clock::now();

    if (def.target == Target::kNone) {
      StepCall call{f, "", "", *this, what};
      int got = COWLAB_TRY_CTX(def.run(call), what);
      check_errno(what, want, got, "");
    } else {
      for (const auto& id : targets(f, implicit_target)) {
        std::string root = st.kind == "remove" ? "" : COWLAB_TRY_CTX(mount(id), what);
        StepCall call{f, id, root, *this, what};
        std::string detail;
        int got = st.kind == "remove" ? COWLAB_TRY_CTX(remove(id, &detail), what)
                                      : COWLAB_TRY_CTX(def.run(call), what);
        check_errno(what + " in " + id, want, got, detail);
      }
    }

    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (m_time) {
      out_.measurements[field(f, "measure.time")] = secs;
      out_.units[field(f, "measure.time")] = "s";
    }
    if (m_space) {
      uint64_t space1 = COWLAB_TRY(store_->driver().space_used());
      out_.measurements[field(f, "measure.space")] =
          static_cast<double>(space1) - static_cast<double>(space0);
      out_.units[field(f, "measure.space")] = "bytes";
    }
    if (m_cache) {
      uint64_t cache1 = COWLAB_TRY(page_cache_bytes(store_->root()));
      out_.measurements[field(f, "measure.page_cache")] =
          static_cast<double>(cache1) - static_cast<double>(cache0);
      out_.units[field(f, "measure.page_cache")] = "bytes";
    }
    return {};
  }

  void check_errno(const std::string& what, const std::vector<int>& want, int got,
                   const std::string& detail) {
    if (std::find(want.begin(), want.end(), got) != want.end()) return;
    auto name = [](int e) { return e == 0 ? std::string("success") : std::string(errno_name(e)); };
    std::string w;
    for (int e : want) w += (w.empty() ? "" : " or ") + name(e);
    out_.failures.push_back(
        {what + " errno", w, name(got) + (detail.empty() ? "" : " (" + detail + ")")});
  }

  Result<void> expectation(const Item& e) {
    std::string skip, branch;
    Fields f = resolve(e, ctx_, &skip, &branch);
    std::string what = "expect " + std::to_string(e.index) + " " + e.kind;
    if (!branch.empty()) out_.branches[what] = branch + (skip.empty() ? "" : ": skip");
    if (e.kind == "ratio") {
      // Recorded even where the expectation is skipped: the report charts every driver.
      auto a = out_.measurements.find(field(f, "of")), b = out_.measurements.find(field(f, "to"));
      if (a != out_.measurements.end() && b != out_.measurements.end()) {
        out_.measurements["ratio." + field(f, "of") + "/" + field(f, "to")] =
            b->second == 0 ? INFINITY : a->second / b->second;
        out_.units["ratio." + field(f, "of") + "/" + field(f, "to")] = "ratio";
      }
    }
    if (!skip.empty()) return {};
    return find_expect(e.kind)->check(*this, f, what);
  }

  // ---- ExpectEnv ------------------------------------------------------------------------
  Result<void> image_unchanged(const Fields& f, const std::string& what) override {
    if (field(f, "value") != "true") return {};
    for (const auto& l : doc_.layers) {
      std::string now = COWLAB_TRY(layer_digest(l.id));
      if (now != image_digests_[l.id]) fail(what + " layer " + l.id, image_digests_[l.id], now);
    }
    return {};
  }
  Result<void> unaffected(const Fields& f, const std::string& what) override {
    for (const auto& id : f.at("containers").list) {
      std::string path = COWLAB_TRY(mount(id));
      std::string now = COWLAB_TRY(tree_digest(path));
      if (now != container_digests_[id]) fail(what + " " + id, container_digests_[id], now);
    }
    return {};
  }
  Result<void> changes(const Fields& f, const std::string& what) override {
    auto ch = COWLAB_TRY_CTX(store_->changes(layer_store_id(field(f, "in")), std::nullopt), what);
    std::vector<std::string> lines;
    for (const auto& c : ch)
      lines.push_back(std::string(1, change_kind_letter(c.kind)) + " " + c.path);
    compare_lists(what + " " + field(f, "in"), f, "equals", "includes", lines);
    return {};
  }
  Result<void> diff(const Fields& f, const std::string& what) override {
    StringWriter w;
    COWLAB_TRY_CTX(store_->diff(layer_store_id(field(f, "in")), std::nullopt, w), what);
    auto names = COWLAB_TRY_CTX(tar_entry_names(w.data()), what);
    compare_lists(what + " " + field(f, "in"), f, "entries", "includes", names);
    return {};
  }
  Result<void> measure(const Fields& f, const std::string& what) override {
    std::string name = field(f, "name");
    auto it = out_.measurements.find(name);
    if (it == out_.measurements.end()) {
      fail(what + " " + name, "a measurement", "not recorded (its step was skipped?)");
      return {};
    }
    bounds(what + " " + name, it->second, f, out_.units.count(name) ? out_.units[name] : "");
    return {};
  }
  Result<void> ratio(const Fields& f, const std::string& what) override {
    auto a = out_.measurements.find(field(f, "of")), b = out_.measurements.find(field(f, "to"));
    if (a == out_.measurements.end() || b == out_.measurements.end()) {
      fail(what, "measurements " + field(f, "of") + " and " + field(f, "to"), "not recorded");
      return {};
    }
    double r = b->second == 0 ? INFINITY : a->second / b->second;
    out_.measurements["ratio." + field(f, "of") + "/" + field(f, "to")] = r;
    out_.units["ratio." + field(f, "of") + "/" + field(f, "to")] = "ratio";
    bounds(what + " " + field(f, "of") + "/" + field(f, "to"), r, f, "ratio");
    return {};
  }

  // Both sides in the measurement's unit, one format ("64.0 MiB (67108864 B)"): a bound written
  // as 64MiB and an observation in bytes are compared by people too.
  void bounds(const std::string& what, double v, const Fields& f, const std::string& unit) {
    auto q = [&](double x) { return unit.empty() ? fmt_number(x) : format_quantity(x, unit); };
    if (has(f, "min") && v < number(field(f, "min")))
      fail(what, ">= " + q(number(field(f, "min"))), q(v));
    if (has(f, "max") && v > number(field(f, "max")))
      fail(what, "<= " + q(number(field(f, "max"))), q(v));
  }

  void compare_lists(const std::string& what, const Fields& f, const std::string& exact_key,
                     const std::string& incl_key, const std::vector<std::string>& got) {
    auto join = [](const std::vector<std::string>& v) {
      std::string s;
      for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
      return "[" + s + "]";
    };
    if (has(f, exact_key) && f.at(exact_key).list != got)
      fail(what, join(f.at(exact_key).list), join(got));
    if (has(f, incl_key)) {
      std::vector<std::string> missing;
      for (const auto& x : f.at(incl_key).list)
        if (std::find(got.begin(), got.end(), x) == got.end()) missing.push_back(x);
      if (!missing.empty())
        fail(what + " includes", join(f.at(incl_key).list),
             "missing " + join(missing) + " in " + join(got));
    }
  }

  Result<void> view(const Fields& f, const std::string& what0) override {
    std::string id = field(f, "in");
    std::string rel = field(f, "path");
    std::string what = what0 + " " + id + ":" + rel;
    std::string root = COWLAB_TRY_CTX(mount(id), what);
    std::string path = root + "/" + rel;
    auto st = COWLAB_TRY_CTX(lstat_in_view(store_->driver(), path), what);
    bool want_exists = field(f, "exists", "true") == "true";
    if (!st) {
      if (want_exists) fail(what + " exists", "present", "absent");
      return {};
    }
    if (!want_exists) {
      fail(what + " exists", "absent", "present");
      return {};
    }
    mode_t m = st->st_mode;
    std::string type = S_ISREG(m)    ? "file"
                       : S_ISDIR(m)  ? "dir"
                       : S_ISLNK(m)  ? "symlink"
                       : S_ISFIFO(m) ? "fifo"
                       : S_ISCHR(m)  ? "char"
                       : S_ISBLK(m)  ? "block"
                                     : "socket";
    if (has(f, "type") && field(f, "type") != type) fail(what + " type", field(f, "type"), type);
    if (has(f, "size")) {
      uint64_t want = *parse_size(field(f, "size"));
      if (static_cast<uint64_t>(st->st_size) != want)
        fail(what + " size", std::to_string(want), std::to_string(st->st_size));
    }
    if (has(f, "mode")) {
      unsigned want = std::stoul(field(f, "mode"), nullptr, 8);
      if ((m & 07777) != want) {
        char a[16], b[16];
        std::snprintf(a, sizeof a, "%04o", want);
        std::snprintf(b, sizeof b, "%04o", m & 07777);
        fail(what + " mode", a, b);
      }
    }
    if (has(f, "owner")) {
      std::string got = std::to_string(st->st_uid) + ":" + std::to_string(st->st_gid);
      if (got != field(f, "owner")) fail(what + " owner", field(f, "owner"), got);
    }
    if (has(f, "target")) {
      auto t = sys::readlink(path);
      std::string got = t.ok() ? *t : "(not a symlink)";
      if (got != field(f, "target")) fail(what + " target", field(f, "target"), got);
    }
    if (has(f, "content") || has(f, "digest")) {
      auto content = COWLAB_TRY_CTX(sys::read_file(path), what);
      if (has(f, "content") && content != decode_bytes(field(f, "content"))) {
        std::string shown = content.size() > 200 ? content.substr(0, 200) + "..." : content;
        fail(what + " content", json(field(f, "content")).dump(), json(shown_bytes(shown)).dump());
      }
      if (has(f, "digest") && sha256_digest(content) != field(f, "digest"))
        fail(what + " digest", field(f, "digest"), sha256_digest(content));
    }
    if (has(f, "same_inode_as")) {
      auto other = sys::lstat(root + "/" + field(f, "same_inode_as"));
      if (!other.ok()) {
        fail(what + " same_inode_as", field(f, "same_inode_as"), other.error().message());
      } else if (other->st_ino != st->st_ino || other->st_dev != st->st_dev) {
        fail(what + " same_inode_as",
             "inode " + std::to_string(other->st_ino) + " of " + field(f, "same_inode_as"),
             "inode " + std::to_string(st->st_ino));
      }
    }
    if (has(f, "xattr")) {
      for (const auto& [k, v] : f.at("xattr").map) {
        auto got = COWLAB_TRY_CTX(sys::lgetxattr(path, k), what);
        std::string want = decode_bytes(v);
        if (!got || *got != want)
          fail(what + " xattr " + k, shown_bytes(want), got ? shown_bytes(*got) : "(absent)");
      }
    }
    if (has(f, "xattr_absent"))
      for (const auto& k : f.at("xattr_absent").list) {
        auto got = COWLAB_TRY_CTX(sys::lgetxattr(path, k), what);
        if (got) fail(what + " xattr_absent " + k, "(absent)", shown_bytes(*got));
      }
    if (has(f, "nlink") && static_cast<int64_t>(st->st_nlink) != *int_of(field(f, "nlink")))
      fail(what + " nlink", field(f, "nlink"), std::to_string(st->st_nlink));
    double allocated = static_cast<double>(st->st_blocks) * 512;
    if (has(f, "allocated_min") && allocated < number(field(f, "allocated_min")))
      fail(what + " allocated", ">= " + field(f, "allocated_min"), fmt_number(allocated));
    if (has(f, "allocated_max") && allocated > number(field(f, "allocated_max")))
      fail(what + " allocated", "<= " + field(f, "allocated_max"), fmt_number(allocated));
    if (has(f, "mtime") && st->st_mtim.tv_sec != *int_of(field(f, "mtime")))
      fail(what + " mtime", field(f, "mtime"), std::to_string(st->st_mtim.tv_sec));
    if (has(f, "listing") || has(f, "listing_includes") || has(f, "listing_excludes")) {
      auto entries = COWLAB_TRY_CTX(sys::read_dir(path), what + " readdir");
      std::vector<std::string> names;
      for (const auto& e : entries) names.push_back(e.name);
      std::sort(names.begin(), names.end());
      compare_lists(what + " listing", f, "listing", "listing_includes", names);
      if (has(f, "listing_excludes"))
        for (const auto& x : f.at("listing_excludes").list)
          if (std::find(names.begin(), names.end(), x) != names.end())
            fail(what + " listing_excludes", "no " + x,
                 "present among " + std::to_string(names.size()) + " names");
    }
    if (has(f, "since")) {
      std::string cap = "stat." + field(f, "since") + ".";
      std::map<std::string, double> now = {
          {"ino", static_cast<double>(st->st_ino)},
          {"dev", static_cast<double>(st->st_dev)},
          {"nlink", static_cast<double>(st->st_nlink)},
          {"blocks", static_cast<double>(st->st_blocks) * 512},
          {"size", static_cast<double>(st->st_size)},
          {"mtime", static_cast<double>(st->st_mtim.tv_sec) + st->st_mtim.tv_nsec / 1e9},
          {"atime", static_cast<double>(st->st_atim.tv_sec) + st->st_atim.tv_nsec / 1e9},
          {"ctime", static_cast<double>(st->st_ctim.tv_sec) + st->st_ctim.tv_nsec / 1e9}};
      for (const char* key : {"same", "changed"}) {
        if (!has(f, key)) continue;
        for (const auto& k : f.at(key).list) {
          auto then = out_.measurements.find(cap + k);
          if (then == out_.measurements.end()) {
            fail(what + " since " + field(f, "since"), "a stat result",
                 "not recorded (its step was skipped or failed)");
            break;
          }
          bool same = then->second == now.at(k);
          if (same != (std::string(key) == "same"))
            fail(what + " " + k + " " + key + " since " + field(f, "since"),
                 (std::string(key) == "same" ? "" : "not ") + fmt_number(then->second),
                 fmt_number(now.at(k)));
        }
      }
    }
    return {};
  }

  static std::string shown_bytes(const std::string& v) {
    bool printable = std::all_of(v.begin(), v.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
    if (printable) return v;
    static const char* d = "0123456789abcdef";
    std::string o = "hex:";
    for (unsigned char c : v) {
      o += d[c >> 4];
      o += d[c & 15];
    }
    return o;
  }

  Result<void> finish() {
    for (pid_t p : holders_) (void)sys::kill_child(p);
    holders_.clear();
    release_handles();
    COWLAB_TRY(unmount_all());
    COWLAB_TRY_CTX(store_->wipe(), "wipe store");
    // Nothing of the scenario may stay mounted.
    auto mi = COWLAB_TRY(sys::mountinfo());
    for (const auto& m : mi)
      if (m.mount_point.rfind(b_.root + "/", 0) == 0)
        fail("teardown", "no mounts under the store root", "still mounted: " + m.mount_point);
    return {};
  }

  const Scenario::Impl& s_;
  const Doc& doc_;
  Backing b_;  // this worker's: a checkpoint re-attaches its loop device
  RunResult& out_;
  Context ctx_;
  std::unique_ptr<LayerStore> store_;
  std::map<std::string, std::string> aliases_;  // scenario layer id → store layer id
  std::map<std::string, std::string> mounted_;  // id → path
  std::map<std::string, std::string> image_digests_, container_digests_;
  std::map<std::string, std::string> restored_digests_;  // the checkpoint's image digests
  std::set<std::string> removed_;
  std::vector<pid_t> holders_;
  std::string layer_tars_;  // RunOptions::layer_tars
  std::string checkpoint_;  // where to save the image checkpoint ("" = none)
  CheckpointCosts costs_;   // RunOptions::checkpoint_costs
  unsigned later_runs_ = 1;  // RunOptions::later_runs
  bool restored_ = false;   // the image came from a checkpoint
  std::map<std::string, OpenFile> fds_;
  std::map<std::string, Mapping> maps_;
  std::map<std::string, int> watches_;
};

std::string requirement_skip(const Scenario::Impl& s, const std::string& driver) {
  const auto& r = s.requires_;
  auto join = [](const std::vector<std::string>& v) {
    std::string o;
    for (const auto& x : v) o += (o.empty() ? "" : ", ") + x;
    return o;
  };
  if (!r.drivers.empty() &&
      std::find(r.drivers.begin(), r.drivers.end(), driver) == r.drivers.end())
    return "scenario applies to " + join(r.drivers);
  if (std::find(r.not_drivers.begin(), r.not_drivers.end(), driver) != r.not_drivers.end())
    return "scenario does not apply to " + driver;
  auto kv = sys::kernel_version();
  if (!r.kernel.empty() && !kernel_satisfies(r.kernel, kv.major, kv.minor))
    return "needs kernel " + r.kernel + ", running " + kv.release;
  const auto& features = probed_features(driver);  // only this driver's facilities are probed
  for (const auto& f : r.features) {
    auto it = features.find(f);
    if (it == features.end() && is_driver_feature(f))
      return "needs kernel feature " + f + " (a feature of another driver)";
    if (it == features.end() || !it->second)
      return "needs kernel feature " + f + " (absent on " + kv.release + ")";
  }
  return "";
}

json result_json(const RunResult& r) {
  json failures = json::array();
  for (const auto& f : r.failures)
    failures.push_back(
        {{"expectation", f.expectation}, {"expected", f.expected}, {"observed", f.observed}});
  json m = json::object();
  for (const auto& [k, v] : r.measurements) m[k] = std::isfinite(v) ? json(v) : json(nullptr);
  json units = json::object();
  for (const auto& [k, v] : r.measurements) units[k] = r.units.count(k) ? r.units.at(k) : "";
  return json{{"scenario", r.scenario},
              {"file", r.file},
              {"driver", r.driver},
              {"kernel", r.kernel},
              {"status", status_name(r.status)},
              {"reason", r.reason},
              {"duration_s", r.duration_s},
              {"sweep", r.sweep},
              {"measurements", m},
              {"units", units},
              {"failures", failures},
              {"cases", r.branches},
              {"options", r.options},
              {"features", r.features},
              {"driver_status", r.driver_status},
              {"phases_s", r.phases_s},
              {"image",
               {{"source", r.image_source},
                {"checkpoint", r.checkpoint},
                {"quiesce", r.checkpoint_quiesce}}},
              {"layer_tars", {{"built", r.layer_tars_built}, {"reused", r.layer_tars_reused}}}};
}

RunResult result_from_json(const std::string& line, RunResult base) {
  try {
    json j = json::parse(line);
    std::string st = j.value("status", "error");
    base.status = st == "pass"   ? Status::kPass
                  : st == "fail" ? Status::kFail
                  : st == "skip" ? Status::kSkip
                                 : Status::kError;
    base.reason = j.value("reason", "");
    for (auto& [k, v] : j["measurements"].items())
      base.measurements[k] = v.is_number() ? v.get<double>() : NAN;
    if (j.contains("units"))
      for (auto& [k, v] : j["units"].items()) base.units[k] = v.get<std::string>();
    for (auto& f : j["failures"])
      base.failures.push_back({f["expectation"], f["expected"], f["observed"]});
    if (j.contains("cases")) base.branches = j["cases"].get<std::map<std::string, std::string>>();
    if (j.contains("driver_status"))
      base.driver_status = j["driver_status"].get<std::map<std::string, std::string>>();
    if (j.contains("phases_s"))
      for (auto& [k, v] : j["phases_s"].items()) base.phases_s[k] = v.get<double>();
    if (j.contains("image")) {
      base.image_source = j["image"].value("source", "import");
      base.checkpoint = j["image"].value("checkpoint", "");
      base.checkpoint_quiesce = j["image"].value("quiesce", "");
    }
    if (j.contains("layer_tars")) {
      base.layer_tars_built = j["layer_tars"].value("built", 0);
      base.layer_tars_reused = j["layer_tars"].value("reused", 0);
    }
  } catch (const std::exception& e) {
    base.status = Status::kError;
    base.reason = std::string("runner worker sent malformed result: ") + e.what();
  }
  return base;
}

}  // namespace

const char* status_name(Status s) {
  switch (s) {
    case Status::kPass:
      return "pass";
    case Status::kFail:
      return "fail";
    case Status::kSkip:
      return "skip";
    case Status::kError:
      return "error";
    case Status::kTimeout:
      return "timeout";
    case Status::kPanic:
      return "panic";
  }
  return "error";
}

std::string RunResult::to_json_line() const {
  return result_json(*this).dump();
}

std::vector<RunResult> run(const Scenario& scenario, const RunOptions& options) {
  const Scenario::Impl& s = scenario.impl();
  std::vector<RunResult> results;
  std::string work = options.work_dir.empty() ? "/var/tmp" : options.work_dir;
  for (size_t i = 0; i < s.docs.size(); ++i) {
    if (options.stop && options.stop()) break;
    RunResult r;
    r.scenario = s.name;
    r.file = s.file;
    r.driver = options.driver;
    r.kernel = sys::kernel_version().release;
    r.sweep = s.docs[i].sweep;
    auto t0 = Clock::now();
    std::string why = requirement_skip(s, options.driver);
    if (!why.empty()) {
      r.status = Status::kSkip;
      r.reason = why;
      results.push_back(r);
      continue;
    }
    // A later run of a cell starts from the checkpoint its first run saved, when there is one;
    // a checkpoint that does not restore (a full disk) costs this run its shortcut, not its
    // result: it imports the image itself.
    const std::string checkpoint =
        options.checkpoints.empty() ? "" : options.checkpoints + "/" + std::to_string(i + 1);
    CheckpointMeta restored_meta;
    std::optional<Result<Backing>> restored;
    if (!checkpoint.empty() && sys::lstat_if_exists(checkpoint).value_or(std::nullopt)) {
      auto restore_t0 = Clock::now();
      restored =
          restore_backing(options.driver, work, checkpoint, options.checkpoint_use, &restored_meta);
      r.phases_s["restore"] = std::chrono::duration<double>(Clock::now() - restore_t0).count();
      if ((*restored).ok()) {
        r.image_source = "checkpoint";
      } else {
        // This run imports the image and saves its own checkpoint in the unusable one's place.
        r.checkpoint = "not restored: " + (*restored).error().message();
        restored.reset();
        (void)sys::remove_all(checkpoint);
      }
    }
    auto backing_t0 = Clock::now();
    auto backing = restored ? std::move(*restored) : make_backing(options.driver, work);
    if (r.image_source != "checkpoint")
      r.phases_s["backing"] = std::chrono::duration<double>(Clock::now() - backing_t0).count();
    if (!backing.ok()) {
      // A driver whose facility is missing (no zfs module, no loop devices) is a skip.
      r.status = Status::kSkip;
      r.reason = backing.error().message();
      results.push_back(r);
      continue;
    }
    const Doc& doc = s.docs[i];
    // The scenario's own options for this driver, then the command line's.
    for (const auto& [k, v] : options_for(doc.options, options.driver))
      backing->storage_opts[k] = v;
    for (const auto& [k, v] : options.storage_opts) backing->storage_opts[k] = v;
    r.options = backing->storage_opts;
    r.features = probed_features(options.driver);
    auto child = sys::fork_child([&](int out_fd) -> int {
      RunResult w = r;
      Runner runner(s, doc, *backing, w);
      runner.set_run(options.run);
      runner.set_layer_tars(options.layer_tars);
      if (w.image_source == "checkpoint")
        runner.set_restored(restored_meta);
      else if (!checkpoint.empty() && options.checkpoint_use == RunOptions::CheckpointUse::kKeep) {
        runner.set_checkpoint(checkpoint);  // not on the last run: nothing would restore it
        runner.set_checkpoint_costs(options.checkpoint_costs, options.later_runs);
      }
      auto rr = runner.run();
      if (!rr.ok()) {
        const Error& e = rr.error();
        bool unusable = e.kind() == ErrorKind::kNotSupported;
        w.status = unusable ? Status::kSkip : Status::kError;
        w.reason = e.message();
      } else {
        w.status = w.failures.empty() ? Status::kPass : Status::kFail;
      }
      std::string line = result_json(w).dump() + "\n";
      (void)sys::write_all(out_fd, line.data(), line.size());
      return 0;
    });
    if (!child.ok()) {
      r.status = Status::kError;
      r.reason = child.error().message();
    } else {
      std::string output;
      auto waited = sys::wait_child(*child, s.timeout * 1000, &output, options.stop);
      if (!waited.ok()) {
        r.status = Status::kError;
        r.reason = waited.error().message();
      } else if (!waited->has_value() && options.stop && options.stop()) {
        r.status = Status::kError;
        r.reason = "interrupted: the run was stopped before its verdict";
        r.interrupted = true;
      } else if (!waited->has_value()) {
        r.status = Status::kTimeout;
        r.reason = "no result within " + std::to_string(s.timeout) + " s";
      } else {
        auto nl = output.find('\n');
        if (output.empty() || nl == std::string::npos) {
          r.status = Status::kError;
          r.reason =
              "runner worker exited with status " + std::to_string(**waited) + " without a result";
        } else {
          r = result_from_json(output.substr(0, nl), r);
        }
      }
    }
    // An interrupted run is torn down even with --keep: the caller is on its way out.
    if (!options.keep || r.status == Status::kPass || r.interrupted) {
      auto teardown_t0 = Clock::now();
      auto t = teardown_backing(*backing);
      r.phases_s["teardown"] = std::chrono::duration<double>(Clock::now() - teardown_t0).count();
      if (!t.ok() && r.status == Status::kPass) {
        r.status = Status::kError;
        r.reason = "teardown: " + t.error().message();
      }
    }
    r.duration_s = std::chrono::duration<double>(Clock::now() - t0).count();
    results.push_back(r);
    if (r.interrupted) break;
  }
  return results;
}

}  // namespace cowlab::scenario
