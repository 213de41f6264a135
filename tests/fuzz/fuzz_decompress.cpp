// libFuzzer target: decompress() (gzip through zlib, zstd through libzstd, plain passthrough).
// Any input either decodes or fails with kInvalid/kNotSupported; a crash, a leak or undefined
// behaviour is the finding.
#include <cstdlib>
#include <memory>
#include <string>

#include "cowlab/archive.h"
#include "cowlab/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cowlab;
  auto r = decompress(std::make_unique<StringReader>(
      std::string(reinterpret_cast<const char*>(data), size), "fuzz"));
  if (!r.ok()) {
    if (r.error().kind() != ErrorKind::kInvalid && r.error().kind() != ErrorKind::kNotSupported)
      std::abort();
    return 0;
  }
  char buf[4096];
  size_t total = 0;
  for (;;) {
    auto n = (*r)->read(buf, sizeof buf);
    if (!n.ok()) {
      if (n.error().kind() != ErrorKind::kInvalid) std::abort();
      break;
    }
    if (*n == 0) break;
    total += *n;
    if (total > (64u << 20)) break;  // a decompression bomb is fine, just stop
  }
  return 0;
}
