#include "PresenceClient.h"

#include <cstdio>
#include <functional>
#include <string_view>

#include <keel/heartbeat/PongResponder.h>
#include <keel/net/FrameCodec.h>
#include <keel/net/HandlerTimer.h>

#include "Protocol.h"

namespace presence {
namespace {

// The application end: prints every frame from the server as "< FRAME".
class Member final : public keel::Handler {
 public:
  Member(ClientState& state, std::function<void()> onDone) : state_(state), onDone_(std::move(onDone)) {}

  void handlerAdded(keel::HandlerContext& ctx) override { ctx_ = &ctx; }

  void onConnected(keel::HandlerContext& ctx) override {
    std::printf("connected to %s\n", ctx.connection().peerAddress().toString().c_str());
    std::fflush(stdout);
    (void)ctx.writeFrame(std::string_view("JOIN " + state_.config.name));
    timer_.arm(ctx, state_.config.interval);
    ctx.fireConnected();
  }

  void onFrame(keel::HandlerContext&, std::span<const char> frame) override {
    std::printf("< %.*s\n", static_cast<int>(frame.size()), frame.data());
    std::fflush(stdout);
  }

  void onClosed(keel::HandlerContext& ctx, keel::CloseReason reason) override {
    std::printf("disconnected %s\n", std::string(keel::toString(reason)).c_str());
    std::fflush(stdout);
    ctx.fireClosed(reason);
  }

 private:
  void sendStatus() {
    if (state_.done) return;
    // A status that changes each time, so the others can see it move.
    (void)ctx_->writeFrame(std::string_view("STATUS " + std::to_string(++state_.sent)));
    if (state_.config.count != 0 && state_.sent >= state_.config.count) {
      state_.done = true;
      onDone_();
      return;
    }
    timer_.arm(*ctx_, state_.config.interval);
  }

  ClientState& state_;
  std::function<void()> onDone_;
  keel::HandlerContext* ctx_ = nullptr;
  keel::HandlerTimer timer_{[this] { sendStatus(); }};
};

}  // namespace

void initClientPipeline(keel::Connection& conn, ClientState& state, std::function<void()> onDone) {
  auto& p = conn.pipeline();
  p.emplaceLast<keel::FrameCodec>(kMaxFrame);
  p.emplaceLast<keel::Heartbeat>(state.config.heartbeat);
  p.emplaceLast<keel::PongResponder>();
  p.emplaceLast<Member>(state, std::move(onDone));
}

}  // namespace presence
