// libFuzzer target: the layer applier.  Input: a layer tar.  It is validated (the layer
// store's first pass) and applied to a scratch layer inside a sandbox directory; afterwards
// the sandbox must hold nothing but the scratch layer — an entry written beside it means the
// applier escaped its root, and the target aborts.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "cowlab/archive.h"
#include "cowlab/io.h"
#include "cowlab/sys.h"

namespace {

std::string sandbox() {
  static std::string dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/cowlab-fuzz-apply-XXXXXX";
    if (!::mkdtemp(tmpl.data())) std::abort();
    return tmpl;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cowlab;
  const std::string box = sandbox();
  const std::string root = box + "/layer";
  (void)sys::remove_all(root);
  if (!sys::mkdir(root, 0755).ok()) std::abort();
  std::string bytes(reinterpret_cast<const char*>(data), size);
  {
    StringReader in(bytes, "fuzz.tar");
    ApplyOptions v;
    v.mode = ApplyMode::kValidateOnly;
    (void)apply_layer("", in, v);
  }
  for (WhiteoutFormat f : {WhiteoutFormat::kDeleteInPlace, WhiteoutFormat::kOverlay}) {
    StringReader in(bytes, "fuzz.tar");
    ApplyOptions o;
    o.format = f;
    (void)apply_layer(root, in, o);
    auto entries = sys::read_dir(box);
    if (!entries.ok()) std::abort();
    for (const auto& e : *entries) {
      if (e.name != "layer") {
        std::fprintf(stderr, "fuzz_apply: the applier wrote %s/%s outside the layer\n", box.c_str(),
                     e.name.c_str());
        std::abort();
      }
    }
    (void)sys::remove_all(root);
    if (!sys::mkdir(root, 0755).ok()) std::abort();
  }
  return 0;
}
