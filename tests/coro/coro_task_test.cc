// Task, spawn, sleep and withTimeout on a real loop driven by the test
// thread: results and exceptions through chains of tasks, symmetric
// transfer, a timeout racing a completion, and a loop destroyed with
// coroutines suspended.
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <system_error>

#include "coro/CoroTestUtil.h"
#include "keel/coro/Sleep.h"
#include "keel/coro/Spawn.h"
#include "keel/coro/Task.h"
#include "keel/coro/Timeout.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::runUntil;

Task<int> value(int v) { co_return v; }

Task<int> sum(int depth) {
  if (depth == 0) co_return 0;
  const int below = co_await sum(depth - 1);
  co_return below + 1;
}

TEST(CoroTask, ValuesTravelUpAChainOfTasks) {
  EventLoop loop;
  int got = -1;
  spawn(loop, [](int& out) -> Task<> { out = co_await value(41) + 1; }(got));
  EXPECT_EQ(got, 42);  // nothing suspended: it ran inside spawn()
  EXPECT_EQ(spawnedCount(loop), 0u);
}

TEST(CoroTask, LongChainsOfTasksComplete) {
  // 2,000 nested awaits, each completing synchronously back into its parent.
  // Kept modest: GCC turns symmetric transfer into a tail call only when
  // optimising, so a debug build still spends stack per level.
  EventLoop loop;
  int got = -1;
  spawn(loop, [](int& out) -> Task<> { out = co_await sum(2000); }(got));
  EXPECT_EQ(got, 2000);
}

TEST(CoroTask, SleepResumesOnTheLoop) {
  EventLoop loop;
  bool woke = false;
  std::error_code ec = std::make_error_code(std::errc::io_error);
  spawn(loop, [](EventLoop& l, bool& w, std::error_code& e) -> Task<> {
    Result<void> r = co_await sleep(l, 5ms);
    e = r.error();
    w = true;
  }(loop, woke, ec));
  EXPECT_FALSE(woke);
  EXPECT_EQ(spawnedCount(loop), 1u);
  ASSERT_TRUE(runUntil(loop, [&] { return woke; }));
  EXPECT_FALSE(ec);
  EXPECT_EQ(spawnedCount(loop), 0u);
}

TEST(CoroTask, AnExceptionReachesTheSpawnersHandler) {
  EventLoop loop;
  std::string what;
  spawn(
      loop,
      [](EventLoop& l) -> Task<> {
        (void)co_await sleep(l, 1ms);
        const int v = co_await []() -> Task<int> {
          throw std::runtime_error("boom");
          co_return 1;
        }();
        (void)v;
      }(loop),
      [&](std::exception_ptr e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::runtime_error& ex) {
          what = ex.what();
        }
      });
  ASSERT_TRUE(runUntil(loop, [&] { return !what.empty(); }));
  EXPECT_EQ(what, "boom");
  EXPECT_EQ(spawnedCount(loop), 0u);
}

TEST(CoroTask, AnUnhandledExceptionIsLoggedAndTheLoopGoesOn) {
  EventLoop loop;
  bool other = false;
  spawn(loop, []() -> Task<> {
    throw std::logic_error("nobody catches this");
    co_return;
  }());
  spawn(loop, [](EventLoop& l, bool& o) -> Task<> {
    (void)co_await sleep(l, 1ms);
    o = true;
  }(loop, other));
  EXPECT_TRUE(runUntil(loop, [&] { return other; }));
}

struct Witness {
  int* destroyed;
  ~Witness() { ++*destroyed; }
};

Task<> nestedSleeper(EventLoop& loop, int& destroyed, int& resumed) {
  Witness w{&destroyed};
  (void)co_await sleep(loop, 1h);
  ++resumed;
}

