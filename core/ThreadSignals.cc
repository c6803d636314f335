#include "keel/core/ThreadSignals.h"

#include <pthread.h>

namespace keel {

const sigset_t& asynchronousSignals() noexcept {
  static const sigset_t set = [] {
    sigset_t s;
    sigemptyset(&s);
    for (int signo : {SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGTERM, SIGCHLD, SIGTSTP, SIGTTIN,
                      SIGTTOU, SIGURG, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGWINCH, SIGIO, SIGPWR}) {
      sigaddset(&s, signo);
    }
    return s;
  }();
  return set;
}

std::thread startThreadWithoutSignals(std::function<void()> body) {
  // Blocking inside the new thread instead would leave a window, between its
  // start and its first pthread_sigmask, in which it could take a signal.
  sigset_t previous;
  ::pthread_sigmask(SIG_BLOCK, &asynchronousSignals(), &previous);
  struct Restore {
    const sigset_t& mask;
    ~Restore() { ::pthread_sigmask(SIG_SETMASK, &mask, nullptr); }
  } restore{previous};
  return std::thread(std::move(body));
}

}  // namespace keel
