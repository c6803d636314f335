// Delivers signals as loop events, whichever thread the kernel picks.
//
// A process-directed signal goes to any one thread that does not block it:
// with loops on LoopThreads and an application thread doing something else,
// that is rarely the watcher's loop thread. So a SignalWatcher does not use
// the thread's mask (signalfd needs the signal blocked on every thread,
// including ones keel never sees). Instead, while any watcher exists for a
// signal, keel installs a process-wide handler for it (sigaction,
// SA_RESTART). The handler, whichever thread runs it, writes the signal
// number to a pipe of every watcher registered for that signal, with
// async-signal-safe calls only (atomic loads and write(2)); each watcher's
// loop reads its pipe and calls the callback on its own thread. So:
//  - it works wherever it is built: a loop on main, a loop on a LoopThread,
//    before or after other threads started;
//  - several watchers of one signal (on one loop or on several) all fire;
//  - when the last watcher of a signal is destroyed, the disposition that
//    was in place before the first one (default, ignore, or the
//    application's own handler) is put back.
// While a watcher exists, keel's handler replaces any other handler of that
// signal. Signals of one kind sent faster than the loop reads coalesce, as
// pending signals do in the kernel; a watcher whose pipe is full (64 KiB of
// unread signals) misses the excess. A process forked (without exec) from
// one with watchers gets the previous disposition back on its first signal:
// the pipes lead to its parent's loops. keel's own threads block these
// signals (core/ThreadSignals.h), so the handler runs on an application
// thread and never interrupts an I/O loop.
//
// Thread-safety: construct and destroy on the loop's thread (whatever thread
// that is); the callback runs there.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <system_error>

#include <signal.h>

#include "keel/core/Fd.h"
#include "keel/core/Watcher.h"

namespace keel {

class SignalWatcher {
 public:
  using Callback = std::function<void(int signo)>;

  // Throws std::system_error when it cannot watch (see the next form): a
  // SignalWatcher that silently did not watch would ignore SIGTERM.
  SignalWatcher(EventLoop& loop, std::initializer_list<int> signals, Callback cb);
  // The non-throwing form: on failure `ec` is set and the watcher watches
  // nothing (EINVAL for a signal that cannot be caught, such as SIGKILL, or
  // out of range; ENOBUFS past 256 watched signals in the process; the
  // errors of pipe2, sigaction and epoll_ctl).
  SignalWatcher(EventLoop& loop, std::initializer_list<int> signals, Callback cb, std::error_code& ec);
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  // The common case: SIGINT and SIGTERM call loop.quit() (after `before`, if any).
  [[nodiscard]] static SignalWatcher quitOnTerminate(EventLoop& loop, std::function<void(int)> before = {});

 private:
  struct Pipe {
    Fd readEnd;
    Fd writeEnd;  // what the handler writes signal numbers to
    std::error_code error;
  };
  [[nodiscard]] static Pipe openPipe() noexcept;
  // Registers the routes (undoing its own work on failure).
  [[nodiscard]] std::error_code watch(std::initializer_list<int> signals) noexcept;
  void unwatch() noexcept;
  void onReadable();

  Pipe pipe_;
  std::uint64_t signals_ = 0;  // bit n: signal n is registered
  Callback cb_;
  Watcher watcher_;
};

}  // namespace keel
