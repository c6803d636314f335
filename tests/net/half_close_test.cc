// HalfClose's policy decisions on an EmbeddedConnection and a manual clock:
// what each policy does with the FIN and the queued output, the
// application's answer after the FIN, the linger that bounds an application
// that never closes (at its instant, not before), switching the policy at
// run time, and removing the handler. What reaches a real client on the wire
// is half_close_socket_test.cc.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "keel/net/Connection.h"
#include "keel/net/EmbeddedConnection.h"
#include "keel/net/HalfClose.h"
#include "net/HalfCloseApp.h"
#include "support/ManualLoop.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::k8MiB;
using Seen = test::HalfCloseSeen;
using Events = std::vector<std::string>;

// [HalfClose][HalfCloseApp] on an embedded connection whose send buffer
// takes `capacity` bytes before it is full.
struct Halves {
  Halves(HalfClosePolicy policy, std::size_t replyOnConnect, std::chrono::milliseconds answerAfterFin = 0ms,
         std::chrono::milliseconds linger = HalfClose::kDefaultLinger, std::size_t capacity = 64 << 10)
      : ec(m.loop, options()) {
    half = &ec.pipeline().emplaceLast<HalfClose>(policy, linger);
    ec.pipeline().emplaceLast<test::HalfCloseApp>(&seen, replyOnConnect, answerAfterFin);
    ec.setSendCapacity(capacity, false);
    ec.start();
  }
  // As in half_close_socket_test: the tests queue megabytes and then expect
  // the FIN to be noticed while the queue is still there, so they opt out of
  // backpressure, which would stop reading (and so noticing) until the peer
  // drained.
  static ConnectionOptions options() {
    ConnectionOptions o;
    o.pauseReadingAtHighWatermark = false;
    return o;
  }
  test::ManualLoop m;
  Seen seen;
  EmbeddedConnection ec;
  HalfClose* half = nullptr;  // until the connection closes (closing destroys the handlers)
};

TEST(HalfClose, CloseNowDropsQueuedOutputButTheAppStillSeesTheFinFirst) {
  Halves h(HalfClosePolicy::CloseNow, k8MiB);
  ASSERT_GT(h.ec.connection().outputBytes(), 0u) << "the 8 MiB reply is mostly queued";
  h.ec.feed("request");
  h.ec.feedFin();
  ASSERT_TRUE(h.seen.closed()) << "at once, not after the queue";
  EXPECT_EQ(h.seen.get(), (Events{"fin", "closed:peer-closed"}));
  EXPECT_EQ(h.seen.bytesIn.load(), 7u);
  EXPECT_TRUE(h.ec.transportClosed());
  h.ec.setSendCapacity(k8MiB);
  EXPECT_LT(h.ec.takeOutput().size(), k8MiB) << "queued output was dropped";
}

TEST(HalfClose, FinishWritesDeliversAllEightMiBQueuedThenCloses) {
  Halves h(HalfClosePolicy::FinishWrites, k8MiB);
  h.ec.feed("request");
  h.ec.feedFin();
  EXPECT_EQ(h.seen.get(), (Events{"fin"}));
  EXPECT_FALSE(h.seen.closed()) << "the queue is delivered first";
  std::size_t delivered = h.ec.takeOutput().size();
  h.ec.setSendCapacity(k8MiB);
  delivered += h.ec.takeOutput().size();
  EXPECT_EQ(delivered, k8MiB);
  ASSERT_TRUE(h.seen.closed());
  EXPECT_EQ(h.seen.get(), (Events{"fin", "closed:peer-closed"}));
  EXPECT_FALSE(h.ec.wasReset());
}

