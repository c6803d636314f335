// The application heartbeat where a kernel or another process is the
// point: PING-PONG and RTT over loopback, GOAWAY and foreign control frames
// on real connections, a SIGSTOPped peer declared dead and reset, and what
// each mechanism (keel heartbeat, kernel keepalive, TCP_USER_TIMEOUT)
// detects of a black-holed link or a stopped process; kernel keepalive
// settings. The heartbeat's timing decisions are tested on a manual clock in
// heartbeat_embedded_test.cc, the wire format and schedule in
// heartbeat_schedule_test.cc, the UDP prober in udp_heartbeat_test.cc.
//
// Peers that must be stopped (SIGSTOP) or cut off (a network namespace whose
// veth link goes down) are separate processes: the test forks BEFORE it
// creates any thread (ctest runs every TEST in a process of its own) and the
// child runs a small keel responder (EventLoop + Server + FrameCodec +
// PongResponder). The probing side is a keel Client in this process.
//
// Timing assertions use generous bounds; the tests marked [measure] also
// print the detection times that docs/heartbeat.md reports.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include <sys/socket.h>
#include <sys/wait.h>

#include "heartbeat/HeartbeatWatch.h"
#include "heartbeat/ResponderProcess.h"
#include "keel/core/EventLoop.h"
#include "keel/core/LoopThread.h"
#include "keel/heartbeat/Heartbeat.h"
#include "keel/heartbeat/HeartbeatMessage.h"
#include "keel/heartbeat/KeepAlive.h"
#include "keel/heartbeat/PongResponder.h"
#include "keel/net/Client.h"
#include "keel/net/Connection.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/Pipeline.h"
#include "keel/net/Server.h"
#include "support/LoopClient.h"
#include "support/Netns.h"
#include "support/Process.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::BlockingClient;
using test::frameOf;
using test::heartbeatFrame;
using test::msBetween;
using test::NetnsPair;
using test::nowNs;
using test::Outcome;
using test::ResponderProcess;
using test::ServerThread;
using test::Watch;

// PONGs received by the client's Heartbeat (0 while it is not connected).
std::uint64_t pongs(test::LoopClient& client) {
  std::uint64_t n = 0;
  client.with<Heartbeat>([&](Heartbeat& hb) { n = hb.pongsReceived(); });
  return n;
}

// ---- 2. PING-PONG over loopback ---------------------------------------------------

TEST(Heartbeat, PongsGiveRttSamplesOverLoopback) {
  ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<PongResponder>();
  });
  LoopThread thread("prober");
  EventLoop& loop = thread.start();
  Outcome out;
  test::LoopClient client(loop, srv.address(), [&](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<Heartbeat>(HeartbeatOptions{.keepaliveTime = 30ms, .probeInterval = 30ms});
    c.pipeline().emplaceLast<Watch>(&out);
  });
  ASSERT_TRUE(test::eventually([&] { return pongs(client) >= 5; }, 10s));
  Duration last{}, smoothed{};
  std::uint64_t pings = 0, pongs = 0, ignored = 1;
  ASSERT_TRUE(client.with<Heartbeat>([&](Heartbeat& hb) {
    last = hb.lastRtt();
    smoothed = hb.smoothedRtt();
    pings = hb.pingsSent();
    pongs = hb.pongsReceived();
    ignored = hb.pongsIgnored();
  }));
  EXPECT_GT(last, 0ns);
  EXPECT_GT(smoothed, 0ns);
  EXPECT_LT(last, 1s);
  EXPECT_GE(pings, pongs);
  EXPECT_EQ(ignored, 0u);
  EXPECT_FALSE(out.dead.load());
  EXPECT_FALSE(out.closed());
  EXPECT_EQ(out.foreignControl.load(), 0) << "PONGs must not reach the application";
  std::printf("[measure] loopback heartbeat RTT: last %lld us, smoothed %lld us over %llu PONGs\n",
              static_cast<long long>(std::chrono::duration_cast<microseconds>(last).count()),
              static_cast<long long>(std::chrono::duration_cast<microseconds>(smoothed).count()),
              static_cast<unsigned long long>(pongs));
}

class FrameEcho final : public Handler {
 public:
  void onFrame(HandlerContext& ctx, std::span<const char> frame) override { ctx.writeFrame(frame); }
};

class SendGoAwayOnConnect final : public Handler {
 public:
  void onConnected(HandlerContext& ctx) override {
    char f[HeartbeatMessage::kFrameBytes];
    HeartbeatMessage::goAway(7).encodeFrame(f);
    ctx.write(std::span<const char>(f, sizeof f));
    ctx.fireConnected();
  }
};

