// Connection: lifecycle, the close path and the state machine. The byte
// path (reads, writes, flushes) is in ConnectionIo.cc.
#include "keel/net/Connection.h"

#include <cerrno>

#include <sys/socket.h>

#include "keel/core/Log.h"
#include "keel/net/internal/Transport.h"

namespace keel {
namespace {

SocketAddress addressOr(const Socket& s, bool peer) noexcept {
  // A peer that reset between accept() and here makes getpeername fail; the
  // owner passes the address accept() returned (ConnectionAccess), and the
  // connection learns of the reset on its first read.
  if (!s.valid()) return {};
  try {
    return peer ? s.peerAddress() : s.localAddress();
  } catch (...) {
    return {};
  }
}

bool isPeerGone(int err) noexcept { return err == ECONNRESET || err == EPIPE || err == ENOTCONN; }

}  // namespace

std::string_view toString(ConnectionState s) noexcept {
  switch (s) {
    case ConnectionState::Connecting:
      return "connecting";
    case ConnectionState::Open:
      return "open";
    case ConnectionState::PeerHalfClosed:
      return "peer-half-closed";
    case ConnectionState::LocalHalfClosed:
      return "local-half-closed";
    case ConnectionState::Closing:
      return "closing";
    case ConnectionState::Closed:
      return "closed";
  }
  return "unknown";
}

Connection::Connection(EventLoop& loop, Socket socket, std::uint64_t id, ConnectionOptions options)
    : Connection(loop, std::move(socket), id, std::make_shared<ConnectionOptions>(options)) {
  ownsOptions_ = true;  // made for this connection alone
}

Connection::Connection(EventLoop& loop, Socket socket, std::uint64_t id,
                       std::shared_ptr<const ConnectionOptions> options)
    : loop_(loop),
      socket_(std::move(socket)),
      id_(id),
      options_(options ? std::move(options) : std::make_shared<ConnectionOptions>()),
      local_(addressOr(socket_, false)),
      peer_(addressOr(socket_, true)),
      pipeline_(*this),
      watcher_(loop, socket_.fd(), [this](std::uint32_t ev) { onEvents(ev); }) {}

Connection::~Connection() {
  // Normally closed (and detached) long before; this covers an owner torn
  // down with live connections. No events are fired from a destructor. The
  // Deferred members take themselves off the loop.
  if (deadline_.valid()) loop_.cancel(deadline_);
  dropHookContext();
}

void Connection::dropHookContext() noexcept {
  if (ownsHookContext_) delete static_cast<std::function<void(const Ptr&)>*>(closedHook_.context);
  ownsHookContext_ = false;
  closedHook_ = {};
}

template <class F>
void Connection::runInLoopWeak(F f) {
  if (loop_.isInLoopThread()) {
    f(*this);
    return;
  }
  loop_.queueInLoop([weak = weak_from_this(), f = std::move(f)]() mutable {
    if (auto self = weak.lock()) f(*self);
  });
}

// ---- any thread -----------------------------------------------------------------
bool Connection::send(std::string_view message) {
  if (!canWrite()) return false;
  if (loop_.isInLoopThread()) return !pipeline_.send(Slices(message));
  // Another thread: the bytes must outlive the call, so they are copied once.
  // Whether the chain has a codec is decided on the loop, when the message
  // is written: the pipeline may change in between.
  loop_.queueInLoop([weak = weak_from_this(), copy = std::string(message)] {
    if (auto self = weak.lock()) (void)self->pipeline_.send(Slices(copy));
  });
  return true;
}

bool Connection::sendBytes(std::string_view bytes) {
  if (!canWrite()) return false;
  if (loop_.isInLoopThread()) return !pipeline_.write(Slices(bytes));
  loop_.queueInLoop([weak = weak_from_this(), copy = std::string(bytes)] {
    if (auto self = weak.lock()) (void)self->pipeline_.write(Slices(copy));
  });
  return true;
}

void Connection::shutdown(CloseReason reason) {
  runInLoopWeak([reason](Connection& c) { c.pipeline_.shutdown(reason); });
}

void Connection::close(CloseReason reason, CloseMode mode) {
  runInLoopWeak([reason, mode](Connection& c) { c.pipeline_.close(reason, mode); });
}

void Connection::awaitPeerClose(Duration deadline) {
  runInLoopWeak([deadline](Connection& c) {
    if (c.closed()) return;
    // Nothing else to do: the peer's FIN already leads to a close through the
    // pipeline. Only bound the wait; a timeout closes normally (no reset, so
    // nothing in flight is lost), accepting the TIME_WAIT on our side.
    c.armDeadline(deadline, CloseReason::LocalClose, CloseMode::Flush);
  });
}

// ---- loop thread ------------------------------------------------------------------
void Connection::startInLoop() {
  KEEL_ASSERT_IN_LOOP(loop_, "Connection::startInLoop");
  if (state() != ConnectionState::Connecting) return;  // closed before it started (a refusing PipelineInit)
  setState(ConnectionState::Open);
  stats_.created = stats_.lastRead = stats_.lastWrite = loop_.now();
  updateInterest();
  if (watchFailed_) {
    // The loop cannot watch this socket (ENOMEM, ENOSPC): it never opens.
    closeNow(CloseReason::Error, false);
    return;
  }
  pipeline_.fireConnected();
}

void Connection::pauseReading() {
  KEEL_ASSERT_IN_LOOP(loop_, "Connection::pauseReading");
  pausedByUser_ = true;
  updateInterest();
}

void Connection::resumeReading() {
  KEEL_ASSERT_IN_LOOP(loop_, "Connection::resumeReading");
  pausedByUser_ = false;
  if (pausedByInputCap_ && input_.readableBytes() < options_->maxInputBytes) pausedByInputCap_ = false;
  updateInterest();
}

void Connection::setWriteCoalescing(bool on) {
  KEEL_ASSERT_IN_LOOP(loop_, "Connection::setWriteCoalescing");
  if (options_->coalesceWrites != on) editOptions().coalesceWrites = on;
  if (!on && flushScheduled_) {
    flushScheduled_ = false;
    if (notices_[0] == Notice::None) loop_.cancelDeferred(*this);
    flushRaw();
  }
}

ConnectionOptions& Connection::editOptions() {
  KEEL_ASSERT_IN_LOOP(loop_, "Connection::editOptions");
  if (!ownsOptions_) {
    options_ = std::make_shared<ConnectionOptions>(*options_);
    ownsOptions_ = true;
  }
  // A non-const object this connection made, shared with nobody.
  return const_cast<ConnectionOptions&>(*options_);
}

bool Connection::wantRead() const noexcept {
  const ConnectionState s = state();
  return (s == ConnectionState::Open || s == ConnectionState::LocalHalfClosed) && !readingPaused();
}

void Connection::updateInterest() {
  if (closed()) return;
  std::uint32_t ev = 0;
  if (wantRead()) ev |= EPOLLIN | EPOLLRDHUP;
  // While a coalesced flush is pending the end of the iteration writes first;
  // EPOLLOUT is needed only for what that flush could not send.
  if (!output_.empty() && !flushScheduled_) ev |= EPOLLOUT;
  interest_ = ev;
  if (transport_ != nullptr || watchFailed_) return;  // nothing to register with epoll
  if (const std::error_code ec = watcher_.setInterest(ev)) {
    // One socket the loop cannot watch must not stop the loop: this
    // connection alone closes (reason Error; the loop counts it in
    // watchErrors). From a later turn, since this may run deep in a handler.
    KEEL_WARN("conn {} ({}): cannot watch the socket: {}; closing", id_, peer_.toString(), ec.message());
    watchFailed_ = true;
    closeLater(CloseReason::Error, CloseMode::Now);
  }
}

void Connection::onEvents(std::uint32_t events) {
  if ((events & EPOLLERR) != 0) {
    const std::error_code ec = transport_ != nullptr ? std::error_code() : socket_.takeError();
    handleError(ec ? ec.value() : ECONNRESET);
    return;
  }
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) != 0) {
    if (wantRead()) {
      handleRead(events);
    } else if ((events & EPOLLHUP) != 0) {
      // Both directions are gone (EPOLLHUP cannot be masked): nothing queued
      // can be delivered any more.
      closeNow(state() == ConnectionState::PeerHalfClosed ? CloseReason::PeerClosed : CloseReason::PeerReset,
               false);
      return;
    }
  }
  if ((events & EPOLLOUT) != 0) flushRaw();  // EPOLLOUT is the same flush a handler asks for
}

