// Connection layer v2: the sealed boundary, the one close path, the
// read-complete event, the FIN policy, handler-owned timers and the
// regression tests for the defects of issue 11. Most run on an
// EmbeddedConnection (in-memory transport) with a manual clock; the ones
// about what only a kernel does (accept's address, epoll) use real sockets.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "keel/core/EventLoop.h"
#include "keel/core/LoopClock.h"
#include "keel/heartbeat/IdleReaper.h"
#include "keel/heartbeat/MessageDeadline.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/EmbeddedConnection.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/HalfClose.h"
#include "keel/net/HandlerTimer.h"
#include "keel/net/Pipeline.h"
#include "keel/net/Slices.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

// ---- the sealed boundary (defect 1) -----------------------------------------------
// What the owner and the pipeline's head use is not reachable from user
// code: these requirements are checked with the access rules of this file.
template <class C>
concept HasPublicClosedHook = requires(C& c) {
  c.setClosedHook(typename C::ClosedHook{});
};
template <class C>
concept HasPublicStart = requires(C& c) {
  c.startInLoop();
};
template <class C>
concept HasPublicRawWrite = requires(C& c, const Slices& s) {
  c.writeRaw(s);
};
template <class C>
concept HasPublicRawClose = requires(C& c) {
  c.closeRaw(CloseReason::LocalClose);
};
template <class C>
concept HasAfterReadHook = requires(C& c) {
  c.setAfterReadHook(nullptr);
};
template <class O>
concept HasCloseOnPeerFin = requires(O& o) {
  o.closeOnPeerFin;
};

TEST(ConnectionBoundary, OwnerAndHeadCallsAreNotPublic) {
  static_assert(!HasPublicClosedHook<Connection>, "a user could replace the owner's closed hook");
  static_assert(!HasPublicStart<Connection>);
  static_assert(!HasPublicRawWrite<Connection>);
  static_assert(!HasPublicRawClose<Connection>);
  static_assert(!HasAfterReadHook<Connection>, "the single-slot hook is the read-complete event now");
  static_assert(!HasCloseOnPeerFin<ConnectionOptions>, "the FIN policy lives in the pipeline");
  SUCCEED();
}

// ---- Slices (defect 2) --------------------------------------------------------------
TEST(Slices, AFifthPartIsRefusedNotDropped) {
  const char bytes[] = "abcde";
  Slices s;
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(s.add(std::span<const char>(bytes + i, 1)));
  EXPECT_FALSE(s.add(std::span<const char>(bytes + 4, 1))) << "the fifth part must be refused loudly";
  EXPECT_EQ(s.count(), 4u);
  EXPECT_EQ(s.totalBytes(), 4u);
  EXPECT_TRUE(s.full());
  EXPECT_TRUE(s.add(std::span<const char>())) << "an empty part needs no room";
  using Part = std::span<const char>;
  static_assert(std::is_constructible_v<Slices, Part, Part, Part, Part>);
  static_assert(!std::is_constructible_v<Slices, Part, Part, Part, Part, Part>, "five parts do not compile");
}

// A handler at the application end that records what outbound calls return.
class Writer final : public Handler {
 public:
  void handlerAdded(HandlerContext& ctx) override { ctx_ = &ctx; }
  HandlerContext& ctx() { return *ctx_; }

 private:
  HandlerContext* ctx_ = nullptr;
};

struct Embedded {
  ManualClock clock;
  EventLoop loop{LoopOptions{.clock = &clock}};
};

