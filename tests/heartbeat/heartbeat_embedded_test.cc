// Heartbeat's decisions on a manual clock and in-memory transports: when
// PINGs leave and when a silent peer is dead, that inbound bytes and output
// draining are proof of life (Netty #6150), removal and re-adding at run
// time, and the jitter that spreads 1,000 connections' first PINGs. Both
// ends are EmbeddedConnections ([FrameCodec][Heartbeat][Watch] probing,
// [FrameCodec][PongResponder] answering) and the test carries the bytes.
// What needs a kernel or another process (RTT over loopback, a SIGSTOPped
// peer, a black-holed link, kernel keepalive) is in heartbeat_test.cc.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "heartbeat/HeartbeatWatch.h"
#include "keel/heartbeat/Heartbeat.h"
#include "keel/heartbeat/HeartbeatMessage.h"
#include "keel/heartbeat/PongResponder.h"
#include "keel/net/Connection.h"
#include "keel/net/EmbeddedConnection.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/Pipeline.h"
#include "keel/net/Slices.h"
#include "support/ManualLoop.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::frameOf;
using test::Outcome;
using test::Watch;

// A probing connection and, optionally, an answering peer on one manual loop.
struct Probed {
  explicit Probed(HeartbeatOptions opts) : prober(m.loop, {}, 1), peer(m.loop, {}, 2) {
    out.clock = [this] { return m.now().time_since_epoch().count(); };
    prober.pipeline().emplaceLast<FrameCodec>();
    prober.pipeline().emplaceLast<Heartbeat>(opts);
    prober.pipeline().emplaceLast<Watch>(&out);
    peer.pipeline().emplaceLast<FrameCodec>();
    responder = &peer.pipeline().emplaceLast<PongResponder>();
    prober.start();
    peer.start();
  }
  Heartbeat* heartbeat() { return prober.pipeline().find<Heartbeat>(); }
  // Carries the bytes each side wrote to the other, until both are quiet.
  void pump() {
    for (;;) {
      std::string toPeer = prober.takeOutput();
      std::string toProber = peer.takeOutput();
      if (toPeer.empty() && toProber.empty()) return;
      if (!toPeer.empty() && !peer.connection().closed()) peer.feed(toPeer);
      if (!toProber.empty() && !prober.connection().closed()) prober.feed(toProber);
    }
  }
  // Advances `total` in steps of `step`, the peer answering after each.
  void runAnswered(Duration total, Duration step = 1ms) {
    for (Duration t{}; t < total; t += step) {
      m.advance(step);
      pump();
    }
  }

  test::ManualLoop m;
  Outcome out;
  EmbeddedConnection prober;
  EmbeddedConnection peer;
  PongResponder* responder = nullptr;
};

TEST(HeartbeatEmbedded, ASilentPeerIsDeadAtTheDeadTimeAndNotBefore) {
  const HeartbeatOptions opts{.keepaliveTime = 200ms, .probeInterval = 100ms, .probeCount = 3};
  Probed p(opts);
  const TimePoint t0 = p.m.now();
  p.m.advance(opts.deadAfter() - 1ms);
  EXPECT_FALSE(p.out.dead.load());
  EXPECT_FALSE(p.out.closed());
  EXPECT_EQ(p.heartbeat()->pingsSent(), 3u) << "every PING went out before the dead time";
  p.m.advance(2ms);
  ASSERT_TRUE(p.out.closed());
  EXPECT_TRUE(p.out.closedWith(CloseReason::HeartbeatTimeout)) << p.out.reasonText();
  EXPECT_TRUE(p.out.deadBeforeClose.load()) << "PeerDead reaches the application before the close";
  EXPECT_GE(nanoseconds(p.out.deadSilenceNs.load()), opts.deadAfter());
  EXPECT_EQ(p.out.deadUnanswered.load(), 3u);
  EXPECT_LE(p.out.closedAtNs.load() - t0.time_since_epoch().count(),
            nanoseconds(opts.deadAfter() + 1ms).count());
  EXPECT_TRUE(p.prober.wasReset()) << "a heartbeat timeout resets";
}

TEST(HeartbeatEmbedded, AnAnsweringPeerIsNeverDeclaredDead) {
  const HeartbeatOptions opts{.keepaliveTime = 30ms, .probeInterval = 30ms};
  Probed p(opts);
  p.runAnswered(10 * opts.deadAfter());
  EXPECT_FALSE(p.out.dead.load());
  EXPECT_FALSE(p.out.closed());
  EXPECT_GE(p.heartbeat()->pongsReceived(), 5u);
  EXPECT_EQ(p.heartbeat()->pongsReceived(), p.responder->pingsAnswered());
  EXPECT_EQ(p.heartbeat()->pongsIgnored(), 0u);
  EXPECT_EQ(p.out.foreignControl.load(), 0) << "PONGs must not reach the application";
}

