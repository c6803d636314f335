#include "keel/heartbeat/MessageDeadline.h"

#include "keel/core/EventLoop.h"
#include "keel/core/Log.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/Pipeline.h"

namespace keel {

void MessageDeadline::handlerAdded(HandlerContext& ctx) { ctx_ = &ctx; }

void MessageDeadline::handlerRemoved(HandlerContext&) {
  timer_.cancel();
  ctx_ = nullptr;
}

void MessageDeadline::onClosed(HandlerContext& ctx, CloseReason reason) {
  timer_.cancel();
  partial_ = false;
  ctx.fireClosed(reason);
}

void MessageDeadline::onData(HandlerContext& ctx, Buffer& in) {
  const std::size_t before = in.readableBytes();
  ctx.fireData(in);
  // Handlers are kept alive until the outermost event returns, so `this` is
  // valid here even if the connection closed during the call.
  if (ctx_ == nullptr || limit_.count() <= 0) return;
  if (in.readableBytes() == 0) {
    partial_ = false;  // every message complete; a pending timer finds nothing to do
    return;
  }
  // The handlers consumed bytes and left some: the message that was waiting
  // is done and a new one began in this read, so its clock starts now. A
  // stream of back-to-back messages whose reads all end mid-message is not
  // one message that never completes. Without consumption the same message
  // continues and its clock keeps running.
  if (partial_ && in.readableBytes() == before) return;
  partial_ = true;
  partialSince_ = ctx.loop().now();
  if (!timer_.armed()) timer_.arm(ctx, limit_);
}

void MessageDeadline::onTimer() {
  if (ctx_ == nullptr || !partial_) return;
  const Duration waited = ctx_->loop().now() - partialSince_;
  if (waited < limit_) {
    timer_.arm(*ctx_, limit_ - waited);  // a newer message started after the one this timer was armed for
    return;
  }
  ++expired_;
  partial_ = false;
  Connection& conn = ctx_->connection();
  const std::size_t bytes = conn.input().readableBytes();
  KEEL_DEBUG("conn {}: message incomplete after {} ms ({} bytes waiting)", conn.id(),
             std::chrono::duration_cast<std::chrono::milliseconds>(waited).count(), bytes);
  // A HandlerTimer callback: this handler outlives the event and the close.
  ctx_->fireUserEvent(MessageTimeout(waited, bytes));
  // A handler that answered and closed or shut down in the event (an HTTP
  // server's 408) has ended the connection its own way.
  if (ctx_ != nullptr && conn.canWrite()) ctx_->close(CloseReason::IdleTimeout);
}

}  // namespace keel
