#include "monitoring/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <fmt/format.h>

#include "launch/error.h"

namespace mlagpt::monitoring {

void setup_logging(int rank, const std::string& level) {
  const spdlog::level::level_enum parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    throw ConfigError(
        fmt::format("log level '{}' is not one of trace, debug, info, warn, error, critical, off", level));
  }
  auto logger = spdlog::stderr_color_mt(fmt::format("mlagpt-rank{}", rank));
  logger->set_pattern(fmt::format("[%H:%M:%S.%e] [rank {}] [%^%l%$] %v", rank));
  logger->set_level(parsed);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace mlagpt::monitoring
