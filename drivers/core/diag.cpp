// The core library's diagnostics (cowlab/diag.h): spdlog's default logger, shared with the
// harness and the CLI through libspdlog's registry.
#include "cowlab/diag.h"

#include <spdlog/spdlog.h>

namespace cowlab::diag {

void debug(std::string_view message) {
  spdlog::debug("{}", message);
}
void info(std::string_view message) {
  spdlog::info("{}", message);
}
void warn(std::string_view message) {
  spdlog::warn("{}", message);
}
void error(std::string_view message) {
  spdlog::error("{}", message);
}

}  // namespace cowlab::diag
