// One TCP (or Unix-stream) connection on one loop.
//
// State machine (docs/net.md has the diagram):
//   Connecting -> Open -> PeerHalfClosed   (peer sent FIN; we may still write)
//                      -> LocalHalfClosed  (we sent FIN after shutdown(); we still read)
//                      -> Closing          (close(): flushing, then close)
//                      -> Closed
// A peer FIN is an event (onPeerHalfClosed), never a silent teardown: output
// already queued is still delivered. Every close carries a CloseReason.
//
// Lifetime: held by shared_ptr. The owner (Server or Client) keeps a
// reference until the loop has finished the iteration in which the
// connection closed, so a connection is never destroyed inside its own
// callbacks. Timers and cross-thread tasks hold weak references.
//
// Thread-safety: send(), shutdown(), close(), abort() and forceClose() are
// safe from any thread; everything else (and everything named *Raw or
// *InLoop) is for the connection's loop thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "keel/core/EventLoop.h"
#include "keel/core/Time.h"
#include "keel/core/Watcher.h"
#include "keel/net/Buffer.h"
#include "keel/net/CloseReason.h"
#include "keel/net/Pipeline.h"
#include "keel/net/Slices.h"
#include "keel/net/Socket.h"

namespace keel {

// Caps and policies of one connection. docs/limits.md lists the defaults and
// what happens at each.
struct ConnectionOptions {
  std::size_t highWatermark = 1 << 20;       // 1 MiB queued: onHighWatermark
  std::size_t lowWatermark = 256 << 10;      // drained to 256 KiB: onWritable
  std::size_t maxOutputBytes = 64 << 20;     // 64 MiB queued: close(Overloaded)
  std::size_t maxInputBytes = 4 << 20;       // 4 MiB unconsumed input: pause reading
  std::size_t maxReadPerEvent = 256 << 10;   // cap on one readv (fairness between connections)
  bool pauseReadingAtHighWatermark = false;  // backpressure: stop reading a peer that does not drain
  bool coalesceWrites = false;               // defer writes to one sendmsg at the end of the loop iteration
  Duration shutdownTimeout = std::chrono::seconds(10);  // shutdown(): wait for the peer's FIN this long
  Duration closeTimeout = std::chrono::seconds(30);     // close(): wait for output to drain this long
  // keel's default answer to a peer FIN (applied by the pipeline's tail):
  // deliver what is queued, then close. The HalfClose handler turns it off
  // to keep a half-closed connection open.
  bool closeOnPeerFin = true;
  // Closes for these reasons become resets (SO_LINGER {1,0}): a dead or
  // abusive peer must not hold a TIME_WAIT slot. Bit i is CloseReason i.
  std::uint32_t resetOnReasons =
      reasonBit(CloseReason::HeartbeatTimeout) | reasonBit(CloseReason::ProtocolError);
};

enum class ConnectionState : std::uint8_t {
  Connecting,
  Open,
  PeerHalfClosed,
  LocalHalfClosed,
  Closing,
  Closed
};
[[nodiscard]] std::string_view toString(ConnectionState s) noexcept;

struct ConnectionStats {
  std::uint64_t bytesIn = 0;
  std::uint64_t bytesOut = 0;
  std::uint64_t reads = 0;   // readv calls that returned data
  std::uint64_t writes = 0;  // send calls that wrote data
  TimePoint created{};
  TimePoint lastRead{};   // loop time of the last inbound bytes
  TimePoint lastWrite{};  // loop time of the last bytes handed to the kernel
  std::size_t peakOutput = 0;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using Ptr = std::shared_ptr<Connection>;
  // Owner hook: called on the loop thread once the connection is Closed.
  using ClosedHook = std::function<void(const Ptr&)>;

  Connection(EventLoop& loop, Socket socket, std::uint64_t id, ConnectionOptions options = {});
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // ---- any thread -------------------------------------------------------------
  // Sends through the whole pipeline (from the application end). Returns false
  // when the connection can no longer send; the data is then dropped.
  bool send(std::string_view data);
  bool send(std::span<const char> data) { return send(std::string_view(data.data(), data.size())); }
  bool send(const std::string& data) { return send(std::string_view(data)); }
  bool send(const char* data) { return send(std::string_view(data)); }
  // Flush what is queued, send FIN, keep reading until the peer's FIN, then
  // close; after shutdownTimeout the connection is aborted.
  void shutdown();
  // Flush what is queued, then close. After closeTimeout it is aborted.
  void close();
  // For request/response clients: leave the closing to the peer, so TIME_WAIT
  // lands on its side. Waits up to `deadline` for the peer's FIN (the
  // connection then closes as usual), else closes itself.
  void awaitPeerClose(Duration deadline);
  // Close at once with a reset (SO_LINGER {1,0}): queued output is dropped,
  // the peer reads ECONNRESET and no TIME_WAIT is left on either side.
  void abort(CloseReason reason = CloseReason::Abort);
  // Close at once with a FIN, dropping queued output.
  void forceClose(CloseReason reason);

