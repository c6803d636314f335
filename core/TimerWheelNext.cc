// Where the wheel next has work: the occupancy queries behind advance()'s
// jumps and the loop's epoll_wait timeout. Kept apart from TimerWheel.cc
// because they read only the bitmaps, never a node or a block.
#include <bit>

#include "keel/core/TimerWheel.h"

namespace keel {

std::uint64_t TimerWheel::nextEventTick() const noexcept {
  std::uint64_t best = UINT64_MAX;
  for (int level = 0; level < kLevels; ++level) {
    const std::uint64_t bits = occupied_[static_cast<std::size_t>(level)];
    if (bits == 0) continue;
    const int shift = kSlotBits * level;
    const std::uint64_t base = current_ >> shift;
    const auto pos = static_cast<int>(base & (kSlots - 1));
    const std::uint64_t rotated = std::rotr(bits, pos);
    std::uint64_t when;
    if (level == 0) {
      when = current_ + static_cast<unsigned>(std::countr_zero(rotated));
    } else {
      // The slot under `pos` was already re-filed this rotation unless we sit
      // exactly on its boundary, in which case that happens at current_.
      const bool onBoundary = (current_ & ((std::uint64_t{1} << shift) - 1)) == 0;
      std::uint64_t k;
      if (onBoundary && (rotated & 1) != 0) {
        k = 0;
      } else if ((rotated & ~std::uint64_t{1}) != 0) {
        k = static_cast<unsigned>(std::countr_zero(rotated & ~std::uint64_t{1}));
      } else {
        k = kSlots;
      }
      when = (base + k) << shift;
    }
    if (when < best) best = when;
  }
  return best;
}

std::optional<Duration> TimerWheel::timeUntilNext(TimePoint now) const {
  if (live_ == 0) return std::nullopt;
  const std::uint64_t next = nextEventTick();
  const TimePoint at = origin_ + tick_ * static_cast<std::int64_t>(next);
  return at > now ? at - now : Duration::zero();
}

}  // namespace keel
