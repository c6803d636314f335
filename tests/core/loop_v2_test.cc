// EventLoop: end-of-iteration work that outlives the round cap (the lost
// wake-up), Deferred's self-cancellation, and the manual clock.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "keel/core/EventLoop.h"
#include "keel/core/LoopClock.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

// Re-schedules itself until it has run `target` times, as a producer that
// refills a coalesced flush from its own end-of-iteration work does.
class Refiller final : public Deferred {
 public:
  Refiller(EventLoop& loop, int target) : loop_(loop), target_(target) {}
  void runDeferred() override {
    if (++runs < target_) loop_.deferToEndOfIteration(*this);
  }
  int runs = 0;

 private:
  EventLoop& loop_;
  int target_;
};

// Calls `onTimeout` from another thread if `done` is not set within `limit`.
class Watchdog {
 public:
  Watchdog(std::chrono::milliseconds limit, std::function<void()> onTimeout)
      : thread_([this, limit, onTimeout = std::move(onTimeout)] {
          std::unique_lock lock(m_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) onTimeout();
        }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(m_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

TEST(EventLoop, EndOfIterationWorkLeftByTheRoundCapDoesNotWaitForAnEvent) {
  EventLoop loop;
  Refiller refill(loop, 20);  // more than the 8 rounds one iteration runs
  loop.deferToEndOfIteration(refill);
  std::atomic<bool> rescued{false};
  {
    // With the old timeout the second runOnce blocked in epoll_wait(-1):
    // nothing else would ever wake it. The watchdog wakes it and says so.
    Watchdog dog(10s, [&] {
      rescued = true;
      loop.queueInLoop([] {});
    });
    while (refill.runs < 20) loop.runOnce(Duration::max());
  }
  EXPECT_FALSE(rescued.load()) << "the loop slept with end-of-iteration work pending";
  EXPECT_EQ(refill.runs, 20);
}

class Counted final : public Deferred {
 public:
  explicit Counted(int* runs) : runs_(runs) {}
  void runDeferred() override { ++*runs_; }

 private:
  int* runs_;
};

TEST(EventLoop, ADeferredDestroyedWhileScheduledCancelsItself) {
  EventLoop loop;
  int runs = 0;
  auto gone = std::make_unique<Counted>(&runs);
  Counted kept(&runs);
  loop.deferToEndOfIteration(*gone);
  loop.deferToEndOfIteration(kept);
  EXPECT_TRUE(gone->scheduled());
  gone.reset();  // the loop must not call into it
  loop.runOnce(Duration::zero());
  EXPECT_EQ(runs, 1);
  EXPECT_FALSE(kept.scheduled());
  loop.deferToEndOfIteration(kept);
  loop.deferToEndOfIteration(kept);  // once per iteration, however often asked
  loop.runOnce(Duration::zero());
  EXPECT_EQ(runs, 2);
}

TEST(ManualClock, TimersFireWhenTheTestAdvancesTimeAndNotBefore) {
  ManualClock clock;
  EventLoop loop(LoopOptions{.clock = &clock});
  std::vector<Duration> firedAt;
  const TimePoint start = loop.now();
  // A repeating chain: each callback schedules the next from its own time.
  std::function<void()> step = [&] {
    firedAt.push_back(loop.now() - start);
    if (firedAt.size() < 3) (void)loop.runAfter(30s, step);
  };
  (void)loop.runAfter(30s, step);
  loop.runOnce(Duration::zero());
  EXPECT_TRUE(firedAt.empty());
  const auto wallStart = std::chrono::steady_clock::now();
  advanceLoop(loop, clock, 29999ms);
  EXPECT_TRUE(firedAt.empty()) << "never early";
  advanceLoop(loop, clock, 61s);
  ASSERT_EQ(firedAt.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_GE(firedAt[i], 30s * static_cast<int>(i + 1));
    EXPECT_LE(firedAt[i], 30s * static_cast<int>(i + 1) + 2ms) << "each at its own time, not all at the end";
  }
  // Ninety simulated seconds are not waited for; the bound is generous for
  // a sanitizer build on a loaded machine, and far below 90 s.
  EXPECT_LT(std::chrono::steady_clock::now() - wallStart, 10s);
}

TEST(ManualClock, ALoopWithAManualClockDoesNotSleepForATimer) {
  ManualClock clock;
  EventLoop loop(LoopOptions{.clock = &clock});
  bool fired = false;
  (void)loop.runAfter(1h, [&] { fired = true; });
  std::atomic<bool> rescued{false};
  {
    // An hour-long timer would make a real-clock loop sleep; a manual one
    // only waits for I/O up to the cap.
    Watchdog dog(10s, [&] {
      rescued = true;
      loop.queueInLoop([] {});
    });
    loop.runOnce(50ms);
  }
  EXPECT_FALSE(rescued.load());
  EXPECT_FALSE(fired);
  clock.advance(1h);
  loop.runOnce(Duration::zero());
  EXPECT_TRUE(fired);
}

}  // namespace
}  // namespace keel
