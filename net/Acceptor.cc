#include "keel/net/Acceptor.h"

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
  try {
    socket_ = Socket::stream(addr.family());
  } catch (const std::system_error& e) {
    return e.code();
  }
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
  watcher_ = std::make_unique<Watcher>(loop_, socket_.fd(), [this](std::uint32_t) { onReadable(); });
  watcher_->enable(Watcher::kRead);
  return {};
}

void Acceptor::close() {
  if (backoff_.valid()) loop_.cancel(backoff_);
  backoff_ = {};
  watcher_.reset();
  socket_.close();
}

void Acceptor::pause() {
  if (watcher_) watcher_->disable(Watcher::kRead);
}

void Acceptor::resume() {
  if (watcher_) watcher_->enable(Watcher::kRead);
}

void Acceptor::onReadable() {
  // Bounded batch: one busy listener must not starve the loop's connections.
  for (int i = 0; i < batch_ && socket_.valid(); ++i) {
    std::error_code ec;
    Socket s = socket_.accept(nullptr, ec);
    if (s.valid()) {
      stats_.accepted.fetch_add(1, std::memory_order_relaxed);
      cb_(std::move(s));
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
