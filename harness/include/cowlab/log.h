// Logging: spdlog's default logger on stderr, message only (no timestamps: the output is for
// people at a terminal and for CI logs, which stamp lines themselves).  Levels follow the
// global -q/-v options: -q warnings and errors only, default info (progress), -v debug, -vv trace.
// Command output (tables, JSON) goes to stdout with printf/iostream, never through the logger.
#pragma once

#include <spdlog/spdlog.h>

#include "cowlab/command_line.h"

namespace cowlab {

// Sets the default logger up (once) and its level; safe to call again when -v/-q are parsed.
void set_log_verbosity(Verbosity v);

}  // namespace cowlab
