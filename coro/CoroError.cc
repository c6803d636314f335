#include <string>

#include "keel/coro/Result.h"

namespace keel {
namespace {

class CoroCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "keel.coro"; }
  std::string message(int v) const override {
    switch (static_cast<CoroErrc>(v)) {
      case CoroErrc::EndOfStream:
        return "end of stream (the peer sent FIN)";
      case CoroErrc::NotStarted:
        return "the coroutine connection is not attached to a connection";
    }
    return "unknown keel.coro error";
  }
};

class CloseCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "keel.close"; }
  std::string message(int v) const override {
    if (v < 1 || v > kCloseReasonCount) return "connection closed";
    return "connection closed: " + std::string(toString(static_cast<CloseReason>(v - 1)));
  }
};

}  // namespace

const std::error_category& coroCategory() noexcept {
  static const CoroCategory c;
  return c;
}

const std::error_category& closeCategory() noexcept {
  static const CloseCategory c;
  return c;
}

}  // namespace keel
