// Idle detection for one connection, in the manner of Netty's
// IdleStateHandler: a reader limit (nothing received), a writer limit
// (nothing sent) and an "all" limit (neither), each zero when off.
//
// Cost per message: nothing (in the default IdleActivity::Bytes mode; see
// below for Frames). The connection already stores the loop time of
// its last read and last write (ConnectionStats::lastRead / lastWrite). The
// reaper owns one timer on the loop's wheel. When that timer fires it reads
// those two timestamps, and it either acts or re-arms for the remainder.
// Activity never touches the wheel, so 10,000 connections cost 10,000 wheel
// nodes and one callback per connection per idle period.
//
// Writer idleness counts delivery, not only calls to write. A large reply
// that a slow client drains for minutes is not idle (Netty issue #6150).
// lastWrite moves whenever the kernel takes more of keel's queue, but the
// send buffer refills in bursts: measured here, a client taking 64 KiB every
// 20 ms leaves lastWrite still for over 600 ms at a time. So an expiry of the
// writer or all limit also asks the kernel once (TCP_INFO bytes_acked). The
// writer is busy, not idle, when the peer acknowledged more of our bytes
// since the previous look and bytes are still outstanding, or were
// outstanding at that look (taken within the last two limits). That costs
// one getsockopt per expiry, never per message. Two consequences:
//   - a peer that stops reading is reported between one and two limits
//     after its last progress;
//   - once the peer's kernel has acknowledged everything, the writer goes
//     idle, even if the peer application has not yet read it all from its
//     receive buffer.
// Unix-domain sockets have no TCP_INFO, so they fall back to lastWrite alone.
//
// What counts as activity, chosen with IdleActivity:
//   Bytes    (default) any byte, as above. Nothing per message. Next to a
//            Heartbeat, PINGs and PONGs count, so an application that fell
//            silent is never idle while the heartbeat runs.
//   Frames   application frames only: the reader side counts onFrame events
//            (from a FrameCodec before the reaper), the writer side accepted
//            writeFrame calls from the handlers after it. Control frames
//            (PING/PONG, raised by FrameCodec as ControlFrame user events)
//            and raw write()s do not count, so [FrameCodec][Heartbeat]
//            [IdleReaper(Frames)][App] reaps a member that only answers
//            PINGs. Cost: one loop-time store per frame (loop.now() reads
//            the iteration's cached time: no syscall). Writer idleness is
//            then the application not writing; the kernel is not asked.
//
// Actions, chosen with IdleAction:
//   Notify   (default) raises IdleEvent{kind} for the handlers after this
//            one. It fires once per idle period, not on every check, and
//            fires again only after new activity and a new full period.
//   Shutdown raises the IdleEvent, then calls ctx.shutdown(IdleTimeout):
//            keel flushes, sends FIN and waits for the peer's FIN. The close
//            that follows carries CloseReason::IdleTimeout.
//   Close    calls ctx.close(CloseReason::IdleTimeout): flush, then close.
//            Every onClosed, and the server's closedBy counts, see
//            IdleTimeout.
// After a Shutdown or Close action the reaper stops watching the connection.
//
// Limits apply from the moment they are set. A limit set at run time
// (setLimits) counts from the later of the last activity and the call, so
// making a limit shorter never reaps a connection in retrospect.
//
// Thread-safety: the connection's loop thread only, like every handler. From
// elsewhere, call setLimits through connection.loop().runInLoop.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <span>
#include <string_view>

#include "keel/core/Time.h"
#include "keel/net/Handler.h"
#include "keel/net/HandlerTimer.h"
#include "keel/net/Slices.h"

