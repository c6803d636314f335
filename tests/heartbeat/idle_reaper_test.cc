// IdleReaper's timing decisions on a manual clock and an in-memory
// transport: a limit fires at its instant and not one tick before; a busy
// connection is never reaped; reader, writer and all idleness are told
// apart; Notify fires once per idle period; the Shutdown and Close actions;
// limits changed at run time. Without TCP_INFO (the embedded transport has
// none) the writer limit reads lastWrite alone, as on a Unix-domain socket;
// the TCP_INFO drain rule and reaping at scale are real-socket tests
// (idle_reaper_socket_test.cc).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "heartbeat/IdleObserver.h"
#include "keel/core/EventLoop.h"
#include "keel/heartbeat/IdleReaper.h"
#include "keel/net/Connection.h"
#include "keel/net/EmbeddedConnection.h"
#include "keel/net/HandlerTimer.h"
#include "support/ManualLoop.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::IdleObserver;
using test::IdleSeen;
using test::readerOnly;

// Writes one byte every `every` from our side, on a timer of its own.
class Talker final : public Handler {
 public:
  explicit Talker(std::chrono::milliseconds every) : every_(every) {}
  void onConnected(HandlerContext& ctx) override {
    ctx_ = &ctx;
    timer_.arm(ctx, every_);
    ctx.fireConnected();
  }

 private:
  void tick() {
    ctx_->write("t");
    timer_.arm(*ctx_, every_);
  }
  std::chrono::milliseconds every_;
  HandlerContext* ctx_ = nullptr;
  HandlerTimer timer_{[this] { tick(); }};
};

// Embedded connections with [IdleReaper][IdleObserver] on one manual loop,
// all reporting to `seen`.
struct Idle {
  struct Reaped {
    Reaped(EventLoop& loop, IdleSeen& seen, IdleLimits limits, IdleAction action, std::uint64_t id,
           std::string goodbye)
        : ec(loop, {}, id) {
      reaper = &ec.pipeline().emplaceLast<IdleReaper>(limits, action);
      ec.pipeline().emplaceLast<IdleObserver>(&seen, std::move(goodbye));
      ec.start();
    }
    EmbeddedConnection ec;
    IdleReaper* reaper = nullptr;  // until the connection closes (closing destroys the handlers)
  };
  // A started connection; `goodbye` is the observer's answer to an idle event.
  Reaped& add(IdleLimits limits, IdleAction action, std::string goodbye = {}) {
    conns.push_back(
        std::make_unique<Reaped>(m.loop, seen, limits, action, conns.size() + 1, std::move(goodbye)));
    return *conns.back();
  }
  test::ManualLoop m;
  IdleSeen seen;
  std::vector<std::unique_ptr<Reaped>> conns;
};

TEST(IdleReaper, IdleConnectionIsClosedAtItsLimitAndNotATickBefore) {
  Idle t;
  auto& r = t.add(readerOnly(200ms), IdleAction::Close);
  t.m.advance(199ms);
  EXPECT_FALSE(t.seen.closed(1)) << "never before the limit";
  EXPECT_FALSE(r.ec.transportClosed());
  t.m.advance(2ms);  // the wheel fires at most one tick late
  ASSERT_TRUE(t.seen.closed(1));
  EXPECT_EQ(t.seen.reason(1), CloseReason::IdleTimeout);
  EXPECT_GE(t.seen.lifetime(1), 200ms);
  EXPECT_LE(t.seen.lifetime(1), 201ms);
  EXPECT_TRUE(r.ec.transportClosed());
  EXPECT_FALSE(r.ec.wasReset()) << "an idle-timeout close is a FIN, not a reset";
}

TEST(IdleReaper, ConnectionThatKeepsTalkingEvery50msForOneSecondIsNeverClosed) {
  Idle t;
  IdleLimits limits;
  limits.reader = 200ms;
  limits.all = 200ms;
  auto& r = t.add(limits, IdleAction::Close);
  for (int i = 0; i < 20; ++i) {
    r.ec.feed("x");
    t.m.advance(50ms);
  }
  EXPECT_FALSE(t.seen.closed(1));
  EXPECT_FALSE(r.ec.connection().closed());
  EXPECT_EQ(t.seen.eventsOf(1).size(), 0u);
  // The same connection falls silent: reaped one limit after its last byte.
  t.m.advance(150ms - 1ms);
  EXPECT_FALSE(t.seen.closed(1));
  t.m.advance(2ms);
  EXPECT_TRUE(t.seen.closed(1));
}

