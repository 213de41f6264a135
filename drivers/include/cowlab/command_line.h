// The one `cowlab` command line: every command module (storage commands in drivers/cli, `vm`,
// `matrix`, ... in the harness) adds its subcommands to the same CLI11 app, so `cowlab --help`
// lists them all, global options (--json, --driver, -v/-q) are accepted before or after the
// subcommand, and usage errors look and exit the same everywhere.
//
// Contract for a module:  void add_NAME_commands(CLI::App& root, CommandContext& ctx);
//  - it adds subcommands to `root` whose callbacks do the work and set ctx.status;
//  - every variable an option binds to must outlive the parse (keep them in a struct owned by
//    the callbacks, e.g. a shared_ptr captured by the lambdas);
//  - machine-readable output is chosen by ctx.json, never by a --json of its own;
//  - a usage error (bad value, unknown name) sets ctx.status = kExitUsage (2) and prints
//    "cowlab <command>: <message>" once, naming the input and the valid choices.
#pragma once

#include <string>
#include <vector>

namespace cowlab {

// Exit statuses shared by every command.
constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInterrupted = 130;  // 128 + SIGINT, as shells report it

// Logging verbosity chosen by -v (repeatable) and -q.
enum class Verbosity { kQuiet = -1, kNormal = 0, kVerbose = 1, kDebug = 2 };

struct CommandContext {
  // Global options (declared on the root app; fallthrough makes them valid after a subcommand).
  std::string root = "/var/lib/cowlab";  // --root / COWLAB_ROOT
  std::string driver;                    // --driver / -s ("" = auto-select, or all for scenarios)
  std::vector<std::string> storage_opts;  // --storage-opt KEY=VALUE
  std::string priority;                  // --priority a,b,c
  bool json = false;                     // --json
  double lock_timeout = -1;              // --lock-timeout SECONDS (store lock; < 0 = wait)
  Verbosity verbosity = Verbosity::kNormal;
  // What the subcommand's callback decided; main returns it.
  int status = kExitOk;
};

// The version string of this build: "cowlab 0.1.0 (git 1a2b3c4d5e6f, dirty)" — the commit is
// baked in at build time (drivers/cli/version.cpp.in).  Reports record it.
const char* cowlab_version();
// Just the commit ("1a2b3c4d5e6f" or "1a2b3c4d5e6f-dirty"; "unknown" outside a git checkout).
const char* cowlab_git_commit();

}  // namespace cowlab