namespace keel {

class Connection;
class EventLoop;

enum class IdleKind : std::uint8_t { Reader, Writer, All };
[[nodiscard]] std::string_view toString(IdleKind kind) noexcept;

// Raised on the stack towards the application. `idleFor` is how long the
// connection had been idle in that direction when the check ran.
struct IdleEvent final : UserEvent {
  IdleEvent(IdleKind k, Duration idle) noexcept : kind(k), idleFor(idle) {}
  IdleKind kind;
  Duration idleFor;
};

enum class IdleAction : std::uint8_t { Notify, Shutdown, Close };

enum class IdleActivity : std::uint8_t { Bytes, Frames };
[[nodiscard]] std::string_view toString(IdleActivity activity) noexcept;

struct IdleLimits {
  std::chrono::milliseconds reader{0};  // nothing received for this long
  std::chrono::milliseconds writer{0};  // nothing sent (or delivered) for this long
  std::chrono::milliseconds all{0};     // neither, for this long
  [[nodiscard]] bool any() const noexcept {
    return reader.count() > 0 || writer.count() > 0 || all.count() > 0;
  }
};

class IdleReaper final : public Handler {
 public:
  explicit IdleReaper(IdleLimits limits, IdleAction action = IdleAction::Notify,
                      IdleActivity activity = IdleActivity::Bytes) noexcept;
  IdleReaper(const IdleReaper&) = delete;
  IdleReaper& operator=(const IdleReaper&) = delete;

  [[nodiscard]] std::string_view name() const noexcept override { return "idle-reaper"; }

  // Takes effect at once: the idle periods restart, and the timer is
  // re-armed (or cancelled when every limit is zero).
  void setLimits(IdleLimits limits);
  void setAction(IdleAction action) noexcept { action_ = action; }
  [[nodiscard]] const IdleLimits& limits() const noexcept { return limits_; }
  [[nodiscard]] IdleAction action() const noexcept { return action_; }
  [[nodiscard]] IdleActivity activity() const noexcept { return activity_; }
  // How many idle periods of each kind were detected (events raised, or
  // actions taken).
  [[nodiscard]] std::uint64_t detected(IdleKind kind) const noexcept {
    return detected_[static_cast<std::size_t>(kind)];
  }
  // TCP_INFO lookups made at expiries with bytes outstanding (for tests and
  // for checking that the lookup stays rare).
  [[nodiscard]] std::uint64_t kernelChecks() const noexcept { return kernelChecks_; }
  [[nodiscard]] bool armed() const noexcept { return timer_.armed(); }

  void handlerAdded(HandlerContext& ctx) override;
  void handlerRemoved(HandlerContext& ctx) override;
  void onConnected(HandlerContext& ctx) override;
  void onClosed(HandlerContext& ctx, CloseReason reason) override;
  // Frames mode stamps the time; Bytes mode only forwards.
  void onFrame(HandlerContext& ctx, std::span<const char> frame) override;
  std::error_code writeFrame(HandlerContext& ctx, const Slices& payload) override;

 private:
  static constexpr std::size_t kKinds = 3;

  [[nodiscard]] bool watching() const noexcept;
  void restart();  // new idle periods from now, then arm
  void arm(Duration delay);
  void disarm() noexcept;
  void onTimer();
  [[nodiscard]] std::chrono::milliseconds limitOf(IdleKind kind) const noexcept;
  [[nodiscard]] TimePoint activity(IdleKind kind) const noexcept;
  // True when the kernel shows the peer taking our bytes (see the header
  // comment); `limit` is the limit that expired.
  [[nodiscard]] bool peerIsDraining(TimePoint now, Duration limit);
  // Raises the event or takes the action. Returns false when the reaper
  // stopped watching as a result.
  [[nodiscard]] bool act(IdleKind kind, Duration idleFor);

  IdleLimits limits_;
  IdleAction action_;
  IdleActivity activity_;
  TimePoint frameIn_{};            // Frames: loop time of the last application frame received
  TimePoint frameOut_{};           // Frames: loop time of the last accepted writeFrame
  HandlerContext* ctx_ = nullptr;  // valid between handlerAdded and handlerRemoved
  HandlerTimer timer_{[this] { onTimer(); }};
  TimePoint since_{};            // start of the current watch (added / setLimits)
  TimePoint progress_{};         // last expiry that saw the peer acknowledge more bytes
  std::uint64_t ackSample_ = 0;  // TCP_INFO bytes_acked at sampleAt_
  TimePoint sampleAt_{};
  bool sampleOutstanding_ = false;               // bytes were outstanding at sampleAt_
  std::array<TimePoint, kKinds> reportedFor_{};  // activity time already reported
  std::array<bool, kKinds> reported_{};
  std::array<std::uint64_t, kKinds> detected_{};
  std::uint64_t kernelChecks_ = 0;
  bool done_ = false;  // acted with Shutdown/Close
};

}  // namespace keel
