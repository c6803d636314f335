#include "keel/core/SignalWatcher.h"

#include <array>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <system_error>
#include <thread>

#include <fcntl.h>
#include <unistd.h>

#include "keel/core/EventLoop.h"

namespace keel {
namespace {

// The handler may run on any thread, at any instruction, so it reads only
// lock-free atomics and writes only with write(2). Everything else here is
// changed under gMutex by constructors and destructors, which never run in
// the handler.
constexpr int kSignalLimit = 64;  // signals 1..63: one bit each in signals_
constexpr std::size_t kRoutes = 256;

struct Route {
  std::atomic<int> signo{0};             // 0: unused
  std::atomic<int> fd{-1};               // the watcher's pipe
  const SignalWatcher* owner = nullptr;  // guarded by gMutex
};
static_assert(std::atomic<int>::is_always_lock_free);

std::array<Route, kRoutes> gRoutes;
// Handlers running right now. A destructor waits for zero after removing its
// routes, so no handler can still write to its pipe once it closes it.
std::atomic<int> gInHandler{0};
std::atomic<pid_t> gOwnerPid{0};  // the process the routes belong to
std::mutex gMutex;
std::array<int, kSignalLimit> gWatchers{};  // per signal; guarded by gMutex
// Dispositions before the first watcher of each signal; guarded by gMutex,
// read by the handler only in a forked child.
std::array<struct sigaction, kSignalLimit> gPrevious{};

extern "C" void keelSignalHandler(int signo) {
  const int savedErrno = errno;
  if (::getpid() != gOwnerPid.load()) {
    // A child forked from the process that registered: the pipes are its
    // parent's. Behave as if there were no watcher; the re-raised signal is
    // delivered, with the old disposition, once this handler returns.
    ::sigaction(signo, &gPrevious[static_cast<std::size_t>(signo)], nullptr);
    ::raise(signo);
    errno = savedErrno;
    return;
  }
  gInHandler.fetch_add(1);
  const auto byte = static_cast<unsigned char>(signo);
  for (Route& r : gRoutes) {
    if (r.signo.load() != signo) continue;
    const int fd = r.fd.load();
    if (fd < 0) continue;
    // Non-blocking: a full pipe drops this one (the watcher has 64 KiB of
    // signals it has not read yet).
    while (::write(fd, &byte, 1) < 0 && errno == EINTR) {
    }
  }
  gInHandler.fetch_sub(1);
  errno = savedErrno;
}

constexpr std::uint64_t bitOf(int signo) { return std::uint64_t{1} << signo; }

}  // namespace

SignalWatcher::SignalWatcher(EventLoop& loop, std::initializer_list<int> signals, Callback cb)
    : pipe_(openPipe()),
      cb_(std::move(cb)),
      watcher_(loop, pipe_.readEnd.get(), [this](std::uint32_t) { onReadable(); }) {
  const std::error_code ec = pipe_.error ? pipe_.error : watch(signals);
  if (ec) throw std::system_error(ec, "SignalWatcher");
}

SignalWatcher::SignalWatcher(EventLoop& loop, std::initializer_list<int> signals, Callback cb,
                             std::error_code& ec)
    : pipe_(openPipe()),
      cb_(std::move(cb)),
      watcher_(loop, pipe_.readEnd.get(), [this](std::uint32_t) { onReadable(); }) {
  ec = pipe_.error ? pipe_.error : watch(signals);
}

SignalWatcher::~SignalWatcher() { unwatch(); }

SignalWatcher SignalWatcher::quitOnTerminate(EventLoop& loop, std::function<void(int)> before) {
  return SignalWatcher(loop, {SIGINT, SIGTERM}, [&loop, before = std::move(before)](int signo) {
    if (before) before(signo);
    loop.quit();
  });
}

SignalWatcher::Pipe SignalWatcher::openPipe() noexcept {
  Pipe p;
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    p.error = std::error_code(errno, std::generic_category());
    return p;
  }
  p.readEnd = Fd(fds[0]);
  p.writeEnd = Fd(fds[1]);
  return p;
}

std::error_code SignalWatcher::watch(std::initializer_list<int> signals) noexcept {
  std::error_code ec;
  {
    std::lock_guard lock(gMutex);
    gOwnerPid.store(::getpid());
    for (const int signo : signals) {
      if (signo <= 0 || signo >= kSignalLimit || signo == SIGKILL || signo == SIGSTOP) {
        ec = std::make_error_code(std::errc::invalid_argument);
        break;
      }
      if ((signals_ & bitOf(signo)) != 0) continue;  // listed twice
      Route* free = nullptr;
      for (Route& r : gRoutes) {
        if (r.owner == nullptr) {
          free = &r;
          break;
        }
      }
      if (free == nullptr) {
        ec = std::make_error_code(std::errc::no_buffer_space);
        break;
      }
      // The route first (fd before signo: a handler that sees the signal
      // finds the pipe), then the handler, so that no signal it takes can
      // miss this watcher.
      free->owner = this;
      free->fd.store(pipe_.writeEnd.get());
      free->signo.store(signo);
      auto& watchers = gWatchers[static_cast<std::size_t>(signo)];
      if (watchers == 0) {
        struct sigaction sa {};
        sa.sa_handler = keelSignalHandler;
        sigemptyset(&sa.sa_mask);
        // Restart what the handler interrupts: it runs on whatever thread the
        // kernel picked, in the middle of whatever that thread was doing.
        sa.sa_flags = SA_RESTART;
        if (::sigaction(signo, &sa, &gPrevious[static_cast<std::size_t>(signo)]) != 0) {
          ec = std::error_code(errno, std::generic_category());
          // No handler of this signal is installed, so none can be reading
          // this route.
          free->signo.store(0);
          free->fd.store(-1);
          free->owner = nullptr;
          break;
        }
      }
      ++watchers;
      signals_ |= bitOf(signo);
    }
  }
  if (!ec) ec = watcher_.enable(Watcher::kRead);
  if (ec) unwatch();
  return ec;
}

void SignalWatcher::unwatch() noexcept {
  watcher_.detach();
  if (signals_ == 0) return;
  {
    std::lock_guard lock(gMutex);
    for (Route& r : gRoutes) {
      if (r.owner != this) continue;
      r.signo.store(0);
      r.fd.store(-1);
      r.owner = nullptr;
    }
    for (int signo = 1; signo < kSignalLimit; ++signo) {
      if ((signals_ & bitOf(signo)) == 0) continue;
      if (--gWatchers[static_cast<std::size_t>(signo)] == 0)
        ::sigaction(signo, &gPrevious[static_cast<std::size_t>(signo)], nullptr);
    }
  }
  signals_ = 0;
  // A handler that read a route before it was cleared may still be about to
  // write to the pipe; the pipe closes only after it has finished. (Sequential
  // consistency: a handler either counted itself in before this load or sees
  // the cleared routes.)
  while (gInHandler.load() != 0) std::this_thread::yield();
}

void SignalWatcher::onReadable() {
  std::array<unsigned char, 64> buf;
  for (;;) {
    const ssize_t n = ::read(pipe_.readEnd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    for (ssize_t i = 0; i < n; ++i) {
      const int signo = buf[static_cast<std::size_t>(i)];
      // A route freed and reused while a handler was reading it can carry
      // another watcher's signal here: only ours are delivered.
      if (signo < kSignalLimit && (signals_ & bitOf(signo)) != 0) cb_(signo);
    }
    if (static_cast<std::size_t>(n) < buf.size()) return;
  }
}

}  // namespace keel
