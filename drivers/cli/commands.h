// The storage commands of the cowlab CLI.  main.cpp dispatches here for everything except
// `vm` (harness) — see README.md for the command list.
#pragma once

namespace cowlab::cli {

// Exit statuses: 0 success, 1 operational error, 2 usage error.
constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

int storage_main(int argc, char** argv);
// `cowlab crash ...`: power-cut testing (crash_cli.cpp, docs/crash.md).
int crash_main(int argc, char** argv);

}  // namespace cowlab::cli
