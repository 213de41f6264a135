#include "cowlab/view.h"

#include <cerrno>

#include "cowlab/sys.h"

namespace cowlab {

Result<std::optional<struct stat>> lstat_in_view(const Driver& driver, const std::string& path) {
  auto st = sys::lstat_if_exists(path);
  if (st.ok() || driver.whiteout_format() != WhiteoutFormat::kAufs) return st;
  // The reserved prefix is AUFS_WH_PFX; only the last component is looked up by the final
  // lstat (an earlier `.wh.` component would have failed the same way, and is just as absent).
  const std::string name = path.substr(path.rfind('/') + 1);  // npos + 1 == 0: the whole path
  if (st.error().err() == EPERM && name.rfind(".wh.", 0) == 0) return std::optional<struct stat>();
  return st;
}

}  // namespace cowlab
