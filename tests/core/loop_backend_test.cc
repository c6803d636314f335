// The loop's two backends. The whole suite runs once per backend (ctest's
// "uring." entries set KEEL_LOOP_BACKEND=io_uring); these tests pin what is
// particular to the choice and to the io_uring form, on real descriptors.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keel/core/EventLoop.h"
#include "keel/core/Fd.h"
#include "keel/core/Watcher.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

// An io_uring loop, or a skip naming why this machine cannot make one.
std::unique_ptr<EventLoop> makeUringLoop(std::string& why) {
  try {
    return std::make_unique<EventLoop>(LoopOptions{.backend = LoopBackend::IoUring});
  } catch (const std::system_error& e) {
    why = e.what();
    return nullptr;
  }
}

#define URING_LOOP_OR_SKIP(name)         \
  std::string why_##name;                \
  auto name = makeUringLoop(why_##name); \
  if (!name) GTEST_SKIP() << "io_uring unavailable: " << why_##name

struct Pair {
  Fd a, b;
  Pair() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
      throw std::runtime_error("socketpair");
    a.reset(sv[0]);
    b.reset(sv[1]);
  }
};

TEST(LoopBackend, NamesParseBothWays) {
  for (auto b : {LoopBackend::Auto, LoopBackend::Epoll, LoopBackend::IoUring}) {
    EXPECT_EQ(parseLoopBackend(toString(b)), b);
  }
  EXPECT_EQ(parseLoopBackend("uring"), LoopBackend::IoUring);
  EXPECT_FALSE(parseLoopBackend("kqueue").has_value());
}

TEST(LoopBackend, ExplicitEpollIgnoresTheEnvironment) {
  EventLoop loop(LoopOptions{.backend = LoopBackend::Epoll});
  EXPECT_EQ(loop.backend(), LoopBackend::Epoll);
}

TEST(LoopBackend, AutoFollowsTheEnvironment) {
  // This process's environment is the ctest entry's: the epoll pass has no
  // KEEL_LOOP_BACKEND, the uring. pass sets it.
  const char* env = std::getenv("KEEL_LOOP_BACKEND");
  EventLoop loop;
  if (env != nullptr && std::string(env) == "io_uring") {
    std::string why;
    if (!makeUringLoop(why)) GTEST_SKIP() << "io_uring unavailable, Auto fell back: " << why;
    EXPECT_EQ(loop.backend(), LoopBackend::IoUring);
  } else {
    EXPECT_EQ(loop.backend(), LoopBackend::Epoll);
  }
}

TEST(UringLoop, UnreadDataIsReportedAgainLevelTriggered) {
  URING_LOOP_OR_SKIP(loop);
  Pair p;
  ASSERT_EQ(::write(p.b.get(), "xy", 2), 2);
  int calls = 0;
  Watcher w(*loop, p.a.get(), [&](std::uint32_t ev) {
    EXPECT_TRUE(ev & EPOLLIN);
    ++calls;
    if (calls == 2) {  // read one byte per report: the second is still there
      char c;
      ASSERT_EQ(::read(p.a.get(), &c, 1), 1);
    }
    if (calls == 3) {
      char c[2];
      ASSERT_EQ(::read(p.a.get(), c, 2), 1);
    }
  });
  ASSERT_FALSE(w.setInterest(Watcher::kRead));
  for (int i = 0; i < 10 && calls < 3; ++i) loop->runOnce(1s);
  EXPECT_EQ(calls, 3);
  loop->runOnce(10ms);  // drained: no fourth report
  EXPECT_EQ(calls, 3);
}