void Connection::handlePeerFin() {
  switch (state()) {
    case ConnectionState::Open: {
      setState(ConnectionState::PeerHalfClosed);
      updateInterest();
      PeerFin fin;
      pipeline_.firePeerHalfClosed(fin);  // the tail carries out fin.policy
      break;
    }
    case ConnectionState::LocalHalfClosed:
      closeNow(shutdownReason_, false);  // both FINs exchanged
      break;
    case ConnectionState::Closing:
      updateInterest();  // keep flushing; the peer may still read
      break;
    default:
      break;
  }
}

void Connection::handleError(int err) {
  if (isPeerGone(err)) {
    closeNow(CloseReason::PeerReset, false);
  } else {
    KEEL_WARN("conn {} ({}): {}", id_, peer_.toString(), std::generic_category().message(err));
    closeNow(CloseReason::Error, false);
  }
}

void Connection::failLater(int err) {
  // Called from inside a write, possibly deep in a handler: close on the next
  // turn of the loop rather than tearing the pipeline down under the caller.
  loop_.queueInLoop([weak = weak_from_this(), err] {
    if (auto self = weak.lock()) self->handleError(err);
  });
}

void Connection::closeLater(CloseReason reason, CloseMode mode) {
  loop_.queueInLoop([weak = weak_from_this(), reason, mode] {
    if (auto self = weak.lock(); self && !self->closed()) self->pipeline_.close(reason, mode);
  });
}

