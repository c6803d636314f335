// Connection: the byte path. One read per readiness, a direct sendmsg when
// nothing is queued, the output queue with its watermarks and cap, and the
// end-of-iteration work (coalesced flushes, watermark events).
#include <cerrno>

#include <sys/socket.h>
#include <sys/uio.h>

#include "keel/core/Log.h"
#include "keel/net/Connection.h"
#include "keel/net/internal/OutputBudget.h"
#include "keel/net/internal/Transport.h"

namespace keel {

ssize_t Connection::readOnce(std::size_t limit, std::size_t& offered) {
  std::span<char> scratch = loop_.scratch();
  if (input_.empty()) {
    // The common case: read straight into the loop's scratch area and lend it
    // to the buffer; nothing is copied unless handlers leave bytes behind.
    offered = std::min(scratch.size(), limit);
    const ssize_t n = transport_ != nullptr ? transport_->read(scratch.first(offered))
                                            : ::read(socket_.fd(), scratch.data(), offered);
    if (n > 0) {
      input_.borrow(scratch.first(offered));
      input_.hasWritten(static_cast<std::size_t>(n));
    }
    return n;
  }
  if (transport_ == nullptr) {
    offered = std::min(input_.writableBytes() + scratch.size(), limit);
    return input_.readFrom(socket_.fd(), scratch, limit);
  }
  offered = std::min(scratch.size(), limit);
  const ssize_t n = transport_->read(scratch.first(offered));
  if (n > 0) input_.append(scratch.data(), static_cast<std::size_t>(n));
  return n;
}

void Connection::handleRead(std::uint32_t events) {
  const std::size_t room =
      options_->maxInputBytes > input_.readableBytes() ? options_->maxInputBytes - input_.readableBytes() : 0;
  std::size_t offered = 0;
  const ssize_t n = readOnce(std::min(options_->maxReadPerEvent, room), offered);

  if (n > 0) {
    stats_.bytesIn += static_cast<std::uint64_t>(n);
    ++stats_.reads;
    stats_.lastRead = loop_.now();
    inRead_ = true;
    pipeline_.fireData(input_);
    if (!closed()) pipeline_.fireReadComplete();
    inRead_ = false;
    if (closed()) {
      input_.retrieveAll();
      input_.settle();
      return;
    }
    input_.settle();
    if (input_.readableBytes() >= options_->maxInputBytes && !pausedByInputCap_) {
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

ssize_t Connection::writeVector(const iovec* iov, int count) {
  if (transport_ != nullptr) return transport_->writev(iov, count);
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<std::size_t>(count);
  return ::sendmsg(socket_.fd(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

std::error_code Connection::writeRaw(const Slices& data) {
  KEEL_ASSERT_IN_LOOP(loop_, "Connection write (pipeline head)");
  const ConnectionState s = state();
  if (s != ConnectionState::Open && s != ConnectionState::PeerHalfClosed) {
    KEEL_DEBUG("conn {}: write of {} bytes refused in state {}", id_, data.totalBytes(), toString(s));
    return std::make_error_code(std::errc::not_connected);
  }
  if (shutdownPending_.load(std::memory_order_relaxed)) {
    KEEL_DEBUG("conn {}: write of {} bytes refused: shutdown() is under way", id_, data.totalBytes());
    return std::make_error_code(std::errc::broken_pipe);
  }
  if (data.empty()) return {};

  std::size_t written = 0;
  if (output_.empty() && !options_->coalesceWrites) {
    iovec iov[Slices::kMax];
    for (std::size_t i = 0; i < data.count(); ++i) {
      iov[i].iov_base = const_cast<char*>(data[i].data());
      iov[i].iov_len = data[i].size();
    }
    const ssize_t n = writeVector(iov, static_cast<int>(data.count()));
    if (n >= 0) {
      written = static_cast<std::size_t>(n);
      stats_.bytesOut += written;
      ++stats_.writes;
      stats_.lastWrite = loop_.now();
      if (written == data.totalBytes()) return {};
    } else if (errno != EAGAIN && errno != EINTR) {
      const int err = errno;
      failLater(err);
      return {err, std::generic_category()};
    }
  }

  // Queue what the kernel did not take, unless that breaks the cap: then
  // the rest is refused whole (never half-queued) and the connection, whose
  // peer does not read, is reset.
  const std::size_t rest = data.totalBytes() - written;
  if (output_.readableBytes() + rest > options_->maxOutputBytes) {
    KEEL_WARN("conn {} ({}): {} bytes queued for a peer that does not read, over the {} byte cap; closing",
              id_, peer_.toString(), output_.readableBytes() + rest, options_->maxOutputBytes);
    closeLater(CloseReason::Overloaded, CloseMode::Reset);
    return std::make_error_code(std::errc::no_buffer_space);
  }
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
  account();
  if (options_->coalesceWrites) {
    scheduleFlush();
  } else {
    updateInterest();
  }
  if (!aboveHighWatermark_ && queued >= options_->highWatermark) {
    aboveHighWatermark_ = true;
    highQueued_ = queued;
    if (options_->pauseReadingAtHighWatermark) {
      pausedByBackpressure_ = true;  // at once: the next readiness must not read
      updateInterest();
    }
    notify(Notice::High);
  }
  return {};
}

void Connection::account() noexcept {
  if (budget_ == nullptr) return;
  const std::size_t now = output_.readableBytes();
  if (now == accounted_) return;
  budget_->add(static_cast<std::int64_t>(now) - static_cast<std::int64_t>(accounted_));
  accounted_ = now;
}

void Connection::scheduleFlush() {
  if (flushScheduled_) return;
  flushScheduled_ = true;
  loop_.deferToEndOfIteration(*this);
}

void Connection::notify(Notice n) {
  if (notices_[0] == Notice::None) noticesFirst_ = !flushScheduled_;
  // A crossing back before the last one was delivered replaces nothing: both
  // are delivered, in order. Two pending is the most there can be, since
  // crossings alternate.
  if (notices_[0] == Notice::None) {
    notices_[0] = n;
  } else if (notices_[0] != n) {
    notices_[1] = n;
  } else {
    notices_[1] = Notice::None;  // High, Writable, High: the last two cancel out
  }
  loop_.deferToEndOfIteration(*this);
}

void Connection::runDeferred() {
  // Only what was pending when this entry was queued runs now; what the
  // first part asks for anew has queued the entry again, behind the work
  // other connections asked for meanwhile, as two separate entries would.
  const bool flush = flushScheduled_;
  const bool notices = notices_[0] != Notice::None;
  const bool noticesFirst = noticesFirst_;
  if (notices && noticesFirst) deliverNotices();
  if (flush && flushScheduled_) {
    flushScheduled_ = false;
    if (!closed()) flushRaw();
  }
  if (notices && !noticesFirst) deliverNotices();
}

void Connection::deliverNotices() {
  const auto pending = notices_;
  notices_ = {};
  for (const Notice n : pending) {
    if (closed()) return;
    if (n == Notice::High) pipeline_.fireHighWatermark(highQueued_);
    if (n == Notice::Writable) pipeline_.fireWritable();
  }
}

bool Connection::sendQueued() {
  iovec iov{const_cast<char*>(output_.peek()), output_.readableBytes()};
  const ssize_t n = writeVector(&iov, 1);
  if (n > 0) {
    output_.retrieve(static_cast<std::size_t>(n));
    account();
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
  KEEL_ASSERT_IN_LOOP(loop_, "Connection flush (pipeline head)");
  if (closed()) return;
  if (!output_.empty() && !sendQueued()) return;
  updateInterest();
  afterOutputShrank();
}

void Connection::afterOutputShrank() {
  if (closed()) return;
  if (aboveHighWatermark_ && output_.readableBytes() <= options_->lowWatermark) {
    aboveHighWatermark_ = false;
    if (pausedByBackpressure_) {
      pausedByBackpressure_ = false;
      updateInterest();
    }
    notify(Notice::Writable);
  }
  if (!output_.empty() || flushScheduled_) return;
  output_.settle();  // give back a large drained buffer
  if (shutdownPending_.load(std::memory_order_relaxed)) doShutdownWrite();
  if (state() == ConnectionState::Closing) closeNow(pendingReason_, false);
}

}  // namespace keel
