// keel's logger: one spdlog logger named "keel" that the application may
// replace (setLogger) or silence (setLogLevel(spdlog::level::off)).
// The library never writes to stdout/stderr except through it.
#pragma once

#include <memory>

#include <spdlog/spdlog.h>

namespace keel {

// Thread-safe. The returned logger stays valid for the life of the process:
// replaced loggers are retired, never destroyed, so a thread that is in the
// middle of logging while another thread calls setLogger() is safe. This keeps
// the per-call cost at one atomic load, with no lock and no refcount.
[[nodiscard]] spdlog::logger& logger() noexcept;
void setLogger(std::shared_ptr<spdlog::logger> replacement);
void setLogLevel(spdlog::level::level_enum level);

}  // namespace keel

#define KEEL_LOG(level, ...)                                            \
  do {                                                                  \
    ::spdlog::logger& keel_log_ = ::keel::logger();                     \
    if (keel_log_.should_log(level)) keel_log_.log(level, __VA_ARGS__); \
  } while (0)
#define KEEL_TRACE(...) KEEL_LOG(::spdlog::level::trace, __VA_ARGS__)
#define KEEL_DEBUG(...) KEEL_LOG(::spdlog::level::debug, __VA_ARGS__)
#define KEEL_INFO(...) KEEL_LOG(::spdlog::level::info, __VA_ARGS__)
#define KEEL_WARN(...) KEEL_LOG(::spdlog::level::warn, __VA_ARGS__)
#define KEEL_ERROR(...) KEEL_LOG(::spdlog::level::err, __VA_ARGS__)
