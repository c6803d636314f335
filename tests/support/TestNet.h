// Test helpers on real sockets: a blocking client with timeouts, a server
// running on its own loop thread, and a TIME_WAIT counter that reads
// /proc/net/tcp{,6}.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <sys/types.h>

#include "keel/core/Fd.h"
#include "keel/core/LoopThread.h"
#include "keel/net/Server.h"
#include "keel/net/Socket.h"
#include "keel/net/SocketAddress.h"

namespace keel::test {

using namespace std::chrono_literals;

// Socket::tcp/udp/stream for tests: a socket that cannot be opened is a
// broken test machine, so it throws (and the test fails saying why).
[[nodiscard]] Socket openTcp(sa_family_t family);
[[nodiscard]] Socket openUdp(sa_family_t family);
[[nodiscard]] inline Socket openStream(sa_family_t family) { return openTcp(family); }

// A plain blocking-style client (poll with a deadline on every call), so the
// code under test is only ever on the server side.
class BlockingClient {
 public:
  explicit BlockingClient(const SocketAddress& addr, std::chrono::milliseconds timeout = 5000ms);
  [[nodiscard]] bool connected() const noexcept { return fd_.valid(); }
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  void setNoDelay(bool on);
  // Sends everything; false on error or timeout.
  bool sendAll(std::string_view data);
  // Reads exactly n bytes; what arrived before a timeout/EOF/error otherwise.
  std::string recvExact(std::size_t n);
  // Reads until EOF (or error/timeout); `eof` tells which ended it.
  std::string recvUntilEof(bool* eof = nullptr, int* err = nullptr);
  // Sends `data` while reading the echo back concurrently (no deadlock with
  // bounded buffers on either side); returns what came back.
  std::string echo(std::string_view data);
  void shutdownWrite();
  void close() { fd_.reset(); }
  [[nodiscard]] SocketAddress localAddress() const;

 private:
  bool waitFor(short events);
  Fd fd_;
  std::chrono::milliseconds timeout_;
};

// Runs f on the loop's thread and waits for it.
void runOn(EventLoop& loop, const std::function<void()>& f);

// A Server on a loop thread of its own, built and destroyed on that thread.
class ServerThread {
 public:
  using Configure = std::function<void(Server&)>;
  ServerThread(SocketAddress listen, ServerOptions options, Server::PipelineInit init,
               Configure configure = {});
  ~ServerThread();
  [[nodiscard]] SocketAddress address() const { return address_; }
  [[nodiscard]] EventLoop& loop() { return *loop_; }
  [[nodiscard]] Server& server() { return *server_; }
  // Runs f on the server's loop and waits for it.
  void runAndWait(const std::function<void()>& f);

 private:
  LoopThread thread_;
  EventLoop* loop_ = nullptr;
  std::unique_ptr<Server> server_;
  SocketAddress address_;
};

// A string unique to this process and call (pid and a counter), for names
// that parallel test processes must not share.
[[nodiscard]] std::string uniqueSuffix();

// A Unix-domain socket path under /tmp, unique to this process and call,
// removed before use and again when done.
class TempPath {
 public:
  explicit TempPath(const std::string& prefix = "keel_test");
  ~TempPath();
  TempPath(const TempPath&) = delete;
  TempPath& operator=(const TempPath&) = delete;
  [[nodiscard]] const std::string& str() const { return path_; }

 private:
  std::string path_;
};

// TIME_WAIT entries whose local or remote port is `port` (0: all); with
// `other` as well, only the entries between those two ports (one 4-tuple on
// loopback, unaffected by other tests reusing the same ephemeral port).
[[nodiscard]] int countTimeWait(std::uint16_t port = 0, std::uint16_t other = 0);
// Waits (polling) until pred() or the timeout; returns pred().
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5000ms);
// Deterministic pseudo-random bytes.
[[nodiscard]] std::string randomBytes(std::size_t n, std::uint32_t seed = 1);
// Path of a binary built next to the test binaries (build/<preset>/bin/NAME).
[[nodiscard]] std::string binaryPath(const std::string& name);
// A hostile client: sends up to `max` bytes on `fd` and never reads. Stops
// after `budget`, or once the peer has taken nothing for 500 ms (TCP's flow
// control holding it). Returns what was sent.
std::size_t pushWithoutReading(int fd, std::size_t max, std::chrono::milliseconds budget);
// A field of /proc/PID/status in KiB ("VmRSS:", "VmHWM:"); 0 if unreadable.
[[nodiscard]] long procStatusKiB(pid_t pid, std::string_view field);

}  // namespace keel::test
