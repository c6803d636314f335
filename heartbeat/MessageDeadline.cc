#include "keel/heartbeat/MessageDeadline.h"

#include "keel/core/EventLoop.h"
#include "keel/core/Log.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/Pipeline.h"

namespace keel {

MessageDeadline::~MessageDeadline() {
  // A connection torn down without a close destroys its handlers without
  // handlerRemoved: the timer must not outlive us.
  disarm();
}

void MessageDeadline::handlerAdded(HandlerContext& ctx) {
  ctx_ = &ctx;
  loop_ = &ctx.loop();
}

void MessageDeadline::handlerRemoved(HandlerContext&) {
  disarm();
  ctx_ = nullptr;
}

void MessageDeadline::onClosed(HandlerContext& ctx, CloseReason reason) {
  disarm();
  partial_ = false;
  ctx.fireClosed(reason);
}

void MessageDeadline::onData(HandlerContext& ctx, Buffer& in) {
  ctx.fireData(in);
  // Handlers are kept alive until the outermost event returns, so `this` is
  // valid here even if the connection closed during the call.
  if (ctx_ == nullptr || limit_.count() <= 0) return;
  if (in.readableBytes() == 0) {
    partial_ = false;  // every message complete; a pending timer finds nothing to do
    return;
  }
  if (partial_) return;  // the same message continues: its clock keeps running
  partial_ = true;
  partialSince_ = loop_->now();
  if (!timer_.valid()) arm(limit_);
}

void MessageDeadline::arm(Duration delay) {
  // Capturing only `this` keeps the callback in std::function's small buffer.
  timer_ = loop_->runAfter(delay, [this] { onTimer(); });
}

void MessageDeadline::disarm() noexcept {
  if (timer_.valid() && loop_ != nullptr) loop_->cancel(timer_);
  timer_ = {};
}

void MessageDeadline::onTimer() {
  timer_ = {};
  if (ctx_ == nullptr || !partial_) return;
  const Duration waited = loop_->now() - partialSince_;
  if (waited < limit_) {
    arm(limit_ - waited);  // a newer message started after the one this timer was armed for
    return;
  }
  ++expired_;
  partial_ = false;
  Connection& conn = ctx_->connection();
  KEEL_DEBUG("conn {}: message incomplete after {} ms ({} bytes waiting)", conn.id(),
             std::chrono::duration_cast<std::chrono::milliseconds>(waited).count(),
             conn.input().readableBytes());
  // The outermost call: closing removes (and may destroy) this handler, so
  // nothing touches `this` afterwards.
  ctx_->close(CloseReason::IdleTimeout);
}

}  // namespace keel
