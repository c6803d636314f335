// SignalWatcher with loops on other threads: a signal sent to the process
// reaches the watcher whichever thread the kernel hands it to, several
// watchers of one signal all fire, and the previous disposition comes back
// with the last watcher. Signals are real (kill), and where a wrong answer
// would kill the process the watcher lives in a forked child.
#include "keel/core/SignalWatcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <memory>
#include <string>

#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include "keel/core/EventLoop.h"
#include "keel/core/LoopThread.h"
#include "keel/core/ThreadSignals.h"
#include "support/Forked.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

// Builds a watcher on `loop`'s thread and returns once it watches; the
// watcher must be destroyed there too (destroyOn).
std::unique_ptr<SignalWatcher> watchOn(EventLoop& loop, int signo, SignalWatcher::Callback cb) {
  std::promise<std::unique_ptr<SignalWatcher>> made;
  loop.runInLoop([&] {
    made.set_value(std::make_unique<SignalWatcher>(loop, std::initializer_list<int>{signo}, std::move(cb)));
  });
  return made.get_future().get();
}

void destroyOn(EventLoop& loop, std::unique_ptr<SignalWatcher>& w) {
  std::promise<void> gone;
  loop.runInLoop([&] {
    w.reset();
    gone.set_value();
  });
  gone.get_future().wait();
}

bool blockedHere(int signo) {
  sigset_t mask;
  ::pthread_sigmask(SIG_BLOCK, nullptr, &mask);
  return sigismember(&mask, signo) == 1;
}

