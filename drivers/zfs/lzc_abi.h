// The slice of the libzfs_core.so.3 / libnvpair.so.3 ABI that cowlab calls through dlopen()
// (OpenZFS 2.0-2.3: include/libzfs_core.h, include/sys/nvpair.h).  Declared here instead of
// including libzfslinux-dev's headers, whose libspl directory shadows system headers
// (<sys/stat.h>, <sys/types.h>, ...) in any file that includes them; lzc_abi_check.cpp checks
// every declaration below against those headers at build time.
#pragma once

#include <cstdint>

struct nvlist;  // nvlist_t: opaque, allocated by libnvpair

namespace cowlab::lzc_abi {

using nvlist_t = ::nvlist;
using boolean_t = int;  // enum { B_FALSE, B_TRUE }
inline constexpr boolean_t kFalse = 0;
inline constexpr boolean_t kTrue = 1;
inline constexpr int kDatasetTypeZfs = 2;     // LZC_DATSET_TYPE_ZFS (enum lzc_dataset_type)
inline constexpr unsigned kNvUniqueName = 1;  // NV_UNIQUE_NAME

// libzfs_core
using libzfs_core_init_fn = int (*)();
using lzc_create_fn = int (*)(const char* fsname, int type, nvlist_t* props, uint8_t* wkeydata,
                              unsigned wkeylen);
using lzc_clone_fn = int (*)(const char* fsname, const char* origin, nvlist_t* props);
using lzc_snapshot_fn = int (*)(nvlist_t* snaps, nvlist_t* props, nvlist_t** errlist);
using lzc_destroy_snaps_fn = int (*)(nvlist_t* snaps, boolean_t defer, nvlist_t** errlist);
using lzc_destroy_fn = int (*)(const char* fsname);
using lzc_exists_fn = boolean_t (*)(const char* dataset);
using lzc_rename_fn = int (*)(const char* source, const char* target);

// libnvpair
using nvlist_alloc_fn = int (*)(nvlist_t** nvlp, unsigned nvflag, int kmflag);
using nvlist_free_fn = void (*)(nvlist_t* nvl);
using nvlist_add_boolean_fn = int (*)(nvlist_t* nvl, const char* name);
using nvlist_add_string_fn = int (*)(nvlist_t* nvl, const char* name, const char* value);
using nvlist_add_uint64_fn = int (*)(nvlist_t* nvl, const char* name, uint64_t value);

}  // namespace cowlab::lzc_abi
