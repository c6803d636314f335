// docs/heartbeat.md, "The handlers", compiled with the headers that snippet
// names and no others: Heartbeat.h must be enough for HeartbeatEvent (it was
// once only in HeartbeatMessage.h). Do not add heartbeat includes here; the
// include list is the test. The pipelines then run on EmbeddedConnections,
// so MyApp's event handling is exercised, not only compiled.
#include <keel/heartbeat/Heartbeat.h>
#include <keel/heartbeat/PongResponder.h>
#include <keel/net/Client.h>
#include <keel/net/Connection.h>
#include <keel/net/FrameCodec.h>
#include <keel/net/Pipeline.h>
#include <keel/net/Server.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "keel/net/EmbeddedConnection.h"
#include "support/ManualLoop.h"

namespace {

using namespace std::chrono_literals;

std::vector<keel::HeartbeatEvent::Kind> seen;  // what MyApp was told

struct MyApp final : keel::Handler {
  // ---- from the doc, verbatim but for the recording ----
  // In MyApp: learn why the connection is about to close, or that the peer is leaving.
  void onUserEvent(keel::HandlerContext& ctx, const keel::UserEvent& ev) override {
    if (auto* hb = dynamic_cast<const keel::HeartbeatEvent*>(&ev)) {
      if (hb->kind == keel::HeartbeatEvent::Kind::PeerDead) { /* hb->silence, hb->pingsUnanswered */
        seen.push_back(hb->kind);
      }
      if (hb->kind == keel::HeartbeatEvent::Kind::GoAway) { /* hb->code: drain, reconnect elsewhere */
        seen.push_back(hb->kind);
      }
      return;
    }
    ctx.fireUserEvent(ev);
  }
};

// ---- from the doc, verbatim ----
void install(keel::Client& client, keel::Server& server) {
  client.setPipelineInit([](keel::Connection& c) {
    c.pipeline().emplaceLast<keel::FrameCodec>();
    c.pipeline().emplaceLast<keel::Heartbeat>(keel::HeartbeatOptions{
        .keepaliveTime = 10s, .probeInterval = 2s, .probeCount = 3});  // dead after 16 s
    c.pipeline().emplaceLast<MyApp>();
  });
  server.setPipelineInit([](keel::Connection& c) {
    c.pipeline().emplaceLast<keel::FrameCodec>();
    c.pipeline().emplaceLast<keel::PongResponder>();
    c.pipeline().emplaceLast<MyApp>();
  });
}

// The same pipelines, as the lambdas above build them.
void clientPipeline(keel::Connection& c) {
  c.pipeline().emplaceLast<keel::FrameCodec>();
  c.pipeline().emplaceLast<keel::Heartbeat>(
      keel::HeartbeatOptions{.keepaliveTime = 10s, .probeInterval = 2s, .probeCount = 3});
  c.pipeline().emplaceLast<MyApp>();
}

TEST(HeartbeatDoc, HandlersSnippetCompilesWithHeartbeatHAndSeesPeerDead) {
  (void)&install;  // compiled is the point; a Client and Server need real sockets
  seen.clear();
  keel::test::ManualLoop m;
  keel::EmbeddedConnection prober(m.loop);
  clientPipeline(prober.connection());
  prober.start();
  m.advance(16s + 1ms);  // nobody answers: dead after 10 + 3 x 2 s
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], keel::HeartbeatEvent::Kind::PeerDead);
  EXPECT_TRUE(prober.connection().closed());
}

}  // namespace
