// HalfClose against a real client that sends, then shutdown(SHUT_WR): what
// reaches the wire. CloseNow drops what is queued (the client gets less than
// the 8 MiB reply), FinishWrites delivers all of it and then the EOF,
// StayOpen lets the application answer after the FIN, and switching to
// CloseNow after the FIN drops the queue at once. The policy decisions and
// the linger's timing are tested on a manual clock in half_close_test.cc.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "keel/net/Connection.h"
#include "keel/net/HalfClose.h"
#include "net/HalfCloseApp.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::BlockingClient;
using test::k8MiB;
using test::ServerThread;
using App = test::HalfCloseApp;
using Seen = test::HalfCloseSeen;

struct Fixture {
  Seen seen;
  std::unique_ptr<ServerThread> srv;

  Fixture(HalfClosePolicy policy, std::size_t replyOnConnect, std::chrono::milliseconds answerAfterFin = 0ms,
          std::chrono::milliseconds linger = HalfClose::kDefaultLinger) {
    ServerOptions options;
    // These tests queue megabytes and then expect the server to notice the
    // client's FIN while the queue is still there: they opt out of
    // backpressure, which would stop reading (and so noticing) until the
    // client drained.
    options.connection.pauseReadingAtHighWatermark = false;
    srv = std::make_unique<ServerThread>(SocketAddress::loopback4(0), options, [=, this](Connection& c) {
      seen.conn = c.weak_from_this();
      c.pipeline().emplaceLast<HalfClose>(policy, linger);
      c.pipeline().emplaceLast<App>(&seen, replyOnConnect, answerAfterFin);
    });
  }
  // Runs f(conn, halfClose) on the loop while the connection is alive.
  template <class F>
  void onLoop(F f) {
    srv->runAndWait([&] {
      if (auto c = seen.conn.lock()) f(*c, *c->pipeline().find<HalfClose>());
    });
  }
};

TEST(HalfCloseWire, CloseNowDropsQueuedOutputButTheAppStillSeesTheFinFirst) {
  Fixture fx(HalfClosePolicy::CloseNow, k8MiB);
  BlockingClient client(fx.srv->address());
  ASSERT_EQ(client.recvExact(1).size(), 1u);  // the 8 MiB reply is under way, mostly queued
  ASSERT_TRUE(client.sendAll("request"));
  client.shutdownWrite();
  const auto start = std::chrono::steady_clock::now();
  bool eof = false;
  int err = 0;
  const std::string rest = client.recvUntilEof(&eof, &err);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(eof || err != 0) << "the connection must end, not hang";
  EXPECT_LT(rest.size() + 1, k8MiB) << "queued output was dropped";
  EXPECT_LT(took, 3s);
  ASSERT_TRUE(test::eventually([&] { return fx.seen.closed(); }));
  EXPECT_EQ(fx.seen.get(), (std::vector<std::string>{"fin", "closed:peer-closed"}));
  EXPECT_EQ(fx.seen.bytesIn.load(), 7u);
  std::printf("CloseNow: the client got %zu of %zu bytes before EOF\n", rest.size() + 1, k8MiB);
}

TEST(HalfCloseWire, FinishWritesDeliversAllEightMiBQueuedThenEof) {
  Fixture fx(HalfClosePolicy::FinishWrites, k8MiB);
  BlockingClient client(fx.srv->address());
  ASSERT_EQ(client.recvExact(1).size(), 1u);
  ASSERT_TRUE(client.sendAll("request"));
  client.shutdownWrite();
  bool eof = false;
  const std::string rest = client.recvUntilEof(&eof);
  EXPECT_TRUE(eof);
  EXPECT_EQ(rest.size() + 1, k8MiB);
  ASSERT_TRUE(test::eventually([&] { return fx.seen.closed(); }));
  EXPECT_EQ(fx.seen.get(), (std::vector<std::string>{"fin", "closed:peer-closed"}));
}

TEST(HalfCloseWire, StayOpenLetsTheAppAnswerAfterTheFinThenCloseItself) {
  Fixture fx(HalfClosePolicy::StayOpen, 0, 200ms);
  BlockingClient client(fx.srv->address());
  const std::string upload = test::randomBytes(300'000);
  ASSERT_TRUE(client.sendAll(upload));
  client.shutdownWrite();
  bool eof = false;
  EXPECT_EQ(client.recvUntilEof(&eof), "count=300000");
  EXPECT_TRUE(eof);
  ASSERT_TRUE(test::eventually([&] { return fx.seen.closed(); }));
  EXPECT_EQ(fx.seen.get(), (std::vector<std::string>{"fin", "closed:local-close"}));
  EXPECT_GE(fx.seen.finToClose(), 200ms) << "the answer was written after the FIN, from a timer";
}

TEST(HalfCloseWire, SwitchingToCloseNowAfterTheFinDropsTheQueueAtOnce) {
  Fixture fx(HalfClosePolicy::StayOpen, k8MiB);
  BlockingClient client(fx.srv->address());
  ASSERT_EQ(client.recvExact(1).size(), 1u);
  client.shutdownWrite();
  ASSERT_TRUE(test::eventually([&] { return fx.seen.get().size() == 1; }));
  EXPECT_FALSE(fx.seen.closed());
  fx.onLoop([&](Connection& c, HalfClose& h) {
    EXPECT_GT(c.outputBytes(), 0u);
    h.setPolicy(HalfClosePolicy::CloseNow);
  });
  EXPECT_TRUE(fx.seen.closed()) << "closed inside setPolicy";
  bool eof = false;
  int err = 0;
  const std::string rest = client.recvUntilEof(&eof, &err);
  EXPECT_TRUE(eof || err != 0);
  EXPECT_LT(rest.size() + 1, k8MiB);
  EXPECT_EQ(fx.seen.reason.load(), static_cast<int>(CloseReason::PeerClosed));
}

}  // namespace
}  // namespace keel
