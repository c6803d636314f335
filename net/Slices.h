// Up to four byte ranges written as one unit (a header and a body, say), so a
// codec can hand the connection a frame without first copying it together;
// the connection sends them with one sendmsg (writev).
//
// Nothing is dropped silently: more than four parts at construction does
// not compile, and add() on a full Slices returns false ([[nodiscard]]).
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace keel {

class Slices {
 public:
  static constexpr std::size_t kMax = 4;

  Slices() noexcept = default;
  Slices(std::span<const char> s) noexcept { append(s); }  // NOLINT(google-explicit-constructor)
  Slices(std::string_view s) noexcept { append({s.data(), s.size()}); }    // NOLINT
  Slices(const std::string& s) noexcept { append({s.data(), s.size()}); }  // NOLINT
  Slices(const char* s) noexcept : Slices(std::string_view(s)) {}          // NOLINT
  // Slices{header, body}: two to four parts, checked at compile time.
  template <class... Parts>
  requires(sizeof...(Parts) >= 2 && sizeof...(Parts) <= kMax &&
           (std::is_convertible_v<const Parts&, std::span<const char>> && ...)) Slices(const Parts&... parts)
  noexcept {  // NOLINT(google-explicit-constructor)
    (append(std::span<const char>(parts)), ...);
  }

  // False when the Slices already holds kMax parts: the part is not added,
  // and the caller must not send a message without it. An empty part is
  // always accepted (there is nothing to hold).
  [[nodiscard]] bool add(std::span<const char> s) noexcept {
    if (s.empty()) return true;
    if (count_ == kMax) return false;
    append(s);
    return true;
  }
  [[nodiscard]] bool full() const noexcept { return count_ == kMax; }

  [[nodiscard]] std::size_t count() const noexcept { return count_; }
  [[nodiscard]] std::size_t totalBytes() const noexcept { return total_; }
  [[nodiscard]] bool empty() const noexcept { return total_ == 0; }
  [[nodiscard]] const std::span<const char>* begin() const noexcept { return parts_.data(); }
  [[nodiscard]] const std::span<const char>* end() const noexcept { return parts_.data() + count_; }
  [[nodiscard]] std::span<const char> operator[](std::size_t i) const noexcept { return parts_[i]; }

 private:
  void append(std::span<const char> s) noexcept {
    if (s.empty()) return;
    parts_[count_++] = s;
    total_ += s.size();
  }

  std::array<std::span<const char>, kMax> parts_{};
  std::size_t count_ = 0;
  std::size_t total_ = 0;
};

}  // namespace keel
