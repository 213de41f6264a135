// cowlab_conformance: the graphtest port as a standalone program, so the harness can run it
// inside a guest against drivers the host kernel cannot run.
//
//   cowlab_conformance                                 the host set (see kHostCombos)
//   cowlab_conformance --driver=zfs                    a file-backed test zpool per test
//   cowlab_conformance --driver=zfs --fixture=dir:/srv/scratch --storage-opt=zfs.fsname=tank/t
//   cowlab_conformance --driver=devicemapper --fixture=tmpdir --storage-opt=dm.basesize=1G
//   COWLAB_CONFORMANCE_DRIVER=btrfs cowlab_conformance --gtest_filter='*SetQuota*'
//
// Options (each also read from the environment, flags win):
//   --driver=NAME[,NAME...]    COWLAB_CONFORMANCE_DRIVER    registry drivers to test
//   --fixture=SPEC             COWLAB_CONFORMANCE_FIXTURE   backing store: tmpdir, btrfs-loop,
//                                                           xfs-loop, zfs-pool, dir:PATH (default:
//                                                           btrfs-loop for btrfs, zfs-pool for
//                                                           zfs, tmpdir otherwise)
//   --storage-opt=KEY=VALUE    COWLAB_CONFORMANCE_STORAGE_OPTS (KEY=VALUE,KEY=VALUE)
//   --require-usable           COWLAB_CONFORMANCE_REQUIRE_USABLE=1: a driver or store that
//                              cannot run here fails instead of skipping with its reason
//   --list-combos              print the selected combinations and exit
// Everything else goes to GoogleTest (--gtest_filter, --gtest_output=xml:..., ...).
// Temporary stores go under $COWLAB_TEST_TMPDIR, $TMPDIR or /var/tmp.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>

#include "conformance/backing_store.h"
#include "conformance/conformance.h"

namespace cowlab::conformance {

namespace {

// What `make test` runs on the host: every driver the host kernel can run, btrfs on a
// loop-mounted image, and vfs on btrfs too (its copies are reflinks there).  overlay on
// xfs-loop (project quota for its size option) needs an xfs with quota support, which the
// guest kernels have and this project's host kernel lacks: run it there with --fixture=xfs-loop.
// clang-format off
const Combo kHostCombos[] = {
    {"vfs", "tmpdir", {}},
    {"overlay", "tmpdir", {}},
    {"btrfs", "btrfs-loop", {}},
    {"vfs", "btrfs-loop", {}},
};
// clang-format on

std::string default_store_for(const std::string& driver) {
  if (driver == "btrfs") return "btrfs-loop";
  if (driver == "zfs") return "zfs-pool";
  return "tmpdir";
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "cowlab_conformance: " << message << "\n"
            << "usage: cowlab_conformance [--driver=NAME[,NAME]] [--fixture=SPEC] "
               "[--storage-opt=KEY=VALUE]... [--require-usable] [--list-combos] [gtest flags]\n"
            << "backing stores:";
  for (const auto& s : testing::backing_store_names()) std::cerr << ' ' << s;
  std::cerr << "\n";
  std::exit(2);
}

bool take_flag(const std::string& arg, const std::string& name, std::string* value) {
  if (arg.rfind(name + "=", 0) != 0) return false;
  *value = arg.substr(name.size() + 1);
  return true;
}

}  // namespace

std::vector<Combo>& selected_combos() {
  static std::vector<Combo> combos;
  return combos;
}

Unusable& unusable_policy() {
  static Unusable policy = Unusable::kSkip;
  return policy;
}

void PrintTo(const Combo& combo, std::ostream* os) {
  *os << combo.driver << " on " << combo.store;
  for (const auto& [k, v] : combo.options) *os << " " << k << "=" << v;
}

std::string combo_name(const Combo& combo) {
  std::string out = combo.driver + "_on_" + combo.store;
  for (auto& c : out)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return out;
}

}  // namespace cowlab::conformance

int main(int argc, char** argv) {
  using namespace cowlab::conformance;
  std::string drivers, fixture, opts_env;
  std::vector<std::string> storage_opts;
  bool list = false;
  if (const char* v = env("COWLAB_CONFORMANCE_DRIVER")) drivers = v;
  if (const char* v = env("COWLAB_CONFORMANCE_FIXTURE")) fixture = v;
  if (const char* v = env("COWLAB_CONFORMANCE_STORAGE_OPTS")) storage_opts = split(v, ',');
  if (const char* v = env("COWLAB_CONFORMANCE_REQUIRE_USABLE"); v && std::strcmp(v, "0") != 0)
    unusable_policy() = Unusable::kFail;

  // Our flags out, GoogleTest's left in place.
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    if (take_flag(arg, "--driver", &value)) {
      drivers = value;
    } else if (take_flag(arg, "--fixture", &value)) {
      fixture = value;
    } else if (take_flag(arg, "--storage-opt", &value)) {
      storage_opts.push_back(value);
    } else if (arg == "--require-usable") {
      unusable_policy() = Unusable::kFail;
    } else if (arg == "--list-combos") {
      list = true;
    } else if (arg.rfind("--gtest", 0) == 0 || arg == "--help" || arg == "-h") {
      rest.push_back(argv[i]);
    } else {
      usage_error("unknown argument " + arg);
    }
  }

  std::map<std::string, std::string> options;
  for (const auto& kv : storage_opts) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      usage_error("--storage-opt needs KEY=VALUE, got \"" + kv + "\"");
    options[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (!fixture.empty() && !cowlab::testing::make_backing_store(fixture).ok())
    usage_error("unknown fixture \"" + fixture + "\"");

  auto& combos = selected_combos();
  if (drivers.empty()) {
    if (!fixture.empty() || !options.empty())
      usage_error("--fixture and --storage-opt need --driver");
    combos.assign(std::begin(kHostCombos), std::end(kHostCombos));
  } else {
    for (const auto& d : split(drivers, ','))
      combos.push_back({d, fixture.empty() ? default_store_for(d) : fixture, options});
  }
  if (list) {
    for (const auto& c : combos) {
      std::cout << combo_name(c) << "\tdriver=" << c.driver << "\tfixture=" << c.store;
      for (const auto& [k, v] : c.options) std::cout << "\t" << k << "=" << v;
      std::cout << "\n";
    }
    return 0;
  }

  int gtest_argc = static_cast<int>(rest.size());
  // The parameterised suite reads selected_combos() when InitGoogleTest registers it.
  ::testing::InitGoogleTest(&gtest_argc, rest.data());
  if (::geteuid() != 0)
    std::cerr << "cowlab_conformance: not running as root; drivers that mount will be unusable\n";
  return RUN_ALL_TESTS();
}