TEST(Heartbeat, GoAwayBecomesAUserEventOnBothSidesAndOtherFramesPassThrough) {
  Outcome serverOut;
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<PongResponder>();
    c.pipeline().emplaceLast<SendGoAwayOnConnect>();
    c.pipeline().emplaceLast<FrameEcho>();
    c.pipeline().emplaceLast<Watch>(&serverOut);
  });
  // The server's GOAWAY reaches a keel Heartbeat as an event.
  {
    LoopThread thread("prober");
    EventLoop& loop = thread.start();
    Outcome out;
    test::LoopClient client(loop, srv.address(), [&](Connection& c) {
      c.pipeline().emplaceLast<FrameCodec>();
      c.pipeline().emplaceLast<Heartbeat>();
      c.pipeline().emplaceLast<Watch>(&out);
    });
    ASSERT_TRUE(test::eventually([&] { return out.goAways.load() == 1; }));
    EXPECT_EQ(out.goAwayCode.load(), 7);
    EXPECT_FALSE(out.closed()) << "GOAWAY is advice; closing is the application's call";
  }
  // A plain peer: application frames are echoed untouched through the
  // PongResponder; a PING is answered; a foreign control frame and a GOAWAY
  // reach the server's application as events.
  BlockingClient peer(srv.address());
  ASSERT_TRUE(peer.connected());
  EXPECT_EQ(peer.recvExact(HeartbeatMessage::kFrameBytes), heartbeatFrame(HeartbeatMessage::goAway(7)));
  const std::string app = frameOf(test::randomBytes(1000, 3));
  EXPECT_EQ(peer.echo(app), app);
  const HeartbeatMessage ping = HeartbeatMessage::ping(77, Clock::now());
  EXPECT_EQ(peer.echo(heartbeatFrame(ping)), heartbeatFrame(HeartbeatMessage::pongFor(ping)));
  const int goAwaysBefore = serverOut.goAways.load();
  ASSERT_TRUE(peer.sendAll(frameOf("not a heartbeat", true) + heartbeatFrame(HeartbeatMessage::goAway(3))));
  EXPECT_TRUE(test::eventually([&] { return serverOut.foreignControl.load() == 1; }));
  EXPECT_TRUE(test::eventually([&] { return serverOut.goAways.load() == goAwaysBefore + 1; }));
  EXPECT_EQ(serverOut.goAwayCode.load(), 3);
}

// ---- 3. a stopped peer -------------------------------------------------------------

TEST(Heartbeat, StoppedPeerIsDeclaredDeadAndReset) {
  ResponderProcess peer(
      {.netns = "", .host = "127.0.0.1", .exitOnClose = true});  // forked before any thread exists
  ASSERT_TRUE(peer.ok());
  const HeartbeatOptions opts{.keepaliveTime = 200ms, .probeInterval = 100ms, .probeCount = 3};
  LoopThread thread("prober");
  EventLoop& loop = thread.start();
  Outcome out;
  test::LoopClient client(loop, peer.address(), [&](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<Heartbeat>(opts);
    c.pipeline().emplaceLast<Watch>(&out);
  });
  ASSERT_TRUE(test::eventually([&] { return pongs(client) >= 2; }, 10s)) << "the responder process answers";

  peer.stop();
  const std::int64_t stoppedAt = nowNs();
  ASSERT_TRUE(test::eventually([&] { return out.closed(); }, 10s));
  const milliseconds detected = msBetween(stoppedAt, out.closedAtNs.load());
  EXPECT_TRUE(out.closedWith(CloseReason::HeartbeatTimeout)) << out.reasonText();
  EXPECT_TRUE(out.deadBeforeClose.load()) << "PeerDead reaches the application before the close";
  EXPECT_GE(nanoseconds(out.deadSilenceNs.load()), opts.deadAfter());
  EXPECT_EQ(out.deadUnanswered.load(), 3u);
  EXPECT_LE(detected, opts.deadAfter() + 1500ms);
  std::printf(
      "[measure] SIGSTOP, heartbeat 200ms/100ms/3: detected %lld ms after the stop (silence %lld ms)\n",
      static_cast<long long>(detected.count()),
      static_cast<long long>(
          std::chrono::duration_cast<milliseconds>(nanoseconds(out.deadSilenceNs.load())).count()));

  // The close was a reset: once it runs again the peer reads ECONNRESET.
  peer.resume();
  const auto status = peer.waitExit(10s);
  ASSERT_TRUE(status.has_value()) << "the peer did not notice its connection had ended";
  ASSERT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 10 + static_cast<int>(CloseReason::PeerReset));
}

