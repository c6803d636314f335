#include "keel/core/EventLoop.h"

#include <csignal>
#include <cstdlib>
#include <mutex>
#include <system_error>

#include <sys/eventfd.h>
#include <unistd.h>

#include "keel/core/Log.h"
#include "keel/core/Watcher.h"

namespace keel {
namespace {

thread_local EventLoop* t_loop = nullptr;

[[noreturn]] void throwErrno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void ignoreSigpipeOnce() {
  // A write to a socket the peer has reset must return EPIPE, not kill the
  // process. keel also sends with MSG_NOSIGNAL; this covers writev and any
  // descriptor the application writes to itself.
  static std::once_flag once;
  std::call_once(once, [] { std::signal(SIGPIPE, SIG_IGN); });
}

}  // namespace

EventLoop* EventLoop::current() noexcept { return t_loop; }

EventLoop::EventLoop(LoopOptions options)
    : options_(options),
      epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      threadId_(std::this_thread::get_id()),
      now_(Clock::now()),
      timers_(now_, options.tick),
      events_(static_cast<std::size_t>(options.maxEventsPerWait > 0 ? options.maxEventsPerWait : 256)),
      scratch_(options.scratchBytes) {
  if (!epoll_) throwErrno("epoll_create1");
  if (!wake_) throwErrno("eventfd");
  ignoreSigpipeOnce();
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the wake-up descriptor is the only null entry
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) < 0) throwErrno("epoll_ctl(wake)");
  if (t_loop == nullptr) t_loop = this;
}

EventLoop::~EventLoop() {
  if (t_loop == this) t_loop = nullptr;
}

void EventLoop::assertInLoopThread() const {
  if (!isInLoopThread()) {
    KEEL_ERROR("EventLoop {} used from a thread that does not own it", static_cast<const void*>(this));
    std::abort();
  }
}

void EventLoop::loop() {
  bindToCurrentThread();
  t_loop = this;
  // quit_ is cleared on the way out, not on the way in: a quit() that lands
  // before the thread reaches loop() (a LoopThread stopped right after it
  // started) must still end it.
  while (!quit_.load(std::memory_order_acquire)) runOnce(Duration::max());
  quit_.store(false, std::memory_order_relaxed);
}

void EventLoop::quit() {
  quit_.store(true, std::memory_order_release);
  if (!isInLoopThread()) wakeup();
}

int EventLoop::computeTimeoutMs(Duration cap) const {
  Duration wait = cap;
  if (auto next = timers_.timeUntilNext(now_); next && *next < wait) wait = *next;
  if (wait == Duration::max()) return -1;
  // Round up: waking before the deadline would only cost another iteration.
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(wait).count();
  return ms > INT32_MAX ? INT32_MAX : static_cast<int>(ms);
}

void EventLoop::runOnce(Duration timeout) {
  const int n =
      ::epoll_wait(epoll_.get(), events_.data(), static_cast<int>(events_.size()), computeTimeoutMs(timeout));
  now_ = Clock::now();  // the iteration's one clock read
  ++iterations_;
  if (n < 0 && errno != EINTR) throwErrno("epoll_wait");
  readyCount_ = n > 0 ? n : 0;

  dispatching_ = true;
  for (int i = 0; i < readyCount_; ++i) {
    void* p = events_[static_cast<std::size_t>(i)].data.ptr;
    if (p == nullptr) {
      // Either the wake-up fd, or a watcher removed earlier in this batch.
      if (events_[static_cast<std::size_t>(i)].events != 0) drainWakeup();
      continue;
    }
    static_cast<Watcher*>(p)->dispatch(events_[static_cast<std::size_t>(i)].events);
  }
  timers_.advance(now_);
  dispatching_ = false;
  readyCount_ = 0;

  runTasks();

  // End-of-iteration work (write coalescing). A hook may register another;
  // bound the rounds so a misbehaving hook cannot starve epoll.
  for (int round = 0; round < 8 && (!endHooks_.empty() || !deferred_.empty()); ++round) {
    deferredRunning_.swap(deferred_);
    for (std::size_t i = 0; i < deferredRunning_.size(); ++i) {
      if (Deferred* d = deferredRunning_[i]) d->runDeferred();
    }
    deferredRunning_.clear();
    endRunning_.swap(endHooks_);
    for (auto& hook : endRunning_) hook();
    endRunning_.clear();
  }
}

void EventLoop::cancelDeferred(Deferred& d) noexcept {
  for (auto& p : deferred_) {
    if (p == &d) p = nullptr;
  }
  for (auto& p : deferredRunning_) {
    if (p == &d) p = nullptr;
  }
}

void EventLoop::runInLoop(Task task) {
  if (isInLoopThread()) {
    task();
  } else {
    queueInLoop(std::move(task));
  }
}

void EventLoop::queueInLoop(Task task) {
  {
    std::lock_guard lock(tasksMutex_);
    tasks_.push_back(std::move(task));
  }
  // From the loop thread during dispatch the task runs later this iteration
  // without a wake-up; anywhere else the loop may be (or be about to be)
  // blocked in epoll_wait.
  if (!isInLoopThread() || !dispatching_) wakeup();
}

void EventLoop::runTasks() {
  {
    std::lock_guard lock(tasksMutex_);
    if (tasks_.empty()) return;
    running_.swap(tasks_);
  }
  for (auto& task : running_) task();
  running_.clear();
}

void EventLoop::wakeup() noexcept {
  // Coalesce: one eventfd write is enough until the loop drains it.
  if (wakePending_.exchange(true, std::memory_order_acq_rel)) return;
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t r = ::write(wake_.get(), &one, sizeof one);
}

void EventLoop::drainWakeup() noexcept {
  std::uint64_t value = 0;
  [[maybe_unused]] const ssize_t r = ::read(wake_.get(), &value, sizeof value);
  // Cleared before runTasks() swaps the queue, so a producer that saw the
  // flag set is guaranteed to have its task picked up by that swap.
  wakePending_.store(false, std::memory_order_release);
}

void EventLoop::updateWatcher(Watcher& w, std::uint32_t events) {
  assertInLoopThread();
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = &w;
  if (events == 0) {
    // Deregister rather than keep an empty interest: epoll always reports
    // EPOLLHUP/EPOLLERR, which would spin a level-triggered loop on a
    // connection that paused reading after its peer went away.
    if (w.registered_ && ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, w.fd_, nullptr) < 0)
      throwErrno("epoll_ctl(DEL)");
    w.registered_ = false;
  } else if (!w.registered_) {
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, w.fd_, &ev) < 0) throwErrno("epoll_ctl(ADD)");
    w.registered_ = true;
  } else {
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, w.fd_, &ev) < 0) throwErrno("epoll_ctl(MOD)");
  }
  w.interest_ = events;
}

void EventLoop::removeWatcher(Watcher& w) noexcept {
  if (w.registered_) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, w.fd_, nullptr);
  w.registered_ = false;
  w.interest_ = 0;
  // The watcher may still sit later in the batch being dispatched: blank it so
  // the dispatcher skips it instead of calling into freed memory.
  for (int i = 0; i < readyCount_; ++i) {
    auto& ev = events_[static_cast<std::size_t>(i)];
    if (ev.data.ptr == &w) {
      ev.data.ptr = nullptr;
      ev.events = 0;
    }
  }
}

}  // namespace keel