// ---- FrameCodec (defect 3) ----------------------------------------------------------
TEST(FrameCodec, AnOversizeFrameIsRefusedToTheCaller) {
  Embedded e;
  EmbeddedConnection ec(e.loop);
  auto& codec = ec.pipeline().emplaceLast<FrameCodec>(16);
  auto& app = ec.pipeline().emplaceLast<Writer>();
  ec.start();
  const std::string big(17, 'x');
  EXPECT_EQ(app.ctx().writeFrame(Slices(big)), std::errc::message_size);
  EXPECT_FALSE(ec.connection().send(big)) << "send() goes through the codec";
  EXPECT_EQ(codec.framesRefused(), 2u);
  EXPECT_EQ(ec.outputSize(), 0u) << "nothing of a refused frame is sent";
  EXPECT_FALSE(ec.connection().closed()) << "the caller decides what a refused frame means";
  // A frame within the limit still goes out, header first.
  EXPECT_FALSE(app.ctx().writeFrame(Slices(std::string_view("hello"))));
  EXPECT_EQ(ec.takeOutput(), std::string("\0\0\0\5hello", 9));
  // Four parts leave no room for the header: refused, not truncated.
  const std::string p = "p";
  EXPECT_EQ(app.ctx().writeFrame(Slices(p, p, p, p)), std::errc::argument_list_too_long);
}

// ---- send() during a pending shutdown (defect 4) ------------------------------------
TEST(Connection, SendIsRefusedOnceAShutdownIsPending) {
  Embedded e;
  EmbeddedConnection ec(e.loop);
  ec.pipeline().emplaceLast<Writer>();
  ec.start();
  ec.setSendCapacity(0);  // a full send buffer: what is written is queued
  EXPECT_TRUE(ec.connection().send(std::string_view("abc")));
  EXPECT_EQ(ec.connection().outputBytes(), 3u);
  ec.connection().shutdown();
  EXPECT_FALSE(ec.connection().canWrite());
  EXPECT_FALSE(ec.connection().send(std::string_view("dropped?")))
      << "send() must not say yes to data it drops";
  EXPECT_FALSE(ec.finSent()) << "the FIN waits for the queue";
  ec.setSendCapacity(1 << 20);
  EXPECT_EQ(ec.takeOutput(), "abc");
  EXPECT_TRUE(ec.finSent());
  EXPECT_EQ(ec.connection().state(), ConnectionState::LocalHalfClosed);
}

// ---- one close path --------------------------------------------------------------
// What a CloseRecorder saw; outside the handler, which closing destroys.
struct Closes {
  std::vector<std::pair<CloseReason, CloseMode>> seen;
  std::vector<CloseReason> shutdowns;
};

// Sits between the head and the application and records every outbound close.
class CloseRecorder final : public Handler {
 public:
  explicit CloseRecorder(Closes* out) : out_(out) {}
  void close(HandlerContext& ctx, CloseReason reason, CloseMode mode) override {
    out_->seen.emplace_back(reason, mode);
    ctx.close(reason, mode);
  }
  void shutdown(HandlerContext& ctx, CloseReason reason) override {
    out_->shutdowns.push_back(reason);
    ctx.shutdown(reason);
  }

 private:
  Closes* out_;
};

TEST(ClosePath, AbortPassesThroughEveryHandler) {
  Embedded e;
  EmbeddedConnection ec(e.loop);
  Closes rec;
  ec.pipeline().emplaceLast<CloseRecorder>(&rec);
  ec.start();
  ec.connection().abort();
  ASSERT_EQ(rec.seen.size(), 1u);
  EXPECT_EQ(rec.seen[0], std::make_pair(CloseReason::Abort, CloseMode::Reset));
  EXPECT_TRUE(ec.wasReset());
  EXPECT_EQ(ec.closedWith(), CloseReason::Abort);
}

TEST(ClosePath, TheCloseTimeoutIsAResetThroughThePipeline) {
  Embedded e;
  ConnectionOptions o;
  o.closeTimeout = 2s;
  EmbeddedConnection ec(e.loop, o);
  Closes rec;
  ec.pipeline().emplaceLast<CloseRecorder>(&rec);
  ec.start();
  ec.setSendCapacity(0);
  ASSERT_TRUE(ec.connection().send(std::string_view("never read")));
  ec.connection().close();
  EXPECT_EQ(ec.connection().state(), ConnectionState::Closing);
  advanceLoop(e.loop, e.clock, 1999ms);
  EXPECT_EQ(ec.connection().state(), ConnectionState::Closing);
  advanceLoop(e.loop, e.clock, 2ms);
  ASSERT_EQ(rec.seen.size(), 2u);
  EXPECT_EQ(rec.seen[0], std::make_pair(CloseReason::LocalClose, CloseMode::Flush));
  EXPECT_EQ(rec.seen[1], std::make_pair(CloseReason::LocalClose, CloseMode::Reset));
  EXPECT_TRUE(ec.wasReset());
}

