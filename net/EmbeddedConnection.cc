#include "keel/net/EmbeddedConnection.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include <sys/epoll.h>

#include "keel/net/internal/ConnectionAccess.h"
#include "keel/net/internal/Transport.h"

namespace keel {

class EmbeddedConnection::Memory final : public Transport {
 public:
  ssize_t read(std::span<char> into) override {
    if (reset) return fail(ECONNRESET);
    if (inbound.size() == consumed) return eof ? 0 : fail(EAGAIN);
    const std::size_t n = std::min(into.size(), inbound.size() - consumed);
    std::memcpy(into.data(), inbound.data() + consumed, n);
    consumed += n;
    if (consumed == inbound.size()) {
      inbound.clear();
      consumed = 0;
    }
    return static_cast<ssize_t>(n);
  }

  ssize_t writev(const iovec* iov, int count) override {
    if (closed || finSent || reset) return fail(EPIPE);
    std::size_t total = 0;
    for (int i = 0; i < count && capacity > 0; ++i) {
      const std::size_t n = std::min(iov[i].iov_len, capacity);
      written.append(static_cast<const char*>(iov[i].iov_base), n);
      capacity -= n;
      total += n;
    }
    if (total == 0) return fail(EAGAIN);
    return static_cast<ssize_t>(total);
  }

  std::error_code shutdownWrite() override {
    finSent = true;
    return {};
  }

  void close(bool withReset) override {
    closed = true;
    resetSent = withReset;
  }

  static ssize_t fail(int err) noexcept {
    errno = err;
    return -1;
  }

  std::string inbound;
  std::size_t consumed = 0;
  bool eof = false;
  bool reset = false;  // by the peer
  std::string written;
  std::size_t capacity = std::numeric_limits<std::size_t>::max();
  bool finSent = false;
  bool closed = false;
  bool resetSent = false;
};

EmbeddedConnection::EmbeddedConnection(EventLoop& loop, ConnectionOptions options, std::uint64_t id)
    : loop_(loop),
      memory_(std::make_unique<Memory>()),
      conn_(std::make_shared<Connection>(loop, Socket(), id, options)) {
  ConnectionAccess::setTransport(*conn_, memory_.get());
}

EmbeddedConnection::~EmbeddedConnection() {
  if (!conn_->closed()) conn_->pipeline().close(CloseReason::LocalClose, CloseMode::Now);
}

void EmbeddedConnection::start() {
  ConnectionAccess::start(*conn_);
  runPending();
}

void EmbeddedConnection::deliverReads() {
  // Level-triggered, as epoll is: report readable for as long as there is
  // something to read and the connection asks for it.
  while (!conn_->closed() && (ConnectionAccess::interest(*conn_) & EPOLLIN) != 0 &&
         (memory_->inbound.size() > memory_->consumed || memory_->eof || memory_->reset)) {
    const std::size_t before = memory_->inbound.size() - memory_->consumed;
    const ConnectionState stateBefore = conn_->state();
    ConnectionAccess::onEvents(*conn_, EPOLLIN);
    const std::size_t after = memory_->inbound.size() - memory_->consumed;
    if (after == before && conn_->state() == stateBefore) break;  // nothing moved (a FIN already seen)
  }
}

void EmbeddedConnection::feed(std::string_view bytes) {
  memory_->inbound.append(bytes);
  deliverReads();
  runPending();
}

void EmbeddedConnection::feedFin() {
  memory_->eof = true;
  deliverReads();
  runPending();
}

void EmbeddedConnection::feedReset() {
  memory_->reset = true;
  if (!conn_->closed()) ConnectionAccess::onEvents(*conn_, EPOLLERR);
  runPending();
}

void EmbeddedConnection::setSendCapacity(std::size_t bytes, bool announce) {
  memory_->capacity = bytes;
  if (!announce) return;
  if (bytes > 0 && !conn_->closed() && (ConnectionAccess::interest(*conn_) & EPOLLOUT) != 0) {
    ConnectionAccess::onEvents(*conn_, EPOLLOUT);
  }
  runPending();
}

std::string EmbeddedConnection::takeOutput() {
  std::string out;
  out.swap(memory_->written);
  return out;
}

std::size_t EmbeddedConnection::outputSize() const noexcept { return memory_->written.size(); }
bool EmbeddedConnection::finSent() const noexcept { return memory_->finSent; }
bool EmbeddedConnection::transportClosed() const noexcept { return memory_->closed; }
bool EmbeddedConnection::wasReset() const noexcept { return memory_->resetSent; }
std::size_t EmbeddedConnection::unreadInput() const noexcept {
  return memory_->inbound.size() - memory_->consumed;
}

void EmbeddedConnection::runPending() {
  // A few turns: work queued by work (a close from a task) settles too.
  for (int i = 0; i < 4; ++i) loop_.runOnce(Duration::zero());
  deliverReads();  // reading may have resumed (backpressure, resumeReading)
}

}  // namespace keel
