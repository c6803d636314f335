// A deadline on incomplete messages: the answer to a slowloris.
//
// IdleReaper's reader limit counts any inbound byte as activity, so a peer
// that trickles one byte a second is never reader-idle while it pins a
// connection (and its partial-message buffer) for ever. MessageDeadline
// watches what the handlers after it leave unconsumed instead: once a read
// leaves bytes of an incomplete message in the input buffer, the rest of
// that message must arrive within `limit`. When the handlers after it have
// consumed everything (every message complete), the clock stops. A peer
// that is silent between messages is not its concern; that is IdleReaper's
// reader limit. Use both against hostile peers:
//
//   [MessageDeadline][FrameCodec][IdleReaper][App]
//
// It must sit before (towards the socket) the codec or handler that
// consumes whole messages, so that it sees the input after they have taken
// what they could. Any framing works: length-prefixed, lines, HTTP heads.
// Set `limit` above the time the largest legitimate message takes at the
// slowest rate you accept.
//
// At the deadline a MessageTimeout event goes to the handlers after this
// one (an HTTP server answers 408 there), then the connection is closed with
// CloseReason::IdleTimeout: a flush, so that answer is delivered, then a
// close (add IdleTimeout to ConnectionOptions::resetOnReasons for a reset
// instead). A handler that closed or shut down the connection itself in the
// event is left to its own close.
//
// Cost: one comparison per read; one timer per connection on the loop's
// wheel, armed when a partial message starts while no timer is armed and
// re-armed for the remainder when it fires early (IdleReaper's discipline).
// A connection whose messages always arrive whole never arms it.
//
// Thread-safety: the connection's loop thread only, like every handler.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "keel/core/Time.h"
#include "keel/net/Handler.h"
#include "keel/net/HandlerTimer.h"

namespace keel {

class EventLoop;

// Raised (on the stack) towards the application at the deadline.
struct MessageTimeout final : UserEvent {
  MessageTimeout(Duration w, std::size_t b) noexcept : waited(w), bytes(b) {}
  Duration waited;    // since the incomplete message began
  std::size_t bytes;  // of it waiting in the input buffer
};

class MessageDeadline final : public Handler {
 public:
  explicit MessageDeadline(std::chrono::milliseconds limit) noexcept : limit_(limit) {}
  MessageDeadline(const MessageDeadline&) = delete;
  MessageDeadline& operator=(const MessageDeadline&) = delete;

  [[nodiscard]] std::string_view name() const noexcept override { return "message-deadline"; }
  [[nodiscard]] std::chrono::milliseconds limit() const noexcept { return limit_; }
  // Connections this handler closed (0 or 1; for tests and metrics).
  [[nodiscard]] std::uint64_t expired() const noexcept { return expired_; }
  // True while bytes of an incomplete message are waiting.
  [[nodiscard]] bool partial() const noexcept { return partial_; }
  [[nodiscard]] bool armed() const noexcept { return timer_.armed(); }

  void handlerAdded(HandlerContext& ctx) override;
  void handlerRemoved(HandlerContext& ctx) override;
  void onData(HandlerContext& ctx, Buffer& in) override;
  void onClosed(HandlerContext& ctx, CloseReason reason) override;

 private:
  void onTimer();

  std::chrono::milliseconds limit_;
  HandlerContext* ctx_ = nullptr;  // valid between handlerAdded and handlerRemoved
  HandlerTimer timer_{[this] { onTimer(); }};
  TimePoint partialSince_{};  // loop time at which the current incomplete message began
  bool partial_ = false;
  std::uint64_t expired_ = 0;
};

}  // namespace keel
