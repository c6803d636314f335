// A hierarchical timing wheel owned by one EventLoop.
//
// Six levels of 64 slots; level 0 slots are one tick wide (default 1 ms) and
// each level above is 64x coarser, so the wheel spans 64^6 ticks (about 2.2
// years at 1 ms) and anything beyond is parked in the top level and re-filed
// when it comes round. Schedule and cancel are O(1); each timer is moved down
// at most five times before it fires, so expiry is amortised O(1) as well.
//
// Nodes live in one slab (a vector, with a free list) and each slot holds the
// 32-bit indices of its nodes in blocks from one shared pool (see the private
// section for why), so scheduling allocates nothing once the slab and the pool
// have grown to the peak number of pending timers. A std::function whose
// captures fit its small-object buffer (16 bytes in libstdc++: a pointer and
// an integer) does not allocate either.
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
// A repeating timer's expiries lie on a grid: first expiry + k * interval.
// When advance() comes late enough that several grid points are due at once
// (the loop stalled), Missed::Skip (the default) fires once and re-files at
// the first grid point after that advance's time: a periodic job that was
// blocked runs once, not in a burst, and keeps its phase. Missed::CatchUp
// fires once per missed point, all within that advance(), for the rare
// caller that counts ticks. Keeping the grid (rather than re-arming at
// now + interval) is what keeps the rate exact: the loop always wakes a
// little late, and re-arming from the late time would add that lateness to
// every period. Either way the choice is arithmetic at re-file time.
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

  // What a repeating timer does about grid points it missed (see above).
  enum class Missed : std::uint8_t { Skip, CatchUp };

  explicit TimerWheel(TimePoint origin, Duration tick = std::chrono::milliseconds(1));
  TimerWheel(const TimerWheel&) = delete;
  TimerWheel& operator=(const TimerWheel&) = delete;

  // Schedules cb at `now + delay`. With a non-zero `interval` the timer repeats
  // every interval (rounded up to one tick) until cancelled; `missed` says
  // what it does after a stall. May throw std::bad_alloc (growing the slab).
  [[nodiscard]] TimerId schedule(TimePoint now, Duration delay, Callback cb,
                                 Duration interval = Duration::zero(), Missed missed = Missed::Skip);

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

  // Why the layout is what it is. With a million pending timers almost
  // nothing the wheel touches per timer is in cache, so what costs is the
  // number of cache misses that have to wait for each other. An intrusive
  // list through the nodes makes every cascade and every firing a chain of
  // them (load a node to learn the next one); that was ~3 dependent misses per
  // timer and ~500 ns per expiry at 1M. So:
  //  - A slot holds the indices of its nodes in an array (blocks, below): the
  //    whole slot is known up front, and cascade/fire prefetch the nodes of
  //    the next block while working on this one, which overlaps the misses.
  //  - The node is split: the part a cascade needs (expiry, position) is a
  //    32-byte Node, the 32-byte std::function a parallel Payload that only
  //    firing, scheduling and freeing touch. Both are 32-byte aligned so
  //    neither straddles a cache line.
  // Measured and not kept: a 16-byte Node (interval and generation moved to
  // the payload) and huge pages for the arrays; neither made a difference.

  // Hot half, indexed like Payload.
  struct alignas(32) Node {
    std::uint64_t expiry = 0;    // absolute tick
    std::uint64_t interval = 0;  // ticks; 0 = one-shot
    // Pending: this node's entry in blocks_ (block << kBlockShift | offset),
    // which makes cancel an O(1) swap-remove. Free: the next free node.
    std::uint32_t pos = kNil;
    std::uint32_t generation = 1;
    State state = State::Free;
    Missed missed = Missed::Skip;
  };
  // Cold half.
  struct alignas(32) Payload {
    Callback cb;
  };

  // A slot's entries live in a chain of 64-byte blocks (13 entries and the
  // links) from one shared pool, not in a vector per slot: the pool needs at
  // most about 2 * pending / 13 blocks whatever the spread over slots, so
  // reserve() can bound it, and steady state allocates nothing even when one
  // slot gets more entries than it ever had. Every block of a list is full
  // except the tail; cancel swap-removes with the list's last entry, which
  // right after a schedule is the node itself (schedule+cancel touches no
  // other node). `owner` is the slot (level * kSlots + slot), which is how
  // cancel gets from a node's position to its list, or kFiring for the blocks
  // of a batch being fired: a cancel there leaves a hole (kNil) rather than
  // moving an entry the firing loop may already have passed.
  static constexpr std::uint32_t kBlockEntries = 13;
  static constexpr std::uint32_t kBlockShift = 4;  // positions: block << 4 | offset
  static constexpr std::uint32_t kFiring = kNil;
  struct alignas(64) Block {
    std::array<std::uint32_t, kBlockEntries> entry;
    std::uint32_t next;
    std::uint32_t prev;
    std::uint32_t owner;
  };
  struct List {
    std::uint32_t head = kNil;
    std::uint32_t tail = kNil;
    std::uint32_t tailCount = 0;  // entries in the tail block
  };
  static constexpr std::size_t kSlotCount = static_cast<std::size_t>(kLevels) * kSlots;

  std::uint64_t tickOf(TimePoint t) const noexcept;  // floor
  void growFor(std::size_t pending);                 // capacity for `pending` timers; may throw
  std::uint32_t allocNode();
  std::uint32_t appendNode();                  // the slab's growth path
  void freeNode(std::uint32_t i) noexcept;     // destroys the callback too
  void releaseNode(std::uint32_t i) noexcept;  // node bookkeeping only
  std::uint32_t allocBlock(std::uint32_t owner) noexcept;
  void freeBlock(std::uint32_t b) noexcept;
  std::uint32_t& entryAt(std::uint32_t pos) noexcept {
    return blocks_[pos >> kBlockShift].entry[pos & ((1U << kBlockShift) - 1)];
  }
  void file(std::uint32_t i) noexcept;         // put a pending node in its slot
  void removeEntry(std::uint32_t i) noexcept;  // take a pending node out of its list
  List detach(unsigned slotIndex) noexcept;    // empties a slot, returning its list
  void prefetchBlock(std::uint32_t b, std::uint32_t count, bool payloadsToo) const noexcept;
  void cascade(int level, unsigned slot);
  void fire(List batch, std::size_t& fired);
  void processTick(std::uint64_t tick, std::size_t& fired);
  // The next tick at which a slot fires or must be re-filed; UINT64_MAX if none.
  std::uint64_t nextEventTick() const noexcept;

  TimePoint origin_;
  Duration tick_;
  std::uint64_t current_ = 0;  // next tick to process
  std::uint64_t seen_ = 0;     // the latest tick advance() was called for: "now" for Missed::Skip
  TimePoint currentStart_;     // start of tick current_ (or earlier): advance() before it is a no-op
  std::size_t live_ = 0;
  std::array<std::uint64_t, kLevels> occupied_{};  // bit per non-empty slot
  std::array<List, kSlotCount> slots_{};
  std::vector<Node> nodes_;
  std::vector<Payload> payloads_;  // parallel to nodes_
  std::vector<Block> blocks_;
  std::uint32_t freeNode_ = kNil;
  std::uint32_t freeBlock_ = kNil;
};

}  // namespace keel
