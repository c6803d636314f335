#include "keel/heartbeat/PongResponder.h"

#include <optional>

#include "keel/heartbeat/HeartbeatMessage.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/Pipeline.h"

namespace keel {

void PongResponder::onUserEvent(HandlerContext& ctx, const UserEvent& event) {
  const auto* control = dynamic_cast<const ControlFrame*>(&event);
  const std::optional<HeartbeatMessage> msg =
      control != nullptr ? HeartbeatMessage::decode(control->body) : std::nullopt;
  if (!msg) {
    ctx.fireUserEvent(event);
    return;
  }
  switch (msg->type) {
    case HeartbeatType::Ping: {
      char frame[HeartbeatMessage::kFrameBytes];  // on the stack: the connection copies what it queues
      HeartbeatMessage::pongFor(*msg).encodeFrame(frame);
      ++pingsAnswered_;
      ctx.write(std::span<const char>(frame, sizeof frame));
      return;
    }
    case HeartbeatType::GoAway:
      ++goAways_;
      ctx.fireUserEvent(HeartbeatEvent(HeartbeatEvent::Kind::GoAway, Duration::zero(), msg->flags, 0));
      return;
    case HeartbeatType::Pong:
      ctx.fireUserEvent(event);  // a Heartbeat further on measures it
      return;
  }
}

}  // namespace keel
