// The log level, with a flag the relay's per-message trace lines test before anything else.
#pragma once

#include <spdlog/spdlog.h>

#include <atomic>

namespace pgrelay::util {

/// Whether trace-level logging is on. The relay logs every message at trace level; asking
/// spdlog costs two calls into its library per message, this flag one relaxed load.
inline std::atomic<bool> trace_logging{false};

/// Sets spdlog's level and the trace flag together (at start and on reload).
inline void set_log_level(spdlog::level::level_enum level) {
  spdlog::set_level(level);
  trace_logging.store(level <= spdlog::level::trace, std::memory_order_relaxed);
}

}  // namespace pgrelay::util

/// SPDLOG_TRACE behind the flag: nothing but a load when trace logging is off.
#define PGRELAY_TRACE(...)                                                \
  do {                                                                    \
    if (::pgrelay::util::trace_logging.load(std::memory_order_relaxed)) { \
      SPDLOG_TRACE(__VA_ARGS__);                                          \
    }                                                                     \
  } while (false)
