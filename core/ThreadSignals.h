// Which thread takes a process-directed signal.
//
// The kernel hands a signal sent to the process (kill, Ctrl-C) to any one
// thread that does not block it. keel's own threads (LoopThread, and so
// every Server I/O loop) are started with the asynchronous signals below
// blocked, so such a signal goes to one of the application's threads
// (usually main), never interrupts an I/O loop, and with a SignalWatcher
// (core/SignalWatcher.h) reaches the watchers whichever thread took it.
//
// Synchronous signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS,
// SIGABRT) are never blocked: they belong to the thread that faulted, and a
// blocked one would kill the process without its handler. Neither are
// SIGPIPE (keel ignores it process-wide), SIGPROF (profilers sample every
// thread with it), nor the real-time signals (glibc uses some internally).
//
// Thread-safety: everything here is safe from any thread.
#pragma once

#include <functional>
#include <thread>

#include <signal.h>

namespace keel {

// SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGTERM, SIGCHLD,
// SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGWINCH,
// SIGIO, SIGPWR.
[[nodiscard]] const sigset_t& asynchronousSignals() noexcept;

// Starts `body` on a new thread that has asynchronousSignals() blocked from
// its first instruction (a thread inherits its creator's mask; the creator's
// own mask is put back before this returns). Throws what std::thread throws.
[[nodiscard]] std::thread startThreadWithoutSignals(std::function<void()> body);

}  // namespace keel