TEST(ClosePath, TheOutputCapIsAnOverloadedResetThroughThePipeline) {
  Embedded e;
  ConnectionOptions o;
  o.maxOutputBytes = 1000;
  o.highWatermark = 10'000;  // the cap, not backpressure, is what is tested
  EmbeddedConnection ec(e.loop, o);
  Closes rec;
  ec.pipeline().emplaceLast<CloseRecorder>(&rec);
  auto& app = ec.pipeline().emplaceLast<Writer>();
  ec.start();
  ec.setSendCapacity(0);
  EXPECT_FALSE(app.ctx().write(Slices(std::string(600, 'a'))));
  EXPECT_EQ(app.ctx().write(Slices(std::string(600, 'b'))), std::errc::no_buffer_space);
  EXPECT_EQ(ec.connection().outputBytes(), 600u) << "a refused write is not half-queued";
  ec.runPending();
  ASSERT_EQ(rec.seen.size(), 1u);
  EXPECT_EQ(rec.seen[0], std::make_pair(CloseReason::Overloaded, CloseMode::Reset));
}

TEST(ClosePath, IdleShutdownEndsAsIdleTimeout) {
  Embedded e;
  EmbeddedConnection ec(e.loop);
  Closes rec;
  ec.pipeline().emplaceLast<CloseRecorder>(&rec);
  IdleLimits limits;
  limits.reader = 1000ms;
  auto& reaper = ec.pipeline().emplaceLast<IdleReaper>(limits, IdleAction::Shutdown);
  ec.start();
  advanceLoop(e.loop, e.clock, 1001ms);
  EXPECT_EQ(reaper.detected(IdleKind::Reader), 1u);
  ASSERT_EQ(rec.shutdowns, std::vector<CloseReason>{CloseReason::IdleTimeout});
  EXPECT_TRUE(ec.finSent());
  ec.feedFin();
  EXPECT_EQ(ec.closedWith(), CloseReason::IdleTimeout) << "shutdown() carries its reason to the close";
}

// ---- the read-complete event ----------------------------------------------------------
class ReadCounter final : public Handler {
 public:
  void onData(HandlerContext&, Buffer& in) override {
    data += in.readableBytes();
    in.retrieveAll();
  }
  void onReadComplete(HandlerContext& ctx) override {
    ++completes;
    ctx.fireReadComplete();
  }
  std::size_t data = 0;
  int completes = 0;
};

TEST(ReadComplete, AnyNumberOfHandlersSeeItOncePerRead) {
  Embedded e;
  ConnectionOptions o;
  o.maxReadPerEvent = 4;  // 10 bytes: three reads
  EmbeddedConnection ec(e.loop, o);
  auto& first = ec.pipeline().emplaceLast<ReadCounter>();
  ec.start();
  ec.feed("0123456789");
  // The first counter consumed everything, so it saw all three reads.
  EXPECT_EQ(first.data, 10u);
  EXPECT_EQ(first.completes, 3);
  auto& second = ec.pipeline().emplaceLast<ReadCounter>();
  ec.feed("ab");
  EXPECT_EQ(first.completes, 4);
  EXPECT_EQ(second.completes, 1);
}

// ---- the FIN policy ---------------------------------------------------------------------
class FinPolicySetter final : public Handler {
 public:
  explicit FinPolicySetter(HalfClosePolicy p) : p_(p) {}
  void onPeerHalfClosed(HandlerContext& ctx, PeerFin& fin) override {
    seen = fin.policy;
    fin.policy = p_;
    ctx.firePeerHalfClosed(fin);
  }
  HalfClosePolicy seen = HalfClosePolicy::CloseNow;