// ---- 6. what each mechanism detects [measure] --------------------------------------

// Writes a small frame every `period` (keeps data in flight for TCP_USER_TIMEOUT).
class Ticker final : public Handler {
 public:
  explicit Ticker(milliseconds period) : period_(period) {}
  ~Ticker() override { stop(); }
  void onConnected(HandlerContext& ctx) override {
    loop_ = &ctx.loop();
    ctx_ = &ctx;
    timer_ = loop_->runEvery(period_, [this] { ctx_->writeFrame(std::string_view("tick")); });
    ctx.fireConnected();
  }
  void onClosed(HandlerContext& ctx, CloseReason r) override {
    stop();
    ctx.fireClosed(r);
  }
  void handlerRemoved(HandlerContext&) override { stop(); }

 private:
  void stop() {
    if (loop_ != nullptr && timer_.valid()) loop_->cancel(timer_);
    timer_ = {};
  }
  milliseconds period_;
  EventLoop* loop_ = nullptr;
  HandlerContext* ctx_ = nullptr;
  TimerId timer_;
};

// Four connections to one responder, each watched by a different mechanism
// with the same 4 s budget.
struct Mechanisms {
  static constexpr HeartbeatOptions kHeartbeat{
      .keepaliveTime = 1000ms, .probeInterval = 1000ms, .probeCount = 3};
  static constexpr KeepAliveParams kKeepAlive{.idle = 1s, .interval = 1s, .count = 3, .userTimeout = 0ms};
  static constexpr milliseconds kUserTimeout{4000};

  Outcome heartbeat, keepalive, userTimeout, userTimeoutIdle;
  std::atomic<int> optionErrors{0};
  std::unique_ptr<test::LoopClient> hb, ka, ut, utIdle;

  void connect(EventLoop& loop, const SocketAddress& peer) {
    hb = std::make_unique<test::LoopClient>(loop, peer, [this](Connection& c) {
      c.pipeline().emplaceLast<FrameCodec>();
      c.pipeline().emplaceLast<Heartbeat>(kHeartbeat);
      c.pipeline().emplaceLast<Watch>(&heartbeat);
    });
    ka = std::make_unique<test::LoopClient>(loop, peer, [this](Connection& c) {
      if (enableKernelKeepAlive(c.socket(), kKeepAlive)) ++optionErrors;
      c.pipeline().emplaceLast<Watch>(&keepalive);
    });
    ut = std::make_unique<test::LoopClient>(loop, peer, [this](Connection& c) {
      if (c.socket().setUserTimeout(kUserTimeout)) ++optionErrors;
      c.pipeline().emplaceLast<FrameCodec>();
      c.pipeline().emplaceLast<Ticker>(250ms);
      c.pipeline().emplaceLast<Watch>(&userTimeout);
    });
    utIdle = std::make_unique<test::LoopClient>(loop, peer, [this](Connection& c) {
      if (c.socket().setUserTimeout(kUserTimeout)) ++optionErrors;
      c.pipeline().emplaceLast<Watch>(&userTimeoutIdle);
    });
  }
  bool allConnected() const {
    return heartbeat.connected && keepalive.connected && userTimeout.connected && userTimeoutIdle.connected;
  }
  // Destroys the clients (on their loop) while the loop still runs.
  void reset() {
    hb.reset();
    ka.reset();
    ut.reset();
    utIdle.reset();
  }
};

std::string describe(const Outcome& o, std::int64_t fromNs) {
  if (!o.closed()) return "not detected";
  return std::to_string(msBetween(fromNs, o.closedAtNs.load()).count()) + " ms (" + o.reasonText() + ")";
}

