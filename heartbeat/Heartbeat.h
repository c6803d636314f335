// Application-level PING-PONG on the probing side of a connection.
//
//   pipeline: [FrameCodec][Heartbeat][...][App]      (the peer: [FrameCodec][PongResponder][...])
//
// Proof of life is ANY inbound byte (Connection::stats().lastRead, kept by
// the connection anyway), plus output draining: when bytes we had queued
// are taken by the kernel (stats().lastWrite advancing while output was
// queued), the peer is acknowledging, i.e. reading, a large stream we send.
// Without that rule a busy peer that reads megabytes from us would be
// declared dead because our PING sits behind the queue (Netty #6150). The
// handler therefore does no work per message at all: it does not override
// onData or onFrame.
//
// Timer discipline (Netty IdleStateHandler style): one timer on the loop's
// wheel per connection. Activity never touches it. When it fires, the handler
// computes how long the connection has really been silent and either re-arms
// for the remainder, sends a PING, or declares the peer dead. With steady
// traffic that is one timer callback per keepaliveTime per connection.
//
// Schedule, in time since the last proof of life ("silence"):
//   first PING   keepaliveTime - jitter   (jitter: uniform in [0, keepaliveTime * jitterPercent / 100],
//                                          drawn per start, so 10,000 connections do not ping in one ms)
//   PING k       first + k * probeInterval, k < probeCount
//   dead         keepaliveTime + probeCount * probeInterval   (+ up to one wheel tick)
// The peer is declared dead only once the last PING has had a full
// probeInterval to be answered, so a loop that stalled (ours) and fired the
// timer late cannot kill a peer that never had the chance to answer.
//
// Death: a HeartbeatEvent (HeartbeatEvent.h, included here; Kind::PeerDead) goes to the handlers after this
// one, then ctx.close(CloseReason::HeartbeatTimeout). ConnectionOptions::
// resetOnReasons makes that a reset by default (no TIME_WAIT for a dead peer).
//
// Each PONG yields an RTT sample measured on this side's steady clock
// (lastRtt, smoothedRtt, rttVariance: RFC 6298 smoothing). On a busy
// connection the lazy schedule above never sends a PING, so there is no RTT;
// HeartbeatOptions::rttSampleInterval adds one PING per interval whatever the
// traffic (see HeartbeatSchedule.h). Liveness is decided exactly as without
// it, and it is the same one timer: the timer fires at whichever is due first. GOAWAY is raised
// as HeartbeatEvent (Kind::GoAway). PINGs and other control frames are
// passed on (a PongResponder after this handler answers PINGs when both
// sides probe).
//
// Probing starts in onConnected (or handlerAdded on an open connection) and
// stops in onClosed/handlerRemoved, and when the connection leaves the Open
// state (after a FIN either way no PONG can arrive or no PING can leave; the
// connection's own shutdown/close timeouts bound those states). Removing and
// re-adding the handler at run time therefore switches probing off and on.
//
// Thread-safety: loop thread of the connection only (like every handler).
#pragma once

#include <cstdint>

#include "keel/core/EventLoop.h"
#include "keel/core/Time.h"
#include "keel/heartbeat/HeartbeatEvent.h"
#include "keel/heartbeat/HeartbeatSchedule.h"
#include "keel/net/Handler.h"
#include "keel/net/HandlerTimer.h"

namespace keel {

struct HeartbeatMessage;

class Heartbeat final : public Handler {
 public:
  using Options = HeartbeatOptions;

  explicit Heartbeat(HeartbeatOptions options = {}) noexcept;
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  [[nodiscard]] std::string_view name() const noexcept override { return "heartbeat"; }
  void handlerAdded(HandlerContext& ctx) override;
  void handlerRemoved(HandlerContext& ctx) override;
  void onConnected(HandlerContext& ctx) override;
  void onUserEvent(HandlerContext& ctx, const UserEvent& event) override;
  void onClosed(HandlerContext& ctx, CloseReason reason) override;

  // ---- loop thread ---------------------------------------------------------
  [[nodiscard]] bool probing() const noexcept { return probing_; }
  // Every PING sent; samplePingsSent() of them were RTT samples.
  [[nodiscard]] std::uint64_t pingsSent() const noexcept { return pingsSent_; }
  [[nodiscard]] std::uint64_t samplePingsSent() const noexcept { return schedule_.samplesSent(); }
  [[nodiscard]] std::uint64_t pongsReceived() const noexcept { return pongsReceived_; }
  // PONGs that matched no PING of this handler (wrong sequence or timestamp).
  [[nodiscard]] std::uint64_t pongsIgnored() const noexcept { return pongsIgnored_; }
  // Zero until the first PONG.
  [[nodiscard]] Duration lastRtt() const noexcept { return rtt_.last; }
  [[nodiscard]] Duration smoothedRtt() const noexcept { return rtt_.smoothed; }
  [[nodiscard]] Duration rttVariance() const noexcept { return rtt_.variance; }
  [[nodiscard]] const HeartbeatOptions& options() const noexcept { return schedule_.options(); }
  [[nodiscard]] const HeartbeatSchedule& schedule() const noexcept { return schedule_; }

 private:
  void start();
  void stop() noexcept;
  void onTimer();
  // Latest proof of life: inbound bytes, or queued output taken by the kernel.
  TimePoint lastHeard();
  void onPong(const HeartbeatMessage& pong);

  HeartbeatSchedule schedule_;
  HandlerContext* ctx_ = nullptr;  // set in handlerAdded; lives as long as this handler
  HandlerTimer timer_{[this] { onTimer(); }};
  bool probing_ = false;

  // Output-drain tracking, sampled only when the timer fires.
  TimePoint writeAtCheck_{};
  bool queuedAtCheck_ = false;
  TimePoint drainedAt_{};

  std::uint64_t nextSequence_ = 1;
  std::uint64_t firstStamp_ = 0;  // wire timestamp of this handler's first PING
  std::uint64_t pingsSent_ = 0;
  std::uint64_t pongsReceived_ = 0;
  std::uint64_t pongsIgnored_ = 0;
  RttEstimate rtt_;
};

}  // namespace keel
