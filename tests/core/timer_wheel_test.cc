// TimerWheel driven with explicit time points: ordering, never early, cancel
// before/after/inside fire, repeating timers, stale handles, 100k timers,
// timers far beyond the wheel's span.
#include "keel/core/TimerWheel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace keel {
namespace {

using namespace std::chrono_literals;

struct WheelTest : ::testing::Test {
  TimePoint t0 = Clock::now();
  TimerWheel wheel{t0, 1ms};
};

TEST_F(WheelTest, FiresInDeadlineOrder) {
  std::vector<int> order;
  for (int d : {30, 5, 200, 70, 1, 4096, 5000}) {
    (void)wheel.schedule(t0, std::chrono::milliseconds(d), [&order, d] { order.push_back(d); });
  }
  for (int ms = 0; ms <= 6000; ++ms) wheel.advance(t0 + std::chrono::milliseconds(ms));
  EXPECT_EQ(order, (std::vector<int>{1, 5, 30, 70, 200, 4096, 5000}));
  EXPECT_EQ(wheel.size(), 0u);
}

TEST_F(WheelTest, NeverEarlyAndAtMostOneTickLate) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> us(0, 300'000);  // 0..300 ms in microseconds
  struct Probe {
    TimePoint deadline;
    TimePoint firedAt{};
    bool fired = false;
  };
  std::vector<Probe> probes(2000);
  TimePoint now = t0;
  for (auto& p : probes) {
    const auto delay = std::chrono::microseconds(us(rng));
    p.deadline = now + delay;
    (void)wheel.schedule(now, delay, [&p, &now] {
      p.fired = true;
      p.firedAt = now;
    });
  }
  // Advance in uneven steps (a loop waking at odd moments).
  while (now < t0 + 400ms) {
    now += std::chrono::microseconds(us(rng) % 1700 + 1);
    wheel.advance(now);
  }
  for (const auto& p : probes) {
    ASSERT_TRUE(p.fired);
    EXPECT_GE(p.firedAt, p.deadline) << "fired early";
  }
}

TEST_F(WheelTest, FiresAtTheFirstAdvancePastTheDeadlinePlusOneTick) {
  bool fired = false;
  (void)wheel.schedule(t0, 10ms, [&] { fired = true; });
  wheel.advance(t0 + 9ms + 999us);
  EXPECT_FALSE(fired);
  wheel.advance(t0 + 10ms);
  EXPECT_TRUE(fired);
}

TEST_F(WheelTest, CancelBeforeFire) {
  bool fired = false;
  TimerId id = wheel.schedule(t0, 10ms, [&] { fired = true; });
  EXPECT_TRUE(wheel.pending(id));
  EXPECT_TRUE(wheel.cancel(id));
  EXPECT_FALSE(wheel.pending(id));
  EXPECT_FALSE(wheel.cancel(id)) << "second cancel of the same handle";
  wheel.advance(t0 + 1s);
  EXPECT_FALSE(fired);
  EXPECT_EQ(wheel.size(), 0u);
}

TEST_F(WheelTest, CancelAfterFireIsHarmlessEvenWhenTheNodeIsReused) {
  int a = 0, b = 0;
  TimerId first = wheel.schedule(t0, 1ms, [&] { ++a; });
  wheel.advance(t0 + 1ms);
  ASSERT_EQ(a, 1);
  // The freed node is reused by the next schedule; the stale handle must not touch it.
  TimerId second = wheel.schedule(t0 + 1ms, 5ms, [&] { ++b; });
  EXPECT_EQ(second.index, first.index);
  EXPECT_NE(second.generation, first.generation);
  EXPECT_FALSE(wheel.cancel(first));
  EXPECT_TRUE(wheel.pending(second));
  wheel.advance(t0 + 10ms);
  EXPECT_EQ(b, 1);
}

TEST_F(WheelTest, CancelInsideCallbackOfAnotherTimerDueTheSameTick) {
  int fired = 0;
  TimerId victim;
  (void)wheel.schedule(t0, 3ms, [&] {
    ++fired;
    EXPECT_TRUE(wheel.cancel(victim));
  });
  victim = wheel.schedule(t0, 3ms, [&] { fired += 100; });
  wheel.advance(t0 + 3ms);
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(wheel.size(), 0u);
}

TEST_F(WheelTest, RepeatingTimerAndCancelFromItsOwnCallback) {
  int runs = 0;
  TimerId self;
  self = wheel.schedule(
      t0, 10ms,
      [&] {
        if (++runs == 5) {
          EXPECT_TRUE(wheel.cancel(self));
        }
      },
      10ms);
  for (int ms = 0; ms <= 200; ++ms) wheel.advance(t0 + std::chrono::milliseconds(ms));
  EXPECT_EQ(runs, 5);
  EXPECT_FALSE(wheel.pending(self));
  EXPECT_EQ(wheel.size(), 0u);
}

TEST_F(WheelTest, RepeatingTimerKeepsItsCadenceWhenAdvancedLate) {
  std::vector<long> at;
  TimePoint now = t0;
  (void)wheel.schedule(
      t0, 100ms, [&] { at.push_back((now - t0) / 1ms); }, 100ms);
  for (int i = 1; i <= 10; ++i) {
    now = t0 + std::chrono::milliseconds(i * 100 + 3);
    wheel.advance(now);
  }
  ASSERT_EQ(at.size(), 10u);
  for (std::size_t i = 0; i < at.size(); ++i) EXPECT_EQ(at[i], static_cast<long>(i + 1) * 100 + 3);
}

TEST_F(WheelTest, ScheduleFromInsideCallback) {
  std::vector<int> seen;
  (void)wheel.schedule(t0, 5ms, [&] {
    seen.push_back(1);
    (void)wheel.schedule(t0 + 5ms, 0ms, [&] { seen.push_back(2); });  // due now: next tick
    (void)wheel.schedule(t0 + 5ms, 1000ms, [&] { seen.push_back(3); });
  });
  wheel.advance(t0 + 5ms);
  EXPECT_EQ(seen, (std::vector<int>{1}));
  wheel.advance(t0 + 6ms);
  EXPECT_EQ(seen, (std::vector<int>{1, 2}));
  wheel.advance(t0 + 1005ms);
  EXPECT_EQ(seen, (std::vector<int>{1, 2, 3}));
}

TEST_F(WheelTest, HundredThousandTimersAllFireExactlyOnceInOrder) {
  constexpr int kN = 100'000;
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> ms(1, 120'000);
  std::vector<int> due(kN);
  std::vector<int> firedAt(kN, -1);
  int nowMs = 0;
  for (int i = 0; i < kN; ++i) {
    due[static_cast<std::size_t>(i)] = ms(rng);
    (void)wheel.schedule(t0, std::chrono::milliseconds(due[static_cast<std::size_t>(i)]),
                         [&firedAt, &nowMs, i] { firedAt[static_cast<std::size_t>(i)] = nowMs; });
  }
  // Advance in 7 ms steps, as a loop with a coarse wake-up would.
  for (nowMs = 0; nowMs <= 121'000; nowMs += 7) wheel.advance(t0 + std::chrono::milliseconds(nowMs));
  for (int i = 0; i < kN; ++i) {
    const auto k = static_cast<std::size_t>(i);
    ASSERT_GE(firedAt[k], due[k]) << "timer " << i;
    ASSERT_LT(firedAt[k], due[k] + 7) << "timer " << i;
  }
  EXPECT_EQ(wheel.size(), 0u);
}

TEST_F(WheelTest, TimersBeyondTheWheelSpanStillFireOnTime) {
  // 64^6 ticks at 1 us is about 19 hours; schedule past that.
  TimerWheel fine(t0, 1us);
  bool fired = false;
  const auto delay = std::chrono::hours(30);
  (void)fine.schedule(t0, delay, [&] { fired = true; });
  fine.advance(t0 + delay - 1ms);
  EXPECT_FALSE(fired);
  fine.advance(t0 + delay);
  EXPECT_TRUE(fired);
}

TEST_F(WheelTest, TimeUntilNextNeverOvershootsTheNextDeadline) {
  EXPECT_FALSE(wheel.timeUntilNext(t0).has_value());
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> ms(1, 500'000);
  std::vector<TimerId> ids;
  TimePoint now = t0;
  TimePoint earliest = TimePoint::max();
  for (int i = 0; i < 50; ++i) {
    const auto d = std::chrono::milliseconds(ms(rng));
    earliest = std::min(earliest, now + d);
    ids.push_back(wheel.schedule(now, d, [] {}));
  }
  // Follow the wheel's own hint the way the event loop does; each wake-up must
  // land at or before the earliest deadline, and the timer must then fire.
  std::size_t fired = 0;
  int wakeups = 0;
  while (fired == 0) {
    auto wait = wheel.timeUntilNext(now);
    ASSERT_TRUE(wait.has_value());
    ASSERT_LE(now + *wait, earliest + 1ms);
    now += std::max<Duration>(*wait, 1ms);
    fired = wheel.advance(now);
    ASSERT_LT(++wakeups, 1000);
  }
  EXPECT_GE(now, earliest);
}

TEST_F(WheelTest, SteadyStateScheduleDoesNotGrowTheSlab) {
  wheel.reserve(16);
  for (int round = 0; round < 1000; ++round) {
    TimerId id = wheel.schedule(t0, 5ms, [] {});
    EXPECT_LT(id.index, static_cast<std::uint32_t>(TimerWheel::kLevels * TimerWheel::kSlots + 2 + 16));
    EXPECT_TRUE(wheel.cancel(id));
  }
}

}  // namespace
}  // namespace keel
