// The answering side of the application heartbeat.
//
//   pipeline: [FrameCodec][PongResponder][...][App]
//
// On a PING control frame it writes a PONG that echoes the PING's sequence
// and timestamp (the prober measures the round trip on its own clock, so
// this side needs no clock and keeps no state per PING). A GOAWAY becomes a
// HeartbeatEvent (Kind::GoAway) for the handlers after it. Every other
// control frame is passed on as it came, and application frames never touch
// this handler (it does not override onFrame or onData).
//
// The PONG is written from the handler's position, so only the handlers
// before it (towards the socket) see it. With write coalescing on it leaves
// with whatever else the iteration wrote.
//
// Thread-safety: loop thread of the connection only.
#pragma once

#include <cstdint>

#include "keel/net/Handler.h"

namespace keel {

class PongResponder final : public Handler {
 public:
  [[nodiscard]] std::string_view name() const noexcept override { return "pong-responder"; }
  void onUserEvent(HandlerContext& ctx, const UserEvent& event) override;

  [[nodiscard]] std::uint64_t pingsAnswered() const noexcept { return pingsAnswered_; }
  [[nodiscard]] std::uint64_t goAwaysReceived() const noexcept { return goAways_; }

 private:
  std::uint64_t pingsAnswered_ = 0;
  std::uint64_t goAways_ = 0;
};

}  // namespace keel
