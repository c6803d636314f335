// The heartbeat's knobs and its probing schedule as pure arithmetic on
// times, shared by Heartbeat (TCP) and UdpHeartbeat, and testable without
// sockets. Included by Heartbeat.h; nothing here needs a loop.
//
// Two kinds of PING come out of one schedule, and one timer serves both:
//   liveness PINGs   only after keepaliveTime of silence (lazy: any inbound
//                    byte resets the spell), and the dead verdict;
//   RTT samples      with rttSampleInterval > 0, one PING per interval
//                    whatever the traffic, so a busy connection still gets a
//                    round-trip time. Samples never change a liveness
//                    decision: they are not counted as probes, and their
//                    PONGs count as proof of life only as any inbound byte does.
// A sample is skipped while an earlier PING (of either kind) is unanswered
// and younger than probeInterval, so a slow peer is never sent a second
// PING to queue behind the first. After probeInterval the PING counts as
// lost (a UDP datagram can be) and sampling goes on.
//
// Thread-safety: none (owned by one loop's object).
#pragma once

#include <cstdint>

#include "keel/core/Time.h"

namespace keel {

class Counter;
class Histogram;

struct HeartbeatOptions {
  milliseconds keepaliveTime{30'000};  // silence before the first PING
  milliseconds probeInterval{5'000};   // between PINGs while the peer stays silent
  int probeCount = 3;                  // PINGs (intervals) without any sign of life before the peer is dead
  int jitterPercent = 10;              // the first PING comes up to this share of keepaliveTime early
  // Zero (default): PINGs only in silence, which is all liveness needs and
  // costs a busy connection nothing. Otherwise one PING per interval even
  // under traffic, for a round-trip time: 28 bytes each way per interval and
  // one more timer callback, never work per message.
  milliseconds rttSampleInterval{0};
  // Where each PONG's round trip (in seconds) and each dead peer are
  // recorded; null (default) records nothing. Set by
  // publishHeartbeatMetrics (metrics/ServerMetrics.h). Not owned.
  Histogram* rttMetric = nullptr;
  Counter* deadPeerMetric = nullptr;

  // Silence after which the peer is declared dead.
  [[nodiscard]] Duration deadAfter() const noexcept { return keepaliveTime + probeInterval * probeCount; }
};

// The owner calls onTimer() whenever its single timer fires, sends a PING
// for Action::Ping and re-arms the timer for Step::next; it reports every
// PONG that matched one of its PINGs with pongReceived().
class HeartbeatSchedule {
 public:
  enum class Action : std::uint8_t {
    Wait,  // not due: re-arm for `next`
    Ping,  // send a PING now, then re-arm for `next`
    Dead,  // the peer is dead: do not re-arm
  };
  struct Step {
    Action action;
    Duration next;        // > 0 for Wait and Ping
    bool sample = false;  // Ping: an RTT sample, not a liveness probe
  };

  // Options are normalised: negative durations become zero, counts are
  // clamped (probeCount >= 0, jitterPercent 0..100).
  explicit HeartbeatSchedule(HeartbeatOptions options = {}) noexcept;

  // A silent spell starts at `now` (probing begins), with a given jitter (at
  // most keepaliveTime * jitterPercent / 100; larger values are clamped).
  // The first RTT sample is brought forward by the same share of
  // rttSampleInterval, so connections started together sample apart too.
  void start(TimePoint now, Duration jitter) noexcept;
  // The same, drawing the jitter from a per-thread generator.
  void start(TimePoint now) noexcept { start(now, drawJitter()); }
  // Delay from start() to the first timer expiry.
  [[nodiscard]] Duration firstDelay() const noexcept;

  // The timer fired at `now`; `lastHeard` is the latest proof of life.
  [[nodiscard]] Step onTimer(TimePoint now, TimePoint lastHeard) noexcept;
  // A PONG answered one of the owner's PINGs: the next sample may go.
  void pongReceived() noexcept { awaiting_ = false; }

  [[nodiscard]] bool sampling() const noexcept { return options_.rttSampleInterval.count() > 0; }
  [[nodiscard]] Duration silence(TimePoint now) const noexcept { return now - since_; }
  [[nodiscard]] int probesOut() const noexcept { return probes_; }  // PINGs sent in this silent spell
  [[nodiscard]] std::uint64_t samplesSent() const noexcept { return samples_; }
  [[nodiscard]] std::uint64_t samplesSkipped() const noexcept {
    return skipped_;
  }  // slots with a PING unanswered
  [[nodiscard]] Duration jitter() const noexcept { return jitter_; }
  [[nodiscard]] const HeartbeatOptions& options() const noexcept { return options_; }
  [[nodiscard]] Duration drawJitter() const;

 private:
  [[nodiscard]] Duration pingDue(int k) const noexcept {
    return Duration(options_.keepaliveTime) - jitter_ + Duration(options_.probeInterval) * k;
  }
  [[nodiscard]] Step liveness(TimePoint now, TimePoint lastHeard) noexcept;
  [[nodiscard]] bool outstanding(TimePoint now) const noexcept {
    return awaiting_ && now - pingAt_ < Duration(options_.probeInterval);
  }
  void sent(TimePoint now) noexcept {
    awaiting_ = true;
    pingAt_ = now;
  }

  HeartbeatOptions options_;
  Duration jitter_{};
  TimePoint since_{};       // start of the current silent spell (the last proof of life)
  TimePoint lastPing_{};    // when the last liveness PING of this spell went out
  TimePoint pingAt_{};      // when the last PING of either kind went out
  TimePoint nextSample_{};  // the next RTT sample slot (sampling only)
  int probes_ = 0;
  bool awaiting_ = false;  // a PING is unanswered
  std::uint64_t samples_ = 0;
  std::uint64_t skipped_ = 0;
};

// Round-trip time smoothing as TCP does it (RFC 6298): the first sample sets
// srtt = R and rttvar = R/2; later ones rttvar = 3/4 rttvar + 1/4 |srtt - R|,
// srtt = 7/8 srtt + 1/8 R.
struct RttEstimate {
  Duration last{};
  Duration smoothed{};
  Duration variance{};
  std::uint64_t samples = 0;

  void add(Duration sample) noexcept;
};

}  // namespace keel
