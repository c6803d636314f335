// What the heartbeat tests watch: the application end of a probing
// pipeline (Watch) and what it saw (Outcome), plus the frame builders. Shared
// by the embedded tests (manual clock) and the real-socket ones. Outcome is
// atomic because the real-socket tests write on a loop thread and read on the
// test thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "keel/core/Time.h"
#include "keel/heartbeat/Heartbeat.h"
#include "keel/heartbeat/HeartbeatMessage.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/Handler.h"
#include "keel/net/Pipeline.h"

namespace keel::test {

inline std::int64_t nowNs() { return Clock::now().time_since_epoch().count(); }
inline milliseconds msBetween(std::int64_t fromNs, std::int64_t toNs) {
  return std::chrono::duration_cast<milliseconds>(nanoseconds(toNs - fromNs));
}

inline std::string frameOf(std::string_view payload, bool control = false) {
  char h[FrameCodec::kHeaderBytes];
  FrameCodec::encodeHeader(static_cast<std::uint32_t>(payload.size()), h, control);
  return std::string(h, sizeof h) + std::string(payload);
}

inline std::string heartbeatFrame(const HeartbeatMessage& m) {
  char f[HeartbeatMessage::kFrameBytes];
  m.encodeFrame(f);
  return std::string(f, sizeof f);
}

// What a connection's tail saw. Times are nanoseconds of `clock`: the steady
// clock on a real loop, the loop's manual clock in an embedded test (set
// clock to read it), so that "when" is exact there.
struct Outcome {
  std::function<std::int64_t()> clock = nowNs;
  std::atomic<bool> connected{false};
  std::atomic<bool> dead{false};
  std::atomic<bool> deadBeforeClose{false};
  std::atomic<int> reason{-1};
  std::atomic<std::int64_t> deadAtNs{0};
  std::atomic<std::int64_t> closedAtNs{0};
  std::atomic<std::int64_t> deadSilenceNs{0};
  std::atomic<std::uint64_t> deadUnanswered{0};
  std::atomic<int> goAways{0};
  std::atomic<int> goAwayCode{-1};
  std::atomic<int> foreignControl{0};
  std::atomic<int> frames{0};

  [[nodiscard]] bool closed() const { return reason.load() >= 0; }
  [[nodiscard]] bool closedWith(CloseReason r) const { return reason.load() == static_cast<int>(r); }
  [[nodiscard]] std::string reasonText() const {
    const int r = reason.load();
    return r < 0 ? "open" : std::string(toString(static_cast<CloseReason>(r)));
  }
};

// The application end: consumes frames, records heartbeat events and the close.
class Watch final : public Handler {
 public:
  explicit Watch(Outcome* o) noexcept : o_(o) {}
  void onConnected(HandlerContext& ctx) override {
    o_->connected = true;
    ctx.fireConnected();
  }
  void onFrame(HandlerContext&, std::span<const char>) override { ++o_->frames; }
  void onUserEvent(HandlerContext& ctx, const UserEvent& ev) override {
    if (const auto* hb = dynamic_cast<const HeartbeatEvent*>(&ev)) {
      if (hb->kind == HeartbeatEvent::Kind::PeerDead) {
        o_->deadSilenceNs = hb->silence.count();
        o_->deadUnanswered = hb->pingsUnanswered;
        o_->deadAtNs = o_->clock();
        o_->dead = true;
      } else {
        o_->goAwayCode = hb->code;
        ++o_->goAways;
      }
      return;
    }
    if (dynamic_cast<const ControlFrame*>(&ev) != nullptr) {
      ++o_->foreignControl;
      return;
    }
    ctx.fireUserEvent(ev);
  }
  void onClosed(HandlerContext& ctx, CloseReason r) override {
    o_->deadBeforeClose = o_->dead.load();
    o_->closedAtNs = o_->clock();
    o_->reason = static_cast<int>(r);
    ctx.fireClosed(r);
  }

 private:
  Outcome* o_;
};

}  // namespace keel::test
