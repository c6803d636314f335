// keel::Task<T>: a lazy coroutine that one other coroutine awaits.
//
//   keel::Task<int> answer() { co_return 42; }
//   keel::Task<> run(keel::CoConnection& conn) { int v = co_await answer(); ... }
//
// Lazy: nothing runs until it is awaited (or handed to spawn()). Awaiting
// starts it by symmetric transfer (await_suspend returns its handle), and its
// final_suspend hands control straight back to the awaiter the same way, so
// a chain of tasks costs no stack depth and no trip through the loop.
// Frames come from the calling thread's FramePool (coro/FramePool.h).
//
// An exception that escapes a task is stored and rethrown from co_await in
// the awaiting coroutine; one that escapes a root reaches the spawner's
// handler (coro/Spawn.h, coro/CoConnection.h).
//
// Ownership: the Task object owns the frame. Destroying a Task whose
// coroutine is suspended destroys the frame without resuming it, and with it
// every awaiter in it (they deregister themselves, timers included), which
// is how a loop or a connection going away cancels what is pending.
//
// Thread-safety: a task lives on one loop thread.
#pragma once

#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "keel/coro/FramePool.h"

namespace keel {

// Resumes coroutines that wake from outside the events of their own root:
// a timer, a connect completing. A root that must resume under a guard
// (CoConnection runs its coroutine inside its pipeline's dispatch, so a close
// from the coroutine never destroys the handler it runs in) implements it.
// Null means "resume directly".
class ParkingExecutor;

class Executor {
 public:
  // The ParkingExecutor behind this one, when it is one (coro/Awaitable.h).
  [[nodiscard]] virtual ParkingExecutor* parking() noexcept { return nullptr; }
  virtual void resume(std::coroutine_handle<> h) noexcept = 0;
  // The root coroutine has finished (returned or threw); it sits at its
  // final suspend point and may be destroyed.
  virtual void rootDone() noexcept = 0;

 protected:
  ~Executor() = default;
};

inline void resumeVia(Executor* e, std::coroutine_handle<> h) noexcept {
  if (e != nullptr) {
    e->resume(h);
  } else {
    h.resume();
  }
}

namespace coro_detail {

struct PromiseBase {
  static void* operator new(std::size_t n) { return FramePool::allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { FramePool::deallocate(p, n); }

  struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      PromiseBase& p = h.promise();
      if (p.continuation) return p.continuation;
      if (p.executor != nullptr) p.executor->rootDone();
      return std::noop_coroutine();
    }
    void await_resume() const noexcept {}
  };

  std::suspend_always initial_suspend() const noexcept { return {}; }
  FinalAwaiter final_suspend() const noexcept { return {}; }
  void unhandled_exception() noexcept { exception = std::current_exception(); }

  std::coroutine_handle<> continuation;
  Executor* executor = nullptr;  // inherited from the awaiter; see Executor
  std::exception_ptr exception;
};

// The executor of whoever awaits, for awaiters that resume from outside.
template <class P>
[[nodiscard]] Executor* executorOf(std::coroutine_handle<P> h) noexcept {
  if constexpr (std::is_base_of_v<PromiseBase, P>) {
    return h.promise().executor;
  } else {
    return nullptr;
  }
}

template <class T>
struct Promise : PromiseBase {
  template <class U>
  void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    value.emplace(std::forward<U>(v));
  }
  std::optional<T> value;
};

template <>
struct Promise<void> : PromiseBase {
  void return_void() const noexcept {}
};

}  // namespace coro_detail

template <class T = void>
class [[nodiscard]] Task {
 public:
  struct promise_type : coro_detail::Promise<T> {
    Task get_return_object() noexcept {
      return Task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
  };
  using Handle = std::coroutine_handle<promise_type>;

  Task() noexcept = default;
  Task(Task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  ~Task() { reset(); }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;

  [[nodiscard]] bool valid() const noexcept { return static_cast<bool>(h_); }
  [[nodiscard]] bool done() const noexcept { return h_ && h_.done(); }
  // Gives up ownership (spawn() and CoConnection adopt roots this way).
  [[nodiscard]] Handle release() noexcept { return std::exchange(h_, {}); }

  struct Awaiter {
    Handle h;
    bool await_ready() const noexcept { return !h || h.done(); }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> awaiting) noexcept {
      h.promise().continuation = awaiting;
      h.promise().executor = coro_detail::executorOf(awaiting);
      return h;
    }
    T await_resume() {
      if (h.promise().exception) std::rethrow_exception(h.promise().exception);
      if constexpr (!std::is_void_v<T>) return std::move(*h.promise().value);
    }
  };
  Awaiter operator co_await() const& noexcept { return Awaiter{h_}; }

 private:
  explicit Task(Handle h) noexcept : h_(h) {}
  void reset() noexcept {
    if (h_) std::exchange(h_, {}).destroy();
  }
  Handle h_;
};

}  // namespace keel
