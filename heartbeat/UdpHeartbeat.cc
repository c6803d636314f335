#include "keel/heartbeat/UdpHeartbeat.h"

#include <optional>

#include "keel/core/Log.h"
#include "keel/heartbeat/HeartbeatMessage.h"

namespace keel {

UdpHeartbeat::UdpHeartbeat(EventLoop& loop, SocketAddress peer, HeartbeatOptions options) noexcept
    : loop_(loop), peer_(peer), schedule_(options) {}

UdpHeartbeat::~UdpHeartbeat() { stop(); }

void UdpHeartbeat::start(UdpEndpoint& endpoint) {
  loop_.assertInLoopThread();
  stop();
  endpoint_ = &endpoint;
  dead_ = false;
  lastHeard_ = TimePoint{};
  schedule_.start(loop_.now());
  timer_ = loop_.runAfter(schedule_.firstDelay(), [this] { onTimer(); });
}

void UdpHeartbeat::stop() noexcept {
  if (timer_.valid()) loop_.cancel(timer_);
  timer_ = {};
}

bool UdpHeartbeat::onDatagram(std::span<const char> data, const SocketAddress& from) {
  if (!(from == peer_)) return false;
  // Any datagram from the peer proves it alive; the timer reads this when it fires.
  lastHeard_ = loop_.now();
  const std::optional<HeartbeatMessage> msg = HeartbeatMessage::decode(data);
  if (!msg) return false;
  switch (msg->type) {
    case HeartbeatType::Pong: {
      const std::uint64_t now = HeartbeatMessage::stamp(Clock::now());
      if (msg->sequence != 0 && msg->sequence < nextSequence_ && firstStamp_ != 0 &&
          msg->timestamp >= firstStamp_ && msg->timestamp <= now) {
        ++pongsReceived_;
        schedule_.pongReceived();
        rtt_.add(nanoseconds(static_cast<nanoseconds::rep>(now - msg->timestamp)));
        if (onRtt_) onRtt_(rtt_.last);
      }
      return true;
    }
    case HeartbeatType::GoAway:
      if (onGoAway_) onGoAway_(msg->flags);
      return true;
    case HeartbeatType::Ping:
      return false;
  }
  return false;
}

UdpEndpoint::MessageCallback UdpHeartbeat::wrap(UdpEndpoint::MessageCallback app) {
  return
      [this, app = std::move(app)](UdpEndpoint& ep, std::span<const char> data, const SocketAddress& from) {
        if (onDatagram(data, from)) return;
        if (app) app(ep, data, from);
      };
}

void UdpHeartbeat::sendPing() {
  const HeartbeatMessage ping = HeartbeatMessage::ping(nextSequence_++, Clock::now());
  if (firstStamp_ == 0) firstStamp_ = ping.timestamp;
  char body[HeartbeatMessage::kBodyBytes];
  ping.encode(body);
  ++pingsSent_;
  if (auto ec = endpoint_->sendTo(std::span<const char>(body, sizeof body), peer_)) {
    ++sendErrors_;
    KEEL_DEBUG("udp heartbeat to {}: {}", peer_.toString(), ec.message());
  }
}

void UdpHeartbeat::onTimer() {
  timer_ = {};
  const TimePoint now = loop_.now();
  const HeartbeatSchedule::Step step = schedule_.onTimer(now, lastHeard_);
  switch (step.action) {
    case HeartbeatSchedule::Action::Ping:
      sendPing();
      [[fallthrough]];
    case HeartbeatSchedule::Action::Wait:
      timer_ = loop_.runAfter(step.next, [this] { onTimer(); });
      return;
    case HeartbeatSchedule::Action::Dead:
      dead_ = true;
      KEEL_INFO("udp heartbeat: {} silent for {} ms after {} PINGs", peer_.toString(),
                std::chrono::duration_cast<milliseconds>(schedule_.silence(now)).count(),
                schedule_.probesOut());
      if (onDead_) onDead_(schedule_.silence(now));
      return;
  }
}

bool answerUdpPing(UdpEndpoint& endpoint, std::span<const char> data, const SocketAddress& from) {
  const std::optional<HeartbeatMessage> msg = HeartbeatMessage::decode(data);
  if (!msg || msg->type != HeartbeatType::Ping) return false;
  char body[HeartbeatMessage::kBodyBytes];
  HeartbeatMessage::pongFor(*msg).encode(body);
  // A lost PONG is what the prober's probe count is for; nothing to do on failure.
  (void)endpoint.sendTo(std::span<const char>(body, sizeof body), from);
  return true;
}

UdpEndpoint::MessageCallback udpPongResponder(UdpEndpoint::MessageCallback app) {
  return [app = std::move(app)](UdpEndpoint& ep, std::span<const char> data, const SocketAddress& from) {
    if (answerUdpPing(ep, data, from)) return;
    if (app) app(ep, data, from);
  };
}

}  // namespace keel
