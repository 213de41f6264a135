// xfs project quotas for overlay layer dirs (Docker's quota/projectquota.go).  Internal.
//
// Each limited layer dir gets its own project id, inherited by everything created below it
// (FS_XFLAG_PROJINHERIT), and a hard = soft block limit on that project.  Ids start above
// the home's own project id; existing layer dirs are scanned so ids are never reused while a
// layer holds one.  quotactl needs a block device node of the filesystem: Docker keeps one
// in the home as backingFsBlockDev, and so do we.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "cowlab/result.h"

namespace cowlab::overlay {

class ProjectQuota {
 public:
  // Probes `home` (on xfs mounted with pquota/prjquota) by setting an empty limit on the first
  // free project id.  kNotSupported, with the reason, anywhere else.
  static Result<std::unique_ptr<ProjectQuota>> open(const std::string& home);

  // Gives the freshly made `dir` a project id of its own and limits it to `bytes`.
  Result<void> set(const std::string& dir, uint64_t bytes);

 private:
  ProjectQuota(std::string device, uint32_t next_id)
      : device_(std::move(device)), next_id_(next_id) {}
  std::string device_;  // <home>/backingFsBlockDev
  uint32_t next_id_;
};

}  // namespace cowlab::overlay