 private:
  HalfClosePolicy p_;
};

TEST(FinPolicy, TheDefaultDeliversThenCloses) {
  Embedded e;
  EmbeddedConnection ec(e.loop);
  ec.pipeline().emplaceLast<Writer>();
  ec.start();
  ec.setSendCapacity(0);
  ASSERT_TRUE(ec.connection().send(std::string_view("owed")));
  ec.feedFin();
  EXPECT_EQ(ec.connection().state(), ConnectionState::Closing);
  ec.setSendCapacity(100);
  EXPECT_EQ(ec.takeOutput(), "owed") << "a FIN is an event, not a teardown";
  EXPECT_EQ(ec.closedWith(), CloseReason::PeerClosed);
}

TEST(FinPolicy, TheEventCarriesTheDecisionToTheTail) {
  Embedded e;
  EmbeddedConnection ec(e.loop);
  ec.pipeline().emplaceLast<HalfClose>(HalfClosePolicy::CloseNow);
  auto& app = ec.pipeline().emplaceLast<FinPolicySetter>(HalfClosePolicy::StayOpen);
  ec.start();
  ec.feedFin();
  EXPECT_EQ(app.seen, HalfClosePolicy::CloseNow) << "HalfClose decides first";
  EXPECT_EQ(ec.connection().state(), ConnectionState::PeerHalfClosed) << "the application overrode it";
  EXPECT_TRUE(ec.connection().send(std::string_view("late answer")));
  EXPECT_EQ(ec.takeOutput(), "late answer");
}

// ---- watermark events are never re-entrant -----------------------------------------------
class WatermarkProbe final : public Handler {
 public:
  void handlerAdded(HandlerContext& ctx) override { ctx_ = &ctx; }
  void write(std::size_t n) {
    inWrite = true;
    (void)ctx_->write(Slices(std::string(n, 'w')));
    inWrite = false;
  }
  void flush() {
    inFlush = true;
    ctx_->flush();
    inFlush = false;
  }
  void onHighWatermark(HandlerContext&, std::size_t queued) override {
    highs.push_back(queued);
    firedInsideWrite = firedInsideWrite || inWrite;
  }
  void onWritable(HandlerContext&) override {
    ++writables;
    firedInsideWrite = firedInsideWrite || inFlush;
  }
  bool inWrite = false;
  bool inFlush = false;
  bool firedInsideWrite = false;
  std::vector<std::size_t> highs;
  int writables = 0;

 private:
  HandlerContext* ctx_ = nullptr;
};

TEST(Watermarks, EventsArriveAfterTheWriteReturned) {
  Embedded e;
  ConnectionOptions o;
  o.highWatermark = 100;
  o.lowWatermark = 10;
  EmbeddedConnection ec(e.loop, o);
  auto& probe = ec.pipeline().emplaceLast<WatermarkProbe>();
  ec.start();
  ec.setSendCapacity(0);
  probe.write(150);
  EXPECT_TRUE(probe.highs.empty()) << "not from inside the write";
  EXPECT_TRUE(ec.connection().readingPaused()) << "backpressure itself is immediate (and on by default)";
  ec.runPending();
  ASSERT_EQ(probe.highs, std::vector<std::size_t>{150});
  ec.setSendCapacity(1000, false);
  probe.flush();  // drains the queue below the low watermark
  EXPECT_EQ(ec.outputSize(), 150u);
  EXPECT_EQ(probe.writables, 0) << "not from inside the flush";
  ec.runPending();
  EXPECT_EQ(probe.writables, 1);
  EXPECT_FALSE(probe.firedInsideWrite);
  EXPECT_FALSE(ec.connection().readingPaused());
}

// ---- handler-owned timers ----------------------------------------------------------------
class SelfCloser final : public Handler {
 public:
  explicit SelfCloser(bool* flag) : after_(flag) {}
  void handlerAdded(HandlerContext& ctx) override {
    ctx_ = &ctx;
    timer_.arm(ctx, 50ms);
  }
  void fire() {
    ctx_->close(CloseReason::IdleTimeout, CloseMode::Now);  // removes and would free this handler...
    count_ += 1;                                            // ...but not before the callback returns
    *after_ = count_ == 1;
  }

