// co_await keel::sleep(loop, d): suspends for `d` on the loop's timer wheel.
//
// Gives Result<void>: success after `d`, or the error of whoever cancelled it
// (a CoConnection closing resumes a coroutine sleeping in it with the
// close's error; withTimeout() with std::errc::timed_out). The timer belongs
// to the awaiter: a frame destroyed mid-sleep cancels it.
// Loop thread only.
#pragma once

#include "keel/coro/Awaitable.h"

namespace keel {

class SleepOp final : public PendingOp {
 public:
  SleepOp(EventLoop& loop, Duration d) noexcept : loop_(loop), delay_(d) {}
  ~SleepOp() { detach(); }
  SleepOp(SleepOp&& o) noexcept : PendingOp(), loop_(o.loop_), delay_(o.delay_) {}

  [[nodiscard]] EventLoop& loop() const noexcept { return loop_; }
  bool await_ready() const noexcept { return delay_ <= Duration::zero(); }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    waiter_ = h;
    exec_ = coro_detail::executorOf(h);
    if (ParkingExecutor* p = exec_ != nullptr ? exec_->parking() : nullptr) {
      if (const std::error_code ec = p->park(*this)) {
        error_ = ec;
        return false;
      }
      parked_ = p;
    }
    timer_.arm(loop_, delay_, &SleepOp::fired, this);
    return true;
  }
  Result<void> await_resume() const noexcept { return Result<void>(error_); }
  bool abandon() noexcept override { return detach(); }

 private:
  static void fired(void* self) noexcept {
    auto* op = static_cast<SleepOp*>(self);
    op->unparkNow();
    resumeVia(op->exec_, op->waiter_);
  }
  bool detach() noexcept {
    unparkNow();
    return timer_.cancel();
  }
  void unparkNow() noexcept {
    if (parked_ != nullptr) std::exchange(parked_, nullptr)->unpark(*this);
  }

  EventLoop& loop_;
  Duration delay_;
  LoopTimer timer_;
  ParkingExecutor* parked_ = nullptr;
};

[[nodiscard]] inline SleepOp sleep(EventLoop& loop, Duration d) noexcept { return SleepOp(loop, d); }

}  // namespace keel
