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
// Closing: close(reason, mode) is the one way to end a connection, from the
// application, a handler (ctx.close) or the owner; abort() is close with
// CloseMode::Reset. It passes through every handler's outbound close. The
// owner's bookkeeping (the closed hook) and the raw I/O calls the
// pipeline's head makes are not public (net/internal/ConnectionAccess.h).
//
// Thread-safety: send(), shutdown(), close(), abort() and
// awaitPeerClose() are safe from any thread; everything else is for the
// connection's loop thread (checked in builds with assertions on).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include <sys/types.h>
#include <sys/uio.h>

#include "keel/core/EventLoop.h"
#include "keel/core/Time.h"
#include "keel/core/Watcher.h"
#include "keel/net/Buffer.h"
#include "keel/net/CloseReason.h"
#include "keel/net/CompactAddress.h"
#include "keel/net/Handler.h"
#include "keel/net/Pipeline.h"
#include "keel/net/Slices.h"
#include "keel/net/Socket.h"

namespace keel {

class ConnectionAccess;
class OutputBudget;
class Transport;

// Caps and policies of one connection. docs/limits.md lists the defaults and
// what happens at each.
struct ConnectionOptions {
  std::size_t highWatermark = 1 << 20;      // 1 MiB queued: onHighWatermark
  std::size_t lowWatermark = 256 << 10;     // drained to 256 KiB: onWritable
  std::size_t maxOutputBytes = 64 << 20;    // 64 MiB queued: close(Overloaded)
  std::size_t maxInputBytes = 4 << 20;      // 4 MiB unconsumed input: pause reading
  std::size_t maxReadPerEvent = 256 << 10;  // cap on one readv (fairness between connections)
  // Backpressure: stop reading a peer whose output is above highWatermark
  // until it drains to lowWatermark. On by default: a peer that sends but
  // never reads could otherwise make a server queue maxOutputBytes per
  // connection. Turn it off only for a protocol whose input must never wait.
  bool pauseReadingAtHighWatermark = true;
  bool coalesceWrites = false;  // defer writes to one sendmsg at the end of the loop iteration
  Duration shutdownTimeout = std::chrono::seconds(10);  // shutdown(): wait for the peer's FIN this long
  Duration closeTimeout = std::chrono::seconds(30);     // close(): wait for output to drain this long
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

// Privately a Deferred: the end-of-iteration work (runDeferred) without a
// member object that would have to point back at the connection.
class Connection final : public std::enable_shared_from_this<Connection>, private Deferred {
 public:
  using Ptr = std::shared_ptr<Connection>;
  // Owner hook (ConnectionAccess): called on the loop thread once the
  // connection is Closed. A function and its context rather than a
  // std::function: 16 bytes a connection instead of 32.
  struct ClosedHook {
    void (*fn)(void* context, const Ptr& conn) = nullptr;
    void* context = nullptr;
  };

