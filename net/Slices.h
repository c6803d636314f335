// Up to four byte ranges written as one unit (a header and a body, say), so a
// codec can hand the connection a frame without first copying it together;
// the connection sends them with one sendmsg (writev).
#pragma once

#include <array>
#include <cassert>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

namespace keel {

class Slices {
 public:
  static constexpr std::size_t kMax = 4;

  Slices(std::span<const char> s) noexcept { add(s); }                  // NOLINT(google-explicit-constructor)
  Slices(std::string_view s) noexcept { add({s.data(), s.size()}); }    // NOLINT
  Slices(const std::string& s) noexcept { add({s.data(), s.size()}); }  // NOLINT
  Slices(const char* s) noexcept : Slices(std::string_view(s)) {}       // NOLINT
  Slices(std::initializer_list<std::span<const char>> list) noexcept {
    assert(list.size() <= kMax);
    for (auto s : list) add(s);
  }

  void add(std::span<const char> s) noexcept {
    if (s.empty() || count_ == kMax) return;
    parts_[count_++] = s;
    total_ += s.size();
  }

  [[nodiscard]] std::size_t count() const noexcept { return count_; }
  [[nodiscard]] std::size_t totalBytes() const noexcept { return total_; }
  [[nodiscard]] bool empty() const noexcept { return total_ == 0; }
  [[nodiscard]] const std::span<const char>* begin() const noexcept { return parts_.data(); }
  [[nodiscard]] const std::span<const char>* end() const noexcept { return parts_.data() + count_; }
  [[nodiscard]] std::span<const char> operator[](std::size_t i) const noexcept { return parts_[i]; }

 private:
  std::array<std::span<const char>, kMax> parts_{};
  std::size_t count_ = 0;
  std::size_t total_ = 0;
};

}  // namespace keel
