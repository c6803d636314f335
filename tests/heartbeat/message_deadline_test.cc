// MessageDeadline's decisions on a manual clock and an EmbeddedConnection,
// [MessageDeadline][FrameCodec][...][App]: an incomplete message must be
// completed within the limit (exactly: not a tick early), the clock runs per
// message and stops between whole messages, the MessageTimeout event comes
// before the close so an answer is flushed, and a trickle that defeats a
// reader-idle limit is reaped. The slowloris against a real server is
// hostile_test.cc (Slowloris.*).
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "heartbeat/HeartbeatWatch.h"
#include "keel/heartbeat/IdleReaper.h"
#include "keel/heartbeat/MessageDeadline.h"
#include "keel/net/Connection.h"
#include "keel/net/EmbeddedConnection.h"
#include "keel/net/FrameCodec.h"
#include "support/ManualLoop.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::frameOf;

// What the application saw; outside it, because closing the connection
// destroys its handlers.
struct Seen {
  std::optional<MessageTimeout> timeout;
  std::optional<CloseReason> closed;
};

// Echoes whole frames; on a MessageTimeout records it and answers "408".
class App final : public Handler {
 public:
  explicit App(Seen* seen) : seen_(seen) {}
  void onFrame(HandlerContext& ctx, std::span<const char> frame) override { (void)ctx.writeFrame(frame); }
  void onUserEvent(HandlerContext& ctx, const UserEvent& ev) override {
    if (const auto* t = dynamic_cast<const MessageTimeout*>(&ev)) {
      seen_->timeout = *t;
      (void)ctx.write("408");
      return;
    }
    ctx.fireUserEvent(ev);
  }
  void onClosed(HandlerContext& ctx, CloseReason r) override {
    seen_->closed = r;
    ctx.fireClosed(r);
  }

 private:
  Seen* seen_;
};

struct Deadlined {
  explicit Deadlined(std::chrono::milliseconds limit, IdleLimits idle = {}) : ec(m.loop) {
    deadline = &ec.pipeline().emplaceLast<MessageDeadline>(limit);
    ec.pipeline().emplaceLast<FrameCodec>();
    if (idle.any()) ec.pipeline().emplaceLast<IdleReaper>(idle, IdleAction::Close);
    ec.pipeline().emplaceLast<App>(&app);
    ec.start();
  }
  test::ManualLoop m;
  EmbeddedConnection ec;
  MessageDeadline* deadline = nullptr;  // until the connection closes
  Seen app;
};

TEST(MessageDeadline, AnIncompleteMessageIsReapedAtTheLimitAndNotATickBefore) {
  Deadlined d(500ms);
  const std::string f = frameOf(std::string(60, 'x'));
  d.ec.feed(std::string_view(f).substr(0, 10));
  EXPECT_TRUE(d.deadline->partial());
  EXPECT_TRUE(d.deadline->armed());
  d.m.advance(499ms);
  EXPECT_FALSE(d.app.closed.has_value());
  EXPECT_FALSE(d.app.timeout.has_value());
  d.m.advance(2ms);
  ASSERT_TRUE(d.app.timeout.has_value()) << "the event comes before the close";
  EXPECT_GE(d.app.timeout->waited, 500ms);
  EXPECT_LE(d.app.timeout->waited, 501ms);
  EXPECT_EQ(d.app.timeout->bytes, 10u);
  ASSERT_TRUE(d.app.closed.has_value());
  EXPECT_EQ(*d.app.closed, CloseReason::IdleTimeout);
  EXPECT_EQ(d.ec.takeOutput(), "408") << "the close flushes the answer to the event";
  EXPECT_FALSE(d.ec.wasReset()) << "IdleTimeout is not in resetOnReasons by default";
}

TEST(MessageDeadline, WholeMessagesNeverArmItAndPausesBetweenThemAreNotItsConcern) {
  Deadlined d(500ms);
  for (int i = 0; i < 4; ++i) {
    const std::string f = frameOf(test::randomBytes(100, static_cast<std::uint32_t>(i)));
    d.ec.feed(f);
    EXPECT_EQ(d.ec.takeOutput(), f);
    EXPECT_FALSE(d.deadline->partial());
    EXPECT_FALSE(d.deadline->armed()) << "a connection whose messages arrive whole never arms it";
    d.m.advance(700ms);
  }
  EXPECT_FALSE(d.app.closed.has_value());
  EXPECT_EQ(d.deadline->expired(), 0u);
}

