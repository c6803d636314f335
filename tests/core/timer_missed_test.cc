// Repeating timers after a stall (Missed::Skip and Missed::CatchUp) and the
// fire-and-forget runAfterDetached, on a manual clock: a stall is the clock
// jumping while the loop does not run, so every firing instant is exact.
#include <gtest/gtest.h>

#include <vector>

#include "keel/core/EventLoop.h"
#include "keel/core/TimerWheel.h"
#include "support/ManualLoop.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using Missed = TimerWheel::Missed;

struct StallTest : ::testing::Test {
  test::ManualLoop m;
  TimePoint start = m.now();
  std::vector<long> firedAt;  // ms since start, one entry per firing

  void record() { firedAt.push_back((m.now() - start) / 1ms); }
  // The loop blocked (a long callback, a swapped-out process) for `d`:
  // time passes without an iteration, then one iteration runs.
  void stall(Duration d) {
    m.clock.advance(d);
    m.loop.runOnce(Duration::zero());
  }
};

TEST_F(StallTest, SkipFiresOnceAfterAStallOfTwelveIntervalsThenResumesOnItsGrid) {
  const TimerId id = m.loop.runEvery(50ms, [this] { record(); });
  m.advance(50ms);
  ASSERT_EQ(firedAt, (std::vector<long>{50}));
  stall(600ms);  // the points 100..650 are all due now
  EXPECT_EQ(firedAt, (std::vector<long>{50, 650}));
  m.advance(49ms);
  EXPECT_EQ(firedAt.size(), 2u) << "the next point on the grid is 700, not 650 + 50 ms from a late re-arm";
  m.advance(1ms);
  m.advance(100ms);
  EXPECT_EQ(firedAt, (std::vector<long>{50, 650, 700, 750, 800}));
  EXPECT_TRUE(m.loop.timers().pending(id));
  EXPECT_TRUE(m.loop.cancel(id));
}

TEST_F(StallTest, SkipKeepsThePhaseWhenTheStallIsNotAWholeNumberOfIntervals) {
  (void)m.loop.runEvery(100ms, [this] { record(); });
  stall(1234ms);
  m.advance(200ms);
  EXPECT_EQ(firedAt, (std::vector<long>{1234, 1300, 1400}));
}

TEST_F(StallTest, CatchUpFiresEveryMissedTickThenResumesOnItsGrid) {
  (void)m.loop.runEvery(
      50ms, [this] { record(); }, Missed::CatchUp);
  m.advance(50ms);
  stall(600ms);
  std::vector<long> want{50};
  want.insert(want.end(), 12, 650);  // 100, 150, ..., 650, all in the one late iteration
  EXPECT_EQ(firedAt, want);
  m.advance(50ms);
  want.push_back(700);
  EXPECT_EQ(firedAt, want);
}

TEST_F(StallTest, CancelFromItsOwnCallbackDuringACatchUpBurstStopsIt) {
  TimerId self;
  self = m.loop.runEvery(
      50ms,
      [&] {
        record();
        if (firedAt.size() == 3) {
          EXPECT_TRUE(m.loop.cancel(self));
        }
      },
      Missed::CatchUp);
  stall(600ms);
  EXPECT_EQ(firedAt, (std::vector<long>{600, 600, 600}));
  EXPECT_FALSE(m.loop.timers().pending(self));
  m.advance(500ms);
  EXPECT_EQ(firedAt.size(), 3u);
  EXPECT_EQ(m.loop.timers().size(), 0u);
}

TEST_F(StallTest, CancelFromItsOwnCallbackAfterAStallWithSkip) {
  TimerId self;
  self = m.loop.runEvery(50ms, [&] {
    record();
    if (firedAt.size() == 2) {
      EXPECT_TRUE(m.loop.cancel(self));
    }
  });
  m.advance(50ms);
  stall(600ms);
  EXPECT_EQ(firedAt, (std::vector<long>{50, 650}));
  EXPECT_FALSE(m.loop.timers().pending(self));
  m.advance(500ms);
  EXPECT_EQ(firedAt.size(), 2u);
  EXPECT_EQ(m.loop.timers().size(), 0u);
}

TEST_F(StallTest, RunAfterDetachedFiresOnceAndLeavesNothingPending) {
  m.loop.runAfterDetached(30ms, [this] { record(); });
  m.advance(29ms);
  EXPECT_TRUE(firedAt.empty()) << "fired early";
  m.advance(1ms);
  EXPECT_EQ(firedAt, (std::vector<long>{30}));
  m.advance(1s);
  EXPECT_EQ(firedAt.size(), 1u);
  EXPECT_EQ(m.loop.timers().size(), 0u);
}

// The same policy on a bare wheel, where the caller's advance() times are
// the only clock: a late advance re-files past that advance's time.
TEST(TimerWheelMissed, SkipRefilesAfterTheLateAdvanceAndCatchUpDoesNot) {
  const TimePoint t0 = Clock::now();
  TimerWheel wheel(t0, 1ms);
  int skip = 0, catchUp = 0;
  (void)wheel.schedule(
      t0, 10ms, [&] { ++skip; }, 10ms, Missed::Skip);
  (void)wheel.schedule(
      t0, 10ms, [&] { ++catchUp; }, 10ms, Missed::CatchUp);
  wheel.advance(t0 + 105ms);  // points 10..100 are due: ten of them
  EXPECT_EQ(skip, 1);
  EXPECT_EQ(catchUp, 10);
  wheel.advance(t0 + 109ms);
  EXPECT_EQ(skip, 1);
  wheel.advance(t0 + 110ms);
  EXPECT_EQ(skip, 2);
  EXPECT_EQ(catchUp, 11);
}

}  // namespace
}  // namespace keel
