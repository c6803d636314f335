// RAII owner of a socket descriptor: always non-blocking and close-on-exec.
//
// Option setters return std::error_code ([[nodiscard]]): a failed option is
// never silently ignored; the caller logs or acts on it. errorMessage() turns
// one into "setsockopt(TCP_NODELAY) on fd 7: Bad file descriptor" style text.
// Opening a socket (tcp, udp, stream) and accept report failures through an
// error_code (EMFILE is a condition to handle, not a bug). Getters throw
// std::system_error on failure: getsockopt on a live socket failing is a
// programming error. docs/design.md has the whole error policy.
//
// Thread-safety: like a file descriptor; keel uses each Socket on one loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include <sys/socket.h>

#include "keel/core/Fd.h"
#include "keel/net/SocketAddress.h"

namespace keel {

// The subset of struct tcp_info that matters for latency work.
struct TcpInfo {
  std::uint8_t state = 0;            // TCP_ESTABLISHED etc.
  std::chrono::microseconds rtt{0};  // smoothed RTT
  std::chrono::microseconds rttvar{0};
  std::uint32_t retransmits = 0;  // current consecutive retransmits
  std::uint32_t totalRetrans = 0;
  std::uint32_t unacked = 0;  // segments in flight
  std::uint32_t lost = 0;
  std::uint32_t sndCwnd = 0;  // congestion window, segments
  std::uint32_t sndMss = 0;
  std::uint32_t rcvSpace = 0;
  std::uint64_t bytesAcked = 0;
  std::uint64_t bytesReceived = 0;
  std::chrono::milliseconds lastDataRecv{0};  // since the last data was received
  std::chrono::milliseconds lastAckRecv{0};   // since the last ACK was received
  std::uint32_t notsentBytes = 0;             // written to the socket, not yet sent
  std::uint32_t segsOut = 0;                  // segments sent, retransmissions included
  std::uint32_t segsIn = 0;                   // segments received
};

struct Linger {
  bool on = false;
  std::chrono::seconds timeout{0};
};

class Socket {
 public:
  Socket() noexcept = default;
  explicit Socket(Fd fd) noexcept : fd_(std::move(fd)) {}

  // socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0). On failure the
  // Socket is invalid and `ec` says why (EMFILE, EAFNOSUPPORT...).
  [[nodiscard]] static Socket tcp(sa_family_t family, std::error_code& ec) noexcept;
  [[nodiscard]] static Socket udp(sa_family_t family, std::error_code& ec) noexcept;
  [[nodiscard]] static Socket stream(sa_family_t family, std::error_code& ec) noexcept {  // also AF_UNIX
    return tcp(family, ec);
  }

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  [[nodiscard]] bool valid() const noexcept { return fd_.valid(); }
  void close() noexcept { fd_.reset(); }
  [[nodiscard]] Fd release() noexcept { return Fd(fd_.release()); }

  [[nodiscard]] std::error_code bind(const SocketAddress& addr) noexcept;
  [[nodiscard]] std::error_code listen(int backlog = SOMAXCONN) noexcept;
  // Non-blocking connect: returns {} when connected at once, or
  // std::errc::operation_in_progress when the connect is under way.
  [[nodiscard]] std::error_code connect(const SocketAddress& addr) noexcept;
  // accept4(NONBLOCK|CLOEXEC). On failure the Socket is invalid and `ec` says why.
  [[nodiscard]] Socket accept(SocketAddress* peer, std::error_code& ec) noexcept;
  [[nodiscard]] std::error_code shutdownWrite() noexcept;

  [[nodiscard]] SocketAddress localAddress() const;
  [[nodiscard]] SocketAddress peerAddress() const;
  // SO_ERROR: the pending error, cleared by reading it.
  [[nodiscard]] std::error_code takeError() const noexcept;
  // A TCP connect to a local port can connect to itself (same address and port
  // on both ends) when the port is in the ephemeral range.
  [[nodiscard]] bool isSelfConnect() const;

  // ---- options --------------------------------------------------------------
  [[nodiscard]] std::error_code setNoDelay(bool on) noexcept;
  [[nodiscard]] std::error_code setQuickAck(bool on) noexcept;  // not sticky: Linux clears it
  [[nodiscard]] std::error_code setCork(bool on) noexcept;
  [[nodiscard]] std::error_code setKeepAlive(bool on) noexcept;
  // TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT; sub-second values round up to 1 s.
  [[nodiscard]] std::error_code setKeepAliveParams(std::chrono::seconds idle, std::chrono::seconds interval,
                                                   int count) noexcept;
  [[nodiscard]] std::error_code setUserTimeout(std::chrono::milliseconds timeout) noexcept;
  [[nodiscard]] std::error_code setLinger(Linger linger) noexcept;
  [[nodiscard]] std::error_code setReuseAddr(bool on) noexcept;
  [[nodiscard]] std::error_code setReusePort(bool on) noexcept;
  [[nodiscard]] std::error_code setSendBuffer(int bytes) noexcept;
  [[nodiscard]] std::error_code setReceiveBuffer(int bytes) noexcept;
  [[nodiscard]] std::error_code setIpv6Only(bool on) noexcept;

  [[nodiscard]] bool noDelay() const;
  [[nodiscard]] bool quickAck() const;
  [[nodiscard]] bool cork() const;
  [[nodiscard]] bool keepAlive() const;
  [[nodiscard]] std::chrono::seconds keepIdle() const;
  [[nodiscard]] std::chrono::seconds keepInterval() const;
  [[nodiscard]] int keepCount() const;
  [[nodiscard]] std::chrono::milliseconds userTimeout() const;
  [[nodiscard]] Linger linger() const;
  [[nodiscard]] bool reuseAddr() const;
  [[nodiscard]] bool reusePort() const;
  [[nodiscard]] int sendBuffer() const;  // as the kernel reports it (doubled)
  [[nodiscard]] int receiveBuffer() const;
  [[nodiscard]] bool ipv6Only() const;  // IPV6_V6ONLY (AF_INET6 sockets only)

  // getsockopt(TCP_INFO); nullopt for non-TCP sockets.
  [[nodiscard]] std::optional<TcpInfo> tcpInfo() const noexcept;

  // "setsockopt(TCP_NODELAY) on fd 7: Bad file descriptor"
  [[nodiscard]] static std::string errorMessage(std::string_view what, int fd, std::error_code ec);

 private:
  [[nodiscard]] std::error_code setInt(int level, int name, int value) noexcept;
  [[nodiscard]] int getInt(int level, int name, const char* what) const;

  Fd fd_;
};

}  // namespace keel
