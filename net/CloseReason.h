// Why a connection ended. Every close carries one; it reaches the handlers'
// onClosed, the application and the log.
#pragma once

#include <cstdint>
#include <string_view>

namespace keel {

enum class CloseReason : std::uint8_t {
  PeerClosed,        // peer's FIN, and we finished our side
  PeerReset,         // ECONNRESET / EPIPE / EPOLLERR from the peer
  LocalClose,        // close(): flushed, then closed
  Abort,             // abort(): RST, no TIME_WAIT
  IdleTimeout,       // IdleReaper
  HeartbeatTimeout,  // Heartbeat declared the peer dead
  ProtocolError,     // a codec or handler refused the input
  Overloaded,        // output hard cap exceeded, or server full
  Shutdown,          // graceful shutdown() completed or timed out, server stop
  Error,             // any other socket error (see the log for errno)
  TlsError,          // TLS handshake, certificate or record failure (TlsHandler::error())
  TlsTruncated,      // the peer's FIN came without a TLS close_notify
};

[[nodiscard]] constexpr std::string_view toString(CloseReason r) noexcept {
  switch (r) {
    case CloseReason::PeerClosed:
      return "peer-closed";
    case CloseReason::PeerReset:
      return "peer-reset";
    case CloseReason::LocalClose:
      return "local-close";
    case CloseReason::Abort:
      return "abort";
    case CloseReason::IdleTimeout:
      return "idle-timeout";
    case CloseReason::HeartbeatTimeout:
      return "heartbeat-timeout";
    case CloseReason::ProtocolError:
      return "protocol-error";
    case CloseReason::Overloaded:
      return "overloaded";
    case CloseReason::Shutdown:
      return "shutdown";
    case CloseReason::Error:
      return "error";
    case CloseReason::TlsError:
      return "tls-error";
    case CloseReason::TlsTruncated:
      return "tls-truncated";
  }
  return "unknown";
}

inline constexpr int kCloseReasonCount = 12;

[[nodiscard]] constexpr std::uint32_t reasonBit(CloseReason r) noexcept {
  return std::uint32_t{1} << static_cast<unsigned>(r);
}

}  // namespace keel
