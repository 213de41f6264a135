// plan_image on untrusted OCI layouts and docker-save archives: a field of the wrong JSON type is
// refused with a clear error, never an uncaught exception (fuzz_image's first finding).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cowlab/digest.h"
#include "cowlab/layer_store.h"

namespace cowlab {
namespace {

namespace fs = std::filesystem;

class ImagePlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cowlab-image-test-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "blobs" / "sha256");
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }
  std::string blob(const std::string& text) {
    std::string d = sha256_digest(text);
    write(dir_ / "blobs" / "sha256" / d.substr(7), text);
    return d;
  }
  fs::path dir_;
};

// The index's manifest descriptor has an object where its digest belongs.  Before the fix
// json::value("digest", "") threw type_error out of plan_image and import-image aborted.
TEST_F(ImagePlanTest, DescriptorDigestOfWrongTypeIsRefused) {
  write(dir_ / "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
  write(dir_ / "index.json",
        "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
        "\"digest\":{\"os\":\"linux\"}}]}");
  Result<ImagePlan> plan = Error::invalid("not run");
  EXPECT_NO_THROW(plan = plan_image(dir_.string(), "", ImageSource::kDirectory));
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.error().message().find("digest"), std::string::npos) << plan.error().message();
}

// The same for a platform whose os is not a string, and a docker-save RepoTags entry that is
// not a string: refused or ignored, never thrown.
TEST_F(ImagePlanTest, OtherFieldsOfWrongTypeDoNotThrow) {
  std::string config = blob("{\"rootfs\":{\"type\":[\"layers\"],\"diff_ids\":[]}}");
  std::string manifest = blob("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
                              "\"digest\":\"" + config + "\",\"size\":1},\"layers\":[]}");
  write(dir_ / "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
  write(dir_ / "index.json",
        "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
        "\"digest\":\"" + manifest + "\",\"platform\":{\"os\":{\"x\":1},\"architecture\":7}}]}");
  EXPECT_NO_THROW((void)plan_image(dir_.string(), "", ImageSource::kDirectory));
  fs::remove(dir_ / "index.json");
  fs::remove(dir_ / "oci-layout");
  write(dir_ / "manifest.json", "[{\"Config\":\"c.json\",\"RepoTags\":[{\"a\":1}],\"Layers\":[]}]");
  write(dir_ / "c.json", "{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}");
  EXPECT_NO_THROW((void)plan_image(dir_.string(), "", ImageSource::kArchive));
}

}  // namespace
}  // namespace cowlab
