// cowlab: thin main.  Storage commands live in drivers/cli; `cowlab vm ...` belongs to the
// harness (harness/include/cowlab/harness/vm_cli.h).
#include <cstring>

#include "cli/commands.h"
#include "cowlab/harness/matrix.h"
#include "cowlab/harness/vm_cli.h"

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "vm") == 0) return cowlab::harness::vm_main(argc - 1, argv + 1);
  if (argc >= 2 && std::strcmp(argv[1], "matrix") == 0) return cowlab::harness::matrix_main(argc - 1, argv + 1);
  if (argc >= 2 && std::strcmp(argv[1], "crash") == 0) return cowlab::cli::crash_main(argc - 1, argv + 1);
  return cowlab::cli::storage_main(argc, argv);
}