TEST(IdleReaper, ReaderWriterAndAllAreToldApartAndEachFiresOncePerIdlePeriod) {
  // Three connections over the same 700 ms, all limits 200 ms, Notify:
  //   1: the peer talks, we are silent  -> writer idle only
  //   2: we talk, the peer is silent    -> reader idle only
  //   3: nobody talks                   -> reader, writer and all
  // With nothing happening after the first report, each kind fires exactly
  // once per connection, not once per check.
  test::ManualLoop m;
  IdleSeen seen;
  IdleLimits limits;
  limits.reader = limits.writer = limits.all = 200ms;
  EmbeddedConnection peerTalks(m.loop, {}, 1), weTalk(m.loop, {}, 2), silent(m.loop, {}, 3);
  for (EmbeddedConnection* ec : {&peerTalks, &weTalk, &silent}) {
    if (ec == &weTalk) ec->pipeline().emplaceLast<Talker>(50ms);
    ec->pipeline().emplaceLast<IdleReaper>(limits);
    ec->pipeline().emplaceLast<IdleObserver>(&seen);
    ec->start();
  }
  for (int i = 0; i < 14; ++i) {
    peerTalks.feed("c");
    m.advance(50ms);
  }
  EXPECT_FALSE(weTalk.takeOutput().empty()) << "the talker did talk";

  EXPECT_EQ(seen.count(1, IdleKind::Writer), 1);
  EXPECT_EQ(seen.count(1, IdleKind::Reader), 0);
  EXPECT_EQ(seen.count(1, IdleKind::All), 0);

  EXPECT_EQ(seen.count(2, IdleKind::Reader), 1);
  EXPECT_EQ(seen.count(2, IdleKind::Writer), 0);
  EXPECT_EQ(seen.count(2, IdleKind::All), 0);

  EXPECT_EQ(seen.count(3, IdleKind::Reader), 1);
  EXPECT_EQ(seen.count(3, IdleKind::Writer), 1);
  EXPECT_EQ(seen.count(3, IdleKind::All), 1);
  for (const IdleEvent& e : seen.eventsOf(3)) EXPECT_GE(e.idleFor, 200ms) << toString(e.kind);
  EXPECT_EQ(seen.closedCount(), 0u) << "Notify never closes";
}

TEST(IdleReaper, NotifyFiresAgainOnlyAfterActivityAndAFullNewPeriod) {
  Idle t;
  auto& r = t.add(readerOnly(150ms), IdleAction::Notify);
  t.m.advance(149ms);
  EXPECT_EQ(t.seen.count(1, IdleKind::Reader), 0);
  t.m.advance(2ms);
  EXPECT_EQ(t.seen.count(1, IdleKind::Reader), 1);
  t.m.advance(500ms);  // more than three periods of silence
  EXPECT_EQ(t.seen.count(1, IdleKind::Reader), 1) << "one idle period, one event";

  r.ec.feed("wake");
  t.m.advance(149ms);
  EXPECT_EQ(t.seen.count(1, IdleKind::Reader), 1) << "a new period must be a full one";
  t.m.advance(2ms);
  EXPECT_EQ(t.seen.count(1, IdleKind::Reader), 2);
  t.m.advance(500ms);
  EXPECT_EQ(t.seen.count(1, IdleKind::Reader), 2);
  for (const IdleEvent& e : t.seen.eventsOf(1)) EXPECT_GE(e.idleFor, 150ms);
  EXPECT_FALSE(t.seen.closed(1));
}

