// A crash scenario as named phases, each recorded between two marks, and their execution
// through the layer store's public API.
#include <fcntl.h>

#include <algorithm>

#include "cowlab/fs.h"
#include "cowlab/io.h"
#include "cowlab/sys.h"
#include "crash/internal.h"
#include "scenario/internal.h"

namespace cowlab::crash {

namespace {

std::string field(const scenario::Fields& f, const std::string& key, const std::string& dflt = "") {
  auto it = f.find(key);
  return it == f.end() ? dflt : it->second.scalar;
}

}  // namespace

Result<std::vector<Phase>> build_phases(const scenario::Doc& doc, const std::string& tar_dir) {
  std::vector<Phase> out;
  for (const auto& l : doc.layers) {
    Phase p;
    p.name = "import " + l.id;
    p.kind = PhaseKind::kImport;
    p.id = l.id;
    p.parent = l.parent;
    switch (l.source) {
      case scenario::LayerSource::kEntries:
        p.tar = tar_dir + "/layer-" + l.id + ".tar";
        COWLAB_TRY_CTX(scenario::write_entries_tar(l.entries, p.tar), "crash: layer " + l.id);
        break;
      case scenario::LayerSource::kTar:
        p.tar = l.path;
        break;
      default:
        return Error::invalid("crash: layer " + l.id +
                              ": only layers of entries or tars can be crashed (not oci/build)");
    }
    out.push_back(std::move(p));
  }
  for (const auto& c : doc.containers) {
    if (!c.size.empty())
      return Error::invalid("crash: container " + c.id + ": size quotas are not supported");
    Phase p;
    p.name = "create " + c.id;
    p.kind = PhaseKind::kCreate;
    p.id = c.id;
    p.parent = c.image;
    out.push_back(std::move(p));
  }
  for (const auto& st : doc.steps) {
    const std::string what = "crash: steps[" + std::to_string(st.index) + "] (" + st.kind + ")";
    if (!st.cases.empty())
      return Error::invalid(what + ": cases are not supported in crash scenarios");
    std::string in = field(st.fields, "in");
    auto it = st.fields.find("in");
    if (it != st.fields.end() && it->second.kind == scenario::Value::Kind::kList) {
      if (it->second.list.size() != 1)
        return Error::invalid(what + ": name exactly one layer or container in `in`");
      in = it->second.list[0];
    }
    if (in.empty()) return Error::invalid(what + ": needs `in`");
    Phase p;
    p.id = in;
    p.name = st.kind + " " + in;
    if (st.kind == "write" || st.kind == "append") {
      p.kind = PhaseKind::kWrite;
      p.path = field(st.fields, "path");
      if (st.fields.count("data")) {
        p.data = field(st.fields, "data");
      } else {
        uint64_t n = COWLAB_TRY_CTX(parse_size(field(st.fields, "size", "0")), what);
        p.data.assign(n, '\0');
        scenario::Pattern(field(st.fields, "pattern", "random"),
                          std::stoull(field(st.fields, "seed", "1")))
            .fill(0, p.data.data(), n);
      }
      if (st.kind == "write") {
        p.offset = COWLAB_TRY_CTX(parse_size(field(st.fields, "offset", "0")), what);
      } else {
        p.offset = UINT64_MAX;  // append: resolved against the file's size at run time
      }
    } else if (st.kind == "remove") {
      p.kind = PhaseKind::kRemove;
    } else {
      return Error::invalid(what + ": op " + st.kind +
                            " cannot be crashed (crash scenarios use write, append and remove)");
    }
    out.push_back(std::move(p));
  }
  // Duplicate names get their position appended so that every phase can be named.
  std::map<std::string, int> seen;
  for (const auto& p : out) seen[p.name]++;
  for (size_t i = 0; i < out.size(); ++i)
    if (seen[out[i].name] > 1) out[i].name += " #" + std::to_string(i + 1);
  return out;
}

Result<std::vector<size_t>> crashed_phases(const std::vector<Phase>& phases,
                                           const scenario::CrashSpec& spec) {
  std::vector<size_t> out;
  if (spec.all) {
    for (size_t i = 0; i < phases.size(); ++i) out.push_back(i);
    return out;
  }
  for (const auto& name : spec.steps) {
    std::optional<size_t> hit;
    for (size_t i = 0; i < phases.size(); ++i)
      if (phases[i].name == name || "step " + std::to_string(i + 1) == name) hit = i;
    if (!hit) {
      std::string known;
      for (const auto& p : phases) known += (known.empty() ? "" : ", ") + p.name;
      return Error::invalid("crash.steps: no phase named \"" + name + "\" (phases: " + known + ")");
    }
    out.push_back(*hit);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Result<void> perform(LayerStore& store, const Phase& p) {
  const std::string ctx = "crash phase \"" + p.name + "\"";
  switch (p.kind) {
    case PhaseKind::kImport: {
      auto fd = COWLAB_TRY_CTX(sys::open(p.tar, O_RDONLY | O_CLOEXEC), ctx);
      FdReader r(fd.get(), p.tar);
      COWLAB_TRY_CTX(store.import_layer(p.id, p.parent, r), ctx);
      return {};
    }
    case PhaseKind::kCreate:
      COWLAB_TRY_CTX(store.create_layer(p.id, p.parent, LayerKind::kReadWrite), ctx);
      return {};
    case PhaseKind::kWrite: {
      // The write is committed by fsync, as an application would (the invariant checks the
      // data once the phase has finished).
      std::string root = COWLAB_TRY_CTX(store.mount(p.id), ctx);
      auto release = [&](Result<void> r) -> Result<void> {
        auto u = store.unmount(p.id);
        if (!r.ok()) return r;
        return u;
      };
      auto fd = sys::open(root + "/" + p.path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      if (!fd.ok()) return release(std::move(fd).error().with_context(ctx));
      off_t off = static_cast<off_t>(p.offset);
      if (p.offset == UINT64_MAX) {
        auto st = sys::fstat(fd->get());
        if (!st.ok()) return release(std::move(st).error().with_context(ctx));
        off = st->st_size;
      }
      auto w = sys::pwrite_all(fd->get(), p.data.data(), p.data.size(), off);
      if (!w.ok()) return release(std::move(w).error().with_context(ctx));
      auto s = sys::fsync(fd->get());
      if (!s.ok()) return release(std::move(s).error().with_context(ctx));
      fd->reset();
      return release({});
    }
    case PhaseKind::kRemove:
      COWLAB_TRY_CTX(store.delete_layer(p.id), ctx);
      return {};
  }
  return {};
}

}  // namespace cowlab::crash