  Connection(EventLoop& loop, Socket socket, std::uint64_t id, ConnectionOptions options = {});
  // Options shared with other connections (a Server passes its one copy to
  // all of them): 16 bytes per connection instead of a copy of 72.
  Connection(EventLoop& loop, Socket socket, std::uint64_t id,
             std::shared_ptr<const ConnectionOptions> options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // ---- any thread -------------------------------------------------------------
  // One application message, written from the application end of the
  // pipeline: through the codec when the chain has one (FrameCodec frames
  // it, exactly like a handler's ctx.writeFrame), as bytes through every
  // handler's write when it has none (Pipeline::send). True when the
  // connection accepted it: on the loop thread that is the write's own
  // answer; from another thread the message is copied once and written on
  // the loop, and true means the connection could still write when send()
  // was called.
  bool send(std::string_view message);
  bool send(std::span<const char> message) { return send(std::string_view(message.data(), message.size())); }
  bool send(const std::string& message) { return send(std::string_view(message)); }
  bool send(const char* message) { return send(std::string_view(message)); }
  // Bytes already in the wire format of the handlers nearest the
  // application end, written through their write() (a codec passes them
  // on unframed; a byte-level handler below it, such as TLS, still sees
  // them): for a control frame encoded by hand, such as a heartbeat GOAWAY.
  // Any thread; the same answer as send().
  bool sendBytes(std::string_view bytes);
  // Flush what is queued, send FIN, keep reading until the peer's FIN, then
  // close with `reason`; after shutdownTimeout the connection is reset.
  void shutdown(CloseReason reason = CloseReason::Shutdown);
  // The close path (see the top of this file): with Flush, what is queued is
  // delivered first (bounded by closeTimeout, then a reset).
  void close(CloseReason reason = CloseReason::LocalClose, CloseMode mode = CloseMode::Flush);
  // close(reason, CloseMode::Reset): queued output is dropped, the peer
  // reads ECONNRESET and no TIME_WAIT is left on either side.
  void abort(CloseReason reason = CloseReason::Abort) { close(reason, CloseMode::Reset); }
  // For request/response clients: leave the closing to the peer, so TIME_WAIT
  // lands on its side. Waits up to `deadline` for the peer's FIN (the
  // connection then closes as usual), else closes itself.
  void awaitPeerClose(Duration deadline);

  // ---- loop thread ---------------------------------------------------------------
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
  // still Open then and input is still read, but writes are refused. Any
  // thread.
  [[nodiscard]] bool canWrite() const noexcept {
    const ConnectionState s = state();
    return (s == ConnectionState::Open || s == ConnectionState::PeerHalfClosed) &&
           !shutdownPending_.load(std::memory_order_acquire);
  }
  [[nodiscard]] std::optional<CloseReason> closeReason() const noexcept { return closeReason_; }
  // By value: the connection keeps its addresses compact (CompactAddress).
  [[nodiscard]] SocketAddress localAddress() const noexcept { return local_.get(); }
  [[nodiscard]] SocketAddress peerAddress() const noexcept { return peer_.get(); }
  [[nodiscard]] const ConnectionStats& stats() const noexcept { return stats_; }
  [[nodiscard]] const ConnectionOptions& options() const noexcept { return *options_; }
  // The options of this connection alone, to change them: the first call
  // copies the ones it shares with its server's other connections.
  [[nodiscard]] ConnectionOptions& editOptions();
  [[nodiscard]] std::size_t outputBytes() const noexcept { return output_.readableBytes(); }
  [[nodiscard]] Buffer& input() noexcept { return input_; }
  [[nodiscard]] bool readingPaused() const noexcept {
    return pausedByUser_ || pausedByBackpressure_ || pausedByInputCap_ || pausedByBudget_;
  }
  [[nodiscard]] std::optional<TcpInfo> tcpInfo() const noexcept { return socket_.tcpInfo(); }

 private:
  friend class ConnectionAccess;
  // The end-of-iteration work: a coalesced flush (flushScheduled_) and
  // watermark events (notices_), which are delivered once the write or
  // flush that caused them has returned, in the order they happened. One
  // entry on the loop for both; noticesFirst_ keeps the order in which they
  // were asked for.
  void runDeferred() override;
  enum class Notice : std::uint8_t { None, High, Writable };

  void startInLoop();
  std::error_code writeRaw(const Slices& data);
  void flushRaw();
  void shutdownRaw(CloseReason reason);
  void closeRaw(CloseReason reason, CloseMode mode);

  void onEvents(std::uint32_t events);
  void handleRead(std::uint32_t events);
  ssize_t readOnce(std::size_t limit, std::size_t& offered);
  void handlePeerFin();
  void handleError(int err);
  void closeNow(CloseReason reason, bool reset);
  void updateInterest();
  bool wantRead() const noexcept;
  bool sendQueued();  // false when the connection failed
  ssize_t writeVector(const iovec* iov, int count);
  void afterOutputShrank();
  void doShutdownWrite();
  void armDeadline(Duration d, CloseReason reason, CloseMode mode);
  void scheduleFlush();
  void notify(Notice n);
  void deliverNotices();
  void dropHookContext() noexcept;
  void account() noexcept;  // reports a changed queue size to the server's budget
  void failLater(int err);
  void closeLater(CloseReason reason, CloseMode mode);
  void setState(ConnectionState s) noexcept { state_.store(s, std::memory_order_release); }
  // Runs f(conn) on the loop: now when on the loop thread, else queued with a
  // weak reference (a connection gone by then is skipped).
  template <class F>
  void runInLoopWeak(F f);

  // Ordered for size (issue 16: docs/decisions.md has the breakdown).
  EventLoop& loop_;
  Socket socket_;
  std::uint32_t interest_ = 0;  // what the connection wants watched (also without a socket)
  std::uint64_t id_;
  std::shared_ptr<const ConnectionOptions> options_;  // shared with the owner's other connections
  CompactAddress local_;
  CompactAddress peer_;
  std::atomic<ConnectionState> state_{ConnectionState::Connecting};  // read from any thread by send()
  std::atomic<bool> shutdownPending_{false};  // shutdown() waits for the output to drain; read by send()
  std::optional<CloseReason> closeReason_;
  CloseReason pendingReason_ = CloseReason::LocalClose;  // for Closing
  CloseReason shutdownReason_ = CloseReason::Shutdown;   // for LocalHalfClosed
  std::array<Notice, 2> notices_{};
  // Loop thread only, like everything below that is not atomic.
  bool aboveHighWatermark_ : 1 = false;
  bool pausedByUser_ : 1 = false;
  bool pausedByBackpressure_ : 1 = false;
  bool pausedByInputCap_ : 1 = false;
  bool pausedByBudget_ : 1 = false;  // the server's output budget is spent
  bool flushScheduled_ : 1 = false;
  bool inRead_ : 1 = false;
  bool watchFailed_ : 1 = false;
  bool ownsOptions_ : 1 = false;      // options_ is this connection's own copy (editOptions)
  bool noticesFirst_ : 1 = false;     // the notices were asked for before the flush
  bool ownsHookContext_ : 1 = false;  // closedHook_.context is a std::function this connection deletes
  TimerId deadline_;
  std::uint32_t ownerIndex_ = 0;    // the owner's, for its table (ConnectionAccess)
  std::size_t highQueued_ = 0;      // queue size at the last high-watermark crossing
  Transport* transport_ = nullptr;  // null: the socket, by direct syscalls
  OutputBudget* budget_ = nullptr;  // the owner's, when it keeps one
  std::size_t accounted_ = 0;       // queued bytes last reported to budget_
  Buffer input_;
  Buffer output_;
  ConnectionStats stats_;
  Pipeline pipeline_;
  ClosedHook closedHook_;
  Watcher watcher_;  // last: detached before anything else is torn down
};

}  // namespace keel
