// The pieces keel's awaiters share: one pending operation (PendingOp), and a
// loop timer that cancels itself (LoopTimer).
//
// A PendingOp is one suspended co_await: the coroutine to resume, and the
// error to resume it with. Whatever completes it (a handler event, a timer)
// resumes it exactly once; abandon() takes it away from that source without
// resuming, which is what withTimeout() and a closing connection use, so a
// completion and a cancellation can never both resume the same coroutine.
// An op lives in the coroutine frame; destroying the frame destroys the op,
// and its destructor deregisters it.
#pragma once

#include <coroutine>
#include <system_error>

#include "keel/core/EventLoop.h"
#include "keel/core/Time.h"
#include "keel/coro/Result.h"
#include "keel/coro/Task.h"

namespace keel {

class PendingOp {
 public:
  // Detaches the op from whatever would complete it, without resuming.
  // False when it was not pending (already completed, or never suspended).
  virtual bool abandon() noexcept = 0;
  // Completes the op now with `ec` (empty: success): abandon(), then resume
  // the coroutine directly. For callers inside their root's dispatch.
  void cancelWith(std::error_code ec) noexcept {
    if (!abandon()) return;
    error_ = ec;
    waiter_.resume();
  }

 protected:
  PendingOp() = default;
  ~PendingOp() = default;
  PendingOp(const PendingOp&) = delete;
  PendingOp& operator=(const PendingOp&) = delete;

  std::coroutine_handle<> waiter_;
  Executor* exec_ = nullptr;
  std::error_code error_;
};

// An Executor that also tracks the one op its coroutine is suspended in when
// that op is not one of its own (a sleep), so a close can cancel it.
class ParkingExecutor : public Executor {
 public:
  [[nodiscard]] ParkingExecutor* parking() noexcept override { return this; }
  // Non-empty: the op must not suspend, and completes with that error (the
  // connection has closed).
  [[nodiscard]] virtual std::error_code park(PendingOp& op) noexcept = 0;
  virtual void unpark(PendingOp& op) noexcept = 0;

 protected:
  ~ParkingExecutor() = default;
};

// One-shot timer on a loop, cancelled by its destructor. The wheel's callback
// captures only `this`, which std::function keeps without allocating.
class LoopTimer {
 public:
  using Fn = void (*)(void*) noexcept;
  LoopTimer() = default;
  ~LoopTimer() { cancel(); }
  LoopTimer(const LoopTimer&) = delete;
  LoopTimer& operator=(const LoopTimer&) = delete;

  void arm(EventLoop& loop, Duration delay, Fn fn, void* arg) {
    cancel();
    loop_ = &loop;
    fn_ = fn;
    arg_ = arg;
    id_ = loop.runAfter(delay, [this] {
      id_ = {};
      fn_(arg_);
    });
  }
  bool cancel() noexcept {
    if (!id_.valid()) return false;
    const bool was = loop_->cancel(id_);
    id_ = {};
    return was;
  }
  [[nodiscard]] bool armed() const noexcept { return id_.valid(); }

 private:
  EventLoop* loop_ = nullptr;
  Fn fn_ = nullptr;
  void* arg_ = nullptr;
  TimerId id_;
};

}  // namespace keel
