#include "keel/net/Connection.h"

#include <cerrno>

#include <sys/socket.h>
#include <sys/uio.h>

#include "keel/core/Log.h"

namespace keel {
namespace {

SocketAddress addressOr(const Socket& s, bool peer) noexcept {
  // A peer that reset between accept() and here makes getpeername fail; the
  // connection still starts and learns of the reset on its first read.
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
    : loop_(loop),
      socket_(std::move(socket)),
      id_(id),
      options_(options),
      local_(addressOr(socket_, false)),
      peer_(addressOr(socket_, true)),
      pipeline_(*this),
      watcher_(loop, socket_.fd(), [this](std::uint32_t ev) { onEvents(ev); }) {}

Connection::~Connection() {
  // Normally closed (and detached) long before; this covers an owner torn
  // down with live connections. No events are fired from a destructor.
  if (deadline_.valid()) loop_.cancel(deadline_);
  if (flushScheduled_) loop_.cancelDeferred(flushAtEnd_);
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
bool Connection::send(std::string_view data) {
  const ConnectionState s = state();
  if (s != ConnectionState::Open && s != ConnectionState::PeerHalfClosed) return false;
  if (loop_.isInLoopThread()) {
    pipeline_.write(Slices(data));
    return true;
  }
  // Another thread: the bytes must outlive the call, so they are copied once.
  loop_.queueInLoop([weak = weak_from_this(), copy = std::string(data)] {
    if (auto self = weak.lock()) self->pipeline_.write(Slices(copy));
  });
  return true;
}

void Connection::shutdown() {
  runInLoopWeak([](Connection& c) { c.pipeline_.shutdown(); });
}

void Connection::close() {
  runInLoopWeak([](Connection& c) { c.pipeline_.close(CloseReason::LocalClose); });
}

void Connection::awaitPeerClose(Duration deadline) {
  runInLoopWeak([deadline](Connection& c) {
    if (c.closed()) return;
    // Nothing else to do: the peer's FIN already leads to a close through the
    // pipeline. Only bound the wait; a timeout closes normally (no reset, so
    // nothing in flight is lost), accepting the TIME_WAIT on our side.
    c.armDeadline(deadline, CloseReason::LocalClose, false);
  });
}

void Connection::abort(CloseReason reason) {
  runInLoopWeak([reason](Connection& c) { c.closeNow(reason, true); });
}

void Connection::forceClose(CloseReason reason) {
  runInLoopWeak([reason](Connection& c) { c.closeNow(reason, false); });
}

// ---- loop thread ------------------------------------------------------------------
void Connection::startInLoop() {
  loop_.assertInLoopThread();
  if (state() != ConnectionState::Connecting) return;  // closed before it started (a refusing PipelineInit)
  setState(ConnectionState::Open);
  stats_.created = stats_.lastRead = stats_.lastWrite = loop_.now();
  updateInterest();
  pipeline_.fireConnected();
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
  watcher_.setInterest(ev);
}

void Connection::pauseReading() {
  pausedByUser_ = true;
  updateInterest();
}

void Connection::resumeReading() {
  pausedByUser_ = false;
  if (pausedByInputCap_ && input_.readableBytes() < options_.maxInputBytes) pausedByInputCap_ = false;
  updateInterest();
}

void Connection::setWriteCoalescing(bool on) {
  options_.coalesceWrites = on;
  if (!on && flushScheduled_) {
    loop_.cancelDeferred(flushAtEnd_);
    flushScheduled_ = false;
    flushRaw();
  }
}

void Connection::onEvents(std::uint32_t events) {
  if ((events & EPOLLERR) != 0) {
    const std::error_code ec = socket_.takeError();
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

void Connection::handleRead(std::uint32_t events) {
  const std::size_t room =
      options_.maxInputBytes > input_.readableBytes() ? options_.maxInputBytes - input_.readableBytes() : 0;
  const std::size_t limit = std::min(options_.maxReadPerEvent, room);
  std::span<char> scratch = loop_.scratch();
  std::size_t offered;
  ssize_t n;
  if (input_.empty()) {
    // The common case: read straight into the loop's scratch area and lend it
    // to the buffer; nothing is copied unless handlers leave bytes behind.
    offered = std::min(scratch.size(), limit);
    n = ::read(socket_.fd(), scratch.data(), offered);
    if (n > 0) {
      input_.borrow(scratch.first(offered));
      input_.hasWritten(static_cast<std::size_t>(n));
    }
  } else {
    offered = std::min(input_.writableBytes() + scratch.size(), limit);
    n = input_.readFrom(socket_.fd(), scratch, limit);
  }

  if (n > 0) {
    stats_.bytesIn += static_cast<std::uint64_t>(n);
    ++stats_.reads;
    stats_.lastRead = loop_.now();
    inRead_ = true;
    pipeline_.fireData(input_);
    inRead_ = false;
    if (closed()) {
      input_.retrieveAll();
      input_.settle();
      return;
    }
    if (afterRead_) afterRead_(*this);
    input_.settle();
    if (input_.readableBytes() >= options_.maxInputBytes && !pausedByInputCap_) {
      KEEL_WARN("conn {}: {} bytes of unconsumed input, pausing reading", id_, input_.readableBytes());
      pausedByInputCap_ = true;
      updateInterest();
    }
    // EPOLLRDHUP and a short read: the FIN sits right behind the bytes just
    // taken, so handle it now instead of paying for a read that returns 0.
    if ((events & EPOLLRDHUP) != 0 && static_cast<std::size_t>(n) < offered && !closed()) handlePeerFin();
  } else if (n == 0) {
    handlePeerFin();
  } else if (errno != EAGAIN && errno != EINTR) {
    handleError(errno);
  }
}

void Connection::handlePeerFin() {
  switch (state()) {
    case ConnectionState::Open:
      setState(ConnectionState::PeerHalfClosed);
      updateInterest();
      pipeline_.firePeerHalfClosed();
      break;
    case ConnectionState::LocalHalfClosed:
      closeNow(CloseReason::Shutdown, false);  // both FINs exchanged
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

void Connection::writeRaw(const Slices& data) {
  const ConnectionState s = state();
  if ((s != ConnectionState::Open && s != ConnectionState::PeerHalfClosed) || shutdownPending_) {
    KEEL_DEBUG("conn {}: write of {} bytes dropped in state {}", id_, data.totalBytes(), toString(s));
    return;
  }
  if (data.empty()) return;

  std::size_t written = 0;
  if (output_.empty() && !options_.coalesceWrites) {
    iovec iov[Slices::kMax];
    for (std::size_t i = 0; i < data.count(); ++i) {
      iov[i].iov_base = const_cast<char*>(data[i].data());
      iov[i].iov_len = data[i].size();
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = data.count();
    const ssize_t n = ::sendmsg(socket_.fd(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      written = static_cast<std::size_t>(n);
      stats_.bytesOut += written;
      ++stats_.writes;
      stats_.lastWrite = loop_.now();
      if (written == data.totalBytes()) return;
    } else if (errno != EAGAIN && errno != EINTR) {
      failLater(errno);
      return;
    }
  }

  // Queue what the kernel did not take.
  for (const auto& part : data) {
    if (written >= part.size()) {
      written -= part.size();
      continue;
    }
    output_.append(part.data() + written, part.size() - written);
    written = 0;
  }
  const std::size_t queued = output_.readableBytes();
  if (queued > stats_.peakOutput) stats_.peakOutput = queued;
  if (queued > options_.maxOutputBytes) {
    KEEL_WARN("conn {} ({}): {} bytes queued for a peer that does not read, over the {} byte cap; closing",
              id_, peer_.toString(), queued, options_.maxOutputBytes);
    loop_.queueInLoop([weak = weak_from_this()] {
      if (auto self = weak.lock()) self->closeNow(CloseReason::Overloaded, true);
    });
    return;
  }
  if (options_.coalesceWrites) {
    scheduleFlush();
  } else {
    updateInterest();
  }
  if (!aboveHighWatermark_ && queued >= options_.highWatermark) {
    aboveHighWatermark_ = true;
    if (options_.pauseReadingAtHighWatermark) {
      pausedByBackpressure_ = true;
      updateInterest();
    }
    pipeline_.fireHighWatermark(queued);
  }
}

void Connection::scheduleFlush() {
  if (flushScheduled_) return;
  flushScheduled_ = true;
  loop_.deferToEndOfIteration(flushAtEnd_);
}

void Connection::FlushAtEnd::runDeferred() {
  conn.flushScheduled_ = false;
  if (!conn.closed()) conn.flushRaw();
}

bool Connection::sendQueued() {
  const ssize_t n =
      ::send(socket_.fd(), output_.peek(), output_.readableBytes(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n > 0) {
    output_.retrieve(static_cast<std::size_t>(n));
    stats_.bytesOut += static_cast<std::uint64_t>(n);
    ++stats_.writes;
    stats_.lastWrite = loop_.now();
    return true;
  }
  if (n < 0 && errno != EAGAIN && errno != EINTR) {
    handleError(errno);
    return false;
  }
  return true;
}

void Connection::flushRaw() {
  if (closed()) return;
  if (!output_.empty() && !sendQueued()) return;
  updateInterest();
  afterOutputShrank();
}

void Connection::afterOutputShrank() {
  if (closed()) return;
  if (aboveHighWatermark_ && output_.readableBytes() <= options_.lowWatermark) {
    aboveHighWatermark_ = false;
    if (pausedByBackpressure_) {
      pausedByBackpressure_ = false;
      updateInterest();
    }
    pipeline_.fireWritable();
    if (closed()) return;
  }
  if (!output_.empty() || flushScheduled_) return;
  output_.settle();  // give back a large drained buffer
  if (shutdownPending_) doShutdownWrite();
  if (state() == ConnectionState::Closing) closeNow(pendingReason_, false);
}

void Connection::shutdownRaw() {
  switch (state()) {
    case ConnectionState::Open:
      if (shutdownPending_) return;
      armDeadline(options_.shutdownTimeout, CloseReason::Shutdown, true);
      if (output_.empty() && !flushScheduled_) {
        doShutdownWrite();
      } else {
        shutdownPending_ = true;  // after the queue drains
      }
      break;
    case ConnectionState::PeerHalfClosed:
      closeRaw(CloseReason::Shutdown);  // the peer is done already: flush and close
      break;
    default:
      break;
  }
}

void Connection::doShutdownWrite() {
  shutdownPending_ = false;
  if (state() == ConnectionState::PeerHalfClosed) {
    closeNow(CloseReason::Shutdown, false);
    return;
  }
  if (const std::error_code ec = socket_.shutdownWrite()) {
    KEEL_DEBUG("conn {}: {}", id_, Socket::errorMessage("shutdown(SHUT_WR)", socket_.fd(), ec));
    handleError(ec.value());
    return;
  }
  setState(ConnectionState::LocalHalfClosed);
  updateInterest();
}

void Connection::closeRaw(CloseReason reason) {
  const ConnectionState s = state();
  if (s == ConnectionState::Closed || s == ConnectionState::Closing) return;
  if ((options_.resetOnReasons & reasonBit(reason)) != 0) {
    closeNow(reason, true);
    return;
  }
  if (output_.empty() && !flushScheduled_) {
    closeNow(reason, false);
    return;
  }
  setState(ConnectionState::Closing);
  pendingReason_ = reason;
  updateInterest();
  armDeadline(options_.closeTimeout, reason, true);
}

void Connection::armDeadline(Duration d, CloseReason reason, bool reset) {
  if (deadline_.valid()) loop_.cancel(deadline_);
  deadline_ = loop_.runAfter(d, [weak = weak_from_this(), reason, reset] {
    auto self = weak.lock();
    if (!self || self->closed()) return;
    KEEL_INFO("conn {} ({}): {} did not complete in time, closing", self->id_, self->peer_.toString(),
              toString(self->state()));
    self->deadline_ = {};
    self->closeNow(reason, reset);
  });
}

void Connection::closeNow(CloseReason reason, bool reset) {
  if (closed()) return;
  const Ptr self = shared_from_this();  // the hook below may drop the owner's reference
  const bool finSeen = state() == ConnectionState::PeerHalfClosed;
  setState(ConnectionState::Closed);
  closeReason_ = reason;
  if (deadline_.valid()) loop_.cancel(deadline_);
  deadline_ = {};
  if (flushScheduled_) {
    loop_.cancelDeferred(flushAtEnd_);
    flushScheduled_ = false;
  }
  watcher_.detach();
  if (reset) {
    if (const std::error_code ec = socket_.setLinger({true, std::chrono::seconds(0)})) {
      KEEL_WARN("conn {}: {}", id_, Socket::errorMessage("setsockopt(SO_LINGER)", socket_.fd(), ec));
    }
  } else if (!finSeen && !inRead_) {
    // close() with unread bytes in the receive queue makes Linux send a reset
    // instead of a FIN, and a reset can destroy the reply the peer has not
    // read yet. Drain what is there first (one non-blocking read).
    std::span<char> scratch = loop_.scratch();
    [[maybe_unused]] const ssize_t n = ::recv(socket_.fd(), scratch.data(), scratch.size(), MSG_DONTWAIT);
  }
  socket_.close();
  output_.release();
  KEEL_DEBUG("conn {} ({}) closed: {}", id_, peer_.toString(), toString(reason));
  pipeline_.fireClosed(reason);
  pipeline_.removeAll();
  if (closedHook_) closedHook_(self);
}

}  // namespace keel
