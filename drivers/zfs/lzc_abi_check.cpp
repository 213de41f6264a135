// Build-time check of drivers/zfs/lzc_abi.h against libzfslinux-dev's headers (compiled only
// when pkg-config finds libzfs_core; see CMakeLists.txt).  A mismatch is a compile error.
#include <libzfs_core.h>

#include <type_traits>

#include "zfs/lzc_abi.h"

namespace abi = cowlab::lzc_abi;

static_assert(std::is_same_v<abi::nvlist_t, nvlist_t>);
static_assert(sizeof(abi::boolean_t) == sizeof(boolean_t) && abi::kTrue == B_TRUE &&
              abi::kFalse == B_FALSE);
static_assert(sizeof(enum lzc_dataset_type) == sizeof(int) &&
              abi::kDatasetTypeZfs == LZC_DATSET_TYPE_ZFS);
static_assert(abi::kNvUniqueName == NV_UNIQUE_NAME);
static_assert(std::is_same_v<decltype(&libzfs_core_init), abi::libzfs_core_init_fn>);
static_assert(std::is_same_v<decltype(&lzc_clone), abi::lzc_clone_fn>);
static_assert(std::is_same_v<decltype(&lzc_snapshot), abi::lzc_snapshot_fn>);
static_assert(std::is_same_v<decltype(&lzc_destroy), abi::lzc_destroy_fn>);
static_assert(std::is_same_v<decltype(&lzc_rename), abi::lzc_rename_fn>);
static_assert(std::is_same_v<decltype(&nvlist_alloc), abi::nvlist_alloc_fn>);
static_assert(std::is_same_v<decltype(&nvlist_free), abi::nvlist_free_fn>);
static_assert(std::is_same_v<decltype(&nvlist_add_boolean), abi::nvlist_add_boolean_fn>);
static_assert(std::is_same_v<decltype(&nvlist_add_string), abi::nvlist_add_string_fn>);
static_assert(std::is_same_v<decltype(&nvlist_add_uint64), abi::nvlist_add_uint64_fn>);
// Enum and boolean_t parameters are int-sized in the C ABI; the rest must match exactly.
static_assert(std::is_same_v<decltype(&lzc_create), int (*)(const char*, enum lzc_dataset_type,
                                                            nvlist_t*, uint8_t*, uint_t)>);
static_assert(
    std::is_same_v<decltype(&lzc_destroy_snaps), int (*)(nvlist_t*, boolean_t, nvlist_t**)>);
static_assert(std::is_same_v<decltype(&lzc_exists), boolean_t (*)(const char*)>);