TEST(UringLoop, InterestChangedInsideItsOwnCallbackTakesEffect) {
  URING_LOOP_OR_SKIP(loop);
  Pair p;
  ASSERT_EQ(::write(p.b.get(), "x", 1), 1);
  int reads = 0, writes = 0;
  Watcher* self = nullptr;
  Watcher w(*loop, p.a.get(), [&](std::uint32_t ev) {
    if (ev & EPOLLIN) {
      ++reads;
      char c;
      (void)::read(p.a.get(), &c, 1);
      EXPECT_FALSE(self->setInterest(Watcher::kWrite));
    } else if (ev & EPOLLOUT) {
      ++writes;
      EXPECT_FALSE(self->setInterest(0));
    }
  });
  self = &w;
  ASSERT_FALSE(w.setInterest(Watcher::kRead));
  for (int i = 0; i < 10 && writes == 0; ++i) loop->runOnce(1s);
  EXPECT_EQ(reads, 1);
  EXPECT_EQ(writes, 1);
  ASSERT_EQ(::write(p.b.get(), "y", 1), 1);
  loop->runOnce(10ms);  // interest 0: nothing reported
  EXPECT_EQ(reads, 1);
}

TEST(UringLoop, WatcherDestroyedByAnEarlierCallbackInTheBatchIsNotCalled) {
  URING_LOOP_OR_SKIP(loop);
  Pair p1, p2;
  ASSERT_EQ(::write(p1.b.get(), "x", 1), 1);
  ASSERT_EQ(::write(p2.b.get(), "x", 1), 1);
  std::optional<Watcher> w1, w2;
  int called = 0;
  // Whichever runs first destroys the other: both are ready in one batch.
  char c;
  w1.emplace(*loop, p1.a.get(), [&](std::uint32_t) {
    ++called;
    (void)::read(p1.a.get(), &c, 1);
    w2.reset();
  });
  w2.emplace(*loop, p2.a.get(), [&](std::uint32_t) {
    ++called;
    (void)::read(p2.a.get(), &c, 1);
    w1.reset();
  });
  ASSERT_FALSE(w1->setInterest(Watcher::kRead));
  ASSERT_FALSE(w2->setInterest(Watcher::kRead));
  loop->runOnce(1s);
  EXPECT_EQ(called, 1);
  loop->runOnce(10ms);
  EXPECT_EQ(called, 1);
  if (w1) (void)w1->setInterest(0);
  if (w2) (void)w2->setInterest(0);
}

TEST(UringLoop, ClosingOutsideAnIterationReleasesTheSocketAtOnce) {
  // A poll in flight holds the descriptor's file: an owner's close() would
  // not reach the peer until the ring hears of the removal. Outside an
  // iteration the loop submits the removal at once, so the peer sees EOF
  // without the loop running again.
  URING_LOOP_OR_SKIP(loop);
  Pair p;
  {
    Watcher w(*loop, p.a.get(), [](std::uint32_t) {});
    ASSERT_FALSE(w.setInterest(Watcher::kRead));
    loop->runOnce(0ms);  // the poll is now in the kernel
  }
  p.a.reset();
  pollfd pfd{p.b.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 2000), 1);
  char c;
  EXPECT_EQ(::read(p.b.get(), &c, 1), 0);
}

TEST(UringLoop, TimersAndCrossThreadTasksWakeTheWait) {
  URING_LOOP_OR_SKIP(loop);
  std::atomic<int> ran{0};
  bool timer = false;
  loop->runAfterDetached(5ms, [&] { timer = true; });
  std::thread t([&] { loop->queueInLoop([&] { ++ran; }); });
  for (int i = 0; i < 100 && (!timer || ran.load() == 0); ++i) loop->runOnce(1s);
  t.join();
  EXPECT_TRUE(timer);
  EXPECT_EQ(ran.load(), 1);
}

TEST(UringLoop, RunsOnAThreadOtherThanTheOneThatBuiltIt) {
  // The ring is single-issuer: the first submit binds it, and that is the
  // thread that runs the loop, not the one that constructed it.
  URING_LOOP_OR_SKIP(loop);
  Pair p;
  ASSERT_EQ(::write(p.b.get(), "x", 1), 1);
  std::atomic<bool> seen{false};
  std::thread t([&] {
    loop->bindToCurrentThread();
    Watcher w(*loop, p.a.get(), [&](std::uint32_t) {
      seen = true;
      loop->quit();
    });
    ASSERT_FALSE(w.setInterest(Watcher::kRead));
    loop->loop();
  });
  t.join();
  EXPECT_TRUE(seen.load());
}

}  // namespace
}  // namespace keel
