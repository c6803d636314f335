// The heartbeat wire format: one fixed 24-byte body, all integers big-endian.
//
//   offset  size  field
//        0     4  magic "KLHB"
//        4     1  version (1)
//        5     1  type: 1 PING, 2 PONG, 3 GOAWAY
//        6     2  flags (reserved for the application; GOAWAY may carry a code)
//        8     8  sequence
//       16     8  timestamp: the PING sender's steady-clock nanoseconds
//
// A PONG echoes the PING's sequence and timestamp, so the prober computes the
// round trip from its own clock alone (the two ends' clocks never meet).
//
// Over TCP a message travels as a FrameCodec *control* frame: the 4-byte
// length header with bit 31 set, then the body (28 bytes in all), so it can
// share a connection with application frames without the application ever
// seeing it. Over UDP a datagram is exactly the 24-byte body.
//
// decode() is strict: a wrong size, magic, version or type is refused, so a
// stray datagram or a future version never passes for a heartbeat.
//
// HeartbeatEvent (HeartbeatEvent.h, included here and by Heartbeat.h) is the
// user event both Heartbeat and PongResponder raise.
//
// Thread-safety: value types and pure functions; no shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "keel/core/Time.h"
#include "keel/heartbeat/HeartbeatEvent.h"
#include "keel/net/FrameCodec.h"

namespace keel {

enum class HeartbeatType : std::uint8_t { Ping = 1, Pong = 2, GoAway = 3 };
[[nodiscard]] std::string_view toString(HeartbeatType t) noexcept;

struct HeartbeatMessage {
  static constexpr std::size_t kBodyBytes = 24;
  static constexpr std::size_t kFrameBytes = FrameCodec::kHeaderBytes + kBodyBytes;
  static constexpr std::uint8_t kVersion = 1;
  static constexpr char kMagic[4] = {'K', 'L', 'H', 'B'};

  HeartbeatType type = HeartbeatType::Ping;
  std::uint16_t flags = 0;
  std::uint64_t sequence = 0;
  std::uint64_t timestamp = 0;  // steady-clock nanoseconds of the PING's sender

  [[nodiscard]] static HeartbeatMessage ping(std::uint64_t sequence, TimePoint sentAt) noexcept {
    return {HeartbeatType::Ping, 0, sequence, stamp(sentAt)};
  }
  // The answer to `ping`: same sequence, same timestamp.
  [[nodiscard]] static HeartbeatMessage pongFor(const HeartbeatMessage& ping) noexcept {
    return {HeartbeatType::Pong, ping.flags, ping.sequence, ping.timestamp};
  }
  [[nodiscard]] static HeartbeatMessage goAway(std::uint16_t code = 0) noexcept {
    return {HeartbeatType::GoAway, code, 0, 0};
  }

  // The body into a caller's buffer (no allocation).
  void encode(std::span<char, kBodyBytes> out) const noexcept;
  // FrameCodec control header + body, ready for HandlerContext::write or
  // Connection::send.
  void encodeFrame(std::span<char, kFrameBytes> out) const noexcept;
  // nullopt unless `body` is exactly one valid version-1 message.
  [[nodiscard]] static std::optional<HeartbeatMessage> decode(std::span<const char> body) noexcept;

  // Steady-clock time <-> the wire's nanosecond count.
  [[nodiscard]] static std::uint64_t stamp(TimePoint t) noexcept {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<nanoseconds>(t.time_since_epoch()).count());
  }
  [[nodiscard]] static TimePoint unstamp(std::uint64_t ns) noexcept {
    return TimePoint(std::chrono::duration_cast<Duration>(nanoseconds(static_cast<nanoseconds::rep>(ns))));
  }

  friend bool operator==(const HeartbeatMessage&, const HeartbeatMessage&) = default;
};

}  // namespace keel
