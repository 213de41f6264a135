#include "overlay/quota.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/dqblk_xfs.h>
#include <linux/fs.h>
#include <sys/quota.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>

#include "cowlab/fs.h"
#include "cowlab/sys.h"

namespace cowlab::overlay {

namespace {

constexpr const char* kBlockDevName = "backingFsBlockDev";

Result<struct fsxattr> get_fsxattr(const std::string& dir) {
  auto fd = COWLAB_TRY(sys::open(dir, O_RDONLY | O_DIRECTORY));
  struct fsxattr fsx {};
  COWLAB_TRY(sys::ioctl(fd.get(), FS_IOC_FSGETXATTR, &fsx, "FS_IOC_FSGETXATTR " + dir));
  return fsx;
}

Result<void> set_project_id(const std::string& dir, uint32_t id) {
  auto fd = COWLAB_TRY(sys::open(dir, O_RDONLY | O_DIRECTORY));
  struct fsxattr fsx {};
  COWLAB_TRY(sys::ioctl(fd.get(), FS_IOC_FSGETXATTR, &fsx, "FS_IOC_FSGETXATTR " + dir));
  fsx.fsx_projid = id;
  // Inherit: files and dirs created below count against the same project.
  fsx.fsx_xflags |= FS_XFLAG_PROJINHERIT;
  COWLAB_TRY(sys::ioctl(fd.get(), FS_IOC_FSSETXATTR, &fsx, "FS_IOC_FSSETXATTR " + dir));
  return {};
}

Result<void> set_limit(const std::string& device, uint32_t id, uint64_t bytes) {
  struct fs_disk_quota d {};
  d.d_version = FS_DQUOT_VERSION;
  d.d_id = id;
  d.d_flags = FS_PROJ_QUOTA;
  d.d_fieldmask = FS_DQ_BHARD | FS_DQ_BSOFT;
  // Limits are in 512-byte basic blocks.
  d.d_blk_hardlimit = bytes / 512;
  d.d_blk_softlimit = d.d_blk_hardlimit;
  return sys::quotactl(QCMD(Q_XSETQLIM, PRJQUOTA), device, static_cast<int>(id), &d);
}

}  // namespace

Result<std::unique_ptr<ProjectQuota>> ProjectQuota::open(const std::string& home) {
  long magic = COWLAB_TRY(backing_fs_magic(home));
  if ((magic & 0xffffffffL) != kMagicXfs)
    return Error::not_supported("project quota needs xfs (backing filesystem is " +
                                fs_name_for_magic(magic) + ")");
  // A block device node for quotactl, made fresh: the filesystem may have moved to another
  // device since the last run (Docker's makeBackingFsDev).
  auto st = COWLAB_TRY(sys::stat(home));
  std::string device = home + "/" + kBlockDevName;
  auto gone = sys::unlink(device);
  if (!gone.ok() && gone.error().err() != ENOENT) return std::move(gone).error();
  COWLAB_TRY(sys::mknodat(sys::kCwd, device, S_IFBLK | 0600, st.st_dev));

  uint32_t base = COWLAB_TRY(get_fsxattr(home)).fsx_projid;
  uint32_t first = base + 1;
  // The probe: an empty (unlimited) quota on the first id.  EINVAL/ENOSYS/ESRCH mean project
  // quota accounting is off (no pquota/prjquota mount option).
  auto probe = set_limit(device, first, 0);
  if (!probe.ok()) {
    (void)sys::unlink(device);
    return Error::not_supported(
        "project quota is not enabled on " + home +
        " (mount xfs with the 'pquota' option): " + probe.error().message());
  }
  // Next free id: above every id a layer dir already holds.
  uint32_t next = first + 1;
  auto entries = COWLAB_TRY(sys::read_dir(home));
  for (const auto& e : entries) {
    if (e.type != DT_DIR) continue;
    auto fsx = get_fsxattr(home + "/" + e.name);
    if (fsx.ok() && fsx->fsx_projid >= next) next = fsx->fsx_projid + 1;
  }
  return std::unique_ptr<ProjectQuota>(new ProjectQuota(device, next));
}

Result<void> ProjectQuota::set(const std::string& dir, uint64_t bytes) {
  // Called right after the layer dir is made: it always gets an id of its own (Docker's
  // SetQuota assigns nextProjectID to a path it has not seen).
  uint32_t id = next_id_++;
  COWLAB_TRY(set_project_id(dir, id));
  return set_limit(device_, id, bytes);
}

}  // namespace cowlab::overlay
