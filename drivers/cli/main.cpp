// cowlab: thin main.  One CLI11 app: the storage commands (drivers/cli/commands.cpp), then the
// harness's `vm`, `matrix` and `kernel` (harness/); each module adds its subcommands to the same root, so
// --help lists every command and global options work anywhere (cowlab/command_line.h).
#include <cstdlib>

#include "cli/app.h"
#include "cli/commands.h"
#include "cowlab/harness/bisect.h"
#include "cowlab/harness/kernel_cli.h"
#include "cowlab/harness/matrix.h"
#include "cowlab/harness/self_binary.h"
#include "cowlab/harness/vm_cli.h"

int main(int argc, char** argv) {
  // Before anything can take long: a rebuild of this file during a run must not change what the
  // run puts into guests (self_binary.h).  A failure here is reported where the binary is needed.
  (void)cowlab::harness::pin_self_binary();
  cowlab::CommandContext ctx;
  if (const char* r = std::getenv("COWLAB_ROOT")) ctx.root = r;
  CLI::App app{"cowlab: copy-on-write storage lab (Docker's graph drivers behind one interface, and a\n"
               "harness that runs scenario files against them in disposable QEMU guests)",
               "cowlab"};
  cowlab::cli::add_global_options(app, ctx);
  cowlab::cli::StorageCommands storage(app, ctx);
  cowlab::cli::add_crash_commands(app, ctx);
  cowlab::harness::add_vm_commands(app, ctx);
  cowlab::harness::add_matrix_commands(app, ctx, argc, argv);
  cowlab::harness::add_kernel_commands(app, ctx);
  cowlab::harness::add_bisect_commands(app, ctx);
  cowlab::cli::add_help_command(app, ctx);
  return cowlab::cli::parse_and_run(app, ctx, argc, argv);
}
