#include "keel/core/EventLoop.h"

#include <csignal>
#include <cstdlib>
#include <mutex>
#include <system_error>

#include <sys/eventfd.h>
#include <unistd.h>

#include "keel/core/Log.h"
#include "keel/core/Watcher.h"
#include "keel/core/internal/UringPoller.h"

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

Deferred::~Deferred() {
  if (loop_ != nullptr) loop_->cancelDeferred(*this);
}

EventLoop::EventLoop(LoopOptions options)
    : options_(options),
      clock_(options.clock),
      wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      threadId_(std::this_thread::get_id()),
      now_(readClock()),
      timers_(now_, options.tick),
      events_(static_cast<std::size_t>(options.maxEventsPerWait > 0 ? options.maxEventsPerWait : 256)),
      scratch_(options.scratchBytes) {
  if (!wake_) throwErrno("eventfd");
  ignoreSigpipeOnce();
  if (detail::resolveLoopBackend(options.backend) == LoopBackend::IoUring) {
    std::error_code ec;
    uring_ = detail::UringPoller::create(wake_.get(), ec);
    if (!uring_) {
      if (options.backend == LoopBackend::IoUring) throw std::system_error(ec, "io_uring backend");
      static std::once_flag once;
      std::call_once(once, [&ec] { KEEL_WARN("io_uring unavailable ({}): loops use epoll", ec.message()); });
    }
  }
  if (!uring_) setUpEpoll();
  if (t_loop == nullptr) t_loop = this;
}

void EventLoop::setUpEpoll() {
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) throwErrno("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the wake-up descriptor is the only null entry
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) < 0) throwErrno("epoll_ctl(wake)");
}

EventLoop::~EventLoop() {
  // Attachments go first, newest first: their destructors may still cancel
  // timers or queue work on this loop.
  while (!attachments_.empty()) {
    std::unique_ptr<LoopAttachment> a = std::move(attachments_.back().second);
    attachments_.pop_back();
    a.reset();
  }
  if (t_loop == this) t_loop = nullptr;
}

LoopAttachment* EventLoop::attachment(const void* key) const noexcept {
  for (const auto& [k, a] : attachments_) {
    if (k == key) return a.get();
  }
  return nullptr;
}

void EventLoop::attach(const void* key, std::unique_ptr<LoopAttachment> a) {
  for (auto& [k, old] : attachments_) {
    if (k == key) {
      old = std::move(a);
      return;
    }
  }
  attachments_.emplace_back(key, std::move(a));
}