  // ---- loop thread ---------------------------------------------------------------
  // Registers with the loop and fires onConnected. Called by the owner.
  void startInLoop();
  void sendInLoop(const Slices& data) { pipeline_.write(data); }
  void pauseReading();
  void resumeReading();
  void setWriteCoalescing(bool on);

  [[nodiscard]] Pipeline& pipeline() noexcept { return pipeline_; }
  [[nodiscard]] EventLoop& loop() const noexcept { return loop_; }
  [[nodiscard]] Socket& socket() noexcept { return socket_; }
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  [[nodiscard]] ConnectionState state() const noexcept { return state_.load(std::memory_order_acquire); }
  [[nodiscard]] bool closed() const noexcept { return state() == ConnectionState::Closed; }
  // Whether a write now can still reach the peer. False once a FIN is sent or
  // waiting for the queue to drain (shutdown(), Server::stop()): the state is
  // still Open then and input is still read, but writes are dropped. A
  // handler that answers requests checks this before it counts one answered.
  [[nodiscard]] bool canWrite() const noexcept {
    const ConnectionState s = state();
    return (s == ConnectionState::Open || s == ConnectionState::PeerHalfClosed) && !shutdownPending_;
  }
  [[nodiscard]] std::optional<CloseReason> closeReason() const noexcept { return closeReason_; }
  [[nodiscard]] const SocketAddress& localAddress() const noexcept { return local_; }
  [[nodiscard]] const SocketAddress& peerAddress() const noexcept { return peer_; }
  [[nodiscard]] const ConnectionStats& stats() const noexcept { return stats_; }
  [[nodiscard]] const ConnectionOptions& options() const noexcept { return options_; }
  [[nodiscard]] ConnectionOptions& options() noexcept { return options_; }
  [[nodiscard]] std::size_t outputBytes() const noexcept { return output_.readableBytes(); }
  [[nodiscard]] Buffer& input() noexcept { return input_; }
  [[nodiscard]] bool readingPaused() const noexcept {
    return pausedByUser_ || pausedByBackpressure_ || pausedByInputCap_;
  }
  [[nodiscard]] std::optional<TcpInfo> tcpInfo() const noexcept { return socket_.tcpInfo(); }

  void setClosedHook(ClosedHook hook) { closedHook_ = std::move(hook); }
  // Runs after each read's inbound dispatch, before output is flushed
  // (TcpTuning re-arms TCP_QUICKACK here). Loop thread; one per connection.
  void setAfterReadHook(std::function<void(Connection&)> hook) { afterRead_ = std::move(hook); }

  // ---- the pipeline's head calls these -------------------------------------------
  void writeRaw(const Slices& data);
  void flushRaw();
  void shutdownRaw();
  void closeRaw(CloseReason reason);

 private:
  struct FlushAtEnd final : Deferred {
    explicit FlushAtEnd(Connection& c) noexcept : conn(c) {}
    void runDeferred() override;
    Connection& conn;
  };
  void onEvents(std::uint32_t events);
  void handleRead(std::uint32_t events);
  void handlePeerFin();
  void handleError(int err);
  void closeNow(CloseReason reason, bool reset);
  void updateInterest();
  bool wantRead() const noexcept;
  bool sendQueued();  // false when the connection failed
  void afterOutputShrank();
  void doShutdownWrite();
  void armDeadline(Duration d, CloseReason reason, bool reset);
  void scheduleFlush();
  void failLater(int err);
  void setState(ConnectionState s) noexcept { state_.store(s, std::memory_order_release); }
  // Runs f(conn) on the loop: now when on the loop thread, else queued with a
  // weak reference (a connection gone by then is skipped).
  template <class F>
  void runInLoopWeak(F f);

  EventLoop& loop_;
  Socket socket_;
  std::uint64_t id_;
  ConnectionOptions options_;
  SocketAddress local_;
  SocketAddress peer_;
  std::atomic<ConnectionState> state_{ConnectionState::Connecting};  // read from any thread by send()
  std::optional<CloseReason> closeReason_;
  CloseReason pendingReason_ = CloseReason::LocalClose;  // for Closing
  bool shutdownPending_ = false;                         // shutdown() waits for the output to drain
  bool aboveHighWatermark_ = false;
  bool pausedByUser_ = false;
  bool pausedByBackpressure_ = false;
  bool pausedByInputCap_ = false;
  bool flushScheduled_ = false;
  bool inRead_ = false;
  TimerId deadline_;
  Buffer input_;
  Buffer output_;
  ConnectionStats stats_;
  Pipeline pipeline_;
  std::function<void(Connection&)> afterRead_;
  ClosedHook closedHook_;
  FlushAtEnd flushAtEnd_{*this};
  Watcher watcher_;  // last: detached before anything else is torn down
};

}  // namespace keel
