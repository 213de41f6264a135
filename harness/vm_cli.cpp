#include "cowlab/harness/vm_cli.h"

#include <cstdio>

namespace cowlab::harness {
int vm_main(int, char**) {
  std::fprintf(stderr, "cowlab vm: not built yet\n");
  return 1;
}
}  // namespace cowlab::harness