void EventLoop::assertInLoopThread(const char* fn) const {
  if (!isInLoopThread()) {
    KEEL_ERROR("{} called on a thread that does not own EventLoop {}; use runInLoop",
               fn != nullptr ? fn : "a loop-thread function", static_cast<const void*>(this));
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
  // Removals queued by the last iteration: their descriptors' files stay
  // open in the kernel until the ring hears of them.
  if (uring_) (void)uring_->flush();
}

void EventLoop::quit() {
  quit_.store(true, std::memory_order_release);
  if (!isInLoopThread()) wakeup();
}

Duration EventLoop::computeWait(Duration cap) const {
  // End-of-iteration work still pending (the round cap below cut it short)
  // must run now: the objects waiting on it (a coalesced flush) may have no
  // readiness interest that would wake the loop.
  if (!deferred_.empty() || !endHooks_.empty()) return Duration::zero();
  Duration wait = cap;
  // A manual clock does not move by itself: waiting for a timer would wait
  // for ever, so only I/O is waited for.
  const bool timersWait = clock_ == nullptr || clock_->flows();
  if (auto next = timers_.timeUntilNext(now_); timersWait && next && *next < wait) wait = *next;
  return wait;
}

int EventLoop::waitEpoll(Duration wait) {
  int ms = -1;
  if (wait != Duration::max()) {
    // Round up: waking before the deadline would only cost another iteration.
    const auto c = std::chrono::ceil<std::chrono::milliseconds>(wait).count();
    ms = c > INT32_MAX ? INT32_MAX : static_cast<int>(c);
  }
  const int n = ::epoll_wait(epoll_.get(), events_.data(), static_cast<int>(events_.size()), ms);
  // EINTR: a signal handler ran on this thread (a SignalWatcher's, when the
  // loop runs on an application thread; keel's own threads block the
  // asynchronous signals). Not an error: an iteration with no events.
  if (n < 0 && errno != EINTR) throwErrno("epoll_wait");
  return n > 0 ? n : 0;
}

void EventLoop::dispatchReady() {
  if (uring_) {
    for (std::size_t i = 0; i < uringReady_; ++i) {
      if (uring_->dispatch(i)) {
        drainWakeup();
        uring_->rearmWake();
      }
    }
    uringReady_ = 0;
    return;
  }
  for (int i = 0; i < readyCount_; ++i) {
    void* p = events_[static_cast<std::size_t>(i)].data.ptr;
    if (p == nullptr) {
      // Either the wake-up fd, or a watcher removed earlier in this batch.
      if (events_[static_cast<std::size_t>(i)].events != 0) drainWakeup();
      continue;
    }
    static_cast<Watcher*>(p)->dispatch(events_[static_cast<std::size_t>(i)].events);
  }
  readyCount_ = 0;
}

void EventLoop::runOnce(Duration timeout) {
  const Duration wait = computeWait(timeout);
  if (uring_) {
    uringReady_ = uring_->wait(wait, events_.size());
  } else {
    readyCount_ = waitEpoll(wait);
  }
  now_ = readClock();  // the iteration's one clock read
  const TimePoint woke = now_;
  inIteration_ = true;
  iterations_.store(iterations_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);

  dispatching_ = true;
  dispatchReady();
  timers_.advance(now_);
  dispatching_ = false;

  runTasks();

  // End-of-iteration work (write coalescing). A hook may register another;
  // bound the rounds so a misbehaving hook cannot starve epoll. What is left
  // makes the next wait return at once (computeWait).
  for (int round = 0; round < 8 && (!endHooks_.empty() || !deferred_.empty()); ++round) {
    deferredRunning_.swap(deferred_);
    for (std::size_t i = 0; i < deferredRunning_.size(); ++i) {
      if (Deferred* d = deferredRunning_[i]) {
        d->loop_ = nullptr;  // unscheduled before it runs, so it may schedule itself again
        d->runDeferred();
      }
    }
    deferredRunning_.clear();
    endRunning_.swap(endHooks_);
    for (auto& hook : endRunning_) hook();
    endRunning_.clear();
  }

  if (measuring_.load(std::memory_order_relaxed)) {
    const auto busy = std::chrono::duration_cast<std::chrono::nanoseconds>(readClock() - woke).count();
    busyNs_.store(busyNs_.load(std::memory_order_relaxed) + busy, std::memory_order_relaxed);
    pendingTimers_.store(timers_.size(), std::memory_order_relaxed);
  }
  inIteration_ = false;
}

void EventLoop::measureLoad(Duration lagProbe) {
  runInLoop([this, lagProbe] {
    measuring_.store(true, std::memory_order_relaxed);
    if (lagArmed_ || lagProbe <= Duration::zero()) return;
    lagArmed_ = true;
    lagProbe_ = lagProbe;
    armLagProbe();
  });
}

void EventLoop::armLagProbe() {
  // Re-armed from its own callback rather than runEvery: the due time is
  // then known exactly, and a stall shows as one late firing, not skipped
  // ticks. The wheel owns the callback, so it cannot outlive the loop.
  lagDue_ = now_ + lagProbe_;
  runAfterDetached(lagProbe_, [this] {
    const auto late = std::chrono::duration_cast<std::chrono::nanoseconds>(now_ - lagDue_).count();
    lagNs_.store(late > 0 ? late : 0, std::memory_order_relaxed);
    armLagProbe();
  });
}

EventLoop::Load EventLoop::load() const noexcept {
  Load l;
  l.iterations = iterations_.load(std::memory_order_relaxed);
  l.busy = std::chrono::nanoseconds(busyNs_.load(std::memory_order_relaxed));
  l.queuedTasks = queuedTasks_.load(std::memory_order_relaxed);
  l.pendingTimers = pendingTimers_.load(std::memory_order_relaxed);
  l.lag = std::chrono::nanoseconds(lagNs_.load(std::memory_order_relaxed));
  return l;
}

void EventLoop::deferToEndOfIteration(Deferred& d) {
  KEEL_ASSERT_IN_LOOP(*this, "EventLoop::deferToEndOfIteration");
  if (d.loop_ != nullptr) return;
  deferred_.push_back(&d);
  d.loop_ = this;
}

void EventLoop::cancelDeferred(Deferred& d) noexcept {
  if (d.loop_ != this) return;
  d.loop_ = nullptr;
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
    queuedTasks_.store(tasks_.size(), std::memory_order_relaxed);
  }
  // From the loop thread during dispatch the task runs later this iteration
  // without a wake-up; anywhere else the loop may be (or be about to be)
  // blocked in its wait.
  if (!isInLoopThread() || !dispatching_) wakeup();
}

