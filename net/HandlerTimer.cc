#include "keel/net/HandlerTimer.h"

#include "keel/core/EventLoop.h"
#include "keel/net/Pipeline.h"

namespace keel {

void HandlerTimer::arm(HandlerContext& ctx, Duration delay) {
  cancel();
  ctx_ = &ctx;
  loop_ = &ctx.loop();
  id_ = loop_->runAfter(delay, [this] { fire(); });
}

void HandlerTimer::cancel() noexcept {
  if (id_.valid()) loop_->cancel(id_);
  id_ = {};
}

void HandlerTimer::fire() {
  id_ = {};
  if (ctx_->removed()) return;
  // The guard holds off freeing removed contexts (and so their handlers, and
  // this timer) until the callback has returned; nothing here touches
  // `this` after the callback.
  Pipeline::Guard guard(ctx_->pipeline());
  cb_();
}

}  // namespace keel