TEST(Heartbeat, RemovedAndAddedBackAtRunTime) {
  const HeartbeatOptions fast{.keepaliveTime = 20ms, .probeInterval = 20ms, .probeCount = 3};
  Probed p(fast);
  p.runAnswered(100ms);
  ASSERT_GE(p.heartbeat()->pongsReceived(), 3u);

  const std::size_t timersWith = p.m.loop.timers().size();
  EXPECT_TRUE(p.prober.pipeline().remove<Heartbeat>());
  EXPECT_EQ(p.m.loop.timers().size() + 1, timersWith) << "removing the handler cancels its one timer";
  const std::uint64_t before = p.responder->pingsAnswered();
  p.m.advance(300ms);  // 15 keepalive periods, 3 dead times
  EXPECT_TRUE(p.prober.takeOutput().empty()) << "no PINGs once the handler is gone";
  p.pump();
  EXPECT_EQ(p.responder->pingsAnswered(), before);
  EXPECT_FALSE(p.out.closed()) << "and nobody declared the silent peer dead";

  p.prober.pipeline().addBefore<Watch>(std::make_unique<Heartbeat>(fast));
  p.runAnswered(100ms);
  EXPECT_GE(p.heartbeat()->pongsReceived(), 3u);
  EXPECT_GT(p.responder->pingsAnswered(), before);
  EXPECT_FALSE(p.out.closed());
}

TEST(Heartbeat, NoFalseAlarmWhileThePeerStreamsToUsWithoutAnswering) {
  const HeartbeatOptions opts{.keepaliveTime = 100ms, .probeInterval = 100ms, .probeCount = 5};
  Probed p(opts);
  // 64 KiB frames every 150 ms for 3x the dead time: longer gaps than the
  // keepalive time, so PINGs go out, but never a whole dead time of silence.
  // The peer never answers (nothing carries the PINGs to it).
  const std::string chunk = frameOf(test::randomBytes(64 << 10, 5));
  int sent = 0;
  for (Duration t{}; t < 3 * opts.deadAfter(); t += 150ms) {
    p.prober.feed(chunk);
    ++sent;
    p.m.advance(150ms);
  }
  EXPECT_FALSE(p.out.dead.load());
  EXPECT_FALSE(p.out.closed()) << p.out.reasonText();
  EXPECT_EQ(p.out.frames.load(), sent);
  EXPECT_GE(p.heartbeat()->pingsSent(), 3u) << "PINGs went out in the gaps";
  EXPECT_EQ(p.heartbeat()->pongsReceived(), 0u);

  // When the stream stops, the same silence is detected, counted from the
  // last byte (150 ms ago).
  p.m.advance(opts.deadAfter() - 150ms - 1ms);
  EXPECT_FALSE(p.out.closed());
  p.m.advance(2ms);
  ASSERT_TRUE(p.out.closed());
  EXPECT_TRUE(p.out.closedWith(CloseReason::HeartbeatTimeout)) << p.out.reasonText();
}

// Queues `frames` frames of `bytes` on connect.
class Streamer final : public Handler {
 public:
  Streamer(int frames, std::size_t bytes) : frames_(frames), payload_(bytes, 'x') {}
  void onConnected(HandlerContext& ctx) override {
    for (int i = 0; i < frames_; ++i) ctx.writeFrame(payload_);
    ctx.fireConnected();
  }

 private:
  int frames_;
  std::string payload_;
};

TEST(Heartbeat, NoFalseAlarmWhileWeStreamToASlowButReadingPeer) {
  const HeartbeatOptions opts{.keepaliveTime = 100ms, .probeInterval = 100ms, .probeCount = 5};
  test::ManualLoop m;
  Outcome out;
  out.clock = [&] { return m.now().time_since_epoch().count(); };
  EmbeddedConnection ec(m.loop);
  ec.pipeline().emplaceLast<FrameCodec>();
  ec.pipeline().emplaceLast<Heartbeat>(opts);
  ec.pipeline().emplaceLast<Streamer>(96, 256 << 10);  // 24 MiB
  ec.pipeline().emplaceLast<Watch>(&out);
  ec.setSendCapacity(0, false);  // a full send buffer from the start
  ec.start();
  // The peer takes 32 KiB every 10 ms for 4x the dead time and never sends
  // a byte: only our draining output says it is alive.
  std::size_t got = 0;
  for (Duration t{}; t < 4 * opts.deadAfter(); t += 10ms) {
    ec.setSendCapacity(32 << 10);
    got += ec.takeOutput().size();
    m.advance(10ms);
  }
  EXPECT_FALSE(out.dead.load()) << "declared dead after reading " << got << " bytes";
  EXPECT_FALSE(out.closed()) << out.reasonText();
  EXPECT_GT(ec.connection().outputBytes(), 0u) << "the test must end while our output is still queued";

  // Once the peer stops reading, the drain stops and the silence counts.
  const TimePoint lastDrain = ec.connection().stats().lastWrite;
  m.advance(opts.deadAfter() - (m.now() - lastDrain) - 1ms);
  EXPECT_FALSE(out.closed());
  m.advance(2ms);
  ASSERT_TRUE(out.closed());
  EXPECT_TRUE(out.closedWith(CloseReason::HeartbeatTimeout)) << out.reasonText();
  EXPECT_GE(nanoseconds(out.deadSilenceNs.load()), opts.deadAfter());
  EXPECT_TRUE(ec.wasReset()) << "a heartbeat timeout resets";
}

