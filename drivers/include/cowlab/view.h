// Looking at a mounted layer the way a process in the container sees it.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>

#include "cowlab/driver.h"
#include "cowlab/result.h"

namespace cowlab {

// lstat(2) of `path`, a path inside a root that `driver` returned from get(): std::nullopt when
// the container's view has no such name, an error for anything else.  Besides ENOENT, the union
// of a driver with WhiteoutFormat::kAufs answers a lookup of a name starting with `.wh.` with
// EPERM (aufs reserves the prefix unless mounted with `shwh`, which cowlab never does:
// fs/aufs/dentry.c au_test_shwh), so for such a driver those names read as absent — no process
// in the container can ever see one.
Result<std::optional<struct stat>> lstat_in_view(const Driver& driver, const std::string& path);

}  // namespace cowlab
