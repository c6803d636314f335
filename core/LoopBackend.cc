#include <cstdlib>
#include <mutex>

#include "keel/core/EventLoop.h"
#include "keel/core/Log.h"
#include "keel/core/internal/UringPoller.h"

namespace keel {

std::string_view toString(LoopBackend b) noexcept {
  switch (b) {
    case LoopBackend::Auto:
      return "auto";
    case LoopBackend::Epoll:
      return "epoll";
    case LoopBackend::IoUring:
      return "io_uring";
  }
  return "?";
}

std::optional<LoopBackend> parseLoopBackend(std::string_view name) noexcept {
  if (name == "auto") return LoopBackend::Auto;
  if (name == "epoll") return LoopBackend::Epoll;
  if (name == "io_uring" || name == "uring" || name == "io-uring") return LoopBackend::IoUring;
  return std::nullopt;
}

namespace detail {

LoopBackend resolveLoopBackend(LoopBackend asked) {
  if (asked != LoopBackend::Auto) return asked;
  const char* env = std::getenv("KEEL_LOOP_BACKEND");
  if (env == nullptr || *env == '\0') return LoopBackend::Epoll;
  if (auto b = parseLoopBackend(env); b && *b != LoopBackend::Auto) return *b;
  static std::once_flag once;
  std::call_once(once,
                 [env] { KEEL_WARN("KEEL_LOOP_BACKEND={} is not epoll or io_uring: using epoll", env); });
  return LoopBackend::Epoll;
}

}  // namespace detail
}  // namespace keel
