// The time source of an EventLoop, and a manual one for tests.
//
// A loop reads its clock once per iteration (EventLoop::now()). By default
// that is std::chrono::steady_clock. A test that gives the loop a
// ManualClock (LoopOptions::clock) decides what time it is: timers,
// heartbeats, idle limits and deadlines then fire when the test advances the
// clock, never because the machine was slow, and a 30 s timeout costs no
// 30 s of waiting. With a manual clock the loop never sleeps for a timer:
// epoll_wait only waits for I/O, up to the caller's cap.
//
// Thread-safety: a ManualClock is set from the thread that runs the loop.
#pragma once

#include <chrono>

#include "keel/core/Time.h"

namespace keel {

class EventLoop;

class LoopClock {
 public:
  virtual ~LoopClock() = default;
  [[nodiscard]] virtual TimePoint now() const noexcept = 0;
  // False for a clock that only moves when told to (the loop then never
  // waits in epoll_wait for a timer to come due).
  [[nodiscard]] virtual bool flows() const noexcept { return true; }
};

class ManualClock final : public LoopClock {
 public:
  // Starts well away from the epoch so that `now - limit` never underflows.
  explicit ManualClock(TimePoint start = TimePoint{} + std::chrono::hours(24)) noexcept : now_(start) {}

  [[nodiscard]] TimePoint now() const noexcept override { return now_; }
  [[nodiscard]] bool flows() const noexcept override { return false; }
  void advance(Duration d) noexcept { now_ += d; }
  void set(TimePoint t) noexcept { now_ = t; }

 private:
  TimePoint now_;
};

// Moves `clock` forward by `d` and runs `loop` at every instant in between
// at which its timer wheel has work, then once at the end, so that a timer
// re-armed from a callback fires at its own time, as it would with real
// time. Loop thread; `loop` must have been built with `clock`.
void advanceLoop(EventLoop& loop, ManualClock& clock, Duration d);

}  // namespace keel
