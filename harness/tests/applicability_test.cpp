// Which drivers a profile can run (applicability.h): each reason names the exact cause.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "cowlab/harness/applicability.h"

namespace fs = std::filesystem;

namespace cowlab::harness {
namespace {

KernelConfig config_of(const std::string& text) {
  auto c = parse_kernel_config(text, "test-config");
  EXPECT_TRUE(c.ok());
  return *c;
}

const std::string kFull =
    "CONFIG_MODULES=y\nCONFIG_OVERLAY_FS=m\nCONFIG_BTRFS_FS=m\nCONFIG_BLK_DEV_DM=m\n"
    "CONFIG_DM_THIN_PROVISIONING=m\nCONFIG_AUFS_FS=y\n";

TEST(Applicability, EveryDriverRunsOnAFullKernelWithModules) {
  KernelConfig c = config_of(kFull);
  ProfileFacts f{&c, "", true, true};
  for (const auto& fit : driver_fits(f, {"aufs", "btrfs", "devicemapper", "overlay", "vfs", "zfs"}))
    EXPECT_TRUE(fit.runnable) << fit.driver << ": " << fit.reason;
}

TEST(Applicability, ZfsSkipNamesTheDeclaredRange) {
  KernelConfig c = config_of(kFull);
  const std::string why =
      "not supported by zfs-dkms 2.4.4-1~bpo13+1 (declares linux-libc-dev << 7.3~, >= 4.18~; "
      "kernel 7.3.4)";
  ProfileFacts f{&c, why, true, false};
  auto fit = driver_fit(f, "zfs");
  EXPECT_FALSE(fit.runnable);
  EXPECT_EQ(fit.reason, "zfs: " + why);
  EXPECT_TRUE(driver_fit(f, "overlay").runnable);
}

TEST(Applicability, ZfsWithoutAModuleSaysSo) {
  ProfileFacts f{nullptr, "", true, false};
  auto fit = driver_fit(f, "zfs");
  EXPECT_FALSE(fit.runnable);
  EXPECT_NE(fit.reason.find("no ZFS module for this kernel"), std::string::npos) << fit.reason;
}

TEST(Applicability, AufsNotInTheKernelNamesTheOption) {
  KernelConfig c = config_of("CONFIG_MODULES=y\nCONFIG_OVERLAY_FS=y\n");
  ProfileFacts f{&c, "", true, true};
  auto fit = driver_fit(f, "aufs");
  EXPECT_FALSE(fit.runnable);
  EXPECT_EQ(fit.reason, "aufs: no aufs in this kernel (CONFIG_AUFS_FS is not set in test-config)");
  auto dm = driver_fit(f, "devicemapper");
  EXPECT_FALSE(dm.runnable);
  EXPECT_NE(dm.reason.find("CONFIG_BLK_DEV_DM is not set"), std::string::npos) << dm.reason;
  EXPECT_TRUE(driver_fit(f, "overlay").runnable);
  EXPECT_TRUE(driver_fit(f, "vfs").runnable);
}

TEST(Applicability, ModuleWithoutModulesDiskIsNotRunnable) {
  KernelConfig c = config_of(kFull);
  ProfileFacts f{&c, "", false, false};
  auto fit = driver_fit(f, "btrfs");
  EXPECT_FALSE(fit.runnable);
  EXPECT_EQ(fit.reason,
            "btrfs: no btrfs in this kernel (CONFIG_BTRFS_FS=m but the profile has no modules)");
  EXPECT_TRUE(driver_fit(f, "aufs").runnable);  // =y needs no modules
}

TEST(Applicability, UnknownConfigDecidesNothing) {
  ProfileFacts f{nullptr, "", false, false};
  EXPECT_TRUE(driver_fit(f, "aufs").runnable);
  EXPECT_TRUE(driver_fit(f, "overlay").runnable);
}

TEST(Applicability, ByoProfileFactsFromItsConfigAndModules) {
  fs::path dir = fs::temp_directory_path() / ("cowlab-applic-" + std::to_string(::getpid()));
  fs::create_directories(dir / "mods" / "kernel" / "fs" / "zfs");
  std::ofstream(dir / "bzImage") << "not a kernel";
  std::ofstream(dir / "config") << "CONFIG_MODULES=y\nCONFIG_OVERLAY_FS=y\n";
  auto spec = byo_profile(dir / "bzImage", dir / "mods", dir / "config", "byo-test");
  ASSERT_TRUE(spec.ok()) << spec.error().message();
  KernelConfig c;
  ProfileFacts f = profile_facts(*spec, nullptr, &c);
  ASSERT_NE(f.config, nullptr);
  EXPECT_FALSE(driver_fit(f, "zfs").runnable);
  EXPECT_FALSE(driver_fit(f, "aufs").runnable);
  std::ofstream(dir / "mods" / "kernel" / "fs" / "zfs" / "zfs.ko.xz") << "x";
  f = profile_facts(*spec, nullptr, &c);
  EXPECT_TRUE(driver_fit(f, "zfs").runnable) << driver_fit(f, "zfs").reason;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace cowlab::harness
