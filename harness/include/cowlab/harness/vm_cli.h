// `cowlab vm ...`: entry point of the harness's command line, called by the cowlab main with
// argv[0] == "vm".  Returns the process exit status.
#pragma once

namespace cowlab::harness {
int vm_main(int argc, char** argv);
}