TEST(Detection, BlackHoledPeerHeartbeatVsKeepaliveVsUserTimeout) {
  NetnsPair ns("khb");
  if (!ns.ok()) GTEST_SKIP() << "black-hole test skipped: " << ns.error();
  ResponderProcess peer(
      {.netns = ns.b(), .host = "198.18.0.2", .exitOnClose = false});  // forked before any thread
  ASSERT_TRUE(peer.ok()) << "responder did not start in namespace " << ns.b();
  std::atomic<bool> inA{false};
  LoopThread thread("prober", [&](EventLoop&) { inA = test::enterNetns(ns.a()); });
  EventLoop& loop = thread.start();
  ASSERT_TRUE(inA.load()) << "could not enter namespace " << ns.a();

  Mechanisms m;
  m.connect(loop, peer.address());
  ASSERT_TRUE(test::eventually([&] { return m.allConnected(); }, 10s));
  ASSERT_EQ(m.optionErrors.load(), 0);
  ASSERT_TRUE(test::eventually([&] { return pongs(*m.hb) >= 1; }, 10s));

  const std::string cutError = ns.cutB();
  ASSERT_TRUE(cutError.empty()) << cutError;
  const std::int64_t cutAt = nowNs();
  EXPECT_TRUE(test::eventually(
      [&] { return m.heartbeat.closed() && m.keepalive.closed() && m.userTimeout.closed(); }, 20s));
  // Real time must pass: that the idle TCP_USER_TIMEOUT connection is NOT
  // closed is the kernel's doing, and no event says "it will not be"; one
  // more second past the busy one's detection is the margin.
  std::this_thread::sleep_for(1s);

  std::printf("[measure] black hole (veth down), 4 s budget each:\n");
  std::printf("[measure]   keel heartbeat 1s x 3         : %s\n", describe(m.heartbeat, cutAt).c_str());
  std::printf("[measure]   kernel keepalive 1s/1s/3      : %s\n", describe(m.keepalive, cutAt).c_str());
  std::printf("[measure]   TCP_USER_TIMEOUT 4s, 4 writes/s: %s\n", describe(m.userTimeout, cutAt).c_str());
  std::printf("[measure]   TCP_USER_TIMEOUT 4s, idle     : %s\n", describe(m.userTimeoutIdle, cutAt).c_str());

  EXPECT_TRUE(m.heartbeat.closedWith(CloseReason::HeartbeatTimeout)) << m.heartbeat.reasonText();
  EXPECT_TRUE(m.heartbeat.deadBeforeClose.load());
  EXPECT_GE(nanoseconds(m.heartbeat.deadSilenceNs.load()), Mechanisms::kHeartbeat.deadAfter());
  EXPECT_LE(msBetween(cutAt, m.heartbeat.closedAtNs.load()), Mechanisms::kHeartbeat.deadAfter() + 1500ms);
  // The kernel reports ETIMEDOUT (or the EHOSTUNREACH it saw meanwhile): a socket error.
  EXPECT_TRUE(m.keepalive.closedWith(CloseReason::Error)) << m.keepalive.reasonText();
  // The kernel's own timing is quantised by the retransmission back-off
  // (0.2, 0.4, 0.8, 1.6, 3.2 s...), which a loaded machine stretches: 8.7 s
  // was seen for the 4 s user timeout with the suite running beside it. Only
  // gross lateness is a failure here; bench section 5 measures the figures.
  EXPECT_LE(msBetween(cutAt, m.keepalive.closedAtNs.load()), 3 * Mechanisms::kKeepAlive.detection() + 2000ms);
  EXPECT_TRUE(m.userTimeout.closedWith(CloseReason::Error)) << m.userTimeout.reasonText();
  EXPECT_LE(msBetween(cutAt, m.userTimeout.closedAtNs.load()), 3 * Mechanisms::kUserTimeout + 2000ms);
  EXPECT_FALSE(m.userTimeoutIdle.closed()) << "TCP_USER_TIMEOUT needs data in flight";
  m.reset();
}

TEST(Detection, StoppedProcessHeartbeatVsKeepaliveVsUserTimeout) {
  ResponderProcess peer(ResponderProcess::Config{});  // forked before any thread exists
  ASSERT_TRUE(peer.ok());
  LoopThread thread("prober");
  EventLoop& loop = thread.start();
  Mechanisms m;
  m.connect(loop, peer.address());
  ASSERT_TRUE(test::eventually([&] { return m.allConnected(); }, 10s));
  ASSERT_EQ(m.optionErrors.load(), 0);
  ASSERT_TRUE(test::eventually([&] { return pongs(*m.hb) >= 1; }, 10s));

  peer.stop();
  const std::int64_t stoppedAt = nowNs();
  // Kernel keepalive would notice a dead host after 4 s; give it three times that.
  const auto watchFor = 3 * Mechanisms::kKeepAlive.detection();
  EXPECT_TRUE(test::eventually([&] { return m.heartbeat.closed(); }, 10s));
  std::this_thread::sleep_until(std::chrono::steady_clock::time_point(nanoseconds(stoppedAt)) + watchFor);

  std::printf("[measure] SIGSTOPped peer process, watched for %lld s:\n",
              static_cast<long long>(watchFor.count()));
  std::printf("[measure]   keel heartbeat 1s x 3         : %s\n", describe(m.heartbeat, stoppedAt).c_str());
  std::printf("[measure]   kernel keepalive 1s/1s/3      : %s\n", describe(m.keepalive, stoppedAt).c_str());
  std::printf("[measure]   TCP_USER_TIMEOUT 4s, 4 writes/s: %s\n",
              describe(m.userTimeout, stoppedAt).c_str());
  std::printf("[measure]   TCP_USER_TIMEOUT 4s, idle     : %s\n",
              describe(m.userTimeoutIdle, stoppedAt).c_str());

  EXPECT_TRUE(m.heartbeat.closedWith(CloseReason::HeartbeatTimeout)) << m.heartbeat.reasonText();
  EXPECT_LE(msBetween(stoppedAt, m.heartbeat.closedAtNs.load()), Mechanisms::kHeartbeat.deadAfter() + 1500ms);
  EXPECT_FALSE(m.keepalive.closed()) << "the stopped process's kernel answers keepalive probes";
  EXPECT_FALSE(m.userTimeout.closed()) << "the stopped process's kernel acknowledges our data";
  EXPECT_FALSE(m.userTimeoutIdle.closed());
  m.reset();
}

