// Docker's NaiveDiffDriver (daemon/graphdriver/fsdiff.go) as a base class: diff, changes,
// apply-diff and diff-size computed by mounting layers with get()/put() and comparing trees.
// Internal to drivers; drivers with a native diff override what they can do better.
#pragma once

#include "cowlab/archive.h"
#include "cowlab/driver.h"

namespace cowlab {

class NaiveDiffDriver : public Driver {
 public:
  Result<void> diff(const std::string& id, const std::string& parent, Writer& out) override;
  Result<std::vector<Change>> changes(const std::string& id, const std::string& parent) override;
  Result<int64_t> apply_diff(const std::string& id, const std::string& parent, Reader& tar) override;
  Result<int64_t> diff_size(const std::string& id, const std::string& parent) override;

 protected:
  // Scratch dir for apply (aufs plink targets); must be on the layer's filesystem and
  // inside the store root.  Default: <home>/tmp.
  virtual std::string scratch_dir() const = 0;
};

}  // namespace cowlab
