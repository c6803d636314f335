// One epoll reactor per thread.
//
// Each iteration: epoll_wait (its timeout set by the timer wheel), one clock
// read, dispatch ready watchers, fire due timers, run queued tasks, run
// end-of-iteration hooks (used for write coalescing). The loop is
// level-triggered; docs/design.md gives the measurements behind that.
//
// Thread-safety: runInLoop, queueInLoop, quit, isInLoopThread and
// runAfter/runEvery/cancel called through runInLoop are safe from any thread.
// Everything else, and every method named *InLoop, is for the loop thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include <sys/epoll.h>

#include "keel/core/Fd.h"
#include "keel/core/Time.h"
#include "keel/core/TimerWheel.h"

namespace keel {

class Watcher;

// Work an object asks the loop to do once at the end of the current
// iteration (a connection flushing coalesced writes). Intrusive: scheduling
// allocates nothing, and an object that dies first cancels itself.
class Deferred {
 public:
  virtual void runDeferred() = 0;

 protected:
  ~Deferred() = default;
};

struct LoopOptions {
  Duration tick = std::chrono::milliseconds(1);  // timer wheel resolution
  int maxEventsPerWait = 256;                    // epoll_wait batch
  std::size_t scratchBytes = 64 * 1024;          // per-loop readv spill area
};

class EventLoop {
 public:
  using Task = std::function<void()>;

  explicit EventLoop(LoopOptions options = {});
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Runs until quit() (returning at once if quit() came first). Must be called on the thread that constructed
  // the loop (or the thread that first calls it, see bindToCurrentThread()).
  void loop();
  // Runs at most one iteration, waiting up to `timeout` (for embedding/tests).
  void runOnce(Duration timeout);
  // Any thread. The loop finishes its current iteration (including queued
  // tasks) and returns.
  void quit();

  // Any thread. Runs `task` now when called on the loop thread, else queues it.
  void runInLoop(Task task);
  // Any thread. Always queues; runs after the current dispatch.
  void queueInLoop(Task task);

  [[nodiscard]] bool isInLoopThread() const noexcept {
    return threadId_.load(std::memory_order_relaxed) == std::this_thread::get_id();
  }
  // Aborts with a message when called off the loop thread: misuse of a
  // loop-affine object is a bug, never a recoverable condition.
  void assertInLoopThread() const;
  // Moves ownership to the calling thread; only before loop() runs.
  void bindToCurrentThread() noexcept { threadId_.store(std::this_thread::get_id()); }

  // The time read once per iteration, right after epoll_wait returns.
  [[nodiscard]] TimePoint now() const noexcept { return now_; }
  // Re-reads the clock (for the rare caller that blocked inside a callback).
  void updateTime() noexcept { now_ = Clock::now(); }

  // Loop thread. Timers are relative to now().
  [[nodiscard]] TimerId runAfter(Duration delay, TimerWheel::Callback cb) {
    return timers_.schedule(now_, delay, std::move(cb));
  }
  [[nodiscard]] TimerId runEvery(Duration interval, TimerWheel::Callback cb) {
    return timers_.schedule(now_, interval, std::move(cb), interval);
  }
  bool cancel(TimerId id) noexcept { return timers_.cancel(id); }
  [[nodiscard]] TimerWheel& timers() noexcept { return timers_; }

  // Loop thread. Called once at the end of the current iteration, after all
  // I/O and timers (a connection registers here to flush coalesced writes).
  void runAtEndOfIteration(Task task) { endHooks_.push_back(std::move(task)); }
  // Loop thread. The allocation-free form for per-message paths; the caller
  // schedules an object at most once per iteration and cancels it if it is
  // destroyed before it ran.
  void deferToEndOfIteration(Deferred& d) { deferred_.push_back(&d); }
  void cancelDeferred(Deferred& d) noexcept;

  // Per-loop spill buffer for readv: big enough to drain a socket in one call,
  // shared by every connection on the loop (valid only during a callback).
  [[nodiscard]] std::span<char> scratch() noexcept { return scratch_; }

  [[nodiscard]] std::uint64_t iterations() const noexcept { return iterations_; }
  [[nodiscard]] const LoopOptions& options() const noexcept { return options_; }

  // The loop running on this thread, or nullptr.
  [[nodiscard]] static EventLoop* current() noexcept;

 private:
  friend class Watcher;
  void updateWatcher(Watcher& w, std::uint32_t events);
  void removeWatcher(Watcher& w) noexcept;
  void wakeup() noexcept;
  void drainWakeup() noexcept;
  void runTasks();
  int computeTimeoutMs(Duration cap) const;

  LoopOptions options_;
  Fd epoll_;
  Fd wake_;
  std::atomic<std::thread::id> threadId_;
  std::atomic<bool> quit_{false};
  bool dispatching_ = false;
  TimePoint now_;
  TimerWheel timers_;
  std::vector<epoll_event> events_;
  int readyCount_ = 0;
  std::vector<char> scratch_;
  std::uint64_t iterations_ = 0;

  std::mutex tasksMutex_;
  std::vector<Task> tasks_;    // guarded by tasksMutex_
  std::vector<Task> running_;  // loop thread only; swapped with tasks_
  std::atomic<bool> wakePending_{false};
  std::vector<Task> endHooks_;
  std::vector<Task> endRunning_;
  std::vector<Deferred*> deferred_;
  std::vector<Deferred*> deferredRunning_;
};

}  // namespace keel
