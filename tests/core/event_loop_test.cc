// EventLoop on real epoll: cross-thread tasks in order, quit from another
// thread, timers through the loop, watchers on a real pipe, signals.
#include "keel/core/EventLoop.h"

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "keel/core/Fd.h"
#include "keel/core/LoopThread.h"
#include "keel/core/LoopThreadPool.h"
#include "keel/core/SignalWatcher.h"
#include "keel/core/Watcher.h"
#include "support/ManualLoop.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

TEST(EventLoop, TasksFromOtherThreadsRunInOrderPerProducer) {
  EventLoop loop;
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 5000;
  std::vector<std::vector<int>> seen(kProducers);
  std::atomic<int> done{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        loop.queueInLoop([&, p, i] {
          EXPECT_TRUE(loop.isInLoopThread());
          seen[static_cast<std::size_t>(p)].push_back(i);
        });
      }
      loop.queueInLoop([&] {
        if (++done == kProducers) loop.quit();
      });
    });
  }
  loop.loop();
  for (auto& t : producers) t.join();
  for (const auto& v : seen) {
    ASSERT_EQ(v.size(), static_cast<std::size_t>(kPerProducer));
    for (int i = 0; i < kPerProducer; ++i) ASSERT_EQ(v[static_cast<std::size_t>(i)], i);
  }
}

TEST(EventLoop, RunInLoopOnTheLoopThreadRunsImmediately) {
  EventLoop loop;
  bool ran = false;
  loop.runInLoop([&] { ran = true; });
  EXPECT_TRUE(ran);
}

// True while thread `tid` of this process is blocked in the wait of the
// loop's backend: the kernel names the system call it sleeps in
// (/proc/.../syscall).
bool blockedInLoopWait(pid_t tid, LoopBackend backend) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/syscall");
  long nr = -1;
  if (!(in >> nr)) return false;  // "running": not in a system call
  if (backend == LoopBackend::IoUring) return nr == SYS_io_uring_enter;
#ifdef SYS_epoll_wait
  if (nr == SYS_epoll_wait) return true;
#endif
  return nr == SYS_epoll_pwait
#ifdef SYS_epoll_pwait2
         || nr == SYS_epoll_pwait2
#endif
      ;
}

TEST(EventLoop, QuitFromAnotherThreadWakesABlockedLoop) {
  EventLoop loop;
  const pid_t loopTid = ::gettid();
  std::atomic<bool> sawBlocked{false};
  std::thread killer([&] {
    // The quit must arrive while the loop really sleeps, or it would test
    // nothing: wait until the kernel shows it blocked in its wait.
    sawBlocked = test::eventually([&] { return blockedInLoopWait(loopTid, loop.backend()); }, 5000ms);
    loop.quit();
  });
  const auto start = Clock::now();
  loop.loop();  // no timers, no fds: only the wake-up can end this
  killer.join();
  EXPECT_TRUE(sawBlocked.load()) << "the loop never blocked in its wait (" << toString(loop.backend()) << ")";
  EXPECT_LT(Clock::now() - start, 5s);
}

TEST(EventLoop, TimerFiresNotBeforeItsDelayOnTheLoopClock) {
  EventLoop loop;
  const TimePoint scheduled = loop.now();
  TimePoint firedAt{};
  TimePoint realFiredAt{};
  (void)loop.runAfter(20ms, [&] {
    firedAt = loop.now();
    realFiredAt = Clock::now();
    loop.quit();
  });
  loop.loop();
  EXPECT_GE(firedAt - scheduled, 20ms);
  EXPECT_GE(realFiredAt - scheduled, 20ms);
}

TEST(EventLoop, TimerFiresAtItsDelayOnAManualClockAndNotATickBefore) {
  test::ManualLoop m;
  const TimePoint scheduled = m.now();
  std::optional<TimePoint> firedAt;
  (void)m.loop.runAfter(20ms, [&] { firedAt = m.loop.now(); });
  m.advance(19ms);
  EXPECT_FALSE(firedAt.has_value());
  m.advance(2ms);  // at most one tick late
  ASSERT_TRUE(firedAt.has_value());
  EXPECT_GE(*firedAt - scheduled, 20ms);
  EXPECT_LE(*firedAt - scheduled, 21ms);
}

TEST(EventLoop, RunEveryRepeatsUntilCancelled) {
  test::ManualLoop m;
  const TimePoint start = m.now();
  std::vector<Duration> at;
  TimerId id;
  id = m.loop.runEvery(2ms, [&] {
    at.push_back(m.loop.now() - start);
    if (at.size() == 5) m.loop.cancel(id);
  });
  m.advance(9ms);
  EXPECT_EQ(at.size(), 4u) << "every 2 ms: at 2, 4, 6 and 8";
  m.advance(100ms);
  ASSERT_EQ(at.size(), 5u) << "cancelled from its own callback";
  for (std::size_t i = 0; i < at.size(); ++i) {
    EXPECT_GE(at[i], 2ms * static_cast<int>(i + 1));
    EXPECT_LE(at[i], 2ms * static_cast<int>(i + 1) + 1ms) << "keeps its cadence";
  }
}

