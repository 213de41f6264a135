#include "cowlab/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <mutex>

namespace cowlab {

void set_log_verbosity(Verbosity v) {
  static std::once_flag once;
  std::call_once(once, [] {
    auto logger = spdlog::stderr_logger_mt("cowlab");
    logger->set_pattern("%v");
    // Progress lines must appear as they happen, also when stderr is a pipe (CI, pytest).
    logger->flush_on(spdlog::level::trace);
    spdlog::set_default_logger(logger);
  });
  switch (v) {
    case Verbosity::kQuiet:
      spdlog::set_level(spdlog::level::warn);
      break;
    case Verbosity::kNormal:
      spdlog::set_level(spdlog::level::info);
      break;
    case Verbosity::kVerbose:
      spdlog::set_level(spdlog::level::debug);
      break;
    case Verbosity::kDebug:
      spdlog::set_level(spdlog::level::trace);
      break;
  }
}

}  // namespace cowlab
