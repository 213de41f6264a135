// The conformance suite: Docker's graphtest (daemon/graphdriver/graphtest) plus
// containers/storage's Echo and ListLayers, written once and run for every driver x backing
// store combination selected on the command line (see conformance_main.cpp).
#pragma once

#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace cowlab::conformance {

// One instantiation of the suite: a registry driver on a backing store
// (tests/conformance/backing_store.h), with storage options for the driver.
struct Combo {
  std::string driver;                          // registry name
  std::string store;                           // backing store spec
  std::map<std::string, std::string> options;  // --storage-opt pairs for the driver
};

// GoogleTest prints a parameter with this ("vfs on tmpdir").
void PrintTo(const Combo& combo, std::ostream* os);

// The combinations chosen by main() before the tests are registered.
std::vector<Combo>& selected_combos();

// Whether a driver or backing store that cannot run here fails the test (true) or skips it
// with the reason (false).  ctest on the host sets it: there every registered combo must run.
enum class Unusable { kSkip, kFail };
Unusable& unusable_policy();

// "vfs_on_tmpdir", "btrfs_on_btrfs_loop": a valid GoogleTest parameter name.
std::string combo_name(const Combo& combo);

}  // namespace cowlab::conformance
