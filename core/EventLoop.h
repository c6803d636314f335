// One reactor per thread, on epoll or on io_uring (LoopBackend).
//
// Each iteration: wait for readiness (its timeout set by the timer wheel),
// one clock read, dispatch ready watchers, fire due timers, run queued
// tasks, run end-of-iteration hooks (used for write coalescing). The loop is
// level-triggered on both backends; docs/design.md gives the measurements
// behind that, docs/io_uring.md what the io_uring backend does and costs.
//
// Thread-safety: runInLoop, queueInLoop, quit and isInLoopThread are safe
// from any thread. Everything else is for the loop thread, timers included:
// from another thread, schedule through runInLoop. Loop-thread entry points
// check the calling thread in builds with assertions on (debug, asan, tsan)
// and abort naming the function (KEEL_ASSERT_IN_LOOP); release builds do
// not pay for the check.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <sys/epoll.h>

#include "keel/core/Fd.h"
#include "keel/core/LoopClock.h"
#include "keel/core/Time.h"
#include "keel/core/TimerWheel.h"

namespace keel {

class Watcher;
namespace detail {
class UringPoller;
}

// How a loop waits for readiness. Both give the same callbacks, in the same
// level-triggered terms (docs/io_uring.md).
enum class LoopBackend : std::uint8_t {
  // KEEL_LOOP_BACKEND from the environment ("epoll" or "io_uring") when set,
  // else epoll: the faster of the two on every figure measured so far
  // (docs/io_uring.md). An io_uring that cannot be set up falls back to
  // epoll with one log line.
  Auto,
  Epoll,
  // Readiness through one-shot IORING_OP_POLL_ADD, submitted in batches with
  // the wait. The loop's constructor throws when io_uring is unavailable.
  IoUring,
};
[[nodiscard]] std::string_view toString(LoopBackend b) noexcept;
[[nodiscard]] std::optional<LoopBackend> parseLoopBackend(std::string_view name) noexcept;

// Work an object asks the loop to do once at the end of the current
// iteration (a connection flushing coalesced writes). Intrusive: scheduling
// allocates nothing, and an object destroyed while scheduled takes itself
// off the loop's list, so the loop never calls into a dead object.
class Deferred {
 public:
  virtual void runDeferred() = 0;
  [[nodiscard]] bool scheduled() const noexcept { return loop_ != nullptr; }

 protected:
  Deferred() = default;
  ~Deferred();
  Deferred(const Deferred&) = delete;
  Deferred& operator=(const Deferred&) = delete;

 private:
  friend class EventLoop;
  EventLoop* loop_ = nullptr;  // set while scheduled
};

// Per-loop state that another part of keel attaches to a loop (coro/Spawn.h
// keeps its detached coroutines here). The loop destroys its attachments
// first thing in its destructor, newest first, while timers and the rest of
// the loop still work: what they own can cancel timers on the way out.
class LoopAttachment {
 public:
  virtual ~LoopAttachment() = default;
};

// Aborts with `fn` named when called off `loop`'s thread, in builds with
// assertions on. For loop-affine entry points.
#ifdef NDEBUG
#define KEEL_ASSERT_IN_LOOP(loop, fn) ((void)0)
#else
#define KEEL_ASSERT_IN_LOOP(loop, fn) (loop).assertInLoopThread(fn)
#endif

struct LoopOptions {
  Duration tick = std::chrono::milliseconds(1);  // timer wheel resolution
  int maxEventsPerWait = 256;                    // events handled per wait
  std::size_t scratchBytes = 64 * 1024;          // per-loop readv spill area
  // The loop's time source; null is steady_clock. Tests pass a ManualClock.
  // Not owned: it must outlive the loop.
  const LoopClock* clock = nullptr;
  LoopBackend backend = LoopBackend::Auto;
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
  // Aborts with a message (naming `fn` when given) when called off the loop
  // thread: misuse of a loop-affine object is a bug, never a recoverable
  // condition.
  void assertInLoopThread(const char* fn = nullptr) const;
  // Moves ownership to the calling thread; only before loop() runs.
  void bindToCurrentThread() noexcept { threadId_.store(std::this_thread::get_id()); }

  // The time read once per iteration, right after the wait returns.
  [[nodiscard]] TimePoint now() const noexcept { return now_; }
  // Re-reads the clock (for the rare caller that blocked inside a callback).
  void updateTime() noexcept { now_ = readClock(); }

  // Loop thread (asserted). Timers are relative to now(). From another
  // thread, schedule through runInLoop. For a timer that belongs to a
  // handler, HandlerTimer (net/HandlerTimer.h) cancels itself.
  [[nodiscard]] TimerId runAfter(Duration delay, TimerWheel::Callback cb) {
    KEEL_ASSERT_IN_LOOP(*this, "EventLoop::runAfter");
    return timers_.schedule(now_, delay, std::move(cb));
  }
  // Repeats every `interval` from now(); after a stall it fires once and
  // skips the missed ticks unless `missed` is CatchUp (docs/timers.md).
  [[nodiscard]] TimerId runEvery(Duration interval, TimerWheel::Callback cb,
                                 TimerWheel::Missed missed = TimerWheel::Missed::Skip) {
    KEEL_ASSERT_IN_LOOP(*this, "EventLoop::runEvery");
    return timers_.schedule(now_, interval, std::move(cb), interval, missed);
  }
  // runAfter for a timer that is never cancelled: no handle to drop. The
  // callback must not outlive what it captures (nothing cancels it).
  void runAfterDetached(Duration delay, TimerWheel::Callback cb) {
    KEEL_ASSERT_IN_LOOP(*this, "EventLoop::runAfterDetached");
    (void)timers_.schedule(now_, delay, std::move(cb));
  }
  bool cancel(TimerId id) noexcept {
    KEEL_ASSERT_IN_LOOP(*this, "EventLoop::cancel");
    return timers_.cancel(id);
  }
  [[nodiscard]] TimerWheel& timers() noexcept { return timers_; }