TEST(CoroTask, ALoopDestroyedWithSuspendedCoroutinesDestroysTheirFramesUnresumed) {
  int destroyed = 0;
  int resumed = 0;
  {
    auto loop = std::make_unique<EventLoop>();
    for (int i = 0; i < 100; ++i) {
      spawn(*loop, [](EventLoop& l, int& d, int& r) -> Task<> {
        Witness w{&d};
        co_await nestedSleeper(l, d, r);  // suspended two tasks deep
        ++r;
      }(*loop, destroyed, resumed));
    }
    loop->runOnce(1ms);
    EXPECT_EQ(spawnedCount(*loop), 100u);
    EXPECT_EQ(loop->timers().size(), 100u);
  }
  EXPECT_EQ(destroyed, 200);  // both frames of every chain
  EXPECT_EQ(resumed, 0);
}

TEST(CoroTask, ATimeoutBeforeTheCompletionWins) {
  EventLoop loop;
  std::error_code ec;
  bool done = false;
  spawn(loop, [](EventLoop& l, std::error_code& e, bool& d) -> Task<> {
    Result<void> r = co_await withTimeout(2ms, sleep(l, 1h));
    e = r.error();
    d = true;
  }(loop, ec, done));
  ASSERT_TRUE(runUntil(loop, [&] { return done; }));
  EXPECT_EQ(ec, std::errc::timed_out);
  EXPECT_EQ(loop.timers().size(), 0u) << "the abandoned sleep's timer is still pending";
}

TEST(CoroTask, ACompletionBeforeTheTimeoutWins) {
  EventLoop loop;
  std::error_code ec = std::make_error_code(std::errc::io_error);
  bool done = false;
  spawn(loop, [](EventLoop& l, std::error_code& e, bool& d) -> Task<> {
    Result<void> r = co_await withTimeout(1h, sleep(l, 2ms));
    e = r.error();
    d = true;
  }(loop, ec, done));
  ASSERT_TRUE(runUntil(loop, [&] { return done; }));
  EXPECT_FALSE(ec);
  EXPECT_EQ(loop.timers().size(), 0u) << "the timeout's timer outlived the completion";
}

TEST(CoroTask, ATimeoutRacingACompletionInTheSameTickResolvesOnce) {
  // Both timers are due in the same advance of the wheel: whichever fires
  // first resumes, and the other must neither resume again nor stay armed.
  EventLoop loop;
  constexpr int kRounds = 200;
  int resumes = 0;
  int timedOut = 0;
  bool done = false;
  spawn(loop, [](EventLoop& l, int& n, int& t, bool& d) -> Task<> {
    for (int i = 0; i < kRounds; ++i) {
      Result<void> r = co_await withTimeout(1ms, sleep(l, 1ms));
      ++n;
      if (r.error() == std::errc::timed_out) ++t;
    }
    d = true;
  }(loop, resumes, timedOut, done));
  ASSERT_TRUE(runUntil(
      loop, [&] { return done; }, 30s));
  loop.runOnce(5ms);  // a stray second resume would land here
  EXPECT_EQ(resumes, kRounds);
  EXPECT_EQ(loop.timers().size(), 0u);
  std::printf("[ figures  ] %d of %d same-tick races went to the timeout\n", timedOut, kRounds);
}

TEST(CoroTask, FramesAreReusedFromThePool) {
  EventLoop loop;
  int got = 0;
  spawn(loop, [](int& out) -> Task<> { out += co_await value(1); }(got));
  const FramePoolStats before = FramePool::stats();
  for (int i = 0; i < 1000; ++i) spawn(loop, [](int& out) -> Task<> { out += co_await value(1); }(got));
  const FramePoolStats after = FramePool::stats();
  EXPECT_EQ(got, 1001);
  EXPECT_EQ(after.fromSystem, before.fromSystem) << "steady-state coroutines called operator new";
  EXPECT_GE(after.fromPool - before.fromPool, 3000u);  // lambda, root and value() per spawn
}

}  // namespace
}  // namespace keel
