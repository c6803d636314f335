// Delivers signals as loop events through signalfd.
//
// The signals are blocked with pthread_sigmask on the constructing thread so
// that they queue on the signalfd instead of running a handler. Threads
// inherit the mask of their creator: construct the SignalWatcher on the main
// thread before starting loop threads, or those threads may take the signal
// with its default action (process exit for SIGINT/SIGTERM).
//
// Thread-safety: loop thread only.
#pragma once

#include <functional>
#include <initializer_list>

#include <signal.h>

#include "keel/core/Fd.h"
#include "keel/core/Watcher.h"

namespace keel {

class SignalWatcher {
 public:
  using Callback = std::function<void(int signo)>;

  SignalWatcher(EventLoop& loop, std::initializer_list<int> signals, Callback cb);
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  // The common case: SIGINT and SIGTERM call loop.quit() (after `before`, if any).
  [[nodiscard]] static SignalWatcher quitOnTerminate(EventLoop& loop, std::function<void(int)> before = {});

 private:
  void onReadable();

  sigset_t mask_{};
  sigset_t previous_{};
  Fd fd_;
  Callback cb_;
  Watcher watcher_;
};

}  // namespace keel