TEST(EventLoop, WatcherSeesReadabilityAndNoEpollCtlWhenInterestUnchanged) {
  EventLoop loop;
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
  Fd rd(fds[0]), wr(fds[1]);
  std::string got;
  Watcher w(loop, rd.get(), [&](std::uint32_t ev) {
    ASSERT_TRUE(ev & EPOLLIN);
    char buf[64];
    const ssize_t n = ::read(rd.get(), buf, sizeof buf);
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<std::size_t>(n));
    if (got == "hello") loop.quit();
  });
  ASSERT_FALSE(w.enable(Watcher::kRead));
  ASSERT_FALSE(w.enable(Watcher::kRead));  // unchanged: must be a no-op
  EXPECT_EQ(w.interest(), Watcher::kRead);
  ASSERT_EQ(::write(wr.get(), "hello", 5), 5);
  loop.loop();
  EXPECT_EQ(got, "hello");
}

TEST(EventLoop, WatcherDestroyedByAnEarlierCallbackInTheSameBatchIsNotDispatched) {
  EventLoop loop;
  int a[2], b[2];
  ASSERT_EQ(::pipe2(a, O_NONBLOCK | O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(b, O_NONBLOCK | O_CLOEXEC), 0);
  Fd ar(a[0]), aw(a[1]), br(b[0]), bw(b[1]);
  std::unique_ptr<Watcher> wa, wb;
  int calls = 0;
  // Whichever is dispatched first destroys the other; the second must never run.
  wa = std::make_unique<Watcher>(loop, ar.get(), [&](std::uint32_t) {
    ++calls;
    wb.reset();
  });
  wb = std::make_unique<Watcher>(loop, br.get(), [&](std::uint32_t) {
    ++calls;
    wa.reset();
  });
  ASSERT_FALSE(wa->enable(Watcher::kRead));
  ASSERT_FALSE(wb->enable(Watcher::kRead));
  ASSERT_EQ(::write(aw.get(), "x", 1), 1);
  ASSERT_EQ(::write(bw.get(), "y", 1), 1);
  loop.runOnce(100ms);
  EXPECT_EQ(calls, 1);
}

TEST(EventLoop, EndOfIterationHooksRunAfterDispatch) {
  EventLoop loop;
  std::vector<int> order;
  loop.queueInLoop([&] {
    order.push_back(1);
    loop.runAtEndOfIteration([&] { order.push_back(3); });
    order.push_back(2);
  });
  loop.runOnce(10ms);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(LoopThread, StartsRunsAndStops) {
  LoopThread t("keel-test");
  EventLoop& loop = t.start();
  EXPECT_FALSE(loop.isInLoopThread());
  std::atomic<bool> ran{false};
  std::atomic<bool> onLoopThread{false};
  loop.runInLoop([&] {
    onLoopThread = loop.isInLoopThread();
    ran = true;
  });
  EXPECT_TRUE(test::eventually([&] { return ran.load(); }));
  EXPECT_TRUE(onLoopThread);
  t.stop();
  EXPECT_EQ(t.loop(), nullptr);
}

TEST(LoopThreadPool, RoundRobinAndHashAffinity) {
  EventLoop base;
  LoopThreadPool pool(base, 3, "keel-pool");
  std::atomic<int> inits{0};
  pool.start([&](EventLoop&) { ++inits; });
  EXPECT_EQ(inits.load(), 3);
  EXPECT_EQ(pool.size(), 3u);
  EventLoop* a = &pool.next();
  EventLoop* b = &pool.next();
  EventLoop* c = &pool.next();
  EXPECT_NE(a, b);
  EXPECT_NE(b, c);
  EXPECT_EQ(&pool.next(), a);
  EXPECT_EQ(&pool.forHash(12345), &pool.forHash(12345));
  pool.stop();
}

TEST(LoopThreadPool, ZeroThreadsUsesTheBaseLoop) {
  EventLoop base;
  LoopThreadPool pool(base, 0);
  pool.start();
  EXPECT_EQ(&pool.next(), &base);
  EXPECT_EQ(&pool.forHash(9), &base);
}

TEST(SignalWatcher, SigtermBecomesALoopEventAndQuits) {
  EventLoop loop;
  int got = 0;
  auto sw = SignalWatcher::quitOnTerminate(loop, [&](int s) { got = s; });
  loop.queueInLoop([] { ::kill(::getpid(), SIGTERM); });
  loop.loop();
  EXPECT_EQ(got, SIGTERM);
}

TEST(EventLoop, SigpipeDoesNotKillTheProcess) {
  EventLoop loop;  // constructing any loop ignores SIGPIPE
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  Fd rd(fds[0]), wr(fds[1]);
  rd.reset();
  errno = 0;
  EXPECT_EQ(::write(wr.get(), "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
}

}  // namespace
}  // namespace keel
