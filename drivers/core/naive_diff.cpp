#include "core/naive_diff.h"

#include "cowlab/changes.h"

namespace cowlab {

namespace {
// get() with a guaranteed put() on scope exit.
class Mounted {
 public:
  Mounted(Driver& d, std::string id) : d_(d), id_(std::move(id)) {}
  Result<std::string> get() {
    auto r = d_.get(id_, "");
    if (r.ok()) held_ = true;
    return r;
  }
  ~Mounted() {
    if (held_) (void)d_.put(id_);
  }

 private:
  Driver& d_;
  std::string id_;
  bool held_ = false;
};
}  // namespace

Result<std::vector<Change>> NaiveDiffDriver::changes(const std::string& id, const std::string& parent) {
  Mounted layer(*this, id);
  std::string layer_dir = COWLAB_TRY_CTX(layer.get(), "changes " + id);
  if (parent.empty()) return changes_dirs(layer_dir, "");
  Mounted par(*this, parent);
  std::string parent_dir = COWLAB_TRY_CTX(par.get(), "changes " + id);
  return changes_dirs(layer_dir, parent_dir);
}

Result<void> NaiveDiffDriver::diff(const std::string& id, const std::string& parent, Writer& out) {
  Mounted layer(*this, id);
  std::string layer_dir = COWLAB_TRY_CTX(layer.get(), "diff " + id);
  if (parent.empty()) {
    ExportOptions eo;
    eo.format = WhiteoutFormat::kDeleteInPlace;
    return export_tree(layer_dir, eo, out);
  }
  Mounted par(*this, parent);
  std::string parent_dir = COWLAB_TRY_CTX(par.get(), "diff " + id);
  auto ch = COWLAB_TRY_CTX(changes_dirs(layer_dir, parent_dir), "diff " + id);
  return export_changes(layer_dir, ch, out);
}

Result<int64_t> NaiveDiffDriver::apply_diff(const std::string& id, const std::string& parent,
                                            Reader& tar) {
  Mounted layer(*this, id);
  std::string layer_dir = COWLAB_TRY_CTX(layer.get(), "apply-diff layer " + id);
  ApplyOptions ao;
  ao.format = WhiteoutFormat::kDeleteInPlace;
  ao.scratch_dir = scratch_dir();
  ao.context = "apply-diff layer " + id;
  auto stats = COWLAB_TRY(apply_layer(layer_dir, tar, ao));
  return stats.size;
}

Result<int64_t> NaiveDiffDriver::diff_size(const std::string& id, const std::string& parent) {
  Mounted layer(*this, id);
  std::string layer_dir = COWLAB_TRY_CTX(layer.get(), "diff-size " + id);
  std::vector<Change> ch;
  if (parent.empty()) {
    ch = COWLAB_TRY(changes_dirs(layer_dir, ""));
  } else {
    Mounted par(*this, parent);
    std::string parent_dir = COWLAB_TRY_CTX(par.get(), "diff-size " + id);
    ch = COWLAB_TRY(changes_dirs(layer_dir, parent_dir));
  }
  return changes_size(layer_dir, ch);
}

}  // namespace cowlab
