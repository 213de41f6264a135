// libFuzzer target: the scenario parser (scenario::load).  Any input is a valid scenario or a
// list of diagnostics; an exception escaping, a crash or undefined behaviour is the finding.
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "cowlab/scenario.h"
#include "cowlab/sys.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cowlab;
  static std::string file = [] {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/cowlab-fuzz-scenario-XXXXXX";
    if (!::mkdtemp(tmpl.data())) std::abort();
    return tmpl + "/fuzz.yaml";
  }();
  if (!sys::write_file_atomic(file, std::string(reinterpret_cast<const char*>(data), size)).ok())
    std::abort();
  (void)scenario::load(file);
  return 0;
}
