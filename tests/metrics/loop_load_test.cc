// EventLoop::load(): iterations, busy time, queued tasks, pending timers and
// lag, on a manual clock, so that "busy for 5 ms" and "stalled for 300 ms"
// are exact instead of timed.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "keel/core/EventLoop.h"
#include "keel/core/LoopClock.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

TEST(LoopLoad, NothingButIterationsIsMeasuredUntilAskedFor) {
  ManualClock clock;
  EventLoop loop(LoopOptions{.clock = &clock});
  loop.queueInLoop([&] { clock.advance(5ms); });
  loop.runOnce(Duration::zero());
  const EventLoop::Load l = loop.load();
  EXPECT_EQ(l.iterations, 1u);
  EXPECT_EQ(l.busy, Duration::zero());
  EXPECT_EQ(loop.timers().size(), 0u) << "no lag probe armed";
}

TEST(LoopLoad, BusyTimeIsTheTimeBetweenWakingAndWaitingAgain) {
  ManualClock clock;
  EventLoop loop(LoopOptions{.clock = &clock});
  loop.measureLoad(Duration::zero());  // no lag probe: only busy time and timers
  loop.runOnce(Duration::zero());      // runs measureLoad's task
  const Duration before = loop.load().busy;
  loop.queueInLoop([&] { clock.advance(5ms); });  // a task that "works" 5 ms
  loop.runOnce(Duration::zero());
  EXPECT_EQ(loop.load().busy - before, 5ms);
  EXPECT_EQ(loop.load().iterations, 2u);
}

TEST(LoopLoad, QueuedTasksAndPendingTimersAreVisibleFromAnotherThread) {
  ManualClock clock;
  EventLoop loop(LoopOptions{.clock = &clock});
  loop.measureLoad(Duration::zero());
  loop.runOnce(Duration::zero());
  TimerId a = loop.runAfter(1s, [] {});
  TimerId b = loop.runAfter(2s, [] {});
  loop.runOnce(Duration::zero());
  std::size_t queued = 0, timers = 0;
  std::thread other([&] {
    for (int i = 0; i < 3; ++i) loop.queueInLoop([] {});
    queued = loop.load().queuedTasks;
    timers = loop.load().pendingTimers;
  });
  other.join();
  EXPECT_EQ(queued, 3u);
  EXPECT_EQ(timers, 2u);
  loop.runOnce(Duration::zero());
  EXPECT_EQ(loop.load().queuedTasks, 0u);
  loop.cancel(a);
  loop.cancel(b);
}

TEST(LoopLoad, LagIsHowLateTheProbeFiresAfterAStall) {
  ManualClock clock;
  EventLoop loop(LoopOptions{.clock = &clock});
  loop.measureLoad(100ms);
  loop.runOnce(Duration::zero());  // arms the probe, due in 100 ms
  advanceLoop(loop, clock, 100ms);
  const Duration onTime = loop.load().lag;
  EXPECT_LT(onTime, 2ms) << "an idle loop fires within about a tick";
  // A callback that blocks the loop for 300 ms: the probe due 100 ms after
  // the last one fires 200 ms late, on the first iteration after the stall.
  loop.queueInLoop([&] { clock.advance(300ms); });
  loop.runOnce(Duration::zero());
  loop.runOnce(Duration::zero());
  EXPECT_GE(loop.load().lag, 199ms);
  EXPECT_LE(loop.load().lag, 202ms);
}

}  // namespace
}  // namespace keel
