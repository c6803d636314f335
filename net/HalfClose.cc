#include "keel/net/HalfClose.h"

#include "keel/core/EventLoop.h"
#include "keel/core/Log.h"
#include "keel/net/Connection.h"
#include "keel/net/Pipeline.h"

namespace keel {

std::string_view toString(HalfClosePolicy policy) noexcept {
  switch (policy) {
    case HalfClosePolicy::CloseNow:
      return "close-now";
    case HalfClosePolicy::FinishWrites:
      return "finish-writes";
    case HalfClosePolicy::StayOpen:
      return "stay-open";
  }
  return "unknown";
}

HalfClose::~HalfClose() { stopLinger(); }

void HalfClose::handlerAdded(HandlerContext& ctx) {
  ctx_ = &ctx;
  loop_ = &ctx.loop();
  savedCloseOnPeerFin_ = ctx.connection().options().closeOnPeerFin;
  applyOption();
}

void HalfClose::handlerRemoved(HandlerContext& ctx) {
  stopLinger();
  ctx.connection().options().closeOnPeerFin = savedCloseOnPeerFin_;
  ctx_ = nullptr;
}

void HalfClose::applyOption() noexcept {
  // Only FinishWrites wants the tail's flush-then-close. StayOpen must keep
  // the connection. CloseNow closes it itself, without the flush.
  ctx_->connection().options().closeOnPeerFin = policy_ == HalfClosePolicy::FinishWrites;
}

void HalfClose::setPolicy(HalfClosePolicy policy) {
  policy_ = policy;
  if (ctx_ == nullptr) return;
  applyOption();
  if (policy != HalfClosePolicy::StayOpen) stopLinger();
  // Last statement: closing from outside any pipeline event destroys this
  // handler before enforce() returns.
  if (finSeen_) enforce(*ctx_);
}

void HalfClose::onPeerHalfClosed(HandlerContext& ctx) {
  finSeen_ = true;
  KEEL_DEBUG("conn {}: peer half-closed, policy {}", ctx.connection().id(), toString(policy_));
  // The application hears of the FIN first, whatever the policy: under
  // FinishWrites it may still queue a last answer, under StayOpen it starts
  // answering, under CloseNow it at least learns why the connection ends.
  ctx.firePeerHalfClosed();
  enforce(ctx);  // we are inside a pipeline event, so this handler stays alive
}

void HalfClose::enforce(HandlerContext& ctx) {
  Connection& conn = ctx.connection();
  switch (policy_) {
    case HalfClosePolicy::CloseNow:
      // Also overrides a graceful close() a handler may have started in
      // response to the FIN: the policy is to drop unsent output.
      if (!conn.closed()) conn.forceClose(CloseReason::PeerClosed);
      break;
    case HalfClosePolicy::FinishWrites:
      // Normally the tail closed already (closeOnPeerFin). This covers a
      // handler after us that did not pass the FIN on, and a switch to
      // FinishWrites after the FIN. The close starts at the application's
      // end so every handler sees it, as the tail's own close does.
      if (conn.state() == ConnectionState::PeerHalfClosed) conn.pipeline().close(CloseReason::PeerClosed);
      break;
    case HalfClosePolicy::StayOpen:
      if (conn.state() == ConnectionState::PeerHalfClosed && !lingerTimer_.valid()) {
        lingerTimer_ = loop_->runAfter(linger_, [this] {
          lingerTimer_ = {};
          if (ctx_ == nullptr) return;
          Connection& c = ctx_->connection();
          if (c.state() != ConnectionState::PeerHalfClosed) return;
          KEEL_DEBUG("conn {}: half-closed for {} ms without a close; closing", c.id(), linger_.count());
          c.pipeline().close(CloseReason::PeerClosed);  // may destroy `this`: nothing after it
        });
      }
      break;
  }
}

void HalfClose::onClosed(HandlerContext& ctx, CloseReason reason) {
  stopLinger();
  ctx.fireClosed(reason);
}

void HalfClose::stopLinger() noexcept {
  if (lingerTimer_.valid() && loop_ != nullptr) loop_->cancel(lingerTimer_);
  lingerTimer_ = {};
}

}  // namespace keel