 private:
  HandlerContext* ctx_ = nullptr;
  HandlerTimer timer_{[this] { fire(); }};
  int count_ = 0;
  bool* after_;
};

TEST(HandlerTimer, AHandlerClosedFromItsOwnTimerOutlivesTheCallback) {
  Embedded e;
  bool touchedAfterClose = false;
  EmbeddedConnection ec(e.loop);
  ec.pipeline().emplaceLast<SelfCloser>(&touchedAfterClose);
  ec.start();
  advanceLoop(e.loop, e.clock, 60ms);
  EXPECT_TRUE(touchedAfterClose);
  EXPECT_EQ(ec.closedWith(), CloseReason::IdleTimeout);
  EXPECT_EQ(ec.pipeline().size(), 0u);
}

class Ticker final : public Handler {
 public:
  explicit Ticker(int* fired) : fired_(fired) {}
  void handlerAdded(HandlerContext& ctx) override { timer_.arm(ctx, 10ms); }

 private:
  int* fired_;
  HandlerTimer timer_{[this] { ++*fired_; }};
};

TEST(HandlerTimer, RemovingTheHandlerCancelsItsTimer) {
  Embedded e;
  int fired = 0;
  EmbeddedConnection ec(e.loop);
  ec.pipeline().emplaceLast<Ticker>(&fired);
  ec.start();
  const std::size_t pending = e.loop.timers().size();
  EXPECT_TRUE(ec.pipeline().remove<Ticker>());
  EXPECT_EQ(e.loop.timers().size(), pending - 1) << "the destructor cancelled the registration";
  advanceLoop(e.loop, e.clock, 100ms);
  EXPECT_EQ(fired, 0);
}

// ---- MessageDeadline on a stream of back-to-back messages ---------------------------
// Consumes whole 4-byte messages and leaves a partial one behind.
class FourByteMessages final : public Handler {
 public:
  void onData(HandlerContext&, Buffer& in) override {
    while (in.readableBytes() >= 4) in.retrieve(4);
  }
};

TEST(MessageDeadlineStream, ReadsThatAllEndMidMessageAreNotOneMessageThatNeverCompletes) {
  Embedded e;
  EmbeddedConnection ec(e.loop);
  ec.pipeline().emplaceLast<MessageDeadline>(100ms);
  ec.pipeline().emplaceLast<FourByteMessages>();
  ec.start();
  // Every 60 ms a read completes the waiting message and starts the next:
  // each message takes 60 ms, well inside the limit, for a whole second.
  ec.feed("ab");
  for (int i = 0; i < 16; ++i) {
    advanceLoop(e.loop, e.clock, 60ms);
    ec.feed("cdab");
  }
  EXPECT_FALSE(ec.connection().closed()) << "a message completed every 60 ms under a 100 ms limit";
  // A message that really stalls is still reaped at its limit.
  advanceLoop(e.loop, e.clock, 99ms);
  EXPECT_FALSE(ec.connection().closed());
  advanceLoop(e.loop, e.clock, 2ms);
  EXPECT_EQ(ec.closedWith(), CloseReason::IdleTimeout);
}

// ---- thread rules ----------------------------------------------------------------------
TEST(ThreadRules, LoopOnlyCallsAbortNamingTheFunctionOffTheLoopThread) {
#ifdef NDEBUG
  GTEST_SKIP() << "the loop-thread checks are compiled out of release builds";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        EventLoop loop;
        EmbeddedConnection ec(loop);
        std::thread([&] { ec.connection().pauseReading(); }).join();
      },
      "Connection::pauseReading");
  EXPECT_DEATH(
      {
        EventLoop loop;
        std::thread([&] { (void)loop.runAfter(1ms, [] {}); }).join();
      },
      "EventLoop::runAfter");
#endif
}

}  // namespace
}  // namespace keel
