#include "keel/core/TimerWheel.h"

#include <algorithm>
#include <bit>
#include <stdexcept>
#include <utility>

// The per-timer helpers are small and sit on the hot paths of schedule,
// cascade and fire; the compiler's heuristics leave some of them out of line.
#define KEEL_TW_INLINE [[gnu::always_inline]] inline

namespace keel {
namespace {

constexpr std::uint64_t kSpan = std::uint64_t{1} << (TimerWheel::kSlotBits * TimerWheel::kLevels);

constexpr std::uint64_t ceilTicks(std::int64_t ns, std::int64_t tick) {
  return ns <= 0 ? 0 : static_cast<std::uint64_t>((ns + tick - 1) / tick);
}

constexpr std::uint64_t bit(unsigned slot) { return std::uint64_t{1} << slot; }

// Level for a delta of a given bit width: 0 below kSlots, then one level per
// kSlotBits bits. A table because GCC kept a real division by 6 in some of the
// inlined copies of file() (it treats the branch as cold).
constexpr auto kLevelOfWidth = [] {
  std::array<std::uint8_t, 65> t{};
  for (unsigned w = 0; w <= 64; ++w) {
    const unsigned level = w <= TimerWheel::kSlotBits ? 0 : (w - 1) / TimerWheel::kSlotBits;
    t[w] = static_cast<std::uint8_t>(level < TimerWheel::kLevels ? level : TimerWheel::kLevels - 1);
  }
  return t;
}();

}  // namespace

TimerWheel::TimerWheel(TimePoint origin, Duration tick)
    : origin_(origin), tick_(tick), currentStart_(origin) {
  if (tick_ <= Duration::zero()) throw std::invalid_argument("TimerWheel: tick must be positive");
}

std::uint64_t TimerWheel::tickOf(TimePoint t) const noexcept {
  if (t <= origin_) return 0;
  return static_cast<std::uint64_t>((t - origin_).count() / tick_.count());
}

// Blocks in use never exceed (entries / kBlockEntries) plus one partly filled
// block per slot and two per list being consumed. Entries are the pending
// timers plus, while a batch fires, the batch's own entries (already fired or
// cancelled ones stay until their block is passed), which is at most as many
// again. Keeping the pool's capacity at this bound whenever a timer is added
// means re-filing (cascade, repeating timers) never has to grow it.
KEEL_TW_INLINE void TimerWheel::growFor(std::size_t pending) {
  const std::size_t need = 2 * (pending / kBlockEntries + 1) + 2 * (kSlotCount + 2);
  if (blocks_.capacity() < need) [[unlikely]]
    blocks_.reserve(std::max(need, 2 * blocks_.capacity()));
}

void TimerWheel::reserve(std::size_t n) {
  nodes_.reserve(n);
  payloads_.reserve(n);
  growFor(n);
}

KEEL_TW_INLINE std::uint32_t TimerWheel::allocNode() {
  if (freeNode_ != kNil) {
    const std::uint32_t i = freeNode_;
    freeNode_ = nodes_[i].pos;
    return i;
  }
  return appendNode();
}

std::uint32_t TimerWheel::appendNode() {
  if (nodes_.size() >= kNil) throw std::length_error("TimerWheel: too many timers");
  payloads_.emplace_back();
  try {
    nodes_.emplace_back();
  } catch (...) {
    payloads_.pop_back();
    throw;
  }
  return static_cast<std::uint32_t>(nodes_.size() - 1);
}

KEEL_TW_INLINE void TimerWheel::releaseNode(std::uint32_t i) noexcept {
  Node& n = nodes_[i];
  n.state = State::Free;
  if (++n.generation == 0) n.generation = 1;
  n.pos = freeNode_;
  freeNode_ = i;
  --live_;
}

void TimerWheel::freeNode(std::uint32_t i) noexcept {
  // Take the callback out first: destroying its captures may re-enter the
  // wheel (a capture's destructor cancelling another timer), and by then this
  // node must already be consistent.
  Callback doomed = std::move(payloads_[i].cb);
  payloads_[i].cb = nullptr;
  releaseNode(i);
}

// growFor() keeps the capacity ahead of any need, so emplace_back below does
// not reallocate in practice (and a failure would terminate: noexcept).
KEEL_TW_INLINE std::uint32_t TimerWheel::allocBlock(std::uint32_t owner) noexcept {
  std::uint32_t b;
  if (freeBlock_ != kNil) {
    b = freeBlock_;
    freeBlock_ = blocks_[b].next;
  } else {
    b = static_cast<std::uint32_t>(blocks_.size());
    blocks_.emplace_back();
  }
  blocks_[b].owner = owner;
  return b;
}

KEEL_TW_INLINE void TimerWheel::freeBlock(std::uint32_t b) noexcept {
  blocks_[b].next = freeBlock_;
  freeBlock_ = b;
}

KEEL_TW_INLINE void TimerWheel::file(std::uint32_t i) noexcept {
  Node& n = nodes_[i];
  std::uint64_t e = n.expiry;
  if (e < current_) e = n.expiry = current_;
  std::uint64_t delta = e - current_;
  if (delta >= kSpan) {
    // Beyond the wheel: park it in the top level at the farthest slot; it is
    // re-filed with its true expiry when that slot comes round.
    delta = kSpan - 1;
    e = current_ + delta;
  }
  const unsigned level = kLevelOfWidth[static_cast<std::size_t>(std::bit_width(delta))];
  const auto slot = static_cast<unsigned>((e >> (kSlotBits * level)) & (kSlots - 1));
  const auto s = level * kSlots + slot;
  List& l = slots_[s];
  std::uint32_t b = l.tail;
  if (b == kNil) {
    b = allocBlock(s);
    blocks_[b].next = blocks_[b].prev = kNil;
    l.head = l.tail = b;
    l.tailCount = 0;
    occupied_[level] |= bit(slot);
  } else if (l.tailCount == kBlockEntries) {
    const std::uint32_t nb = allocBlock(s);
    blocks_[nb].prev = b;
    blocks_[nb].next = kNil;
    blocks_[b].next = nb;
    l.tail = b = nb;
    l.tailCount = 0;
  }
  blocks_[b].entry[l.tailCount] = i;
  n.pos = (b << kBlockShift) | l.tailCount++;
}

void TimerWheel::removeEntry(std::uint32_t i) noexcept {
  const std::uint32_t pos = nodes_[i].pos;
  const std::uint32_t s = blocks_[pos >> kBlockShift].owner;
  if (s == kFiring) {
    // Waiting in the batch that is firing right now (no cancel can run during
    // a cascade): leave a hole for the firing loop to skip. Swapping another
    // entry in could move one the loop has already passed.
    entryAt(pos) = kNil;
    return;
  }
  // Swap-remove: the list's last entry takes this one's place. Right after a
  // schedule that last entry is usually the node itself, so schedule+cancel
  // touches no other node.
  List& l = slots_[s];
  const std::uint32_t tail = l.tail;
  const std::uint32_t last = (tail << kBlockShift) | (l.tailCount - 1);
  if (pos != last) {
    const std::uint32_t moved = entryAt(last);
    entryAt(pos) = moved;
    nodes_[moved].pos = pos;
  }
  if (--l.tailCount == 0) {
    const std::uint32_t prev = blocks_[tail].prev;
    freeBlock(tail);
    if (prev == kNil) {
      l.head = l.tail = kNil;
      occupied_[s / kSlots] &= ~bit(s % kSlots);
    } else {
      blocks_[prev].next = kNil;
      l.tail = prev;
      l.tailCount = kBlockEntries;
    }
  }
}

TimerId TimerWheel::schedule(TimePoint now, Duration delay, Callback cb, Duration interval, Missed missed) {
  if (delay < Duration::zero()) delay = Duration::zero();
  growFor(live_ + 1);  // everything that can throw comes before any change
  const std::uint32_t i = allocNode();
  Node& n = nodes_[i];
  n.expiry = ceilTicks(((now - origin_) + delay).count(), tick_.count());
  n.interval = interval > Duration::zero() ? ceilTicks(interval.count(), tick_.count()) : 0;
  n.state = State::Pending;
  n.missed = missed;
  payloads_[i].cb = std::move(cb);
  ++live_;
  file(i);
  return TimerId{i, n.generation};
}

bool TimerWheel::cancel(TimerId id) noexcept {
  if (id.index >= nodes_.size()) return false;
  Node& n = nodes_[id.index];
  if (n.generation != id.generation) return false;
  switch (n.state) {
    case State::Pending:
      removeEntry(id.index);
      freeNode(id.index);
      return true;
    case State::Firing:
      n.state = State::FiringCancelled;  // freed when its callback returns
      return true;
    case State::FiringCancelled:
    case State::Free:
      return false;
  }
  return false;
}

bool TimerWheel::pending(TimerId id) const noexcept {
  if (id.index >= nodes_.size()) return false;
  const Node& n = nodes_[id.index];
  if (n.generation != id.generation) return false;
  return n.state == State::Pending || (n.state == State::Firing && n.interval != 0);
}

TimerWheel::List TimerWheel::detach(unsigned s) noexcept {
  const List l = slots_[s];
  slots_[s] = List{};
  occupied_[s / kSlots] &= ~bit(s % kSlots);
  return l;
}

// Prefetches the nodes (and, for firing, the callbacks) named by one block of
// a detached list, and the line of the block after it. Cascade and fire call
// it for block n+1 as they start on block n: the nodes are requested 13-26
// entries before they are needed, and by the time the loop reaches block n+2
// its line has arrived too. That turns the walk into a stream of overlapping
// misses instead of one miss after another.
KEEL_TW_INLINE void TimerWheel::prefetchBlock(std::uint32_t b, std::uint32_t count,
                                              bool payloadsToo) const noexcept {
  const Block& blk = blocks_[b];
  for (std::uint32_t k = 0; k < count; ++k) {
    const std::uint32_t i = blk.entry[k];
    if (i == kNil) continue;  // a hole left by a cancel inside this firing batch
    __builtin_prefetch(&nodes_[i], 1);
    if (payloadsToo) __builtin_prefetch(&payloads_[i], 1);
  }
  if (blk.next != kNil) __builtin_prefetch(&blocks_[blk.next]);
}

void TimerWheel::cascade(int level, unsigned slot) {
  if ((occupied_[static_cast<std::size_t>(level)] & bit(slot)) == 0) return;
  // Detach the slot's list first: a parked far-future node may be filed
  // straight back into this same slot. Nothing else can touch the detached
  // list while it is re-filed (no user code runs here).
  const List l = detach(static_cast<unsigned>(level) * kSlots + slot);
  const auto countOf = [&l](std::uint32_t b) { return b == l.tail ? l.tailCount : kBlockEntries; };
  prefetchBlock(l.head, countOf(l.head), false);
  for (std::uint32_t b = l.head; b != kNil;) {
    const std::uint32_t next = blocks_[b].next;
    if (next != kNil) prefetchBlock(next, countOf(next), false);
    const std::uint32_t count = countOf(b);
    for (std::uint32_t k = 0; k < count; ++k) file(blocks_[b].entry[k]);
    freeBlock(b);
    b = next;
  }
}

void TimerWheel::fire(const List l, std::size_t& fired) {
  // Mark the batch's blocks so that a callback cancelling a timer still
  // waiting here leaves a hole instead of swap-removing (and so that nothing
  // mistakes them for the slot's new list). Nothing is appended to a batch.
  for (std::uint32_t b = l.head; b != kNil; b = blocks_[b].next) blocks_[b].owner = kFiring;
  const auto countOf = [&l](std::uint32_t b) { return b == l.tail ? l.tailCount : kBlockEntries; };
  prefetchBlock(l.head, countOf(l.head), true);
  std::uint32_t b = l.head;
  std::uint32_t k = 0;
  // Settles a node whose callback has returned (or thrown). Callbacks may
  // schedule (growing any of the vectors) and cancel, so nothing is held by
  // reference across one.
  const auto settle = [this](std::uint32_t i, Callback& cb) noexcept {
    Node& n = nodes_[i];
    if (n.state == State::Firing && n.interval != 0) {
      payloads_[i].cb = std::move(cb);
      n.state = State::Pending;
      std::uint64_t next = n.expiry + n.interval;
      // Skip: jump the grid points that are already due (a stall) in one
      // step; the division runs only after a stall.
      if (n.missed == Missed::Skip && next <= seen_) next += ((seen_ - next) / n.interval + 1) * n.interval;
      n.expiry = next;
      file(i);
    } else {
      releaseNode(i);  // cb, the caller's local, is destroyed after this
    }
  };
  try {
    while (b != kNil) {
      const std::uint32_t next = blocks_[b].next;  // a batch's links never change
      if (next != kNil) prefetchBlock(next, countOf(next), true);
      const std::uint32_t count = countOf(b);
      for (; k < count; ++k) {
        const std::uint32_t i = blocks_[b].entry[k];
        if (i == kNil) continue;  // cancelled by an earlier callback of this batch
        nodes_[i].state = State::Firing;
        // Move the callback out: it may schedule timers and grow (move) the slab.
        Callback cb = std::move(payloads_[i].cb);
        try {
          cb();
        } catch (...) {
          settle(i, cb);
          throw;
        }
        ++fired;
        settle(i, cb);
      }
      freeBlock(b);
      b = next;
      k = 0;
    }
  } catch (...) {
    // A callback threw: the rest of the batch is still due. File it back (it
    // lands in the slot for the next tick) so the wheel stays consistent.
    for (++k; b != kNil; k = 0) {
      const std::uint32_t count = countOf(b);
      for (; k < count; ++k) {
        if (const std::uint32_t i = blocks_[b].entry[k]; i != kNil) file(i);
      }
      const std::uint32_t next = blocks_[b].next;
      freeBlock(b);
      b = next;
    }
    throw;
  }
}

void TimerWheel::processTick(std::uint64_t t, std::size_t& fired) {
  current_ = t;  // cascades file relative to the tick being processed
  if ((t & (kSlots - 1)) == 0) {
    int top = 1;
    while (top < kLevels - 1 && (t & ((std::uint64_t{1} << (kSlotBits * (top + 1))) - 1)) == 0) ++top;
    for (int level = top; level >= 1; --level) {
      cascade(level, static_cast<unsigned>((t >> (kSlotBits * level)) & (kSlots - 1)));
    }
  }
  const auto slot = static_cast<unsigned>(t & (kSlots - 1));
  current_ = t + 1;
  if ((occupied_[0] & bit(slot)) == 0) return;
  fire(detach(slot), fired);
}

std::size_t TimerWheel::advance(TimePoint now) {
  // Most calls land inside a tick that is already done (or before the origin,
  // where nothing can be due); settle those without the division in tickOf().
  if (now < currentStart_) return 0;
  const std::uint64_t target = tickOf(now);
  seen_ = std::max(seen_, target);  // max: a call re-entered from a callback may pass a later time
  std::size_t fired = 0;
  // Jump straight from one tick with work to the next: an idle stretch of any
  // length costs nothing, and no occupied slot is ever jumped over.
  for (std::uint64_t t = nextEventTick(); t <= target; t = nextEventTick()) processTick(t, fired);
  if (current_ <= target) current_ = target + 1;
  // currentStart_ = origin_ + current_ ticks, saturated; anything from origin_
  // up to the true value is safe (a call re-entered from a callback can leave
  // it low). Never below origin_: tick 0 starts there, and firing for an
  // earlier `now` would be early.
  const std::int64_t o = origin_.time_since_epoch().count();
  if (o < 0) {
    currentStart_ = origin_;  // (origin_ + current_ ticks might not be representable as a Duration)
  } else {
    const auto room = static_cast<std::uint64_t>(INT64_MAX - o) / static_cast<std::uint64_t>(tick_.count());
    currentStart_ = current_ > room ? TimePoint::max()
                                    : origin_ + Duration(static_cast<std::int64_t>(current_) * tick_.count());
  }
  return fired;
}

}  // namespace keel

#undef KEEL_TW_INLINE
