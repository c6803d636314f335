#include "keel/coro/Spawn.h"

#include <coroutine>
#include <utility>

#include "keel/core/Log.h"

namespace keel {
namespace {

struct RootPromise;
using RootHandle = std::coroutine_handle<RootPromise>;

// The loop's list of live roots; destroying it (first thing in ~EventLoop)
// destroys every frame still suspended.
class Roots final : public LoopAttachment {
 public:
  ~Roots() override;
  void link(RootPromise& p) noexcept;
  void unlink(RootPromise& p) noexcept;
  std::size_t count = 0;

 private:
  RootPromise* head_ = nullptr;
};

struct RootTask {
  using promise_type = RootPromise;
  RootHandle h;
};

struct RootPromise : coro_detail::PromiseBase {
  RootTask get_return_object() noexcept { return RootTask{RootHandle::from_promise(*this)}; }
  // Starts inside spawn() after it is linked; frees itself at the end.
  std::suspend_always initial_suspend() const noexcept { return {}; }
  std::suspend_never final_suspend() const noexcept { return {}; }
  void return_void() const noexcept {}
  ~RootPromise() {
    if (roots != nullptr) roots->unlink(*this);
  }

  Roots* roots = nullptr;
  RootPromise* prev = nullptr;
  RootPromise* next = nullptr;
};

Roots::~Roots() {
  // Each destroy() unlinks that root (its promise's destructor).
  while (head_ != nullptr) RootHandle::from_promise(*head_).destroy();
}

void Roots::link(RootPromise& p) noexcept {
  p.roots = this;
  p.next = head_;
  if (head_ != nullptr) head_->prev = &p;
  head_ = &p;
  ++count;
}

void Roots::unlink(RootPromise& p) noexcept {
  if (p.prev != nullptr) p.prev->next = p.next;
  if (p.next != nullptr) p.next->prev = p.prev;
  if (head_ == &p) head_ = p.next;
  p.roots = nullptr;
  --count;
}

const char kRootsKey = 0;

Roots& rootsOf(EventLoop& loop) {
  if (auto* r = static_cast<Roots*>(loop.attachment(&kRootsKey))) return *r;
  auto owned = std::make_unique<Roots>();
  Roots& r = *owned;
  loop.attach(&kRootsKey, std::move(owned));
  return r;
}

// The exception is caught here rather than in unhandled_exception so that
// the handler runs after the task's own frame is gone, with nothing of the
// failed task left half-destroyed.
RootTask runRoot(Task<void> task, CoroErrorHandler onError) {
  std::exception_ptr failed;
  try {
    co_await task;
  } catch (...) {
    failed = std::current_exception();
  }
  if (failed) {
    task = Task<void>();
    if (onError) {
      onError(failed);
    } else {
      logCoroException(failed, "a spawned coroutine");
    }
  }
}

}  // namespace

void logCoroException(std::exception_ptr e, const char* where) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    KEEL_ERROR("uncaught exception in {}: {}", where, ex.what());
  } catch (...) {
    KEEL_ERROR("uncaught exception in {} (not a std::exception)", where);
  }
}

void spawn(EventLoop& loop, Task<void> task, CoroErrorHandler onError) {
  KEEL_ASSERT_IN_LOOP(loop, "keel::spawn");
  Roots& roots = rootsOf(loop);
  RootTask root = runRoot(std::move(task), std::move(onError));
  roots.link(root.h.promise());
  root.h.resume();
}

std::size_t spawnedCount(EventLoop& loop) noexcept {
  auto* r = static_cast<Roots*>(loop.attachment(&kRootsKey));
  return r != nullptr ? r->count : 0;
}

}  // namespace keel
