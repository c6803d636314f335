#include "keel/heartbeat/IdleReaper.h"

#include <algorithm>

#include "keel/core/EventLoop.h"
#include "keel/core/Log.h"
#include "keel/net/Connection.h"
#include "keel/net/Pipeline.h"

namespace keel {

std::string_view toString(IdleKind kind) noexcept {
  switch (kind) {
    case IdleKind::Reader:
      return "reader";
    case IdleKind::Writer:
      return "writer";
    case IdleKind::All:
      return "all";
  }
  return "unknown";
}

std::string_view toString(IdleActivity activity) noexcept {
  return activity == IdleActivity::Frames ? "frames" : "bytes";
}

IdleReaper::IdleReaper(IdleLimits limits, IdleAction action, IdleActivity activity) noexcept
    : limits_(limits), action_(action), activity_(activity) {}

void IdleReaper::onFrame(HandlerContext& ctx, std::span<const char> frame) {
  if (activity_ == IdleActivity::Frames) frameIn_ = ctx.loop().now();
  ctx.fireFrame(frame);
}

std::error_code IdleReaper::writeFrame(HandlerContext& ctx, const Slices& payload) {
  const std::error_code ec = ctx.writeFrame(payload);
  // A refused frame is not activity: nothing will reach the peer.
  if (activity_ == IdleActivity::Frames && !ec) frameOut_ = ctx.loop().now();
  return ec;
}

void IdleReaper::handlerAdded(HandlerContext& ctx) {
  ctx_ = &ctx;
  // A connection that is not started yet gets its timer in onConnected,
  // when its activity timestamps are first set.
  if (ctx.connection().state() != ConnectionState::Connecting) restart();
}

void IdleReaper::handlerRemoved(HandlerContext&) {
  disarm();
  ctx_ = nullptr;
}

void IdleReaper::onConnected(HandlerContext& ctx) {
  if (!timer_.armed()) restart();
  ctx.fireConnected();
}

void IdleReaper::onClosed(HandlerContext& ctx, CloseReason reason) {
  disarm();
  ctx.fireClosed(reason);
}

void IdleReaper::setLimits(IdleLimits limits) {
  limits_ = limits;
  if (ctx_ != nullptr) restart();
}

bool IdleReaper::watching() const noexcept {
  if (ctx_ == nullptr || done_ || !limits_.any()) return false;
  switch (ctx_->connection().state()) {
    case ConnectionState::Open:
    case ConnectionState::PeerHalfClosed:
    case ConnectionState::LocalHalfClosed:
      return true;
    default:
      return false;  // not started, or already closing
  }
}

void IdleReaper::restart() {
  disarm();
  since_ = ctx_->loop().now();
  progress_ = {};
  reported_ = {};
  if (!watching()) return;
  // Every activity timestamp is at or before since_, so the earliest
  // possible expiry is the shortest enabled limit from now.
  Duration first = Duration::max();
  for (std::size_t i = 0; i < kKinds; ++i) {
    const Duration limit = limitOf(static_cast<IdleKind>(i));
    if (limit > Duration::zero()) first = std::min(first, limit);
  }
  arm(first);
}

void IdleReaper::arm(Duration delay) { timer_.arm(*ctx_, delay); }

void IdleReaper::disarm() noexcept { timer_.cancel(); }

std::chrono::milliseconds IdleReaper::limitOf(IdleKind kind) const noexcept {
  switch (kind) {
    case IdleKind::Reader:
      return limits_.reader;
    case IdleKind::Writer:
      return limits_.writer;
    case IdleKind::All:
      return limits_.all;
  }
  return std::chrono::milliseconds(0);
}

TimePoint IdleReaper::activity(IdleKind kind) const noexcept {
  const ConnectionStats& st = ctx_->connection().stats();
  const bool frames = activity_ == IdleActivity::Frames;
  const TimePoint read = std::max(frames ? frameIn_ : st.lastRead, since_);
  const TimePoint write = frames ? std::max(frameOut_, since_) : std::max({st.lastWrite, since_, progress_});
  switch (kind) {
    case IdleKind::Reader:
      return read;
    case IdleKind::Writer:
      return write;
    case IdleKind::All:
      return std::max(read, write);
  }
  return since_;
}

bool IdleReaper::peerIsDraining(TimePoint now, Duration limit) {
  Connection& conn = ctx_->connection();
  const auto info = conn.tcpInfo();
  if (!info) return false;  // not TCP: lastWrite is all we have
  ++kernelChecks_;
  // Outstanding: keel still queues bytes, or the kernel holds bytes it sent
  // that are not acknowledged yet, or bytes it has not sent yet.
  const bool outstanding =
      conn.outputBytes() > 0 || info->unacked > 0 || info->bytesAcked < conn.stats().bytesOut;
  const bool moved = info->bytesAcked != ackSample_;
  // Checks come about one limit apart while the peer drains (each one an
  // expiry), so a sample within two limits is the previous check's.
  const bool recent = now - sampleAt_ <= 2 * limit;
  const bool wasOutstanding = sampleOutstanding_ && recent;
  ackSample_ = info->bytesAcked;
  sampleAt_ = now;
  sampleOutstanding_ = outstanding;
  // Acknowledgements since the last look are the peer draining only when
  // there was something to drain: bytes outstanding then, or still now.
  // Bytes written after a quiet look and fully acknowledged are covered by
  // lastWrite already. Progress is counted as of now, not at its unknown
  // time: that can grant one more period, never reap early.
  return moved && (outstanding || wasOutstanding);
}

void IdleReaper::onTimer() {
  if (!watching()) return;
  const TimePoint now = ctx_->loop().now();
  std::array<bool, kKinds> due{};
  std::array<Duration, kKinds> idleFor{};
  TimePoint next = TimePoint::max();
  bool askedKernel = false;
  for (std::size_t i = 0; i < kKinds; ++i) {
    const auto kind = static_cast<IdleKind>(i);
    const Duration limit = limitOf(kind);
    if (limit <= Duration::zero()) continue;
    TimePoint last = activity(kind);
    // Frames mode watches the application, not delivery: no kernel check.
    if (kind != IdleKind::Reader && activity_ == IdleActivity::Bytes && now - last >= limit && !askedKernel) {
      askedKernel = true;
      if (peerIsDraining(now, limit)) progress_ = now;
      last = activity(kind);
    }
    if (reported_[i] && reportedFor_[i] == last) {
      // Already reported this idle period. Activity at any time t after now
      // would expire at t + limit, so nothing can be due before now + limit:
      // checking then is never late and costs one callback per period.
      next = std::min(next, now + limit);
      continue;
    }
    reported_[i] = false;
    if (now - last >= limit) {
      due[i] = true;
      idleFor[i] = now - last;
      reported_[i] = true;
      reportedFor_[i] = last;
      next = std::min(next, now + limit);
    } else {
      next = std::min(next, last + limit);  // active: re-arm for the remainder
    }
  }
  if (next != TimePoint::max()) arm(next - now);
  for (std::size_t i = 0; i < kKinds; ++i) {
    if (due[i] && !act(static_cast<IdleKind>(i), idleFor[i])) return;
  }
}

bool IdleReaper::act(IdleKind kind, Duration idleFor) {
  ++detected_[static_cast<std::size_t>(kind)];
  HandlerContext& ctx = *ctx_;
  const IdleAction action = action_;  // a handler may change it during the event
  KEEL_DEBUG("conn {}: {} idle for {} ms", ctx.connection().id(), toString(kind),
             std::chrono::duration_cast<std::chrono::milliseconds>(idleFor).count());
  if (action != IdleAction::Notify) {
    done_ = true;
    disarm();
  }
  // A HandlerTimer callback: this reaper outlives the call whatever the
  // handlers the event reaches do (closing included).
  if (action != IdleAction::Close) ctx.fireUserEvent(IdleEvent(kind, idleFor));
  if (ctx.connection().closed() || ctx.removed()) return false;
  if (action == IdleAction::Shutdown) {
    ctx.shutdown(CloseReason::IdleTimeout);
  } else if (action == IdleAction::Close) {
    ctx.close(CloseReason::IdleTimeout);
  }
  return watching();
}

}  // namespace keel
