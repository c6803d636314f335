// HeartbeatOptions::rttSampleInterval: RTT-sample PINGs at a fixed rate on
// a connection whose traffic keeps the lazy liveness schedule from ever
// pinging. The schedule arithmetic on synthetic time (the grid, an
// unanswered PING not doubled, liveness verdicts unchanged), the handler on
// a manual clock with EmbeddedConnections, and one loopback run against a
// PongResponder.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "heartbeat/HeartbeatWatch.h"
#include "keel/core/EventLoop.h"
#include "keel/core/LoopThread.h"
#include "keel/heartbeat/Heartbeat.h"
#include "keel/heartbeat/PongResponder.h"
#include "keel/net/Connection.h"
#include "keel/net/EmbeddedConnection.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/HandlerTimer.h"
#include "keel/net/Pipeline.h"
#include "support/LoopClient.h"
#include "support/ManualLoop.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using Action = HeartbeatSchedule::Action;
using test::frameOf;
using test::Outcome;
using test::Watch;

// ---- HeartbeatSchedule ------------------------------------------------------------

// Drives a schedule like its owner: the timer fires at each Step::next.
// `heard(t)` is the latest proof of life at t; `answer` reports each PING's PONG at once.
struct Driven {
  std::vector<Duration> pings;    // times (since start) of every PING
  std::vector<Duration> samples;  // the sample PINGs among them
  Duration deadAt{-1};
};
template <class Heard>
Driven drive(HeartbeatOptions o, Duration total, Heard heard, bool answer) {
  HeartbeatSchedule s(o);
  const TimePoint t0{};
  s.start(t0, Duration::zero());
  Driven d;
  for (TimePoint t = t0 + s.firstDelay(); t - t0 <= total;) {
    const HeartbeatSchedule::Step step = s.onTimer(t, heard(t));
    if (step.action == Action::Dead) {
      d.deadAt = t - t0;
      break;
    }
    if (step.action == Action::Ping) {
      d.pings.push_back(t - t0);
      if (step.sample) d.samples.push_back(t - t0);
      if (answer) s.pongReceived();
    }
    EXPECT_GT(step.next, Duration::zero());
    t += step.next;
  }
  return d;
}

TEST(HeartbeatSampling, ScheduleSamplesAtTheRateUnderTraffic) {
  const HeartbeatOptions o{.keepaliveTime = 1s,
                           .probeInterval = 500ms,
                           .probeCount = 3,
                           .jitterPercent = 0,
                           .rttSampleInterval = 250ms};
  // Traffic every 100 ms: the liveness schedule never pings.
  auto busy = [](TimePoint t) { return TimePoint{} + (t - TimePoint{}) / 100ms * 100ms; };
  const Driven on = drive(o, 2s, busy, true);
  EXPECT_EQ(on.samples, (std::vector<Duration>{250ms, 500ms, 750ms, 1s, 1250ms, 1500ms, 1750ms, 2s}));
  EXPECT_EQ(on.pings, on.samples) << "no liveness PING on a busy connection";
  HeartbeatOptions lazy = o;
  lazy.rttSampleInterval = 0ms;
  const Driven off = drive(lazy, 2s, busy, true);
  EXPECT_TRUE(off.pings.empty());
}

TEST(HeartbeatSampling, AnUnansweredPingIsNotDoubled) {
  const HeartbeatOptions o{.keepaliveTime = 1s,
                           .probeInterval = 300ms,
                           .probeCount = 3,
                           .jitterPercent = 0,
                           .rttSampleInterval = 100ms};
  auto busy = [](TimePoint t) { return t; };
  // Never answered: a PING is outstanding until it is probeInterval old, so
  // only every third 100 ms slot sends.
  const Driven d = drive(o, 1s, busy, false);
  EXPECT_EQ(d.samples, (std::vector<Duration>{100ms, 400ms, 700ms, 1s}));
  HeartbeatSchedule s(o);
  s.start(TimePoint{}, Duration::zero());
  EXPECT_EQ(s.onTimer(TimePoint{} + 100ms, TimePoint{} + 100ms).action, Action::Ping);
  EXPECT_EQ(s.onTimer(TimePoint{} + 200ms, TimePoint{} + 200ms).action, Action::Wait);
  EXPECT_EQ(s.samplesSkipped(), 1u);
  s.pongReceived();
  EXPECT_EQ(s.onTimer(TimePoint{} + 300ms, TimePoint{} + 300ms).action, Action::Ping)
      << "answered: the next slot sends";
}

