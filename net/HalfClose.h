// What a peer's FIN means for one connection.
//
// A FIN only says that the peer will send nothing more. Whether the
// connection should end, and how, depends on the protocol, so it is a policy:
//
//   CloseNow      close at once and drop unsent output (forceClose with
//                 CloseReason::PeerClosed). For peers whose FIN means "gone":
//                 nothing we still owe them is worth sending.
//   FinishWrites  (default) deliver what is queued, then close. This is the
//                 pipeline tail's own default (ConnectionOptions::
//                 closeOnPeerFin); muduo lost exactly this output (#117).
//   StayOpen      keep the connection open so the application can still
//                 answer: "upload, shutdown(SHUT_WR), read the reply". The
//                 application closes it. If it has not after `linger`
//                 (default 30 s), the connection is closed (flushing first)
//                 with CloseReason::PeerClosed, so a forgetful application
//                 cannot leak descriptors.
//
// In every case onPeerHalfClosed is passed on to the handlers after this one
// before anything else happens: the application always learns of the FIN,
// even under CloseNow, and can still queue a last answer under FinishWrites.
//
// While it is in the pipeline, HalfClose owns ConnectionOptions::
// closeOnPeerFin. It turns the option off for StayOpen and CloseNow (the
// tail's flush-then-close must not run: StayOpen keeps the connection, and
// CloseNow closes it itself) and on for FinishWrites. handlerRemoved puts
// back the value it found. Place it near the head, before any handler that
// reacts to the FIN.
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

#include "keel/core/TimerWheel.h"
#include "keel/net/Handler.h"

namespace keel {

class EventLoop;

enum class HalfClosePolicy : std::uint8_t { CloseNow, FinishWrites, StayOpen };
[[nodiscard]] std::string_view toString(HalfClosePolicy policy) noexcept;

class HalfClose final : public Handler {
 public:
  static constexpr std::chrono::milliseconds kDefaultLinger{30'000};

  explicit HalfClose(HalfClosePolicy policy = HalfClosePolicy::FinishWrites,
                     std::chrono::milliseconds linger = kDefaultLinger) noexcept
      : policy_(policy), linger_(linger) {}
  ~HalfClose() override;
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
  [[nodiscard]] bool lingering() const noexcept { return lingerTimer_.valid(); }
  [[nodiscard]] bool finSeen() const noexcept { return finSeen_; }

  void handlerAdded(HandlerContext& ctx) override;
  void handlerRemoved(HandlerContext& ctx) override;
  void onPeerHalfClosed(HandlerContext& ctx) override;
  void onClosed(HandlerContext& ctx, CloseReason reason) override;

 private:
  void applyOption() noexcept;
  void enforce(HandlerContext& ctx);  // carry out the policy after a FIN
  void stopLinger() noexcept;

  HalfClosePolicy policy_;
  std::chrono::milliseconds linger_;
  HandlerContext* ctx_ = nullptr;  // valid between handlerAdded and handlerRemoved
  EventLoop* loop_ = nullptr;
  TimerId lingerTimer_;
  bool savedCloseOnPeerFin_ = true;
  bool finSeen_ = false;
};

}  // namespace keel
