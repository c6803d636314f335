// Internal to keel (not installed): Server's listening socket.
//
// A listening socket on one loop that accepts in bounded batches.
//
// Running out of descriptors (EMFILE/ENFILE) must not turn the level-
// triggered loop into a spin: the acceptor keeps one spare descriptor, and
// when accept fails for lack of descriptors it frees the spare, accepts the
// pending connection, closes it at once (the client sees a clean close, not
// a hang), and takes the spare back.
//
// Thread-safety: loop thread only.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <system_error>

#include "keel/core/Fd.h"
#include "keel/core/TimerWheel.h"
#include "keel/core/Watcher.h"
#include "keel/net/Socket.h"

namespace keel {

class Acceptor {
 public:
  // `peer` is the address accept() returned: a connection reset while it
  // waited in the backlog has no address to ask getpeername for later.
  using NewConnection = std::function<void(Socket socket, const SocketAddress& peer)>;

  // Written on the loop thread, readable from any thread.
  struct Stats {
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> droppedNoFd{0};  // accepted and closed at once for lack of descriptors
    std::atomic<std::uint64_t> errors{0};
  };

  Acceptor(EventLoop& loop, NewConnection cb, int batch = 64);
  ~Acceptor();
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  // socket, SO_REUSEADDR (+ SO_REUSEPORT), bind, listen, start watching.
  [[nodiscard]] std::error_code listen(const SocketAddress& addr, bool reusePort, int backlog);
  // Accepts on a socket someone else bound and listened on (socket
  // activation, handoff): made non-blocking and close-on-exec, then watched.
  // The caller has checked it (checkListener).
  [[nodiscard]] std::error_code adopt(Socket listening);
  // A close-on-exec dup() of the listening socket, to hand to another
  // process; invalid with `ec` set when not listening or out of descriptors.
  [[nodiscard]] Fd duplicate(std::error_code& ec) const;
  // Stops accepting and closes the listening socket.
  void close();
  // Paused: stays bound (the kernel queues up to the backlog) but not accepting.
  void pause();
  void resume();

  [[nodiscard]] SocketAddress localAddress() const { return socket_.localAddress(); }
  [[nodiscard]] const Stats& stats() const noexcept { return stats_; }
  [[nodiscard]] bool listening() const noexcept { return socket_.valid(); }

 private:
  void onReadable();
  [[nodiscard]] std::error_code watch();

  EventLoop& loop_;
  NewConnection cb_;
  int batch_;
  Socket socket_;
  Fd spare_;
  Stats stats_;
  TimerId backoff_;
  std::unique_ptr<Watcher> watcher_;
};

}  // namespace keel