  // Loop thread. Called once at the end of the current iteration, after all
  // I/O and timers (a connection registers here to flush coalesced writes).
  void runAtEndOfIteration(Task task) { endHooks_.push_back(std::move(task)); }
  // Loop thread. The allocation-free form for per-message paths. Scheduling
  // an object that is already scheduled does nothing; a destroyed one
  // cancels itself.
  void deferToEndOfIteration(Deferred& d);
  void cancelDeferred(Deferred& d) noexcept;

  // Per-loop spill buffer for readv: big enough to drain a socket in one call,
  // shared by every connection on the loop (valid only during a callback).
  [[nodiscard]] std::span<char> scratch() noexcept { return scratch_; }

  [[nodiscard]] std::uint64_t iterations() const noexcept {
    return iterations_.load(std::memory_order_relaxed);
  }
  // epoll_ctl calls that failed (each one closed the object it was for).
  [[nodiscard]] std::uint64_t watchErrors() const noexcept { return watchErrors_; }
  [[nodiscard]] const LoopOptions& options() const noexcept { return options_; }
  // The backend in use: Epoll or IoUring, never Auto.
  [[nodiscard]] LoopBackend backend() const noexcept {
    return uring_ ? LoopBackend::IoUring : LoopBackend::Epoll;
  }

  // What a metrics scrape reads. Busy time, pending timers and lag are
  // measured only after measureLoad(): busy time costs one more clock read
  // per iteration and the lag probe one timer wake-up per lagProbe.
  struct Load {
    std::uint64_t iterations = 0;
    Duration busy{};                // total time from the wait's return to the next wait
    std::size_t queuedTasks = 0;    // posted tasks not yet run
    std::size_t pendingTimers = 0;  // as of the end of the last iteration
    Duration lag{};                 // how late the last lag probe fired (resolution: one tick)
  };
  // Any thread. Starts measuring (idempotent; the first lagProbe wins).
  void measureLoad(Duration lagProbe = std::chrono::milliseconds(250));
  // Any thread: relaxed loads of figures only the loop thread writes.
  [[nodiscard]] Load load() const noexcept;

  // Loop thread. The attachment stored under `key` (any address unique to
  // the caller), or null; attach() stores one, replacing an old one.
  [[nodiscard]] LoopAttachment* attachment(const void* key) const noexcept;
  void attach(const void* key, std::unique_ptr<LoopAttachment> a);

  // The loop running on this thread, or nullptr.
  [[nodiscard]] static EventLoop* current() noexcept;

 private:
  friend class Watcher;
  [[nodiscard]] std::error_code updateWatcher(Watcher& w, std::uint32_t events) noexcept;
  void removeWatcher(Watcher& w) noexcept;
  void wakeup() noexcept;
  void drainWakeup() noexcept;
  void runTasks();
  [[nodiscard]] Duration computeWait(Duration cap) const;
  int waitEpoll(Duration wait);
  int waitUring(Duration wait);
  void dispatchReady();
  void setUpEpoll();
  void armLagProbe();
  [[nodiscard]] TimePoint readClock() const noexcept {
    return clock_ != nullptr ? clock_->now() : Clock::now();
  }

  LoopOptions options_;
  const LoopClock* clock_;
  Fd wake_;
  Fd epoll_;                                    // the epoll backend's
  std::unique_ptr<detail::UringPoller> uring_;  // the io_uring backend's
  std::atomic<std::thread::id> threadId_;
  std::atomic<bool> quit_{false};
  bool dispatching_ = false;
  bool inIteration_ = false;  // inside runOnce: queued io_uring work goes with the next wait
  TimePoint now_;
  TimerWheel timers_;
  std::vector<epoll_event> events_;
  int readyCount_ = 0;
  std::size_t uringReady_ = 0;
  std::vector<char> scratch_;
  // Written only by the loop thread (load + store, no read-modify-write),
  // read by scrapes on any thread.
  std::atomic<std::uint64_t> iterations_{0};
  std::atomic<bool> measuring_{false};
  std::atomic<std::int64_t> busyNs_{0};
  std::atomic<std::size_t> pendingTimers_{0};
  std::atomic<std::int64_t> lagNs_{0};
  std::atomic<std::size_t> queuedTasks_{0};  // written under tasksMutex_
  Duration lagProbe_{};
  TimePoint lagDue_{};
  bool lagArmed_ = false;
  std::uint64_t watchErrors_ = 0;

  std::mutex tasksMutex_;
  std::vector<Task> tasks_;    // guarded by tasksMutex_
  std::vector<Task> running_;  // loop thread only; swapped with tasks_
  std::atomic<bool> wakePending_{false};
  std::vector<Task> endHooks_;
  std::vector<Task> endRunning_;
  std::vector<Deferred*> deferred_;
  std::vector<Deferred*> deferredRunning_;
  std::vector<std::pair<const void*, std::unique_ptr<LoopAttachment>>> attachments_;
};

}  // namespace keel
