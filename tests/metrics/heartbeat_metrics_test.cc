// Heartbeat's series over loopback: every PONG lands in the RTT histogram,
// and a peer that never answers is counted dead once. Real sockets, a keel
// Client probing a keel Server.
#include <gtest/gtest.h>

#include <string>

#include "heartbeat/HeartbeatWatch.h"
#include "keel/core/LoopThread.h"
#include "keel/heartbeat/Heartbeat.h"
#include "keel/heartbeat/PongResponder.h"
#include "keel/metrics/Registry.h"
#include "keel/metrics/ServerMetrics.h"
#include "keel/net/Buffer.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/Pipeline.h"
#include "support/LoopClient.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::Outcome;
using test::ServerThread;
using test::Watch;

// Reads everything and answers nothing: a peer whose application hangs.
class Sink final : public Handler {
 public:
  void onData(HandlerContext&, Buffer& in) override { in.retrieveAll(); }
};

TEST(HeartbeatMetrics, EveryPongIsAnRttSample) {
  ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<PongResponder>();
  });
  Registry reg;
  HeartbeatOptions opts{.keepaliveTime = 20ms, .probeInterval = 20ms};
  publishHeartbeatMetrics(reg, opts);
  ASSERT_NE(opts.rttMetric, nullptr);
  LoopThread thread("prober");
  EventLoop& loop = thread.start();
  Outcome out;
  test::LoopClient client(loop, srv.address(), [&](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<Heartbeat>(opts);
    c.pipeline().emplaceLast<Watch>(&out);
  });
  ASSERT_TRUE(test::eventually([&] { return opts.rttMetric->snapshot().count >= 3; }, 10s));
  // Both read on the prober's loop, where the samples are written, so no
  // PONG can land between the two reads.
  std::uint64_t pongs = 0;
  Histogram::Snapshot s;
  ASSERT_TRUE(client.with<Heartbeat>([&](Heartbeat& hb) {
    pongs = hb.pongsReceived();
    s = opts.rttMetric->snapshot();
  }));
  EXPECT_EQ(s.count, pongs) << "one sample per PONG";
  EXPECT_GT(s.sum, 0.0);
  EXPECT_LT(s.sum, static_cast<double>(s.count)) << "loopback round trips are well under a second each";
  EXPECT_EQ(opts.deadPeerMetric->value(), 0u);
  const std::string text = reg.expose();
  EXPECT_NE(text.find("# TYPE keel_heartbeat_rtt_seconds histogram\n"), std::string::npos) << text;
  EXPECT_NE(text.find("keel_heartbeat_dead_peers_total 0\n"), std::string::npos) << text;
}

TEST(HeartbeatMetrics, APeerThatNeverAnswersIsCountedDeadOnce) {
  ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) { c.pipeline().emplaceLast<Sink>(); });
  Registry reg;
  HeartbeatOptions opts{.keepaliveTime = 30ms, .probeInterval = 20ms, .probeCount = 2};
  publishHeartbeatMetrics(reg, opts);
  LoopThread thread("prober");
  EventLoop& loop = thread.start();
  Outcome out;
  test::LoopClient client(loop, srv.address(), [&](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<Heartbeat>(opts);
    c.pipeline().emplaceLast<Watch>(&out);
  });
  ASSERT_TRUE(test::eventually([&] { return out.closed(); }, 10s));
  EXPECT_TRUE(out.closedWith(CloseReason::HeartbeatTimeout)) << out.reasonText();
  EXPECT_EQ(opts.deadPeerMetric->value(), 1u);
  EXPECT_EQ(opts.rttMetric->snapshot().count, 0u);
}

}  // namespace
}  // namespace keel
