// IdleActivity::Frames next to a Heartbeat, on a manual clock: PINGs and
// PONGs keep a connection alive in Bytes mode, so a member that stopped
// sending application frames (the presence service's STATUS) is reaped only
// when the reaper counts frames. Both ends are EmbeddedConnections and the
// test carries the bytes.
#include <gtest/gtest.h>

#include <string>

#include "heartbeat/HeartbeatWatch.h"
#include "keel/heartbeat/Heartbeat.h"
#include "keel/heartbeat/IdleReaper.h"
#include "keel/heartbeat/PongResponder.h"
#include "keel/net/Connection.h"
#include "keel/net/EmbeddedConnection.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/HandlerTimer.h"
#include "keel/net/Pipeline.h"
#include "support/ManualLoop.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::Outcome;
using test::Watch;

// Writes an application frame every `every` until `stopAfter` frames (0: never stops).
class Status final : public Handler {
 public:
  Status(Duration every, int stopAfter) : every_(every), left_(stopAfter) {}
  void onConnected(HandlerContext& ctx) override {
    ctx_ = &ctx;
    if (left_ != 0) timer_.arm(ctx, every_);
    ctx.fireConnected();
  }

 private:
  void tick() {
    (void)ctx_->writeFrame(std::string_view("STATUS"));
    if (--left_ != 0) timer_.arm(*ctx_, every_);
  }
  Duration every_;
  int left_;
  HandlerContext* ctx_ = nullptr;
  HandlerTimer timer_{[this] { tick(); }};
};

// The server side of one member: [FrameCodec][Heartbeat][IdleReaper][App];
// the member: [FrameCodec][PongResponder][Status].
struct Member {
  Member(IdleActivity activity, IdleLimits limits, int statusFrames)
      : server(m.loop, {}, 1), member(m.loop, {}, 2) {
    out.clock = [this] { return m.now().time_since_epoch().count(); };
    server.pipeline().emplaceLast<FrameCodec>();
    heartbeat = &server.pipeline().emplaceLast<Heartbeat>(HeartbeatOptions{
        .keepaliveTime = 300ms, .probeInterval = 100ms, .probeCount = 3, .jitterPercent = 0});
    reaper = &server.pipeline().emplaceLast<IdleReaper>(limits, IdleAction::Close, activity);
    server.pipeline().emplaceLast<Watch>(&out);
    member.pipeline().emplaceLast<FrameCodec>();
    member.pipeline().emplaceLast<PongResponder>();
    member.pipeline().emplaceLast<Status>(200ms, statusFrames);
    server.start();
    member.start();
  }
  void pump() {
    for (;;) {
      std::string toMember = server.takeOutput();
      std::string toServer = member.takeOutput();
      if (toMember.empty() && toServer.empty()) return;
      if (!toMember.empty() && !member.connection().closed()) member.feed(toMember);
      if (!toServer.empty() && !server.connection().closed()) server.feed(toServer);
    }
  }
  // Runs until `total` has passed or the server side closed; returns the time run.
  Duration run(Duration total) {
    Duration t{};
    for (; t < total && !out.closed(); t += 1ms) {
      m.advance(1ms);
      pump();
    }
    return t;
  }
  test::ManualLoop m;
  Outcome out;
  EmbeddedConnection server;
  EmbeddedConnection member;
  Heartbeat* heartbeat = nullptr;  // until the server side closes
  IdleReaper* reaper = nullptr;
};

constexpr IdleLimits kReader1s{.reader = 1000ms};

TEST(IdleFrames, AMemberThatOnlyAnswersPingsIsReapedInFramesMode) {
  Member t(IdleActivity::Frames, kReader1s, 0);
  const Duration ran = t.run(3s);
  EXPECT_TRUE(t.out.closedWith(CloseReason::IdleTimeout)) << "reason " << t.out.reason.load();
  EXPECT_EQ(ran, 1000ms) << "reaped at the reader limit";
  EXPECT_FALSE(t.out.dead.load()) << "the heartbeat itself saw a live peer";
}

TEST(IdleFrames, AMemberThatOnlyAnswersPingsIsNotReapedInBytesMode) {
  Member t(IdleActivity::Bytes, kReader1s, 0);
  t.run(3s);
  EXPECT_FALSE(t.out.closed()) << "PONGs count as reads";
  EXPECT_GT(t.heartbeat->pongsReceived(), 3u);
  EXPECT_EQ(t.reaper->detected(IdleKind::Reader), 0u);
}

TEST(IdleFrames, StatusFramesKeepAMemberAndItIsReapedALimitAfterTheLast) {
  // Five STATUS frames, at 200 ms ... 1000 ms, then only PONGs.
  Member t(IdleActivity::Frames, kReader1s, 5);
  const Duration ran = t.run(5s);
  EXPECT_EQ(t.out.frames.load(), 5);
  EXPECT_TRUE(t.out.closedWith(CloseReason::IdleTimeout));
  EXPECT_EQ(ran, 2000ms) << "one reader limit after the last STATUS";
}

TEST(IdleFrames, WriterSideCountsWriteFrameNotTheHeartbeatsRawWrites) {
  // The server application writes nothing; only the heartbeat's PINGs leave.
  Member quiet(IdleActivity::Frames, {.writer = 500ms}, 0);
  EXPECT_EQ(quiet.run(3s), 500ms);
  EXPECT_TRUE(quiet.out.closedWith(CloseReason::IdleTimeout));

  Member bytes(IdleActivity::Bytes, {.writer = 500ms}, 0);
  bytes.run(3s);
  EXPECT_FALSE(bytes.out.closed()) << "in Bytes mode the PINGs are writes";
}

TEST(IdleFrames, WriteFramesFromTheApplicationKeepTheWriterBusy) {
  Member t(IdleActivity::Frames, {.writer = 500ms}, 0);
  // An application frame every 200 ms, entering at the tail (behind the reaper).
  t.run(100ms);
  for (int i = 0; i < 15 && !t.out.closed(); ++i) {
    (void)t.server.pipeline().writeFrame(std::string_view("STATUS"));
    t.run(200ms);
  }
  EXPECT_FALSE(t.out.closed());
  EXPECT_EQ(t.reaper->detected(IdleKind::Writer), 0u);
}

}  // namespace
}  // namespace keel