TEST(HeartbeatSampling, LivenessVerdictIsTheSameWithSampling) {
  const HeartbeatOptions lazy{
      .keepaliveTime = 1s, .probeInterval = 200ms, .probeCount = 3, .jitterPercent = 0};
  HeartbeatOptions sampled = lazy;
  sampled.rttSampleInterval = 150ms;
  // Heard until 700 ms, then silent: a sample's PONG is no proof of life
  // beyond the bytes it is, and samples are not probes.
  auto silentAfter = [](TimePoint t) { return std::min(t, TimePoint{} + 700ms); };
  const Driven a = drive(lazy, 5s, silentAfter, false);
  const Driven b = drive(sampled, 5s, silentAfter, false);
  EXPECT_EQ(a.deadAt, 700ms + lazy.deadAfter());
  EXPECT_EQ(b.deadAt, a.deadAt);
  EXPECT_FALSE(b.samples.empty());
  // Every liveness PING of the lazy run also goes out in the sampled one.
  for (Duration p : a.pings)
    EXPECT_NE(std::find(b.pings.begin(), b.pings.end(), p), b.pings.end()) << p.count();
}

TEST(HeartbeatSampling, FirstSampleIsJitteredLikeTheFirstPing) {
  const HeartbeatOptions o{.keepaliveTime = 1s, .jitterPercent = 10, .rttSampleInterval = 200ms};
  HeartbeatSchedule s(o);
  s.start(TimePoint{}, 100ms);  // the largest jitter: 10 % of keepaliveTime
  EXPECT_EQ(s.firstDelay(), 180ms) << "10 % of the sample interval early";
  s.start(TimePoint{}, 0ms);
  EXPECT_EQ(s.firstDelay(), 200ms);
  HeartbeatSchedule lazy({.keepaliveTime = 1s, .jitterPercent = 10});
  lazy.start(TimePoint{}, 100ms);
  EXPECT_EQ(lazy.firstDelay(), 900ms);
}

// ---- the handler on a manual clock ---------------------------------------------

// Writes one application frame every `every` (the presence client's STATUS).
class Status final : public Handler {
 public:
  explicit Status(Duration every) : every_(every) {}
  void onConnected(HandlerContext& ctx) override {
    ctx_ = &ctx;
    timer_.arm(ctx, every_);
    ctx.fireConnected();
  }

 private:
  void tick() {
    (void)ctx_->writeFrame(std::string_view("STATUS"));
    timer_.arm(*ctx_, every_);
  }
  Duration every_;
  HandlerContext* ctx_ = nullptr;
  HandlerTimer timer_{[this] { tick(); }};
};

struct Busy {
  explicit Busy(HeartbeatOptions opts, bool answer = true) : prober(m.loop, {}, 1), peer(m.loop, {}, 2) {
    out.clock = [this] { return m.now().time_since_epoch().count(); };
    prober.pipeline().emplaceLast<FrameCodec>();
    heartbeat = &prober.pipeline().emplaceLast<Heartbeat>(opts);
    prober.pipeline().emplaceLast<Watch>(&out);
    peer.pipeline().emplaceLast<FrameCodec>();
    if (answer) peer.pipeline().emplaceLast<PongResponder>();
    peer.pipeline().emplaceLast<Status>(100ms);
    prober.start();
    peer.start();
  }
  void pump() {
    for (;;) {
      std::string toPeer = prober.takeOutput();
      std::string toProber = peer.takeOutput();
      if (toPeer.empty() && toProber.empty()) return;
      if (!toPeer.empty()) peer.feed(toPeer);
      if (!toProber.empty()) prober.feed(toProber);
    }
  }
  void run(Duration total) {
    for (Duration t{}; t < total; t += 1ms) {
      m.advance(1ms);
      pump();
    }
  }
  test::ManualLoop m;
  Outcome out;
  EmbeddedConnection prober;
  EmbeddedConnection peer;
  Heartbeat* heartbeat = nullptr;
};