// ---- kernel keepalive settings -----------------------------------------------------

TEST(KeepAlive, SetsKeepaliveTimingAndUserTimeoutOnTheSocket) {
  Socket s = keel::test::openTcp(AF_INET);
  ASSERT_FALSE(enableKernelKeepAlive(s, {.idle = 5s, .interval = 2s, .count = 4, .userTimeout = 1500ms}));
  EXPECT_TRUE(s.keepAlive());
  EXPECT_EQ(s.keepIdle(), 5s);
  EXPECT_EQ(s.keepInterval(), 2s);
  EXPECT_EQ(s.keepCount(), 4);
  EXPECT_EQ(s.userTimeout(), 1500ms);
  EXPECT_EQ((KeepAliveParams{.idle = 5s, .interval = 2s, .count = 4}.detection()), 13s);
}

TEST(KeepAlive, OutOfRangeValuesAreRefusedBeforeAnythingChanges) {
  Socket s = keel::test::openTcp(AF_INET);
  for (const KeepAliveParams& bad : {KeepAliveParams{.idle = 0s}, KeepAliveParams{.interval = 0s},
                                     KeepAliveParams{.count = 0}, KeepAliveParams{.count = 128},
                                     KeepAliveParams{.idle = 40000s}, KeepAliveParams{.userTimeout = -1ms}}) {
    EXPECT_EQ(enableKernelKeepAlive(s, bad), std::make_error_code(std::errc::invalid_argument));
  }
  EXPECT_FALSE(s.keepAlive());
}

TEST(KeepAlive, DefaultDetectionTimeComesFromTheSysctls) {
  auto readLong = [](const char* path) {
    long v = -1;
    if (FILE* f = std::fopen(path, "r")) {
      if (std::fscanf(f, "%ld", &v) != 1) v = -1;
      std::fclose(f);
    }
    return v;
  };
  const long time = readLong("/proc/sys/net/ipv4/tcp_keepalive_time");
  const long intvl = readLong("/proc/sys/net/ipv4/tcp_keepalive_intvl");
  const long probes = readLong("/proc/sys/net/ipv4/tcp_keepalive_probes");
  if (time < 0 || intvl < 0 || probes < 0) GTEST_SKIP() << "cannot read /proc/sys/net/ipv4/tcp_keepalive_*";
  const KernelKeepAliveDefaults d = readKernelKeepAliveDefaults();
  EXPECT_TRUE(d.fromSysctl);
  const std::chrono::seconds expect(time + intvl * probes);
  EXPECT_EQ(defaultKeepAliveDetection(), expect);
  const auto h = std::chrono::duration_cast<std::chrono::hours>(expect);
  const auto min = std::chrono::duration_cast<std::chrono::minutes>(expect - h);
  const auto sec = expect - h - min;
  std::printf(
      "[measure] kernel keepalive defaults here: %ld + %ld x %ld s = %lld s (%lld h %lld min %lld s)\n", time,
      probes, intvl, static_cast<long long>(expect.count()), static_cast<long long>(h.count()),
      static_cast<long long>(min.count()), static_cast<long long>(sec.count()));
  if (time == 7200 && intvl == 75 && probes == 9) {
    EXPECT_EQ(expect, 2h + 11min + 15s);
  }
}

}  // namespace
}  // namespace keel