TEST(SignalWatcher, SigtermReachesAWatcherOnALoopThreadWhileMainDoesSomethingElse) {
  test::Forked child([](test::Forked::Report& report) -> int {
    int work[2];
    if (::pipe2(work, O_CLOEXEC) != 0) return 2;
    LoopThread thread("signals");
    EventLoop& loop = thread.start();
    auto watcher = watchOn(loop, SIGTERM, [&](int signo) {
      const auto b = static_cast<unsigned char>(signo);
      [[maybe_unused]] const ssize_t w = ::write(work[1], &b, 1);
    });
    report.line("ready");
    // The main thread's own work: a blocking wait. It is the one thread
    // that does not block SIGTERM, so the kernel runs the handler here, in
    // the middle of this poll. (A poll rather than a read: under
    // ThreadSanitizer, which defers signals to its own safe points, a
    // handler due during a blocked read waited for ever; during a poll it
    // runs. Without the sanitizer either works.)
    pollfd p{work[0], POLLIN, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    unsigned char got = 0;
    const ssize_t n = ::read(work[0], &got, 1);
    destroyOn(loop, watcher);
    thread.stop();
    report.line("signal " + std::to_string(got));
    return n == 1 && got == SIGTERM ? 0 : 3;
  });
  ASSERT_GT(child.pid(), 0);
  ASSERT_EQ(child.readLine(), "ready");
  ASSERT_EQ(::kill(child.pid(), SIGTERM), 0);
  EXPECT_EQ(child.readLine(), "signal " + std::to_string(SIGTERM));
  EXPECT_EQ(child.wait(), 0) << "143 is the child killed by the SIGTERM its watcher should have taken";
}

TEST(SignalWatcher, TwoWatchersOfOneSignalOnTwoLoopsBothFire) {
  LoopThread a("sig-a"), b("sig-b");
  EventLoop& la = a.start();
  EventLoop& lb = b.start();
  std::promise<int> gotA, gotB;
  auto wa = watchOn(la, SIGUSR1, [&](int s) { gotA.set_value(s); });
  auto wb = watchOn(lb, SIGUSR1, [&](int s) { gotB.set_value(s); });
  ASSERT_EQ(::kill(::getpid(), SIGUSR1), 0);  // the default action would end this test process
  auto fa = gotA.get_future();
  auto fb = gotB.get_future();
  ASSERT_EQ(fa.wait_for(10s), std::future_status::ready);
  ASSERT_EQ(fb.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(fa.get(), SIGUSR1);
  EXPECT_EQ(fb.get(), SIGUSR1);
  destroyOn(la, wa);
  destroyOn(lb, wb);
}

std::atomic<int> gApplicationHandlerRuns{0};
extern "C" void applicationHandler(int) { gApplicationHandlerRuns.fetch_add(1); }

TEST(SignalWatcher, TheLastWatcherGoneRestoresTheApplicationsOwnHandler) {
  struct sigaction mine {
  }, old{};
  mine.sa_handler = applicationHandler;
  sigemptyset(&mine.sa_mask);
  ASSERT_EQ(::sigaction(SIGUSR2, &mine, &old), 0);
  EventLoop loop;
  int first = 0, second = 0;
  auto w1 = std::make_unique<SignalWatcher>(loop, std::initializer_list<int>{SIGUSR2}, [&](int) { ++first; });
  {
    SignalWatcher w2(loop, {SIGUSR2}, [&](int) { ++second; });
    // Sent to itself with the signal unblocked, a single-threaded process
    // has it delivered before kill() returns; the loop then reads the pipes.
    ASSERT_EQ(::kill(::getpid(), SIGUSR2), 0);
    for (int i = 0; i < 100 && (first == 0 || second == 0); ++i) loop.runOnce(100ms);
    EXPECT_EQ(first, 1);
    EXPECT_EQ(second, 1);
  }
  ASSERT_EQ(::kill(::getpid(), SIGUSR2), 0);  // one watcher left: still keel's
  for (int i = 0; i < 100 && first < 2; ++i) loop.runOnce(100ms);
  EXPECT_EQ(first, 2);
  EXPECT_EQ(second, 1);
  EXPECT_EQ(gApplicationHandlerRuns.load(), 0);
  w1.reset();
  ASSERT_EQ(::kill(::getpid(), SIGUSR2), 0);
  EXPECT_EQ(gApplicationHandlerRuns.load(), 1);
  loop.runOnce(0ms);
  EXPECT_EQ(first, 2);
  ::sigaction(SIGUSR2, &old, nullptr);
}

TEST(SignalWatcher, ASignalThatCannotBeCaughtFailsAndUndoesTheOthers) {
  EventLoop loop;
  std::error_code ec;
  SignalWatcher w(
      loop, {SIGUSR1, SIGKILL}, [](int) {}, ec);
  EXPECT_EQ(ec, std::errc::invalid_argument);
  struct sigaction now {};
  ASSERT_EQ(::sigaction(SIGUSR1, nullptr, &now), 0);
  EXPECT_EQ(now.sa_handler, SIG_DFL) << "SIGUSR1 was registered before SIGKILL failed, and must be undone";
  EXPECT_THROW(SignalWatcher(loop, {SIGSTOP}, [](int) {}), std::system_error);
}

TEST(SignalWatcher, LoopThreadsBlockTheAsynchronousSignalsOnly) {
  LoopThread thread("mask");
  EventLoop& loop = thread.start();
  std::promise<std::pair<bool, bool>> mask;
  loop.runInLoop([&] { mask.set_value({blockedHere(SIGTERM), blockedHere(SIGSEGV)}); });
  const auto [term, segv] = mask.get_future().get();
  EXPECT_TRUE(term);
  EXPECT_FALSE(segv) << "a synchronous signal must reach the thread that faulted";
  EXPECT_FALSE(blockedHere(SIGTERM)) << "the creating thread's mask must be left as it was";
}

TEST(SignalWatcher, AChildForkedWithoutExecGetsThePreviousDispositionBack) {
  EventLoop loop;
  int got = 0;
  SignalWatcher w(loop, {SIGUSR1}, [&](int) { ++got; });
  test::Forked child([](test::Forked::Report& report) -> int {
    report.line("ready");
    for (;;) ::pause();
  });
  ASSERT_GT(child.pid(), 0);
  ASSERT_EQ(child.readLine(), "ready");
  ASSERT_EQ(::kill(child.pid(), SIGUSR1), 0);
  EXPECT_EQ(child.wait(), 128 + SIGUSR1) << "the default action: the child's watcher is its parent's";
  // Had the child's handler written to the pipe it shares with this process,
  // the byte would be there by now (before the child died).
  loop.runOnce(0ms);
  EXPECT_EQ(got, 0);
}

}  // namespace
}  // namespace keel
