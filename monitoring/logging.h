// Process-wide logging setup: spdlog's default logger writes "[time] [rank r] [level] message" to stderr.
// Messages carry a tag for their subsystem ("[data] ...", "[comm] ...", "[ckpt] ..."). Human-facing progress is
// logged by rank 0 only; warnings and errors by every rank. Metrics never go through here (see metrics sinks).
#pragma once

#include <string>

namespace mlagpt::monitoring {

// `level`: trace, debug, info, warn, error, critical, off. Throws ConfigError for anything else.
void setup_logging(int rank, const std::string& level = "info");

}  // namespace mlagpt::monitoring
