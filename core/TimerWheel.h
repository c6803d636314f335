// A hierarchical timing wheel owned by one EventLoop.
//
// Six levels of 64 slots; level 0 slots are one tick wide (default 1 ms) and
// each level above is 64x coarser, so the wheel spans 64^6 ticks (about 2.2
// years at 1 ms) and anything beyond is parked in the top level and re-filed
// when it comes round. Schedule and cancel are O(1); each timer is moved down
// at most five times before it fires, so expiry is amortised O(1) as well.
//
// Nodes live in one slab (a vector) and are linked by 32-bit indices, with a
// free list, so scheduling allocates nothing once the slab has grown to the
// peak number of pending timers. A std::function whose captures fit its
// small-object buffer (16 bytes in libstdc++: a pointer and an integer)
// does not allocate either.
//
// Handles (TimerId) carry the node's generation. A handle whose timer fired or
// was cancelled is stale; cancelling a stale handle is a harmless no-op even
// after the node was reused for another timer.
//
// Semantics: a timer scheduled at `now` for `delay` fires during the first
// advance(t) with t >= now + delay (never early with respect to the times the
// caller passes in), and at most one tick later than that plus however late
// the caller calls advance().
//
// Thread-safety: none. The owning EventLoop calls everything on its thread.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "keel/core/Time.h"

namespace keel {

struct TimerId {
  std::uint32_t index = 0;
  std::uint32_t generation = 0;  // 0 is never a live generation
  [[nodiscard]] bool valid() const noexcept { return generation != 0; }
  friend bool operator==(const TimerId&, const TimerId&) = default;
};

class TimerWheel {
 public:
  using Callback = std::function<void()>;

  static constexpr int kLevels = 6;
  static constexpr int kSlotBits = 6;
  static constexpr int kSlots = 1 << kSlotBits;

  explicit TimerWheel(TimePoint origin, Duration tick = std::chrono::milliseconds(1));
  TimerWheel(const TimerWheel&) = delete;
  TimerWheel& operator=(const TimerWheel&) = delete;

  // Schedules cb at `now + delay`. With a non-zero `interval` the timer repeats
  // every interval (rounded up to one tick) until cancelled.
  [[nodiscard]] TimerId schedule(TimePoint now, Duration delay, Callback cb,
                                 Duration interval = Duration::zero());

  // Returns true when a pending timer was cancelled. Safe on stale handles and
  // from inside any timer callback (including the timer's own).
  bool cancel(TimerId id) noexcept;

  [[nodiscard]] bool pending(TimerId id) const noexcept;

  // Fires every timer due at or before `now`. Returns how many fired.
  std::size_t advance(TimePoint now);

  // How long until the wheel next needs advance(); nullopt when it is empty.
  // May be earlier than the next expiry (a coarse slot that only has to be
  // re-filed), never later.
  [[nodiscard]] std::optional<Duration> timeUntilNext(TimePoint now) const;

  [[nodiscard]] std::size_t size() const noexcept { return live_; }
  [[nodiscard]] Duration tick() const noexcept { return tick_; }
  // Grows the slab up front so that the first `n` pending timers allocate nothing.
  void reserve(std::size_t n);

 private:
  static constexpr std::uint32_t kNil = UINT32_MAX;
  enum class State : std::uint8_t { Free, Pending, Firing, FiringCancelled };

  struct Node {
    std::uint32_t prev = kNil;
    std::uint32_t next = kNil;
    std::uint32_t generation = 1;
    State state = State::Free;
    std::uint8_t level = 0;  // for sentinel bookkeeping
    std::uint16_t slot = 0;
    std::uint64_t expiry = 0;    // absolute tick
    std::uint64_t interval = 0;  // ticks; 0 = one-shot
    Callback cb;
  };

  std::uint64_t tickOf(TimePoint t) const noexcept;  // floor
  std::uint32_t allocNode();
  void freeNode(std::uint32_t i) noexcept;
  void file(std::uint32_t i) noexcept;    // put a pending node in its slot
  void unlink(std::uint32_t i) noexcept;  // take a node out of its list
  void pushBack(std::uint32_t head, std::uint32_t i) noexcept;
  void cascade(int level, unsigned slot) noexcept;
  void processTick(std::uint64_t tick, std::size_t& fired);
  // The next tick at which a slot fires or must be re-filed; UINT64_MAX if none.
  std::uint64_t nextEventTick() const noexcept;
  std::uint32_t sentinel(int level, unsigned slot) const noexcept {
    return static_cast<std::uint32_t>(level * kSlots) + slot;
  }

  TimePoint origin_;
  Duration tick_;
  std::uint64_t current_ = 0;  // next tick to process
  std::size_t live_ = 0;
  std::array<std::uint64_t, kLevels> occupied_{};  // bit per non-empty slot
  std::vector<Node> nodes_;                        // [0, kLevels*kSlots) are slot sentinels, then firing list
  std::uint32_t freeHead_ = kNil;
  std::uint32_t firingHead_ = 0;
};

}  // namespace keel
