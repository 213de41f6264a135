// `cowlab vm ...`: the harness's guest commands (build, run, shell, profiles, bench), added to
// the one cowlab command line (cowlab/command_line.h).  See docs/vm.md.
#pragma once

#include <CLI/CLI.hpp>

#include "cowlab/command_line.h"

namespace cowlab::harness {
void add_vm_commands(CLI::App& root, CommandContext& ctx);
}
