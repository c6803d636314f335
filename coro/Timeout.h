// co_await keel::withTimeout(d, op): op, or std::errc::timed_out after `d`.
//
//   auto r = co_await keel::withTimeout(5s, conn.read());
//   if (r.error() == std::errc::timed_out) ...
//
// `op` is one of keel's operation awaiters (CoConnection's read, readFrame,
// write, peerClosed; sleep; connect): each can be abandoned, so the race
// resolves exactly once. Whichever comes first wins and the other is
// cancelled inside the same loop thread: a completion cancels the timer as
// the coroutine resumes; the timer abandons the op (it deregisters from its
// source, which then never resumes it) before resuming. A write that timed
// out was still queued; only the wait for the watermark is given up.
// Loop thread only.
#pragma once

#include <system_error>
#include <utility>

#include "keel/coro/Awaitable.h"

namespace keel {

template <class Op>
class [[nodiscard]] WithTimeout {
 public:
  WithTimeout(Duration d, Op&& op) noexcept : op_(std::move(op)), delay_(d) {}

  bool await_ready() { return op_.await_ready(); }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    if (!op_.await_suspend(h)) return false;
    waiter_ = h;
    exec_ = coro_detail::executorOf(h);
    timer_.arm(op_.loop(), delay_, &WithTimeout::fired, this);
    return true;
  }
  auto await_resume() {
    timer_.cancel();
    using R = decltype(op_.await_resume());
    if (timedOut_) return R(std::make_error_code(std::errc::timed_out));
    return op_.await_resume();
  }

 private:
  static void fired(void* self) noexcept {
    auto* t = static_cast<WithTimeout*>(self);
    if (!t->op_.abandon()) return;  // completed in this same turn; its resume is on the way
    t->timedOut_ = true;
    resumeVia(t->exec_, t->waiter_);
  }

  Op op_;
  Duration delay_;
  LoopTimer timer_;
  std::coroutine_handle<> waiter_;
  Executor* exec_ = nullptr;
  bool timedOut_ = false;
};

template <class Op>
[[nodiscard]] WithTimeout<Op> withTimeout(Duration d, Op op) noexcept {
  return WithTimeout<Op>(d, std::move(op));
}

}  // namespace keel
