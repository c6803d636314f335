#include "keel/coro/CoConnection.h"

#include <cstdint>
#include <cstring>
#include <utility>

namespace keel {
namespace {

// The resume of a coroutine woken by a timer, carried through the pipeline
// so that it runs under the pipeline's dispatch guard.
struct ResumeEvent final : UserEvent {
  ResumeEvent(const void* t, std::coroutine_handle<> handle) noexcept : target(t), h(handle) {}
  const void* target;
  std::coroutine_handle<> h;
};

constexpr std::size_t kFrameHeader = sizeof(std::uint32_t);

}  // namespace

CoConnection::CoConnection(Body body, CoroErrorHandler onError, CoConnectionOptions options)
    : body_(std::move(body)), onError_(std::move(onError)), options_(options) {}

CoConnection::~CoConnection() {
  // Never resumed again: destroying the frame runs the destructors of its
  // locals and of the op it is suspended in (which deregister themselves).
  if (root_) std::exchange(root_, {}).destroy();
}

Connection& CoConnection::connection() const noexcept { return ctx_->connection(); }
EventLoop& CoConnection::loop() const noexcept { return ctx_->loop(); }

CoConnection::ReadOp CoConnection::read() noexcept { return ReadOp(*this, false); }
CoConnection::ReadOp CoConnection::readFrame() noexcept { return ReadOp(*this, true); }
CoConnection::WriteOp CoConnection::write(const Slices& data) noexcept { return WriteOp(*this, data, false); }
CoConnection::WriteOp CoConnection::writeFrame(const Slices& payload) noexcept {
  return WriteOp(*this, payload, true);
}
CoConnection::PeerClosedOp CoConnection::peerClosed() noexcept { return PeerClosedOp(*this); }

void CoConnection::close(CloseReason reason, CloseMode mode) {
  if (ctx_ != nullptr && !closed_) ctx_->close(reason, mode);
}

void CoConnection::shutdown(CloseReason reason) {
  if (ctx_ != nullptr && !closed_) ctx_->shutdown(reason);
}

std::error_code CoConnection::stateError() const noexcept {
  if (closed_) return closeError(*closed_);
  if (ctx_ == nullptr) return CoroErrc::NotStarted;
  return {};
}

// ---- read -------------------------------------------------------------------

bool CoConnection::beginRead(ReadOp& op) noexcept {
  if (consume_ != 0) {
    inbox_.retrieve(std::exchange(consume_, 0));
    if (pausedByInbox_ && inbox_.readableBytes() < options_.maxBuffered / 2) {
      pausedByInbox_ = false;
      if (!closed_) connection().resumeReading();
    }
  }
  if (ctx_ != nullptr && op.frame_ != ctx_->pipeline().hasCodec()) {
    op.error_ = std::make_error_code(std::errc::operation_not_supported);
    return true;
  }
  if (op.frame_) {
    if (inbox_.readableBytes() >= kFrameHeader) {
      std::uint32_t n = 0;
      std::memcpy(&n, inbox_.peek(), kFrameHeader);
      op.data_ = {inbox_.peek() + kFrameHeader, n};
      consume_ = kFrameHeader + n;
      return true;
    }
  } else if (!inbox_.empty()) {
    op.data_ = inbox_.readable();
    consume_ = op.data_.size();
    return true;
  }
  if (const std::error_code ec = stateError()) {
    op.error_ = ec;
    return true;
  }
  if (peerFin_) {
    op.error_ = CoroErrc::EndOfStream;
    return true;
  }
  return false;
}

bool CoConnection::ReadOp::abandon() noexcept {
  if (!registered_) return false;
  registered_ = false;
  c_->reader_ = nullptr;
  return true;
}

void CoConnection::completeReader(std::error_code ec, std::span<const char> data) noexcept {
  ReadOp* op = std::exchange(reader_, nullptr);
  op->registered_ = false;
  op->error_ = ec;
  op->data_ = data;
  op->waiter_.resume();
}

void CoConnection::stash(std::span<const char> bytes, bool frame) {
  if (frame) {
    const auto n = static_cast<std::uint32_t>(bytes.size());
    inbox_.append(&n, kFrameHeader);
  }
  inbox_.append(bytes);
  if (!pausedByInbox_ && inbox_.readableBytes() >= options_.maxBuffered) {
    pausedByInbox_ = true;
    connection().pauseReading();
  }
}

void CoConnection::onData(HandlerContext&, Buffer& in) {
  if (reader_ != nullptr && !reader_->frame_ && inbox_.empty()) {
    // The common case: lend the connection's input to the coroutine and let
    // it run now, inside this event, as a callback would. It reads again (or
    // suspends elsewhere) before this returns, so the bytes are used up.
    completeReader({}, in.readable());
    in.retrieveAll();
    return;
  }
  stash(in.readable(), false);
  in.retrieveAll();
}

void CoConnection::onFrame(HandlerContext&, std::span<const char> frame) {
  if (reader_ != nullptr && reader_->frame_ && inbox_.empty()) {
    completeReader({}, frame);
    return;
  }
  stash(frame, true);
}

// ---- write ------------------------------------------------------------------

bool CoConnection::aboveHighWatermark() const noexcept {
  const Connection& c = connection();
  return c.outputBytes() > c.options().highWatermark;
}

bool CoConnection::beginWrite(WriteOp& op) noexcept {
  if (const std::error_code ec = stateError()) {
    op.error_ = ec;
    return true;
  }
  op.error_ = op.frame_ ? ctx_->writeFrame(op.data_) : ctx_->write(op.data_);
  if (op.error_) return true;
  // The write may have closed the connection (the output cap).
  if (closed_) return true;
  return !aboveHighWatermark();
}

bool CoConnection::WriteOp::abandon() noexcept {
  if (!registered_) return false;
  registered_ = false;
  c_->writer_ = nullptr;
  return true;
}

void CoConnection::completeWriter(std::error_code ec) noexcept {
  WriteOp* op = std::exchange(writer_, nullptr);
  op->registered_ = false;
  op->error_ = ec;
  op->waiter_.resume();
}

void CoConnection::onWritable(HandlerContext& ctx) {
  if (writer_ != nullptr && !aboveHighWatermark()) completeWriter({});
  ctx.fireWritable();
}

// ---- peer FIN, close ----------------------------------------------------------

bool CoConnection::beginPeerClosed(PeerClosedOp& op) noexcept {
  if (peerFin_) return true;
  op.error_ = stateError();
  return static_cast<bool>(op.error_);
}

bool CoConnection::PeerClosedOp::abandon() noexcept {
  if (!registered_) return false;
  registered_ = false;
  c_->finWaiter_ = nullptr;
  return true;
}

void CoConnection::completeFinWaiter(std::error_code ec) noexcept {
  PeerClosedOp* op = std::exchange(finWaiter_, nullptr);
  op->registered_ = false;
  op->error_ = ec;
  op->waiter_.resume();
}

void CoConnection::onPeerHalfClosed(HandlerContext& ctx, PeerFin& fin) {
  peerFin_ = true;
  if (finWaiter_ != nullptr) completeFinWaiter({});
  if (reader_ != nullptr && inbox_.empty()) completeReader(CoroErrc::EndOfStream, {});
  ctx.firePeerHalfClosed(fin);
}

void CoConnection::onClosed(HandlerContext& ctx, CloseReason reason) {
  closed_ = reason;
  const std::error_code ec = closeError(reason);
  // Each completion resumes the coroutine, which may return to another op of
  // this connection; those complete at once now, so this ends.
  if (reader_ != nullptr) completeReader(ec, {});
  if (writer_ != nullptr) completeWriter(ec);
  if (finWaiter_ != nullptr) completeFinWaiter(ec);
  if (parked_ != nullptr) parked_->cancelWith(ec);
  ctx.fireClosed(reason);
}

// ---- the root coroutine ----------------------------------------------------------

void CoConnection::onConnected(HandlerContext& ctx) {
  if (body_ && !root_) {
    Task<void> task = body_(*this);
    root_ = task.release();
    if (root_) {
      root_.promise().executor = this;
      root_.resume();
    }
  }
  ctx.fireConnected();
}

void CoConnection::resume(std::coroutine_handle<> h) noexcept {
  // A removed handler gets no events: the coroutine stays where it is and its
  // frame goes with the handler.
  if (ctx_ == nullptr || ctx_->removed()) return;
  ctx_->pipeline().fireUserEvent(ResumeEvent(this, h));
}

void CoConnection::onUserEvent(HandlerContext& ctx, const UserEvent& event) {
  if (const auto* r = dynamic_cast<const ResumeEvent*>(&event); r != nullptr && r->target == this) {
    r->h.resume();
    return;
  }
  ctx.fireUserEvent(event);
}

void CoConnection::rootDone() noexcept {
  // At the final suspend point: the frame stays until the handler goes.
  const std::exception_ptr failed = root_.promise().exception;
  if (failed) {
    if (onError_) {
      try {
        onError_(failed);
      } catch (...) {
        logCoroException(std::current_exception(), "a connection coroutine's error handler");
      }
    } else {
      logCoroException(failed, "a connection coroutine");
    }
  }
  if (ctx_ != nullptr && !closed_) ctx_->close(failed ? CloseReason::Error : CloseReason::LocalClose);
}

std::error_code CoConnection::park(PendingOp& op) noexcept {
  if (closed_) return closeError(*closed_);
  parked_ = &op;
  return {};
}

void CoConnection::unpark(PendingOp& op) noexcept {
  if (parked_ == &op) parked_ = nullptr;
}

}  // namespace keel