void EventLoop::runTasks() {
  {
    std::lock_guard lock(tasksMutex_);
    if (tasks_.empty()) return;
    running_.swap(tasks_);
    queuedTasks_.store(0, std::memory_order_relaxed);
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

std::error_code EventLoop::updateWatcher(Watcher& w, std::uint32_t events) noexcept {
  KEEL_ASSERT_IN_LOOP(*this, "Watcher::setInterest");
  if (uring_) {
    if (events == 0) {
      removeWatcher(w);
      return {};
    }
    const std::error_code ec = uring_->set(w, events);
    if (ec) ++watchErrors_;
    return ec;
  }
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = &w;
  int rc = 0;
  const char* op = "epoll_ctl(MOD)";
  if (events == 0) {
    // Deregister rather than keep an empty interest: epoll always reports
    // EPOLLHUP/EPOLLERR, which would spin a level-triggered loop on a
    // connection that paused reading after its peer went away.
    op = "epoll_ctl(DEL)";
    if (w.registered_) rc = ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, w.fd_, nullptr);
    if (rc == 0) w.registered_ = false;
  } else if (!w.registered_) {
    op = "epoll_ctl(ADD)";
    rc = ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, w.fd_, &ev);
    if (rc == 0) w.registered_ = true;
  } else {
    rc = ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, w.fd_, &ev);
  }
  if (rc < 0) {
    // ENOMEM, ENOSPC (fs.epoll.max_user_watches), EPERM (a descriptor that
    // cannot be polled): a fault of this one descriptor, reported to its
    // owner, which closes it. The loop and every other watcher go on.
    const std::error_code ec(errno, std::generic_category());
    ++watchErrors_;
    KEEL_WARN("{} on fd {}: {}", op, w.fd_, ec.message());
    return ec;
  }
  w.interest_ = events;
  return {};
}

void EventLoop::removeWatcher(Watcher& w) noexcept {
  if (uring_) {
    uring_->remove(w);
    // Inside an iteration the removal goes with the next wait, moments
    // away; outside one (a test, a shutdown) nothing else would send it.
    if (!inIteration_) (void)uring_->flush();
    return;
  }
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

namespace keel {

// Declared in LoopClock.h; defined here, with the loop it drives.
void advanceLoop(EventLoop& loop, ManualClock& clock, Duration d) {
  const TimePoint end = clock.now() + d;
  loop.runOnce(Duration::zero());
  for (;;) {
    const auto next = loop.timers().timeUntilNext(loop.now());
    // Never a zero step: a slot due "now" was just processed.
    const Duration step = next ? std::max(*next, loop.timers().tick()) : Duration::max();
    if (step == Duration::max() || clock.now() + step >= end) break;
    clock.advance(step);
    loop.runOnce(Duration::zero());
  }
  clock.set(end);
  loop.runOnce(Duration::zero());
}

}  // namespace keel
