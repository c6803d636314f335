#include "keel/core/TimerWheel.h"

#include <bit>
#include <stdexcept>
#include <utility>

namespace keel {
namespace {

constexpr std::uint8_t kUnfiled = 0xFF;  // node sits in the firing or cascade list
constexpr std::uint64_t kSpan = std::uint64_t{1} << (TimerWheel::kSlotBits * TimerWheel::kLevels);

constexpr std::uint64_t ceilTicks(std::int64_t ns, std::int64_t tick) {
  return ns <= 0 ? 0 : static_cast<std::uint64_t>((ns + tick - 1) / tick);
}

}  // namespace

TimerWheel::TimerWheel(TimePoint origin, Duration tick) : origin_(origin), tick_(tick) {
  if (tick_ <= Duration::zero()) throw std::invalid_argument("TimerWheel: tick must be positive");
  // Sentinels: one per slot, then the firing list, then the cascade list.
  const auto sentinels = static_cast<std::uint32_t>(kLevels * kSlots + 2);
  nodes_.resize(sentinels);
  for (std::uint32_t i = 0; i < sentinels; ++i) {
    nodes_[i].prev = nodes_[i].next = i;
    nodes_[i].level = kUnfiled;
  }
  firingHead_ = static_cast<std::uint32_t>(kLevels * kSlots);
}

std::uint64_t TimerWheel::tickOf(TimePoint t) const noexcept {
  if (t <= origin_) return 0;
  return static_cast<std::uint64_t>((t - origin_).count() / tick_.count());
}

void TimerWheel::reserve(std::size_t n) { nodes_.reserve(firingHead_ + 2 + n); }

std::uint32_t TimerWheel::allocNode() {
  if (freeHead_ != kNil) {
    const std::uint32_t i = freeHead_;
    freeHead_ = nodes_[i].next;
    return i;
  }
  nodes_.emplace_back();
  return static_cast<std::uint32_t>(nodes_.size() - 1);
}

void TimerWheel::freeNode(std::uint32_t i) noexcept {
  // Take the callback out first: destroying its captures may re-enter the
  // wheel (a capture's destructor cancelling another timer), and by then this
  // node must already be consistent.
  Callback doomed = std::move(nodes_[i].cb);
  Node& n = nodes_[i];
  n.cb = nullptr;
  n.state = State::Free;
  n.level = kUnfiled;
  if (++n.generation == 0) n.generation = 1;
  n.prev = kNil;
  n.next = freeHead_;
  freeHead_ = i;
  --live_;
}

void TimerWheel::pushBack(std::uint32_t head, std::uint32_t i) noexcept {
  Node& h = nodes_[head];
  Node& n = nodes_[i];
  n.prev = h.prev;
  n.next = head;
  nodes_[h.prev].next = i;
  h.prev = i;
}

void TimerWheel::unlink(std::uint32_t i) noexcept {
  Node& n = nodes_[i];
  nodes_[n.prev].next = n.next;
  nodes_[n.next].prev = n.prev;
  if (n.level != kUnfiled) {
    const std::uint32_t head = sentinel(n.level, n.slot);
    if (nodes_[head].next == head) occupied_[n.level] &= ~(std::uint64_t{1} << n.slot);
  }
  n.prev = n.next = kNil;
  n.level = kUnfiled;
}

void TimerWheel::file(std::uint32_t i) noexcept {
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
  int level = 0;
  if (delta >= kSlots) {
    level = static_cast<int>(std::bit_width(delta) - 1) / kSlotBits;
    if (level >= kLevels) level = kLevels - 1;
  }
  const auto slot = static_cast<unsigned>((e >> (kSlotBits * level)) & (kSlots - 1));
  n.level = static_cast<std::uint8_t>(level);
  n.slot = static_cast<std::uint16_t>(slot);
  pushBack(sentinel(level, slot), i);
  occupied_[level] |= std::uint64_t{1} << slot;
}

TimerId TimerWheel::schedule(TimePoint now, Duration delay, Callback cb, Duration interval) {
  if (delay < Duration::zero()) delay = Duration::zero();
  const std::uint32_t i = allocNode();
  Node& n = nodes_[i];
  n.expiry = ceilTicks(((now - origin_) + delay).count(), tick_.count());
  n.interval = interval > Duration::zero() ? ceilTicks(interval.count(), tick_.count()) : 0;
  n.cb = std::move(cb);
  n.state = State::Pending;
  ++live_;
  file(i);
  return TimerId{i, n.generation};
}

bool TimerWheel::cancel(TimerId id) noexcept {
  if (id.index < firingHead_ + 2 || id.index >= nodes_.size()) return false;
  Node& n = nodes_[id.index];
  if (n.generation != id.generation) return false;
  switch (n.state) {
    case State::Pending:
      unlink(id.index);
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
  if (id.index < firingHead_ + 2 || id.index >= nodes_.size()) return false;
  const Node& n = nodes_[id.index];
  if (n.generation != id.generation) return false;
  return n.state == State::Pending || (n.state == State::Firing && n.interval != 0);
}

void TimerWheel::cascade(int level, unsigned slot) noexcept {
  if ((occupied_[level] & (std::uint64_t{1} << slot)) == 0) return;
  // Move the slot's list aside first: a parked far-future node may be filed
  // straight back into this same slot.
  const std::uint32_t head = sentinel(level, slot);
  const std::uint32_t aside = firingHead_ + 1;
  Node& h = nodes_[head];
  Node& a = nodes_[aside];
  a.next = h.next;
  a.prev = h.prev;
  nodes_[a.next].prev = aside;
  nodes_[a.prev].next = aside;
  h.next = h.prev = head;
  occupied_[level] &= ~(std::uint64_t{1} << slot);
  for (std::uint32_t i = a.next; i != aside; i = a.next) {
    nodes_[a.next = nodes_[i].next].prev = aside;
    file(i);
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
  if ((occupied_[0] & (std::uint64_t{1} << slot)) == 0) return;

  // Splice the due slot onto the firing list; a callback may cancel any of
  // the nodes still waiting there, which simply unlinks it.
  // The nodes keep their old level/slot: unlink() only clears a slot's bit
  // when that slot's list is empty, which is then already true.
  const std::uint32_t head = sentinel(0, slot);
  Node& h = nodes_[head];
  Node& f = nodes_[firingHead_];
  f.next = h.next;
  f.prev = h.prev;
  nodes_[f.next].prev = firingHead_;
  nodes_[f.prev].next = firingHead_;
  h.next = h.prev = head;
  occupied_[0] &= ~(std::uint64_t{1} << slot);

  while (nodes_[firingHead_].next != firingHead_) {
    const std::uint32_t i = nodes_[firingHead_].next;
    unlink(i);
    nodes_[i].state = State::Firing;
    // Move the callback out: it may schedule timers and grow (move) the slab.
    Callback cb = std::move(nodes_[i].cb);
    cb();
    ++fired;
    Node& n = nodes_[i];
    if (n.state == State::Firing && n.interval != 0) {
      n.cb = std::move(cb);
      n.state = State::Pending;
      n.expiry += n.interval;
      file(i);
    } else {
      n.cb = std::move(cb);  // destroyed by freeNode after the node is consistent
      freeNode(i);
    }
  }
}

std::size_t TimerWheel::advance(TimePoint now) {
  const std::uint64_t target = tickOf(now);
  std::size_t fired = 0;
  // Jump straight from one tick with work to the next: an idle stretch of any
  // length costs nothing, and no occupied slot is ever jumped over.
  for (std::uint64_t t = nextEventTick(); t <= target; t = nextEventTick()) processTick(t, fired);
  if (current_ <= target) current_ = target + 1;
  return fired;
}

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
