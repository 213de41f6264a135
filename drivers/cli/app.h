// The root of the `cowlab` command line (see cowlab/command_line.h for the module contract).
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cowlab/command_line.h"

namespace cowlab::cli {

// The root app with the global options bound to `ctx` and `cowlab help`; modules add theirs.
// fallthrough() is set before any subcommand exists, so every subcommand inherits it and the
// global options are accepted after the subcommand too (`cowlab info --json`).
void add_global_options(CLI::App& app, CommandContext& ctx);

// Adds `cowlab help [COMMAND...]`: call after every module added its commands.
void add_help_command(CLI::App& app, CommandContext& ctx);

// Parses argv and runs the chosen callback; returns the exit status: the callback's
// ctx.status, 0 for --help/--version, kExitUsage for every usage error (unknown command or
// option, missing argument, bad value, missing subcommand).
int parse_and_run(CLI::App& app, CommandContext& ctx, int argc, char** argv);

// The usage error for a word that names no subcommand where one is expected, e.g.
// "cowlab: unknown command 'infoo' — did you mean 'info'?" (git's wording), or nullopt when
// `args` (argv without argv[0]) names only known commands.  Exposed for unit tests.
std::optional<std::string> unknown_command_error(const CLI::App& app,
                                                 const std::vector<std::string>& args);

// The closest candidates to `word` by edit distance (transpositions count once), at most
// 2 edits away or having `word` as a prefix; empty if none is close.
std::vector<std::string> closest_names(const std::string& word,
                                       const std::vector<std::string>& names);

}  // namespace cowlab::cli
