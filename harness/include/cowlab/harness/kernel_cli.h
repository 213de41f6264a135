// `cowlab kernel ...` (build, list, source): the commands of kernel_build.h, added to the one
// cowlab command line (cowlab/command_line.h).  See docs/kernels.md.
#pragma once

#include <CLI/CLI.hpp>

#include "cowlab/command_line.h"

namespace cowlab::harness {
void add_kernel_commands(CLI::App& root, CommandContext& ctx);
}
