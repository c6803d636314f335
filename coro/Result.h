// What an awaited I/O operation gives back: a value, or the reason there is
// none. Completions report errors as values, never as exceptions, because a
// closing connection is an ordinary event, not an exceptional one (and an
// exception per close would cost more than the close).
//
// The error codes a coroutine meets:
//   closeCategory()   the connection closed; the value is the CloseReason
//                     (closeReasonOf() gives it back).
//   coroCategory()    CoroErrc::EndOfStream: the peer sent FIN and every
//                     byte before it has been read.
//   std::errc::timed_out from withTimeout().
//   anything a handler's write() refused with (net/Handler.h).
#pragma once

#include <optional>
#include <system_error>
#include <type_traits>
#include <utility>

#include "keel/net/CloseReason.h"

namespace keel {

enum class CoroErrc : int {
  EndOfStream = 1,  // the peer's FIN: no more bytes will come
  NotStarted,       // an operation on a CoConnection that is not attached to a connection
};

[[nodiscard]] const std::error_category& coroCategory() noexcept;
[[nodiscard]] const std::error_category& closeCategory() noexcept;

[[nodiscard]] inline std::error_code make_error_code(CoroErrc e) noexcept {
  return {static_cast<int>(e), coroCategory()};
}
// The code a close resumes awaiters with. Value 0 means success in
// std::error_code, so the reason is stored plus one.
[[nodiscard]] inline std::error_code closeError(CloseReason r) noexcept {
  return {static_cast<int>(r) + 1, closeCategory()};
}
// The CloseReason inside a closeCategory() code; nullopt for any other code.
[[nodiscard]] inline std::optional<CloseReason> closeReasonOf(std::error_code ec) noexcept {
  if (ec.category() != closeCategory() || ec.value() < 1 || ec.value() > kCloseReasonCount)
    return std::nullopt;
  return static_cast<CloseReason>(ec.value() - 1);
}

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) noexcept(std::is_nothrow_move_constructible_v<T>) : value_(std::move(value)) {}
  Result(std::error_code ec) noexcept : error_(ec) {}

  [[nodiscard]] bool ok() const noexcept { return !error_; }
  explicit operator bool() const noexcept { return ok(); }
  [[nodiscard]] std::error_code error() const noexcept { return error_; }
  // Only when ok().
  [[nodiscard]] T& value() & noexcept { return *value_; }
  [[nodiscard]] const T& value() const& noexcept { return *value_; }
  [[nodiscard]] T&& value() && noexcept { return std::move(*value_); }
  T& operator*() & noexcept { return *value_; }
  const T& operator*() const& noexcept { return *value_; }
  T* operator->() noexcept { return &*value_; }
  const T* operator->() const noexcept { return &*value_; }

 private:
  std::optional<T> value_;
  std::error_code error_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() noexcept = default;
  Result(std::error_code ec) noexcept : error_(ec) {}
  [[nodiscard]] bool ok() const noexcept { return !error_; }
  explicit operator bool() const noexcept { return ok(); }
  [[nodiscard]] std::error_code error() const noexcept { return error_; }

 private:
  std::error_code error_;
};

}  // namespace keel

template <>
struct std::is_error_code_enum<keel::CoroErrc> : std::true_type {};