void Connection::shutdownRaw(CloseReason reason) {
  KEEL_ASSERT_IN_LOOP(loop_, "Connection shutdown (pipeline head)");
  switch (state()) {
    case ConnectionState::Open:
      if (shutdownPending_.load(std::memory_order_relaxed)) return;
      shutdownReason_ = reason;
      armDeadline(options_->shutdownTimeout, reason, CloseMode::Reset);
      if (output_.empty() && !flushScheduled_) {
        doShutdownWrite();
      } else {
        shutdownPending_.store(true, std::memory_order_release);  // after the queue drains
      }
      break;
    case ConnectionState::PeerHalfClosed:
      closeRaw(reason, CloseMode::Flush);  // the peer is done already: flush and close
      break;
    default:
      break;
  }
}

void Connection::doShutdownWrite() {
  shutdownPending_.store(false, std::memory_order_release);
  if (state() == ConnectionState::PeerHalfClosed) {
    closeNow(shutdownReason_, false);
    return;
  }
  const std::error_code ec = transport_ != nullptr ? transport_->shutdownWrite() : socket_.shutdownWrite();
  if (ec) {
    KEEL_DEBUG("conn {}: {}", id_, Socket::errorMessage("shutdown(SHUT_WR)", socket_.fd(), ec));
    handleError(ec.value());
    return;
  }
  setState(ConnectionState::LocalHalfClosed);
  updateInterest();
}

void Connection::closeRaw(CloseReason reason, CloseMode mode) {
  KEEL_ASSERT_IN_LOOP(loop_, "Connection close (pipeline head)");
  const ConnectionState s = state();
  if (s == ConnectionState::Closed) return;
  if (mode == CloseMode::Reset || (options_->resetOnReasons & reasonBit(reason)) != 0) {
    closeNow(reason, true);
    return;
  }
  if (mode == CloseMode::Now) {
    closeNow(reason, false);
    return;
  }
  if (s == ConnectionState::Closing) return;  // already flushing towards a close
  if (output_.empty() && !flushScheduled_) {
    closeNow(reason, false);
    return;
  }
  setState(ConnectionState::Closing);
  pendingReason_ = reason;
  updateInterest();
  armDeadline(options_->closeTimeout, reason, CloseMode::Reset);
}

void Connection::armDeadline(Duration d, CloseReason reason, CloseMode mode) {
  if (deadline_.valid()) loop_.cancel(deadline_);
  deadline_ = loop_.runAfter(d, [weak = weak_from_this(), reason, mode] {
    auto self = weak.lock();
    if (!self || self->closed()) return;
    KEEL_INFO("conn {} ({}): {} did not complete in time, closing", self->id_, self->peer_.toString(),
              toString(self->state()));
    self->deadline_ = {};
    self->pipeline_.close(reason, mode);  // through every handler, like any close
  });
}

void Connection::closeNow(CloseReason reason, bool reset) {
  if (closed()) return;
  const Ptr self = shared_from_this();  // the hook below may drop the owner's reference
  const bool finSeen = state() == ConnectionState::PeerHalfClosed;
  setState(ConnectionState::Closed);
  shutdownPending_.store(false, std::memory_order_release);
  closeReason_ = reason;
  if (deadline_.valid()) loop_.cancel(deadline_);
  deadline_ = {};
  flushScheduled_ = false;
  loop_.cancelDeferred(*this);
  notices_ = {};
  watcher_.detach();
  if (transport_ != nullptr) {
    transport_->close(reset);
  } else {
    if (reset) {
      if (const std::error_code ec = socket_.setLinger({true, std::chrono::seconds(0)})) {
        KEEL_WARN("conn {}: {}", id_, Socket::errorMessage("setsockopt(SO_LINGER)", socket_.fd(), ec));
      }
    } else if (!finSeen && !inRead_) {
      // close() with unread bytes in the receive queue makes Linux send a
      // reset instead of a FIN, and a reset can destroy the reply the peer
      // has not read yet. Drain what is there first (one non-blocking read).
      std::span<char> scratch = loop_.scratch();
      [[maybe_unused]] const ssize_t n = ::recv(socket_.fd(), scratch.data(), scratch.size(), MSG_DONTWAIT);
    }
    socket_.close();
  }
  output_.retrieveAll();
  account();  // nothing queued any more
  output_.release();
  KEEL_DEBUG("conn {} ({}) closed: {}", id_, peer_.toString(), toString(reason));
  pipeline_.fireClosed(reason);
  pipeline_.removeAll();
  if (closedHook_.fn != nullptr) closedHook_.fn(closedHook_.context, self);
}

}  // namespace keel
