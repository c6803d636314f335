// CoConnection: a connection driven by one coroutine, as the last handler of
// its pipeline.
//
//   keel::Task<> echo(keel::CoConnection& conn) {
//     for (;;) {
//       auto in = co_await conn.read();
//       if (!in) co_return;                       // EOF, or closed (closeReasonOf)
//       if (!co_await conn.write(*in)) co_return;
//     }
//   }
//   server.setPipelineInit([](keel::Connection& c) {
//     c.pipeline().emplaceLast<keel::FrameCodec>();   // TLS, heartbeat, ... in front, unchanged
//     c.pipeline().emplaceLast<keel::CoConnection>(echo);
//   });
//
// The handlers in front see nothing different: CoConnection turns the events
// that reach the end of the pipeline into completions of whatever the
// coroutine awaits. docs/coroutines.md has the rules; in short:
//  - Start: the body runs at onConnected, until its first suspension.
//  - Bytes from read()/readFrame() are valid until the coroutine next
//    suspends (in the common case they are the connection's own input,
//    lent without a copy). Input that arrives while the coroutine is busy is
//    copied into an inbox, capped at maxBuffered: above it reading pauses.
//  - write() queues at once and completes at once below the high watermark;
//    above it the coroutine waits for onWritable (backpressure).
//  - Close: every op suspended on the connection (and a sleep the
//    coroutine is in) resumes with closeError(reason). Ops after the close
//    complete at once with that error.
//  - End: when the body returns the connection is closed (Flush); when it
//    throws, the exception goes to `onError` (default: logged) and the
//    connection closes with CloseReason::Error. When the handler is
//    destroyed with the body still suspended, the frame is destroyed
//    without being resumed.
//  - Every resume runs inside the pipeline's dispatch (timers go through a
//    user event), so a close from the coroutine never destroys the handler
//    the coroutine is running in.
//
// Without a body (attach-only, as coro/Connect.h uses it) the ops serve
// coroutines that run elsewhere (spawned ones).
//
// Thread-safety: the connection's loop thread only.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string_view>

#include "keel/coro/Awaitable.h"
#include "keel/coro/Spawn.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/Handler.h"

namespace keel {

struct CoConnectionOptions {
  // Input held for a coroutine that is not reading (bytes, or frames with a
  // 4-byte length each). Above it the connection stops reading until the
  // coroutine has taken it back under half.
  std::size_t maxBuffered = 4 << 20;
};

class CoConnection final : public Handler, private ParkingExecutor {
 public:
  using Body = std::function<Task<void>(CoConnection&)>;

  explicit CoConnection(Body body = {}, CoroErrorHandler onError = {}, CoConnectionOptions options = {});
  ~CoConnection() override;

  // The outbound Handler methods keep their names (they take a context); the
  // coroutine's write/writeFrame/close/shutdown below are overloads, not overrides.
  using Handler::close;
  using Handler::shutdown;
  using Handler::write;
  using Handler::writeFrame;

  // ---- awaitables (the coroutine's side) ------------------------------------
  class ReadOp;
  class WriteOp;
  class PeerClosedOp;
  // Result<std::span<const char>>: every byte buffered so far. Errors:
  // EndOfStream, closeError(reason), operation_not_supported with a codec.
  [[nodiscard]] ReadOp read() noexcept;
  // Result<std::span<const char>>: one frame; needs a codec (FrameCodec).
  [[nodiscard]] ReadOp readFrame() noexcept;
  // Result<void>. Bytes through the handlers in front; writeFrame frames
  // them through the codec. The data is queued before the co_await returns
  // or suspends, so it need not outlive the call.
  [[nodiscard]] WriteOp write(const Slices& data) noexcept;
  [[nodiscard]] WriteOp writeFrame(const Slices& payload) noexcept;
  // Result<void>: the peer's FIN arrived (at once when it already has).
  [[nodiscard]] PeerClosedOp peerClosed() noexcept;

  void close(CloseReason reason = CloseReason::LocalClose, CloseMode mode = CloseMode::Flush);
  void shutdown(CloseReason reason = CloseReason::Shutdown);

  [[nodiscard]] bool attached() const noexcept { return ctx_ != nullptr; }
  [[nodiscard]] Connection& connection() const noexcept;  // attached() only
  [[nodiscard]] EventLoop& loop() const noexcept;         // attached() only
  [[nodiscard]] std::optional<CloseReason> closeReason() const noexcept { return closed_; }
  [[nodiscard]] bool peerFinished() const noexcept { return peerFin_; }
  [[nodiscard]] std::size_t buffered() const noexcept { return inbox_.readableBytes(); }
  [[nodiscard]] bool running() const noexcept { return root_ && !root_.done(); }

