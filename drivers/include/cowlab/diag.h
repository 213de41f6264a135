// Diagnostics from the core library (drivers/): warnings and progress for people, forwarded to
// the one logger — spdlog's default logger, which the CLI sets up with -q/-v (cowlab/log.h in
// harness/).  The core reports through these four calls rather than spdlog's headers so that its
// sources do not compile against spdlog and fmt; the messages end up in the same place.
//
// Levels: debug (-v only: every program started), info (progress; hidden by -q), warn and
// error (always shown).  A message is one line or several, without a trailing newline, and
// names its subject ("cowlab: devicemapper: ...").  Command output (tables, JSON) never goes
// here: it goes to stdout.
#pragma once

#include <string_view>

namespace cowlab::diag {

void debug(std::string_view message);
void info(std::string_view message);
void warn(std::string_view message);
void error(std::string_view message);

}  // namespace cowlab::diag