TEST(HeartbeatSampling, BusyConnectionGetsSamplePingsAndAnRtt) {
  Busy b({.keepaliveTime = 1s, .probeInterval = 500ms, .jitterPercent = 0, .rttSampleInterval = 250ms});
  b.run(2s);
  EXPECT_EQ(b.heartbeat->samplePingsSent(), 8u) << "one per 250 ms";
  EXPECT_EQ(b.heartbeat->pingsSent(), 8u) << "and no liveness PING: the peer talks every 100 ms";
  EXPECT_EQ(b.heartbeat->pongsReceived(), 8u);
  EXPECT_GT(b.heartbeat->lastRtt(), 0ns);
  EXPECT_GT(b.heartbeat->smoothedRtt(), 0ns);
  EXPECT_GE(b.out.frames.load(), 19) << "the STATUS frames reached the application";
  EXPECT_FALSE(b.out.closed());
}

TEST(HeartbeatSampling, BusyConnectionWithoutSamplingSendsNoPing) {
  Busy b({.keepaliveTime = 1s, .probeInterval = 500ms, .jitterPercent = 0});
  b.run(2s);
  EXPECT_EQ(b.heartbeat->pingsSent(), 0u) << "lazy: traffic is proof of life";
  EXPECT_EQ(b.heartbeat->lastRtt(), 0ns);
  EXPECT_FALSE(b.out.closed());
}

TEST(HeartbeatSampling, APeerThatNeverAnswersIsSampledAtMostOncePerProbeInterval) {
  // It talks (so it is alive), but runs no PongResponder.
  Busy b({.keepaliveTime = 10s, .probeInterval = 300ms, .jitterPercent = 0, .rttSampleInterval = 100ms},
         false);
  b.run(1s);
  EXPECT_EQ(b.heartbeat->pingsSent(), 4u) << "at 100, 400, 700 and 1000 ms";
  EXPECT_EQ(b.heartbeat->schedule().samplesSkipped(), 6u);
  EXPECT_EQ(b.heartbeat->lastRtt(), 0ns);
  EXPECT_FALSE(b.out.closed()) << "unanswered samples are no liveness verdict";
}

// ---- over loopback -------------------------------------------------------------------

TEST(HeartbeatSampling, SamplesOverLoopbackAgainstAPongResponder) {
  test::ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<PongResponder>();
    c.pipeline().emplaceLast<Status>(10ms);
  });
  LoopThread thread("sampler");
  EventLoop& loop = thread.start();
  Outcome out;
  // keepaliveTime far beyond the test: every PING that comes is a sample.
  test::LoopClient client(loop, srv.address(), [&](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<Heartbeat>(HeartbeatOptions{.keepaliveTime = 60s, .rttSampleInterval = 20ms});
    c.pipeline().emplaceLast<Watch>(&out);
  });
  auto pongs = [&] {
    std::uint64_t n = 0;
    client.with<Heartbeat>([&](Heartbeat& hb) { n = hb.pongsReceived(); });
    return n;
  };
  ASSERT_TRUE(test::eventually([&] { return pongs() >= 5; }, 10s));
  Duration last{};
  std::uint64_t pings = 0, samples = 0;
  ASSERT_TRUE(client.with<Heartbeat>([&](Heartbeat& hb) {
    last = hb.lastRtt();
    pings = hb.pingsSent();
    samples = hb.samplePingsSent();
  }));
  EXPECT_GT(last, 0ns);
  EXPECT_EQ(pings, samples);
  EXPECT_GT(out.frames.load(), 0) << "the server's frames kept the connection busy";
  EXPECT_FALSE(out.closed());
}

}  // namespace
}  // namespace keel
