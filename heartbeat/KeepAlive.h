// Kernel-level liveness for a TCP socket: SO_KEEPALIVE with per-socket
// timing, and TCP_USER_TIMEOUT. docs/heartbeat.md compares what each one
// detects (measured) with keel's application heartbeat.
//
//   keepalive: after `idle` without any segment, the kernel sends up to
//              `count` probes `interval` apart; no answer -> ETIMEDOUT.
//              The PEER'S KERNEL answers, so a hung or stopped process
//              is never detected, only a dead host or a broken path.
//   user timeout: data we sent stays unacknowledged this long -> ETIMEDOUT.
//              Needs data in flight; on an idle connection it does
//              nothing by itself. When set, Linux also uses it instead of
//              `count` to end keepalive probing (the connection drops once
//              a probe is outstanding and `userTimeout` has passed).
//
// Thread-safety: like the Socket; call on the socket's loop thread (or
// before the socket is handed to a loop).
#pragma once

#include <chrono>
#include <system_error>

#include "keel/net/Socket.h"

namespace keel {

struct KeepAliveParams {
  std::chrono::seconds idle{60};      // TCP_KEEPIDLE: 1..32767 s
  std::chrono::seconds interval{10};  // TCP_KEEPINTVL: 1..32767 s
  int count = 6;                      // TCP_KEEPCNT: 1..127
  // TCP_USER_TIMEOUT; zero turns it off (the kernel default).
  std::chrono::milliseconds userTimeout{0};

  // How long a silent dead peer goes unnoticed with these settings (no user timeout).
  [[nodiscard]] std::chrono::seconds detection() const noexcept { return idle + interval * count; }
};

// Sets SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT and TCP_USER_TIMEOUT. Values out
// of the kernel's ranges give std::errc::invalid_argument before anything is
// changed; a failing setsockopt returns its error (options before it stay set).
[[nodiscard]] std::error_code enableKernelKeepAlive(Socket& socket, const KeepAliveParams& params) noexcept;

// The system-wide keepalive timing (net.ipv4.tcp_keepalive_{time,intvl,probes}
// of the caller's network namespace). Falls back to Linux's built-in defaults
// (7200 s, 75 s, 9) for a value that cannot be read, and says so.
struct KernelKeepAliveDefaults {
  std::chrono::seconds time{7200};
  std::chrono::seconds interval{75};
  int probes = 9;
  bool fromSysctl = false;  // all three were read from /proc/sys

  [[nodiscard]] std::chrono::seconds detection() const noexcept { return time + interval * probes; }
};
[[nodiscard]] KernelKeepAliveDefaults readKernelKeepAliveDefaults();

// How long a dead peer goes unnoticed on a socket that only turns
// SO_KEEPALIVE on: time + intvl * probes (7200 + 9 * 75 s = 2 h 11 min 15 s
// on a default machine).
[[nodiscard]] std::chrono::seconds defaultKeepAliveDetection();

}  // namespace keel