  // ---- Handler ---------------------------------------------------------------
  [[nodiscard]] std::string_view name() const noexcept override { return "coroutine"; }
  void handlerAdded(HandlerContext& ctx) override { ctx_ = &ctx; }
  void onConnected(HandlerContext& ctx) override;
  void onData(HandlerContext& ctx, Buffer& in) override;
  void onFrame(HandlerContext& ctx, std::span<const char> frame) override;
  void onPeerHalfClosed(HandlerContext& ctx, PeerFin& fin) override;
  void onWritable(HandlerContext& ctx) override;
  void onUserEvent(HandlerContext& ctx, const UserEvent& event) override;
  void onClosed(HandlerContext& ctx, CloseReason reason) override;

  class ReadOp final : public PendingOp {
   public:
    ReadOp(ReadOp&& o) noexcept : PendingOp(), c_(o.c_), frame_(o.frame_) {}
    ~ReadOp() { (void)abandon(); }
    [[nodiscard]] EventLoop& loop() const noexcept { return c_->loop(); }
    bool await_ready() noexcept { return c_->beginRead(*this); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      waiter_ = h;
      c_->reader_ = this;
      registered_ = true;
      return true;
    }
    Result<std::span<const char>> await_resume() const noexcept {
      if (error_) return Result<std::span<const char>>(error_);
      return Result<std::span<const char>>(data_);
    }
    bool abandon() noexcept override;

   private:
    friend class CoConnection;
    ReadOp(CoConnection& c, bool frame) noexcept : c_(&c), frame_(frame) {}
    CoConnection* c_;
    bool frame_;
    bool registered_ = false;
    std::span<const char> data_;
  };

  class WriteOp final : public PendingOp {
   public:
    WriteOp(WriteOp&& o) noexcept : PendingOp(), c_(o.c_), data_(o.data_), frame_(o.frame_) {}
    ~WriteOp() { (void)abandon(); }
    [[nodiscard]] EventLoop& loop() const noexcept { return c_->loop(); }
    bool await_ready() noexcept { return c_->beginWrite(*this); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      waiter_ = h;
      c_->writer_ = this;
      registered_ = true;
      return true;
    }
    Result<void> await_resume() const noexcept { return Result<void>(error_); }
    bool abandon() noexcept override;

   private:
    friend class CoConnection;
    WriteOp(CoConnection& c, const Slices& data, bool frame) noexcept : c_(&c), data_(data), frame_(frame) {}
    CoConnection* c_;
    Slices data_;
    bool frame_;
    bool registered_ = false;
  };

  class PeerClosedOp final : public PendingOp {
   public:
    PeerClosedOp(PeerClosedOp&& o) noexcept : PendingOp(), c_(o.c_) {}
    ~PeerClosedOp() { (void)abandon(); }
    [[nodiscard]] EventLoop& loop() const noexcept { return c_->loop(); }
    bool await_ready() noexcept { return c_->beginPeerClosed(*this); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
      waiter_ = h;
      c_->finWaiter_ = this;
      registered_ = true;
      return true;
    }
    Result<void> await_resume() const noexcept { return Result<void>(error_); }
    bool abandon() noexcept override;

   private:
    friend class CoConnection;
    explicit PeerClosedOp(CoConnection& c) noexcept : c_(&c) {}
    CoConnection* c_;
    bool registered_ = false;
  };

 private:
  // ParkingExecutor
  void resume(std::coroutine_handle<> h) noexcept override;
  void rootDone() noexcept override;
  std::error_code park(PendingOp& op) noexcept override;
  void unpark(PendingOp& op) noexcept override;

  bool beginRead(ReadOp& op) noexcept;
  bool beginWrite(WriteOp& op) noexcept;
  bool beginPeerClosed(PeerClosedOp& op) noexcept;
  [[nodiscard]] std::error_code stateError() const noexcept;
  [[nodiscard]] bool aboveHighWatermark() const noexcept;
  void stash(std::span<const char> bytes, bool frame);
  void completeReader(std::error_code ec, std::span<const char> data) noexcept;
  void completeWriter(std::error_code ec) noexcept;
  void completeFinWaiter(std::error_code ec) noexcept;

  Body body_;
  CoroErrorHandler onError_;
  CoConnectionOptions options_;
  HandlerContext* ctx_ = nullptr;
  Task<void>::Handle root_;
  ReadOp* reader_ = nullptr;
  WriteOp* writer_ = nullptr;
  PeerClosedOp* finWaiter_ = nullptr;
  PendingOp* parked_ = nullptr;  // a sleep (or other outside op) the coroutine is in
  Buffer inbox_;
  std::size_t consume_ = 0;  // inbox bytes handed to the last read, dropped at the next
  bool pausedByInbox_ = false;
  bool peerFin_ = false;
  std::optional<CloseReason> closed_;
};

}  // namespace keel
