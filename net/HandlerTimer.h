// A timer that belongs to a handler, safe by construction.
//
//   class Deadline final : public keel::Handler {
//     keel::HandlerTimer timer_{[this] { onTimer(); }};
//     void handlerAdded(keel::HandlerContext& ctx) override { timer_.arm(ctx, 5s); }
//     void onTimer() { ctx().close(keel::CloseReason::IdleTimeout); }  // may be the last thing alive
//   };
//
// Three rules make it safe, so handlers need no "nothing after this line"
// discipline and no flags to learn that they were destroyed:
//  - RAII: the destructor cancels (as an Asio timer's does), so a timer
//    never outlives the handler it calls into.
//  - The callback runs under the pipeline's dispatch guard, like any event:
//    a handler that closes its connection (or removes itself) from its own
//    timer is destroyed only after the callback has returned.
//  - A handler already removed from its pipeline is not called.
// Arming allocates nothing: the wheel's callback holds only a pointer, and
// the handler's callback is stored once, at construction.
//
// Thread-safety: the connection's loop thread only, like every handler.
#pragma once

#include <functional>
#include <utility>

#include "keel/core/Time.h"
#include "keel/core/TimerWheel.h"

namespace keel {

class EventLoop;
class HandlerContext;

class HandlerTimer {
 public:
  using Callback = std::function<void()>;

  explicit HandlerTimer(Callback cb) noexcept : cb_(std::move(cb)) {}
  ~HandlerTimer() { cancel(); }
  HandlerTimer(const HandlerTimer&) = delete;
  HandlerTimer& operator=(const HandlerTimer&) = delete;

  // Fires the callback once, `delay` from the loop's now(); re-arms when armed.
  void arm(HandlerContext& ctx, Duration delay);
  void cancel() noexcept;
  [[nodiscard]] bool armed() const noexcept { return id_.valid(); }

 private:
  void fire();

  Callback cb_;
  HandlerContext* ctx_ = nullptr;
  EventLoop* loop_ = nullptr;
  TimerId id_;
};

}  // namespace keel