TEST(HalfClose, StayOpenLetsTheAppAnswerAfterTheFinThenCloseItself) {
  Halves h(HalfClosePolicy::StayOpen, 0, 200ms);
  h.ec.feed(test::randomBytes(300'000));
  h.ec.feedFin();
  EXPECT_TRUE(h.half->lingering());
  h.m.advance(199ms);
  EXPECT_FALSE(h.seen.closed());
  EXPECT_EQ(h.ec.outputSize(), 0u);
  h.m.advance(2ms);
  EXPECT_EQ(h.ec.takeOutput(), "count=300000") << "the answer was written after the FIN, from a timer";
  ASSERT_TRUE(h.seen.closed());
  EXPECT_EQ(h.seen.get(), (Events{"fin", "closed:local-close"}));
  EXPECT_GE(h.seen.finToClose(), 200ms);
}

TEST(HalfClose, StayOpenWithAnAppThatNeverClosesIsClosedAfterTheLingerAsPeerClosed) {
  Halves h(HalfClosePolicy::StayOpen, 0, 0ms, 300ms);
  h.ec.feed("upload");
  h.ec.feedFin();
  EXPECT_TRUE(h.half->lingering());
  h.m.advance(299ms);
  EXPECT_FALSE(h.seen.closed()) << "not before the linger";
  EXPECT_EQ(h.ec.connection().state(), ConnectionState::PeerHalfClosed);
  h.m.advance(2ms);
  ASSERT_TRUE(h.seen.closed());
  EXPECT_EQ(h.seen.get(), (Events{"fin", "closed:peer-closed"}));
  EXPECT_GE(h.seen.finToClose(), 300ms);
  EXPECT_LE(h.seen.finToClose(), 301ms);
}

TEST(HalfClose, PolicySwitchesAtRunTime) {
  Halves h(HalfClosePolicy::FinishWrites, 0);
  h.half->setPolicy(HalfClosePolicy::StayOpen);

  // The FIN no longer closes the connection...
  h.ec.feedFin();
  EXPECT_EQ(h.seen.get(), (Events{"fin"}));
  h.m.advance(300ms);
  EXPECT_FALSE(h.seen.closed());
  EXPECT_TRUE(h.half->lingering());
  EXPECT_EQ(h.ec.connection().state(), ConnectionState::PeerHalfClosed);
  EXPECT_TRUE(h.ec.connection().send(std::string_view("still writable")));
  EXPECT_EQ(h.ec.takeOutput(), "still writable");

  // ...until the policy changes: FinishWrites applies to the FIN already seen.
  h.half->setPolicy(HalfClosePolicy::FinishWrites);
  h.ec.runPending();
  ASSERT_TRUE(h.seen.closed());
  EXPECT_EQ(h.seen.reason.load(), static_cast<int>(CloseReason::PeerClosed));
  EXPECT_TRUE(h.ec.transportClosed());
}

TEST(HalfClose, SwitchingToCloseNowAfterTheFinDropsTheQueueAtOnce) {
  Halves h(HalfClosePolicy::StayOpen, k8MiB);
  h.ec.feedFin();
  EXPECT_EQ(h.seen.get(), (Events{"fin"}));
  EXPECT_FALSE(h.seen.closed());
  EXPECT_GT(h.ec.connection().outputBytes(), 0u);
  h.half->setPolicy(HalfClosePolicy::CloseNow);
  EXPECT_TRUE(h.seen.closed()) << "closed inside setPolicy";
  EXPECT_EQ(h.seen.reason.load(), static_cast<int>(CloseReason::PeerClosed));
  h.ec.setSendCapacity(k8MiB);
  EXPECT_LT(h.ec.takeOutput().size(), k8MiB);
}

TEST(HalfClose, StayOpenCannotReopenAConnectionThatIsAlreadyClosing) {
  Halves h(HalfClosePolicy::FinishWrites, k8MiB);
  h.ec.feedFin();
  EXPECT_FALSE(h.seen.closed()) << "closing after the queue";
  h.half->setPolicy(HalfClosePolicy::StayOpen);
  h.ec.setSendCapacity(k8MiB);
  EXPECT_TRUE(h.seen.closed()) << "the FIN's FinishWrites still ends it";
  EXPECT_EQ(h.seen.reason.load(), static_cast<int>(CloseReason::PeerClosed));
}

TEST(HalfClose, RemovingTheHandlerRestoresTheDefaultPolicy) {
  Halves h(HalfClosePolicy::StayOpen, 0);
  EXPECT_TRUE(h.ec.pipeline().remove<HalfClose>());
  // Without HalfClose the tail's default applies again: the FIN closes.
  h.ec.feedFin();
  ASSERT_TRUE(h.seen.closed());
  EXPECT_EQ(h.seen.reason.load(), static_cast<int>(CloseReason::PeerClosed));
  EXPECT_TRUE(h.ec.transportClosed());
}

}  // namespace
}  // namespace keel
