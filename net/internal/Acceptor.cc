#include "keel/net/internal/Acceptor.h"

#include <cerrno>

#include <fcntl.h>
#include <sys/socket.h>

#include "keel/core/EventLoop.h"
#include "keel/core/Log.h"

namespace keel {

Acceptor::Acceptor(EventLoop& loop, NewConnection cb, int batch)
    : loop_(loop),
      cb_(std::move(cb)),
      batch_(batch > 0 ? batch : 1),
      spare_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {}

Acceptor::~Acceptor() { close(); }

std::error_code Acceptor::listen(const SocketAddress& addr, bool reusePort, int backlog) {
  std::error_code openError;
  socket_ = Socket::stream(addr.family(), openError);
  if (openError) return openError;
  if (addr.isInet()) {
    // A restarted server must be able to bind while old connections sit in TIME_WAIT.
    if (auto ec = socket_.setReuseAddr(true)) return ec;
    if (reusePort) {
      if (auto ec = socket_.setReusePort(true)) return ec;
    }
  }
  if (auto ec = socket_.bind(addr)) {
    socket_.close();
    return ec;
  }
  if (auto ec = socket_.listen(backlog)) {
    socket_.close();
    return ec;
  }
  return watch();
}

std::error_code Acceptor::watch() {
  watcher_ = std::make_unique<Watcher>(loop_, socket_.fd(), [this](std::uint32_t) { onReadable(); });
  if (auto ec = watcher_->enable(Watcher::kRead)) {
    watcher_.reset();
    socket_.close();
    return ec;
  }
  return {};
}

std::error_code Acceptor::adopt(Socket listening) {
  socket_ = std::move(listening);
  // systemd passes blocking descriptors, and an exec'd successor may get
  // them without FD_CLOEXEC: both are set here so that accept() never
  // blocks the loop and a child never inherits a listener.
  const int fl = ::fcntl(socket_.fd(), F_GETFL);
  if (fl < 0 || ::fcntl(socket_.fd(), F_SETFL, fl | O_NONBLOCK) != 0 ||
      ::fcntl(socket_.fd(), F_SETFD, FD_CLOEXEC) != 0) {
    const std::error_code ec(errno, std::generic_category());
    socket_.close();
    return ec;
  }
  return watch();
}

Fd Acceptor::duplicate(std::error_code& ec) const {
  if (!socket_.valid()) {
    ec = std::make_error_code(std::errc::not_connected);
    return Fd();
  }
  const int fd = ::fcntl(socket_.fd(), F_DUPFD_CLOEXEC, 3);
  if (fd < 0) {
    ec = {errno, std::generic_category()};
    return Fd();
  }
  ec.clear();
  return Fd(fd);
}

void Acceptor::close() {
  if (backoff_.valid()) loop_.cancel(backoff_);
  backoff_ = {};
  watcher_.reset();
  socket_.close();
}

void Acceptor::pause() {
  // Removing interest cannot run out of memory; a failure here is the
  // watcher's own log line and nothing more.
  if (watcher_) (void)watcher_->disable(Watcher::kRead);
}

void Acceptor::resume() {
  if (!watcher_) return;
  if (watcher_->enable(Watcher::kRead)) {
    // Could not watch the listener again (ENOMEM): try once more later
    // rather than stop accepting for good.
    backoff_ = loop_.runAfter(std::chrono::milliseconds(100), [this] {
      backoff_ = {};
      resume();
    });
  }
}

void Acceptor::onReadable() {
  // Bounded batch: one busy listener must not starve the loop's connections.
  for (int i = 0; i < batch_ && socket_.valid(); ++i) {
    std::error_code ec;
    SocketAddress peer;
    Socket s = socket_.accept(&peer, ec);
    if (s.valid()) {
      stats_.accepted.fetch_add(1, std::memory_order_relaxed);
      cb_(std::move(s), peer);
      continue;
    }
    const int err = ec.value();
    if (err == EAGAIN || err == EWOULDBLOCK) return;
    if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;  // that one connection is gone
    if ((err == EMFILE || err == ENFILE) && spare_) {
      // accept4 reserves a descriptor before it looks at the queue, so EMFILE
      // does not prove a connection is waiting: only count what was closed.
      spare_.reset();
      std::error_code ignored;
      Socket doomed = socket_.accept(nullptr, ignored);
      const bool dropped = doomed.valid();
      doomed.close();
      spare_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      if (!dropped) return;  // queue empty
      if (stats_.droppedNoFd.fetch_add(1, std::memory_order_relaxed) % 1000 == 0) {
        KEEL_WARN("accept: out of descriptors ({}); closing pending connections at once ({} so far)",
                  ec.message(), stats_.droppedNoFd.load(std::memory_order_relaxed));
      }
      continue;
    }
    // Anything else (or no spare to trade): back off briefly instead of
    // letting a level-triggered listener spin on the same error.
    stats_.errors.fetch_add(1, std::memory_order_relaxed);
    KEEL_ERROR("accept: {}; pausing accepts for 100 ms", ec.message());
    pause();
    backoff_ = loop_.runAfter(std::chrono::milliseconds(100), [this] {
      backoff_ = {};
      if (!spare_) spare_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      resume();
    });
    return;
  }
}

}  // namespace keel
