#include "scratch.h"

namespace cowlab::harness {

const char* scratch_filesystem(const std::string& driver) {
  return driver == "btrfs" || driver == "zfs" || driver == "devicemapper" ? "xfs" : "ext4";
}

std::string scratch_setup_script(const std::string& driver) {
  // -m reflink=1 is xfsprogs' default since 5.1; said here so an older mkfs does not silently
  // make every checkpoint a full copy.  ext4's lazy init is the kernel's business either way.
  const std::string mkfs = std::string(scratch_filesystem(driver)) == "xfs"
                               ? "mkfs.xfs -q -f -m reflink=1 /dev/cowlab/scratch0"
                               : "mkfs.ext4 -q -F /dev/cowlab/scratch0";
  return "set -e; " + mkfs +
         "; mkdir -p /run/cowlab/work; mount /dev/cowlab/scratch0 /run/cowlab/work; ";
}

}  // namespace cowlab::harness
