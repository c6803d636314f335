// HeartbeatEvent, the user event both Heartbeat and PongResponder raise for
// the handlers after them. It has a header of its own so that Heartbeat.h
// and HeartbeatMessage.h can both include it: an application that handles
// the event needs only the header of the handler it installs.
//
// Thread-safety: a value type.
#pragma once

#include <cstdint>

#include "keel/core/Time.h"
#include "keel/net/Handler.h"

namespace keel {

// Raised (on the stack) for the handlers after a Heartbeat or PongResponder.
struct HeartbeatEvent final : UserEvent {
  enum class Kind : std::uint8_t {
    PeerDead,  // Heartbeat: nothing heard for the whole dead time; the connection closes next
    GoAway,    // the peer sent GOAWAY: it is about to leave (drain, reconnect elsewhere)
  };
  HeartbeatEvent(Kind k, Duration s, std::uint16_t c, std::uint64_t unanswered) noexcept
      : kind(k), silence(s), code(c), pingsUnanswered(unanswered) {}

  Kind kind;
  Duration silence;               // PeerDead: how long the peer had been silent
  std::uint16_t code;             // GoAway: the flags field of the GOAWAY
  std::uint64_t pingsUnanswered;  // PeerDead: PINGs sent in the silent spell
};

}  // namespace keel