// Sits between the codec and the Heartbeat and notes when the first PING leaves.
class FirstPingRecorder final : public Handler {
 public:
  std::error_code write(HandlerContext& ctx, const Slices& data) override {
    if (!first_ && data.count() == 1 && data.totalBytes() == HeartbeatMessage::kFrameBytes) {
      const auto msg = HeartbeatMessage::decode(data[0].subspan(FrameCodec::kHeaderBytes));
      if (msg && msg->type == HeartbeatType::Ping) first_ = ctx.loop().now();
    }
    return ctx.write(data);
  }
  std::optional<TimePoint> first_;
};

TEST(Heartbeat, FirstPingsOfAThousandConnectionsAreSpreadByJitter) {
  // On a manual clock every PING leaves at the instant it is due, so this
  // checks the jitter itself; how a loaded loop bunches due PINGs into one
  // iteration is not measured here.
  constexpr int kConnections = 1000;
  test::ManualLoop m;
  std::vector<std::unique_ptr<EmbeddedConnection>> conns;
  for (int i = 0; i < kConnections; ++i) {
    conns.push_back(std::make_unique<EmbeddedConnection>(m.loop, ConnectionOptions{}, i + 1));
    conns.back()->pipeline().emplaceLast<FrameCodec>();
    conns.back()->pipeline().emplaceLast<FirstPingRecorder>();
    conns.back()->start();
  }

  // Switches every connection's Heartbeat on at the same instant and returns
  // each first PING's offset from that instant.
  auto firstPingOffsets = [&](int jitterPercent) {
    const HeartbeatOptions opts{
        .keepaliveTime = 1000ms, .probeInterval = 10s, .probeCount = 3, .jitterPercent = jitterPercent};
    const TimePoint t0 = m.now();
    for (auto& c : conns) {
      (void)c->pipeline().remove<Heartbeat>();
      c->pipeline().find<FirstPingRecorder>()->first_.reset();
      c->pipeline().emplaceLast<Heartbeat>(opts);
    }
    m.advance(opts.keepaliveTime + 100ms);
    std::vector<milliseconds> offsets;
    for (auto& c : conns) {
      if (auto& f = c->pipeline().find<FirstPingRecorder>()->first_) {
        offsets.push_back(std::chrono::duration_cast<milliseconds>(*f - t0));
      }
    }
    return offsets;
  };
  auto distinctMs = [](const std::vector<milliseconds>& v) {
    std::map<milliseconds::rep, int> perMs;
    for (auto o : v) ++perMs[o.count()];
    int busiest = 0;
    for (auto& [ms, n] : perMs) busiest = std::max(busiest, n);
    return std::pair<std::size_t, int>(perMs.size(), busiest);
  };

  const auto lockstep = firstPingOffsets(0);
  ASSERT_EQ(lockstep.size(), static_cast<std::size_t>(kConnections));
  const auto [lockstepMs, lockstepBusiest] = distinctMs(lockstep);
  const auto spread = firstPingOffsets(10);
  ASSERT_EQ(spread.size(), static_cast<std::size_t>(kConnections));
  const auto [spreadMs, spreadBusiest] = distinctMs(spread);
  const auto [lo, hi] = std::minmax_element(spread.begin(), spread.end());
  std::printf(
      "first PINGs of %d connections started together (manual clock): jitter 0%% -> %zu distinct ms "
      "(busiest %d); jitter 10%% -> %zu distinct ms over %lld..%lld ms (busiest %d)\n",
      kConnections, lockstepMs, lockstepBusiest, spreadMs, static_cast<long long>(lo->count()),
      static_cast<long long>(hi->count()), spreadBusiest);

  EXPECT_LE(lockstepMs, 5u) << "without jitter they all ping together (the control)";
  EXPECT_GE(*lo, 899ms) << "never earlier than keepaliveTime minus 10 %";
  EXPECT_LE(*hi, 1000ms + 500ms);
  EXPECT_GE(*hi - *lo, 50ms) << "spread over at least half the 100 ms jitter window";
  const auto early = std::count_if(spread.begin(), spread.end(), [](milliseconds o) { return o < 950ms; });
  EXPECT_GE(early, kConnections / 4) << "the first half of the window holds its share";
  EXPECT_LE(early, kConnections * 3 / 4) << "the second half of the window holds its share";
  EXPECT_GE(spreadMs, 2u);
  EXPECT_LE(spreadBusiest, kConnections / 2) << "half of the PINGs left in the same millisecond";
  // No loop runs late on a manual clock, so nothing excuses bunching: 1,000
  // uniform draws over the 100 ms window leave few of its milliseconds empty.
  EXPECT_GE(spreadMs, 50u);
  EXPECT_LE(spreadBusiest, 40);
}

}  // namespace
}  // namespace keel
