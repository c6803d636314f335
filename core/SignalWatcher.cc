#include "keel/core/SignalWatcher.h"

#include <cerrno>
#include <system_error>

#include <sys/signalfd.h>
#include <unistd.h>

#include "keel/core/EventLoop.h"

namespace keel {
namespace {

sigset_t makeMask(std::initializer_list<int> signals) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : signals) sigaddset(&set, s);
  return set;
}

int blockAndOpen(const sigset_t& mask, sigset_t& previous) {
  if (::pthread_sigmask(SIG_BLOCK, &mask, &previous) != 0) {
    throw std::system_error(errno, std::generic_category(), "pthread_sigmask");
  }
  const int fd = ::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "signalfd");
  return fd;
}

}  // namespace

SignalWatcher::SignalWatcher(EventLoop& loop, std::initializer_list<int> signals, Callback cb)
    : mask_(makeMask(signals)),
      fd_(blockAndOpen(mask_, previous_)),
      cb_(std::move(cb)),
      watcher_(loop, fd_.get(), [this](std::uint32_t) { onReadable(); }) {
  // A constructor cannot return the error; a SignalWatcher that cannot
  // watch would silently ignore SIGTERM, so this one throws.
  if (const std::error_code ec = watcher_.enable(Watcher::kRead))
    throw std::system_error(ec, "signalfd watch");
}

SignalWatcher::~SignalWatcher() {
  watcher_.detach();
  ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}

SignalWatcher SignalWatcher::quitOnTerminate(EventLoop& loop, std::function<void(int)> before) {
  return SignalWatcher(loop, {SIGINT, SIGTERM}, [&loop, before = std::move(before)](int signo) {
    if (before) before(signo);
    loop.quit();
  });
}

void SignalWatcher::onReadable() {
  signalfd_siginfo info{};
  while (::read(fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    cb_(static_cast<int>(info.ssi_signo));
  }
}

}  // namespace keel
