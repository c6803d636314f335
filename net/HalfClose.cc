#include "keel/net/HalfClose.h"

#include "keel/core/EventLoop.h"
#include "keel/core/Log.h"
#include "keel/net/Connection.h"
#include "keel/net/Pipeline.h"

namespace keel {

void HalfClose::handlerAdded(HandlerContext& ctx) { ctx_ = &ctx; }

void HalfClose::handlerRemoved(HandlerContext&) {
  lingerTimer_.cancel();
  ctx_ = nullptr;
}

void HalfClose::setPolicy(HalfClosePolicy policy) {
  policy_ = policy;
  if (policy != HalfClosePolicy::StayOpen) lingerTimer_.cancel();
  if (ctx_ == nullptr || !finSeen_) return;
  // The FIN came before this policy: apply it now. The close starts at the
  // application's end so every handler sees it, as the tail's own does.
  Connection& conn = ctx_->connection();
  switch (policy_) {
    case HalfClosePolicy::CloseNow:
      if (!conn.closed()) conn.pipeline().close(CloseReason::PeerClosed, CloseMode::Now);
      break;
    case HalfClosePolicy::FinishWrites:
      if (conn.state() == ConnectionState::PeerHalfClosed) conn.pipeline().close(CloseReason::PeerClosed);
      break;
    case HalfClosePolicy::StayOpen:
      if (conn.state() == ConnectionState::PeerHalfClosed) startLinger(*ctx_);
      break;
  }
}

void HalfClose::onPeerHalfClosed(HandlerContext& ctx, PeerFin& fin) {
  finSeen_ = true;
  KEEL_DEBUG("conn {}: peer half-closed, policy {}", ctx.connection().id(), toString(policy_));
  fin.policy = policy_;
  ctx.firePeerHalfClosed(fin);  // the application hears of it first; the tail then acts
  if (fin.policy == HalfClosePolicy::StayOpen &&
      ctx.connection().state() == ConnectionState::PeerHalfClosed) {
    startLinger(ctx);
  }
}

void HalfClose::startLinger(HandlerContext& ctx) {
  if (!lingerTimer_.armed()) lingerTimer_.arm(ctx, linger_);
}

void HalfClose::onLinger() {
  Connection& c = ctx_->connection();
  if (c.state() != ConnectionState::PeerHalfClosed) return;
  KEEL_DEBUG("conn {}: half-closed for {} ms without a close; closing", c.id(), linger_.count());
  c.pipeline().close(CloseReason::PeerClosed);
}

void HalfClose::onClosed(HandlerContext& ctx, CloseReason reason) {
  lingerTimer_.cancel();
  ctx.fireClosed(reason);
}

}  // namespace keel