TEST(MessageDeadline, TheClockRestartsWithEachMessage) {
  // Ten frames, each fed in two halves 100 ms apart: incomplete for 1 s in
  // all, longer than the 600 ms limit, but never one message for that long.
  Deadlined d(600ms);
  for (int i = 0; i < 10; ++i) {
    const std::string f = frameOf(test::randomBytes(50, static_cast<std::uint32_t>(i)));
    d.ec.feed(std::string_view(f).substr(0, 20));
    d.m.advance(100ms);
    d.ec.feed(std::string_view(f).substr(20));
    ASSERT_EQ(d.ec.takeOutput(), f) << "message " << i;
  }
  EXPECT_FALSE(d.deadline->partial());
  // A timer left from the last partial message finds nothing to do.
  d.m.advance(700ms);
  EXPECT_FALSE(d.app.closed.has_value());
  EXPECT_EQ(d.deadline->expired(), 0u);
}

// A regression test: the deadline's clock used to stop only when a read left
// nothing at all, so a peer streaming messages whose reads all end
// mid-message was judged by the start of the first incomplete one (here every
// 100-byte frame completes within 100 ms, and the connection was closed at
// 500 ms). A read that consumed a message and left the next one partial now
// starts that message's clock.
TEST(MessageDeadline, AStreamWhoseReadsEndMidMessageIsNotReaped) {
  Deadlined d(500ms);
  std::string stream;
  for (int i = 0; i < 13; ++i) stream += frameOf(std::string(96, static_cast<char>('a' + i)));  // 100 B each
  // Reads of 130 bytes every 100 ms: each leaves part of a frame behind
  // (130 * k is a multiple of 100 only at k = 10), none leaves one waiting
  // for longer than 100 ms.
  for (std::size_t at = 0; at + 130 <= stream.size(); at += 130) {
    d.ec.feed(std::string_view(stream).substr(at, 130));
    d.m.advance(100ms);
    ASSERT_FALSE(d.app.closed.has_value()) << "closed after " << at + 130 << " bytes";
  }
}

TEST(MessageDeadline, ReapsATrickleThatAReaderIdleLimitAloneNeverWould) {
  // 10 bytes a second: every byte is activity for the reader limit.
  Deadlined d(500ms, IdleLimits{.reader = 2000ms});
  const std::string f = frameOf(std::string(60, 'x'));  // 64 bytes: 6.4 s at 10 B/s
  std::size_t sent = 0;
  while (sent < f.size() && !d.app.closed) {
    d.ec.feed(std::string_view(f).substr(sent, 1));
    ++sent;
    d.m.advance(100ms);
  }
  ASSERT_TRUE(d.app.closed.has_value()) << "the slowloris was never reaped";
  EXPECT_EQ(*d.app.closed, CloseReason::IdleTimeout);
  EXPECT_TRUE(d.app.timeout.has_value()) << "by the deadline, not by the reader limit";
  EXPECT_LE(sent, 6u) << "reaped at 500 ms, five or six bytes in";
}

TEST(MessageDeadline, ATrickleDefeatsReaderIdleAlone) {
  // The control for the test above: without MessageDeadline nothing reaps it.
  test::ManualLoop m;
  EmbeddedConnection ec(m.loop);
  ec.pipeline().emplaceLast<FrameCodec>();
  ec.pipeline().emplaceLast<IdleReaper>(IdleLimits{.reader = 2000ms}, IdleAction::Close);
  Seen app;
  ec.pipeline().emplaceLast<App>(&app);
  ec.start();
  const std::string f = frameOf(std::string(60, 'x'));
  for (char c : f) {
    ec.feed(std::string_view(&c, 1));
    m.advance(100ms);
  }
  EXPECT_FALSE(app.closed.has_value()) << "6.4 s of trickle, never 2 s without a byte";
  EXPECT_EQ(ec.takeOutput(), f) << "and the message did complete";
}

}  // namespace
}  // namespace keel
