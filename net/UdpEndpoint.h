// A UDP datagram endpoint on an EventLoop: bind and/or connect, receive every
// datagram through one callback, send with sendTo()/send().
//
// Receiving: one recvmmsg() per readiness reads up to `batch` datagrams. The
// loop is level-triggered, so datagrams left in the socket simply make it
// ready again on the next iteration; reading until EAGAIN would let one busy
// endpoint starve every other watcher on the loop. The receive buffers are
// allocated once, when the first socket is opened, and reused: there is no
// allocation per datagram.
//
// Truncation: a datagram longer than `maxDatagram` is cut by the kernel. A
// partial datagram is useless to any protocol, so it is dropped and counted
// in stats().truncated, never delivered.
//
// Sending: UDP has no send queue. When the socket buffer is full (EAGAIN) or
// the kernel is short of memory (ENOBUFS) the datagram is dropped and the
// error returned (and counted in stats().sendErrors); queueing it here would
// only add latency to a protocol that must tolerate loss anyway.
//
// Asynchronous errors: on a connected socket an ICMP error (port unreachable
// -> ECONNREFUSED, host/net unreachable) is reported by the next send() or
// sendTo(), which then does not send, exactly as the kernel behaves when the
// loop has not read the error first. Such an error never stops the reading.
//
// Thread-safety: loop thread only (construction excepted). The message
// callback may send, close() or even re-bind this endpoint, but must not
// destroy it; defer the destruction with EventLoop::queueInLoop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <system_error>
#include <vector>

#include <sys/socket.h>
#include <sys/uio.h>

#include "keel/core/Watcher.h"
#include "keel/net/Socket.h"
#include "keel/net/SocketAddress.h"

namespace keel {

class EventLoop;

struct UdpOptions {
  // Bytes. Larger datagrams are truncated by the kernel, then counted as
  // `truncated` and dropped. 65507 is the largest IPv4 UDP payload.
  std::size_t maxDatagram = 65507;
  // Datagrams read per readiness with one recvmmsg (clamped to 1..1024, the
  // kernel's limit). Memory held: batch * maxDatagram bytes.
  int batch = 16;
  bool reuseAddr = false;  // SO_REUSEADDR, applied by bind()
  bool reusePort = false;  // SO_REUSEPORT, applied by bind(): kernel load-balances across sockets
};

// Cumulative over the endpoint's life (close() and re-bind keep counting).
struct UdpStats {
  std::uint64_t datagramsIn = 0;   // delivered to the callback
  std::uint64_t datagramsOut = 0;  // accepted by the kernel
  std::uint64_t bytesIn = 0;
  std::uint64_t bytesOut = 0;
  std::uint64_t truncated = 0;      // longer than maxDatagram: dropped
  std::uint64_t sendErrors = 0;     // every send()/sendTo() that returned an error
  std::uint64_t receiveErrors = 0;  // recvmmsg failures other than EAGAIN and ICMP errors
};

class UdpEndpoint {
 public:
  // Called for each datagram; `data` is valid only during the call. May be
  // empty for a send-only endpoint: received datagrams are then counted and dropped.
  using MessageCallback =
      std::function<void(UdpEndpoint&, std::span<const char> data, const SocketAddress& from)>;

  UdpEndpoint(EventLoop& loop, MessageCallback cb, UdpOptions options = {});
  ~UdpEndpoint();
  UdpEndpoint(const UdpEndpoint&) = delete;
  UdpEndpoint& operator=(const UdpEndpoint&) = delete;

  // Creates the socket for the address family, binds it and starts reading.
  // On failure the endpoint stays closed (bind() may be retried). An endpoint
  // that already has a socket returns std::errc::invalid_argument: close() first.
  [[nodiscard]] std::error_code bind(const SocketAddress& local);
  // Fixes the peer: send() then works and only that peer's datagrams are
  // received. Creates the socket (kernel picks the local port) and starts
  // reading when the endpoint is not bound yet. May be called again to change peer.
  [[nodiscard]] std::error_code connect(const SocketAddress& peer);

  // One datagram, never blocks. An endpoint that is neither bound nor
  // connected returns std::errc::bad_file_descriptor.
  [[nodiscard]] std::error_code sendTo(std::span<const char> data, const SocketAddress& to);
  // Connected endpoints; others get std::errc::destination_address_required.
  [[nodiscard]] std::error_code send(std::span<const char> data);

  // Stops reading and closes the socket. Idempotent. Datagrams already read in
  // the current batch are not delivered after close().
  void close();

  // The bound address (with the kernel-chosen port), or AF_UNSPEC when closed.
  [[nodiscard]] SocketAddress localAddress() const;
  [[nodiscard]] const UdpStats& stats() const noexcept { return stats_; }
  // For options this class does not wrap (setReceiveBuffer...). Invalid while closed.
  [[nodiscard]] Socket& socket() noexcept { return socket_; }
  [[nodiscard]] EventLoop& loop() const noexcept { return loop_; }

 private:
  [[nodiscard]] std::error_code open(sa_family_t family);
  [[nodiscard]] std::error_code startReading();
  void retireWatcher();
  void allocateBuffers();
  void handleRead();
  void handleReceiveError(int err);
  [[nodiscard]] std::error_code sendImpl(std::span<const char> data, const sockaddr* to, socklen_t toLen);

  EventLoop& loop_;
  MessageCallback cb_;
  UdpOptions options_;
  UdpStats stats_;
  // An ICMP error the read path took from the socket, handed to the next send.
  std::error_code pendingError_;
  // Bumped by every open and close: a callback that closed or re-opened the
  // endpoint ends the delivery of the batch read from the old socket.
  std::uint64_t generation_ = 0;
  bool inReadHandler_ = false;

  // Receive area, allocated once: datagram i lands in
  // buffer_[i * maxDatagram ...], its sender in addrs_[i].
  std::unique_ptr<char[]> buffer_;
  std::vector<iovec> iovecs_;
  std::vector<sockaddr_storage> addrs_;
  std::vector<mmsghdr> msgs_;

  // Order matters: the watcher refers to the socket's fd, so it is declared
  // after the socket and therefore destroyed (removed from epoll) first.
  Socket socket_;
  std::unique_ptr<Watcher> watcher_;
};

}  // namespace keel
