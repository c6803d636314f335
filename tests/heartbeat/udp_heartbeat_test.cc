// UdpHeartbeat: PING-PONG between two UDP endpoints over loopback (RTT
// samples, other datagrams still delivered) and a peer declared dead once
// its endpoint closes; RTT samples with a keepaliveTime no test outlasts.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "heartbeat/HeartbeatWatch.h"
#include "keel/core/LoopThread.h"
#include "keel/heartbeat/Heartbeat.h"
#include "keel/heartbeat/UdpHeartbeat.h"
#include "keel/net/UdpEndpoint.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::msBetween;
using test::nowNs;
using test::runOn;

// ---- UDP -----------------------------------------------------------------------

// A responder endpoint and a probing endpoint on one loop thread.
struct UdpPair {
  static constexpr HeartbeatOptions kOpts{.keepaliveTime = 30ms, .probeInterval = 30ms, .probeCount = 3};
  HeartbeatOptions opts = kOpts;

  LoopThread thread{"udp"};
  EventLoop* loop = nullptr;
  std::unique_ptr<UdpEndpoint> responder;
  std::unique_ptr<UdpHeartbeat> prober;
  std::unique_ptr<UdpEndpoint> proberEndpoint;
  std::atomic<int> rttSamples{0};
  std::atomic<std::int64_t> lastRttNs{0};
  std::atomic<bool> dead{false};
  std::atomic<std::int64_t> deadAtNs{0};
  std::atomic<std::int64_t> deadSilenceNs{0};
  std::vector<std::string> responderApp, proberApp;  // loop thread

  std::error_code start() {
    loop = &thread.start();
    std::error_code ec;
    runOn(*loop, [&] {
      responder = std::make_unique<UdpEndpoint>(
          *loop, udpPongResponder([this](UdpEndpoint&, std::span<const char> d, const SocketAddress&) {
            responderApp.emplace_back(d.data(), d.size());
          }));
      if ((ec = responder->bind(SocketAddress::loopback4(0)))) return;
      prober = std::make_unique<UdpHeartbeat>(*loop, responder->localAddress(), opts);
      prober->setRttCallback([this](Duration rtt) {
        lastRttNs = rtt.count();
        ++rttSamples;
      });
      prober->setDeadCallback([this](Duration silence) {
        deadSilenceNs = silence.count();
        deadAtNs = nowNs();
        dead = true;
      });
      proberEndpoint = std::make_unique<UdpEndpoint>(
          *loop, prober->wrap([this](UdpEndpoint&, std::span<const char> d, const SocketAddress&) {
            proberApp.emplace_back(d.data(), d.size());
          }));
      if ((ec = proberEndpoint->bind(SocketAddress::loopback4(0)))) return;
      prober->start(*proberEndpoint);
    });
    return ec;
  }
  ~UdpPair() {
    if (loop == nullptr) return;
    runOn(*loop, [&] {
      prober.reset();  // before its endpoint
      proberEndpoint.reset();
      responder.reset();
    });
  }
};

TEST(UdpHeartbeat, PongsGiveRttAndOtherDatagramsStillReachTheApplication) {
  UdpPair u;
  ASSERT_FALSE(u.start());
  ASSERT_TRUE(test::eventually([&] { return u.rttSamples.load() >= 5; }));
  EXPECT_GT(nanoseconds(u.lastRttNs.load()), 0ns);
  EXPECT_FALSE(u.dead.load());
  runOn(*u.loop, [&] {
    EXPECT_FALSE(u.proberEndpoint->sendTo(std::span<const char>("hello", 5), u.responder->localAddress()));
    EXPECT_FALSE(u.responder->sendTo(std::span<const char>("world", 5), u.proberEndpoint->localAddress()));
  });
  std::vector<std::string> atResponder, atProber;
  std::uint64_t pings = 0, pongs = 0;
  Duration srtt{};
  ASSERT_TRUE(test::eventually([&] {
    runOn(*u.loop, [&] {
      atResponder = u.responderApp;
      atProber = u.proberApp;
      pings = u.prober->pingsSent();
      pongs = u.prober->pongsReceived();
      srtt = u.prober->smoothedRtt();
    });
    return !atResponder.empty() && !atProber.empty();
  }));
  EXPECT_EQ(atResponder, std::vector<std::string>{"hello"}) << "PINGs are answered, not delivered";
  EXPECT_EQ(atProber, std::vector<std::string>{"world"}) << "PONGs are consumed, not delivered";
  EXPECT_GE(pings, pongs);
  EXPECT_GT(srtt, 0ns);
}

TEST(UdpHeartbeat, PeerIsDeadOnceItsEndpointCloses) {
  UdpPair u;
  ASSERT_FALSE(u.start());
  ASSERT_TRUE(test::eventually([&] { return u.rttSamples.load() >= 2; }));
  std::int64_t closedAt = 0;
  runOn(*u.loop, [&] {
    u.responder->close();
    closedAt = nowNs();
  });
  ASSERT_TRUE(test::eventually([&] { return u.dead.load(); }, 5s));
  EXPECT_GE(nanoseconds(u.deadSilenceNs.load()), UdpPair::kOpts.deadAfter());
  EXPECT_LE(msBetween(closedAt, u.deadAtNs.load()), UdpPair::kOpts.deadAfter() + 1500ms);
  bool probing = true;
  runOn(*u.loop, [&] { probing = u.prober->probing(); });
  EXPECT_FALSE(probing) << "probing stops once the peer is dead";
}

TEST(UdpHeartbeat, RttSamplesComeWithoutAnySilence) {
  UdpPair u;
  // No liveness PING is due within the test: every PING is a sample.
  u.opts = {.keepaliveTime = 60s, .rttSampleInterval = 20ms};
  ASSERT_FALSE(u.start());
  ASSERT_TRUE(test::eventually([&] { return u.rttSamples.load() >= 3; }));
  std::uint64_t pings = 0, samples = 0;
  runOn(*u.loop, [&] {
    pings = u.prober->pingsSent();
    samples = u.prober->schedule().samplesSent();
  });
  EXPECT_EQ(pings, samples);
  EXPECT_GT(nanoseconds(u.lastRttNs.load()), 0ns);
  EXPECT_FALSE(u.dead.load());
}

}  // namespace
}  // namespace keel
