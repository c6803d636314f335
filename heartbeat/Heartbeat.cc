#include "keel/heartbeat/Heartbeat.h"

#include <algorithm>

#include "keel/core/Log.h"
#include "keel/heartbeat/HeartbeatMessage.h"
#include "keel/metrics/Registry.h"
#include "keel/net/Connection.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/Pipeline.h"

namespace keel {

// ---- Heartbeat ------------------------------------------------------------------
Heartbeat::Heartbeat(HeartbeatOptions options) noexcept : schedule_(options) {}

void Heartbeat::handlerAdded(HandlerContext& ctx) {
  ctx_ = &ctx;
  // Added at run time to a live connection: start now. Otherwise onConnected does.
  if (ctx.connection().state() == ConnectionState::Open) start();
}

void Heartbeat::handlerRemoved(HandlerContext&) { stop(); }

void Heartbeat::onConnected(HandlerContext& ctx) {
  start();
  ctx.fireConnected();
}

void Heartbeat::onClosed(HandlerContext& ctx, CloseReason reason) {
  stop();
  ctx.fireClosed(reason);
}

void Heartbeat::start() {
  if (probing_ || ctx_ == nullptr) return;
  Connection& conn = ctx_->connection();
  probing_ = true;
  // Silence is counted from now, not from the connection's last read: a
  // handler switched on for a connection that was quiet for an hour must
  // not declare it dead on the spot.
  schedule_.start(ctx_->loop().now());
  writeAtCheck_ = conn.stats().lastWrite;
  queuedAtCheck_ = conn.outputBytes() > 0;
  drainedAt_ = TimePoint{};
  timer_.arm(*ctx_, schedule_.firstDelay());
}

void Heartbeat::stop() noexcept {
  probing_ = false;
  timer_.cancel();
}

TimePoint Heartbeat::lastHeard() {
  const Connection& conn = ctx_->connection();
  const ConnectionStats& st = conn.stats();
  const bool queuedNow = conn.outputBytes() > 0;
  // lastWrite moves when the kernel takes bytes. It proves the peer alive only
  // when those bytes came from our queue (the send buffer had been full, so
  // room in it means the peer acknowledged data): a PING written straight
  // into an empty send buffer proves nothing. Queued now but not at the last
  // check can also be a large write into a half-full buffer; that costs at
  // most one extra timer round for a dead peer, never a false alarm.
  if (st.lastWrite > writeAtCheck_ && (queuedAtCheck_ || queuedNow)) drainedAt_ = st.lastWrite;
  writeAtCheck_ = st.lastWrite;
  queuedAtCheck_ = queuedNow;
  return std::max(st.lastRead, drainedAt_);
}

void Heartbeat::onTimer() {
  // A HandlerTimer callback: this handler outlives the call even when a
  // handler the events below reach closes the connection.
  Connection& conn = ctx_->connection();
  if (conn.state() != ConnectionState::Open) {
    // After a FIN either way, PINGs cannot leave or PONGs cannot come back;
    // the connection's shutdown/close deadlines take over.
    probing_ = false;
    return;
  }
  const TimePoint now = ctx_->loop().now();
  const HeartbeatSchedule::Step step = schedule_.onTimer(now, lastHeard());

  switch (step.action) {
    case HeartbeatSchedule::Action::Wait:
      break;
    case HeartbeatSchedule::Action::Ping: {
      const TimePoint sentAt = Clock::now();  // the precise clock: RTT samples are sub-millisecond
      const HeartbeatMessage ping = HeartbeatMessage::ping(nextSequence_++, sentAt);
      if (firstStamp_ == 0) firstStamp_ = ping.timestamp;
      char frame[HeartbeatMessage::kFrameBytes];
      ping.encodeFrame(frame);
      ++pingsSent_;
      // A refused PING (the connection can no longer write) needs nothing
      // here: the state check below ends probing.
      (void)ctx_->write(std::span<const char>(frame, sizeof frame));
      break;
    }
    case HeartbeatSchedule::Action::Dead: {
      probing_ = false;
      const Duration silent = schedule_.silence(now);
      KEEL_INFO("conn {} ({}): peer silent for {} ms after {} PINGs; closing (heartbeat-timeout)", conn.id(),
                conn.peerAddress().toString(), std::chrono::duration_cast<milliseconds>(silent).count(),
                schedule_.probesOut());
      const HeartbeatEvent dead(HeartbeatEvent::Kind::PeerDead, silent, 0,
                                static_cast<std::uint64_t>(schedule_.probesOut()));
      if (Counter* m = schedule_.options().deadPeerMetric) m->inc();
      ctx_->fireUserEvent(dead);
      // The application may have closed the connection in response.
      if (!conn.closed()) ctx_->close(CloseReason::HeartbeatTimeout);
      return;
    }
  }
  if (probing_ && conn.state() == ConnectionState::Open) {
    timer_.arm(*ctx_, step.next);
  } else {
    probing_ = false;
  }
}

void Heartbeat::onUserEvent(HandlerContext& ctx, const UserEvent& event) {
  const auto* control = dynamic_cast<const ControlFrame*>(&event);
  if (control == nullptr) {
    ctx.fireUserEvent(event);
    return;
  }
  const std::optional<HeartbeatMessage> msg = HeartbeatMessage::decode(control->body);
  if (!msg) {
    ctx.fireUserEvent(event);  // someone else's control frame
    return;
  }
  switch (msg->type) {
    case HeartbeatType::Pong:
      onPong(*msg);
      return;
    case HeartbeatType::GoAway:
      ctx.fireUserEvent(HeartbeatEvent(HeartbeatEvent::Kind::GoAway, Duration::zero(), msg->flags, 0));
      return;
    case HeartbeatType::Ping:
      ctx.fireUserEvent(event);  // for a PongResponder further on
      return;
  }
}

void Heartbeat::onPong(const HeartbeatMessage& pong) {
  // The PONG's bytes already counted as proof of life (lastRead); here it
  // only has to be a plausible answer to one of our PINGs to give an RTT.
  const std::uint64_t now = HeartbeatMessage::stamp(Clock::now());
  if (pong.sequence == 0 || pong.sequence >= nextSequence_ || firstStamp_ == 0 ||
      pong.timestamp < firstStamp_ || pong.timestamp > now) {
    ++pongsIgnored_;
    return;
  }
  ++pongsReceived_;
  schedule_.pongReceived();
  const nanoseconds rtt(static_cast<nanoseconds::rep>(now - pong.timestamp));
  rtt_.add(rtt);
  if (Histogram* m = schedule_.options().rttMetric) m->observe(std::chrono::duration<double>(rtt).count());
}

}  // namespace keel
