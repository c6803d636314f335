// What a peer's FIN means for one connection: the FIN policy, in one place.
//
// A FIN only says that the peer will send nothing more. Whether the
// connection should end, and how, depends on the protocol, so it is a
// policy. The FIN travels the pipeline as an event carrying the policy
// (PeerFin, net/Handler.h); the tail carries out what arrives. Without a
// HalfClose handler that is FinishWrites. With one, it is this handler's:
//
//   CloseNow      close at once and drop unsent output (CloseMode::Now,
//                 CloseReason::PeerClosed). For peers whose FIN means "gone":
//                 nothing we still owe them is worth sending.
//   FinishWrites  (default) deliver what is queued, then close. muduo lost
//                 exactly this output (#117).
//   StayOpen      keep the connection open so the application can still
//                 answer: "upload, shutdown(SHUT_WR), read the reply". The
//                 application closes it. If it has not after `linger`
//                 (default 30 s), the connection is closed (flushing first)
//                 with CloseReason::PeerClosed, so a forgetful application
//                 cannot leak descriptors.
//
// The FIN always reaches the handlers after this one, so the application
// learns of it whatever the policy, and under FinishWrites can still queue a
// last answer (the close comes from the tail, after them). A handler after
// this one may still change fin.policy for this FIN.
//
// setPolicy works at run time. If the FIN has already arrived, the new
// policy applies at once: FinishWrites closes after the queue drains and
// CloseNow closes now. StayOpen cannot reopen a connection that is already
// closing.
//
// Thread-safety: the connection's loop thread only. From elsewhere, use
// connection.loop().runInLoop.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "keel/net/Handler.h"
#include "keel/net/HandlerTimer.h"

namespace keel {

class HalfClose final : public Handler {
 public:
  static constexpr std::chrono::milliseconds kDefaultLinger{30'000};

  explicit HalfClose(HalfClosePolicy policy = HalfClosePolicy::FinishWrites,
                     std::chrono::milliseconds linger = kDefaultLinger) noexcept
      : policy_(policy), linger_(linger) {}
  HalfClose(const HalfClose&) = delete;
  HalfClose& operator=(const HalfClose&) = delete;

  [[nodiscard]] std::string_view name() const noexcept override { return "half-close"; }

  void setPolicy(HalfClosePolicy policy);
  // StayOpen's bound on a half-closed connection. A change applies to the
  // next FIN, not to a linger that is already running.
  void setLinger(std::chrono::milliseconds linger) noexcept { linger_ = linger; }
  [[nodiscard]] HalfClosePolicy policy() const noexcept { return policy_; }
  [[nodiscard]] std::chrono::milliseconds linger() const noexcept { return linger_; }
  // True between a StayOpen FIN and the close (the linger timer runs).
  [[nodiscard]] bool lingering() const noexcept { return lingerTimer_.armed(); }
  [[nodiscard]] bool finSeen() const noexcept { return finSeen_; }

  void handlerAdded(HandlerContext& ctx) override;
  void handlerRemoved(HandlerContext& ctx) override;
  void onPeerHalfClosed(HandlerContext& ctx, PeerFin& fin) override;
  void onClosed(HandlerContext& ctx, CloseReason reason) override;

 private:
  void startLinger(HandlerContext& ctx);
  void onLinger();

  HalfClosePolicy policy_;
  std::chrono::milliseconds linger_;
  HandlerContext* ctx_ = nullptr;  // valid between handlerAdded and handlerRemoved
  HandlerTimer lingerTimer_{[this] { onLinger(); }};
  bool finSeen_ = false;
};

}  // namespace keel
