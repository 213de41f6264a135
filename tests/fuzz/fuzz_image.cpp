// libFuzzer target: the image importer's index/manifest/config parsing (plan_image).
// The input is up to three JSON documents separated by a line "---": the first is index.json
// (OCI layout; mode byte 'o') or manifest.json (docker save; mode byte 'd'), then a manifest,
// then a config.  The manifest and config are stored as blobs under their digests, and the
// text "@MANIFEST@" / "@CONFIG@" in the documents is replaced by those digests, so the fuzzer
// gets past the digest checks.
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cowlab/digest.h"
#include "cowlab/layer_store.h"
#include "cowlab/sys.h"

namespace {

std::string dir() {
  static std::string d = [] {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/cowlab-fuzz-image-XXXXXX";
    if (!::mkdtemp(tmpl.data())) std::abort();
    return tmpl;
  }();
  return d;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
}

std::string hex_of(const std::string& digest) {
  return digest.substr(digest.find(':') + 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cowlab;
  if (size < 1) return 0;
  char mode = static_cast<char>(data[0]);
  std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  std::vector<std::string> docs;
  for (size_t pos = 0;;) {
    size_t sep = text.find("\n---\n", pos);
    docs.push_back(text.substr(pos, sep == std::string::npos ? std::string::npos : sep - pos));
    if (sep == std::string::npos || docs.size() == 3) break;
    pos = sep + 5;
  }
  docs.resize(3);
  std::string d = dir();
  (void)sys::remove_all(d + "/img");
  std::string img = d + "/img";
  if (!sys::mkdir_all(img + "/blobs/sha256", 0755).ok()) std::abort();
  std::string config = docs[2];
  std::string config_digest = sha256_digest(config);
  std::string manifest = docs[1];
  replace_all(manifest, "@CONFIG@", config_digest);
  std::string manifest_digest = sha256_digest(manifest);
  std::string top = docs[0];
  replace_all(top, "@MANIFEST@", manifest_digest);
  replace_all(top, "@CONFIG@", config_digest);
  (void)sys::write_file_atomic(img + "/blobs/sha256/" + hex_of(config_digest), config);
  (void)sys::write_file_atomic(img + "/blobs/sha256/" + hex_of(manifest_digest), manifest);
  if (mode == 'd') {
    (void)sys::write_file_atomic(img + "/manifest.json", top);
    (void)sys::write_file_atomic(img + "/config.json", config);
  } else {
    (void)sys::write_file_atomic(img + "/oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
    (void)sys::write_file_atomic(img + "/index.json", top);
  }
  auto plan = plan_image(img, "", mode == 'd' ? ImageSource::kArchive : ImageSource::kDirectory);
  if (plan.ok()) {
    // A plan never points outside the image directory.
    for (const auto& f : plan->layer_files)
      if (f.rfind(img + "/", 0) != 0 || f.find("/../") != std::string::npos) std::abort();
  }
  return 0;
}