TEST(IdleReaper, WriterIdleFiresOnceForAPeerThatStopsTakingBytes) {
  // Without TCP_INFO the writer limit counts from the last bytes the
  // transport took; the kernel's view is idle_reaper_socket_test's.
  test::ManualLoop m;
  IdleSeen seen;
  IdleLimits limits;
  limits.writer = 200ms;
  EmbeddedConnection ec(m.loop);
  ec.pipeline().emplaceLast<IdleReaper>(limits);
  ec.pipeline().emplaceLast<test::BigWriter>(1u << 20);
  ec.pipeline().emplaceLast<IdleObserver>(&seen);
  ec.setSendCapacity(64 << 10, false);
  ec.start();
  ASSERT_EQ(ec.takeOutput().size(), 64u << 10);
  ASSERT_GT(ec.connection().outputBytes(), 0u) << "the rest is queued";
  ec.setSendCapacity(0, false);  // and then never takes another byte
  m.advance(199ms);
  EXPECT_EQ(seen.count(1, IdleKind::Writer), 0);
  m.advance(2ms);
  ASSERT_EQ(seen.count(1, IdleKind::Writer), 1);
  {
    std::lock_guard l(seen.m);
    EXPECT_FALSE(seen.deliveredAtWriterIdle[1].at(0)) << "stuck with bytes outstanding";
  }
  m.advance(600ms);
  EXPECT_EQ(seen.count(1, IdleKind::Writer), 1);
}

TEST(IdleReaper, ShutdownActionRaisesTheEventThenShutsDownGracefully) {
  Idle t;
  auto& r = t.add(readerOnly(200ms), IdleAction::Shutdown, "bye");  // answers the event
  t.m.advance(201ms);
  EXPECT_EQ(t.seen.count(1, IdleKind::Reader), 1);
  EXPECT_EQ(r.ec.takeOutput(), "bye") << "the event comes first, the FIN after the answer";
  EXPECT_TRUE(r.ec.finSent());
  EXPECT_FALSE(t.seen.closed(1)) << "shutdown waits for the peer's FIN";
  t.m.advance(1s);
  EXPECT_FALSE(t.seen.closed(1)) << "the reaper stops watching once it has acted";
  EXPECT_EQ(r.reaper->detected(IdleKind::Reader), 1u);
  r.ec.feedFin();  // closing destroys the handlers: nothing reads r.reaper after this
  ASSERT_TRUE(t.seen.closed(1));
  // Documented: the graceful path ends with the shutdown's own reason.
  EXPECT_EQ(t.seen.reason(1), CloseReason::IdleTimeout) << "shutdown() carries the idle reason to the close";
}

TEST(IdleReaper, LimitsChangeAtRunTime) {
  Idle t;
  auto& a = t.add(IdleLimits{}, IdleAction::Close);  // all off
  auto& b = t.add(IdleLimits{}, IdleAction::Close);
  EXPECT_FALSE(a.reaper->armed()) << "no limit, no timer";
  t.m.advance(400ms);
  EXPECT_EQ(t.seen.closedCount(), 0u) << "no limit, no reaping";

  // Turned on: counts from the call, so the 400 ms already idle do not count.
  a.reaper->setLimits(readerOnly(200ms));
  // Turned on and straight off again: never fires.
  b.reaper->setLimits(readerOnly(200ms));
  b.reaper->setLimits(IdleLimits{});
  EXPECT_FALSE(b.reaper->armed());
  t.m.advance(199ms);
  EXPECT_FALSE(t.seen.closed(1));
  t.m.advance(2ms);
  ASSERT_TRUE(t.seen.closed(1));
  EXPECT_EQ(t.seen.reason(1), CloseReason::IdleTimeout);
  EXPECT_TRUE(a.ec.transportClosed());
  EXPECT_FALSE(a.ec.wasReset());
  t.m.advance(400ms);
  EXPECT_FALSE(t.seen.closed(2));
  EXPECT_FALSE(b.ec.connection().closed());
}

TEST(IdleReaper, ALimitMadeShorterNeverReapsInRetrospect) {
  Idle t;
  auto& r = t.add(readerOnly(10s), IdleAction::Close);
  t.m.advance(5s);
  r.reaper->setLimits(readerOnly(1s));  // already idle for 5 s, longer than the new limit
  t.m.advance(999ms);
  EXPECT_FALSE(t.seen.closed(1));
  t.m.advance(2ms);
  EXPECT_TRUE(t.seen.closed(1));
}

}  // namespace
}  // namespace keel
