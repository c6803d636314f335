// Counts sockets in TIME_WAIT through netlink sock_diag (the interface `ss`
// uses), with a /proc/net/tcp{,6} fallback where netlink is unavailable.
//
// The side that closes first holds each port pair for 60 s; on a client
// that opens short connections to one destination every TIME_WAIT entry
// holds an ephemeral port. Counting them is how keel shows that the
// "server closes first" mode works (docs/time-wait.md).
//
// Thread-safety: the functions are reentrant; each call opens its own socket.
#pragma once

#include <cstdint>
#include <optional>

#include "keel/net/SocketAddress.h"

namespace keel {

struct TimeWaitFilter {
  std::uint16_t localPort = 0;   // 0: any
  std::uint16_t remotePort = 0;  // 0: any
};

// TIME_WAIT sockets (IPv4 and IPv6) matching the filter; nullopt only when
// neither netlink nor /proc could be read.
[[nodiscard]] std::optional<std::size_t> countTimeWait(TimeWaitFilter filter = {});

// Sockets in TIME_WAIT whose local port is the server's listening port: the
// cost a server pays for closing first.
[[nodiscard]] inline std::optional<std::size_t> serverTimeWait(const SocketAddress& listen) {
  return countTimeWait({listen.port(), 0});
}
// Sockets in TIME_WAIT towards one destination port: each holds one of the
// client's ephemeral ports.
[[nodiscard]] inline std::optional<std::size_t> clientTimeWait(const SocketAddress& server) {
  return countTimeWait({0, server.port()});
}

}  // namespace keel
