// The other snippets of docs/heartbeat.md, compiled against the current API
// (each function holds one snippet, as the doc writes it): a doc example
// that no longer compiles fails this build. The ones that need no socket or
// peer also run; the rest are exercised for real in heartbeat_test.cc,
// udp_heartbeat_test.cc and heartbeat_sampling_test.cc.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "keel/core/Log.h"
#include "keel/heartbeat/Heartbeat.h"
#include "keel/heartbeat/HeartbeatMessage.h"
#include "keel/heartbeat/IdleReaper.h"
#include "keel/heartbeat/KeepAlive.h"
#include "keel/heartbeat/UdpHeartbeat.h"
#include "keel/net/Connection.h"
#include "keel/net/EmbeddedConnection.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/Pipeline.h"
#include "keel/net/Server.h"
#include "support/ManualLoop.h"

namespace {

using namespace std::chrono_literals;

struct MyApp final : keel::Handler {};

// "Wire format"
void goAway(const keel::Connection::Ptr& conn) {
  char frame[keel::HeartbeatMessage::kFrameBytes];  // 28 bytes, on the stack
  keel::HeartbeatMessage::goAway(/*code=*/1).encodeFrame(frame);
  conn->sendBytes(std::string_view(frame, sizeof frame));  // from any thread
}

// "Lifecycle and run-time switching"
void toggle(const keel::Connection::Ptr& conn, const keel::HeartbeatOptions& opts) {
  conn->pipeline().remove<keel::Heartbeat>();                                  // off
  conn->pipeline().addBefore<MyApp>(std::make_unique<keel::Heartbeat>(opts));  // on again
}

// "RTT on a busy connection" and "Application silence"
[[maybe_unused]] void presence(keel::Server& server) {
  server.setPipelineInit([](keel::Connection& c) {
    c.pipeline().emplaceLast<keel::FrameCodec>();
    c.pipeline().emplaceLast<keel::Heartbeat>(
        keel::HeartbeatOptions{.keepaliveTime = 5s, .probeInterval = 1s, .rttSampleInterval = 1s});
    c.pipeline().emplaceLast<keel::IdleReaper>(keel::IdleLimits{.reader = 1s}, keel::IdleAction::Close,
                                               keel::IdleActivity::Frames);
    c.pipeline().emplaceLast<MyApp>();
  });
}

// "Kernel keepalive and TCP_USER_TIMEOUT"
[[maybe_unused]] void keepAlive(keel::Server& server) {
  server.setPipelineInit([](keel::Connection& c) {
    if (auto ec = keel::enableKernelKeepAlive(
            c.socket(), {.idle = 10s, .interval = 2s, .count = 3, .userTimeout = 16'000ms})) {
      KEEL_WARN("{}", ec.message());
    }
  });
  auto d = keel::defaultKeepAliveDetection();  // 7875 s here: what a plain SO_KEEPALIVE socket gets
  (void)d;
}

// "UDP"
[[maybe_unused]] void udp(keel::EventLoop& loop, keel::SocketAddress peerAddr,
                          keel::UdpEndpoint::MessageCallback appCallback) {
  keel::UdpHeartbeat hb(loop, peerAddr, {.keepaliveTime = 1s, .probeInterval = 1s, .probeCount = 3});
  keel::UdpEndpoint ep(loop, hb.wrap(appCallback));  // PONGs consumed; everything else reaches the app
  if (auto ec = ep.bind(keel::SocketAddress::any4(0))) {
    return;
  }
  hb.setRttCallback([](keel::Duration) {});
  hb.setDeadCallback([](keel::Duration) {});  // once; probing stops, start() resumes it
  hb.start(ep);

  keel::UdpEndpoint server(loop, keel::udpPongResponder(appCallback));  // the peer: answers PINGs
  hb.stop();
}

TEST(HeartbeatDocSnippets, GoAwayLeavesAsOneControlFrame) {
  keel::test::ManualLoop m;
  keel::EmbeddedConnection ec(m.loop);
  ec.pipeline().emplaceLast<keel::FrameCodec>();
  ec.start();
  goAway(ec.ptr());
  const std::string out = ec.takeOutput();
  ASSERT_EQ(out.size(), keel::HeartbeatMessage::kFrameBytes);
  EXPECT_EQ(static_cast<unsigned char>(out[0]), 0x80u) << "the control bit";
  const auto msg = keel::HeartbeatMessage::decode(std::span<const char>(out).subspan(4));
  ASSERT_TRUE(msg.has_value());
  EXPECT_EQ(msg->type, keel::HeartbeatType::GoAway);
  EXPECT_EQ(msg->flags, 1);
}

TEST(HeartbeatDocSnippets, RunTimeSwitchingRemovesAndReAddsTheHeartbeat) {
  keel::test::ManualLoop m;
  keel::EmbeddedConnection ec(m.loop);
  ec.pipeline().emplaceLast<keel::FrameCodec>();
  ec.pipeline().emplaceLast<keel::Heartbeat>(keel::HeartbeatOptions{.keepaliveTime = 1s});
  ec.pipeline().emplaceLast<MyApp>();
  ec.start();
  const keel::Connection::Ptr conn = ec.ptr();
  toggle(conn, keel::HeartbeatOptions{.keepaliveTime = 2s});
  keel::Heartbeat* hb = ec.pipeline().find<keel::Heartbeat>();
  ASSERT_NE(hb, nullptr);
  EXPECT_EQ(hb->options().keepaliveTime, 2s) << "the new one";
  EXPECT_TRUE(hb->probing()) << "added to an open connection: it starts at once";
}

}  // namespace
