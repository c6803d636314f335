// The application heartbeat over UDP (keel::UdpEndpoint): a prober that
// pings one peer address, and a responder that answers PINGs.
//
// A datagram is exactly the 24-byte HeartbeatMessage body. The prober uses
// the same knobs and the same schedule as the TCP Heartbeat (HeartbeatOptions,
// HeartbeatSchedule): any datagram from the peer's address is proof of life,
// each PONG gives an RTT sample, and after keepaliveTime + probeInterval *
// probeCount of silence the dead callback runs once and probing stops
// (start() again to resume). UDP has no connection to close: what "dead"
// means is the application's to decide. rttSampleInterval adds RTT-sample
// PINGs under traffic exactly as for TCP; a lost sample PONG holds the next
// sample back for at most probeInterval.
//
//   UdpHeartbeat hb(loop, peer, {.keepaliveTime = 1s, .probeInterval = 1s, .probeCount = 3});
//   UdpEndpoint ep(loop, hb.wrap(appCallback));   // PONGs consumed, the rest reaches the app
//   if (auto ec = ep.bind(local)) ...;
//   hb.setDeadCallback([](Duration silence) { ... });
//   hb.start(ep);
//
//   UdpEndpoint server(loop, udpPongResponder(appCallback));   // the peer
//
// Failed sends (EAGAIN, ICMP errors on a connected endpoint) are only
// counted: UDP loses datagrams anyway, and an ICMP error is no proof of
// death (it may be forged or transient). Silence is what counts.
//
// Thread-safety: loop thread only (construction excepted). Callbacks run on
// the loop thread and must not destroy the prober or its endpoint (defer
// that with EventLoop::queueInLoop). The endpoint must outlive the probing:
// stop() (or destroy the prober) before the endpoint goes away.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "keel/core/EventLoop.h"
#include "keel/heartbeat/Heartbeat.h"
#include "keel/net/SocketAddress.h"
#include "keel/net/UdpEndpoint.h"

namespace keel {

class UdpHeartbeat {
 public:
  using RttCallback = std::function<void(Duration rtt)>;
  using DeadCallback = std::function<void(Duration silence)>;
  using GoAwayCallback = std::function<void(std::uint16_t code)>;

  UdpHeartbeat(EventLoop& loop, SocketAddress peer, HeartbeatOptions options = {}) noexcept;
  ~UdpHeartbeat();
  UdpHeartbeat(const UdpHeartbeat&) = delete;
  UdpHeartbeat& operator=(const UdpHeartbeat&) = delete;

  void setRttCallback(RttCallback cb) { onRtt_ = std::move(cb); }
  void setDeadCallback(DeadCallback cb) { onDead_ = std::move(cb); }
  void setGoAwayCallback(GoAwayCallback cb) { onGoAway_ = std::move(cb); }

  // Starts (or restarts) probing the peer through `endpoint`; silence is
  // counted from now.
  void start(UdpEndpoint& endpoint);
  void stop() noexcept;

  // Feed every datagram the endpoint receives. Returns true when it was a
  // heartbeat PONG or GOAWAY from the peer (consumed); anything else,
  // including PINGs, is the caller's to pass on.
  [[nodiscard]] bool onDatagram(std::span<const char> data, const SocketAddress& from);
  // A message callback for the endpoint: onDatagram first, then `app` for
  // what it did not consume. Captures `this`: the prober must outlive the endpoint's use of it.
  [[nodiscard]] UdpEndpoint::MessageCallback wrap(UdpEndpoint::MessageCallback app = {});

  [[nodiscard]] bool probing() const noexcept { return timer_.valid(); }
  [[nodiscard]] bool peerDead() const noexcept { return dead_; }
  [[nodiscard]] const SocketAddress& peer() const noexcept { return peer_; }
  [[nodiscard]] std::uint64_t pingsSent() const noexcept { return pingsSent_; }
  [[nodiscard]] std::uint64_t pongsReceived() const noexcept { return pongsReceived_; }
  [[nodiscard]] std::uint64_t sendErrors() const noexcept { return sendErrors_; }
  [[nodiscard]] Duration lastRtt() const noexcept { return rtt_.last; }  // zero until the first PONG
  [[nodiscard]] Duration smoothedRtt() const noexcept { return rtt_.smoothed; }
  [[nodiscard]] const HeartbeatSchedule& schedule() const noexcept { return schedule_; }

 private:
  void onTimer();
  void sendPing();

  EventLoop& loop_;
  SocketAddress peer_;
  HeartbeatSchedule schedule_;
  UdpEndpoint* endpoint_ = nullptr;
  TimerId timer_;
  TimePoint lastHeard_{};
  bool dead_ = false;
  std::uint64_t nextSequence_ = 1;
  std::uint64_t firstStamp_ = 0;
  std::uint64_t pingsSent_ = 0;
  std::uint64_t pongsReceived_ = 0;
  std::uint64_t sendErrors_ = 0;
  RttEstimate rtt_;
  RttCallback onRtt_;
  DeadCallback onDead_;
  GoAwayCallback onGoAway_;
};

// Answers a PING datagram with a PONG to its sender. Returns true when
// `data` was a PING (consumed); everything else is the caller's.
[[nodiscard]] bool answerUdpPing(UdpEndpoint& endpoint, std::span<const char> data,
                                 const SocketAddress& from);

// A message callback that answers PINGs and hands every other datagram
// (PONGs and GOAWAYs included) to `app`.
[[nodiscard]] UdpEndpoint::MessageCallback udpPongResponder(UdpEndpoint::MessageCallback app = {});

}  // namespace keel
