#include "keel/net/UdpEndpoint.h"

#include <algorithm>
#include <cerrno>
#include <utility>

#include "keel/core/EventLoop.h"
#include "keel/core/Log.h"

namespace keel {
namespace {

// recvmmsg silently caps vlen at UIO_MAXIOV; a larger batch would only waste memory.
constexpr int kMaxBatch = 1024;

UdpOptions sanitized(UdpOptions o) {
  o.batch = std::clamp(o.batch, 1, kMaxBatch);
  o.maxDatagram = std::max<std::size_t>(o.maxDatagram, 1);
  return o;
}

// Generic category, like Socket: errno values compare equal to std::errc.
std::error_code errnoCode(int err) { return {err, std::generic_category()}; }

// What the kernel turns an ICMP error into (icmp_err_convert and its IPv6
// twin) and stores on a connected socket. The next receive or send returns it.
// Rarer codes that a receive could also produce for other reasons (EACCES,
// EOPNOTSUPP) are left out: those are better logged as receive errors.
bool isIcmpError(int err) {
  switch (err) {
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EHOSTDOWN:
    case ENONET:
    case EMSGSIZE:
      return true;
    default:
      return false;
  }
}

}  // namespace

UdpEndpoint::UdpEndpoint(EventLoop& loop, MessageCallback cb, UdpOptions options)
    : loop_(loop), cb_(std::move(cb)), options_(sanitized(options)) {}

// Members go in reverse declaration order: the watcher leaves epoll before
// the socket closes its fd, so a recycled fd number can never be confused.
UdpEndpoint::~UdpEndpoint() = default;

std::error_code UdpEndpoint::bind(const SocketAddress& local) {
  loop_.assertInLoopThread();
  if (socket_.valid()) return std::make_error_code(std::errc::invalid_argument);
  if (auto ec = open(local.family())) return ec;
  std::error_code ec;
  if (options_.reuseAddr) ec = socket_.setReuseAddr(true);
  if (!ec && options_.reusePort) ec = socket_.setReusePort(true);
  if (!ec) ec = socket_.bind(local);
  if (!ec) ec = startReading();
  if (ec) close();  // leave the endpoint closed so bind() can be retried
  return ec;
}

std::error_code UdpEndpoint::connect(const SocketAddress& peer) {
  loop_.assertInLoopThread();
  const bool opened = !socket_.valid();
  if (opened) {
    if (auto ec = open(peer.family())) return ec;
  }
  // UDP connect only records the peer (and picks a route and a local port):
  // it completes at once, there is no handshake to wait for.
  std::error_code ec = socket_.connect(peer);
  if (!ec && opened) ec = startReading();
  if (ec) {
    if (opened) close();
    return ec;
  }
  pendingError_.clear();  // an ICMP error about the previous peer is stale now
  return {};
}

std::error_code UdpEndpoint::sendTo(std::span<const char> data, const SocketAddress& to) {
  return sendImpl(data, to.data(), to.length());
}

std::error_code UdpEndpoint::send(std::span<const char> data) {
  // No address: the kernel uses the connected peer, or fails with EDESTADDRREQ.
  return sendImpl(data, nullptr, 0);
}

std::error_code UdpEndpoint::sendImpl(std::span<const char> data, const sockaddr* to, socklen_t toLen) {
  loop_.assertInLoopThread();
  std::error_code ec;
  if (!socket_.valid()) {
    ec = std::make_error_code(std::errc::bad_file_descriptor);
  } else if (pendingError_) {
    // The read path consumed this ICMP error from the socket. The kernel
    // would have failed this send with it (without sending), so do the same:
    // the caller sees one behaviour whether or not the loop read first.
    ec = std::exchange(pendingError_, {});
  } else {
    ssize_t n = 0;
    do {
      n = ::sendto(socket_.fd(), data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL, to, toLen);
    } while (n < 0 && errno == EINTR);
    if (n >= 0) {
      // A datagram is sent whole or not at all, so n == data.size().
      ++stats_.datagramsOut;
      stats_.bytesOut += static_cast<std::uint64_t>(n);
      return {};
    }
    ec = errnoCode(errno);  // EAGAIN/ENOBUFS: dropped, UDP has no queue to wait in
  }
  ++stats_.sendErrors;
  return ec;
}

void UdpEndpoint::close() {
  loop_.assertInLoopThread();
  retireWatcher();
  socket_.close();
  pendingError_.clear();
  ++generation_;
}

SocketAddress UdpEndpoint::localAddress() const {
  if (!socket_.valid()) return {};
  return socket_.localAddress();
}

std::error_code UdpEndpoint::open(sa_family_t family) {
  allocateBuffers();  // first, so running out of memory leaves no socket behind
  std::error_code ec;
  socket_ = Socket::udp(family, ec);
  if (ec) return ec;  // EMFILE, EAFNOSUPPORT...: conditions the caller handles, not bugs
  pendingError_.clear();
  ++generation_;
  return {};
}

std::error_code UdpEndpoint::startReading() {
  retireWatcher();
  watcher_ = std::make_unique<Watcher>(loop_, socket_.fd(), [this](std::uint32_t) { handleRead(); });
  // epoll_ctl(ADD) can fail (ENOMEM, ENOSPC): reported like a failed bind.
  return watcher_->enable(Watcher::kRead);
}

void UdpEndpoint::retireWatcher() {
  if (!watcher_) return;
  watcher_->detach();
  if (inReadHandler_) {
    // We are inside this watcher's own callback (the message callback closed
    // or re-opened the endpoint): destroying it now would free the
    // std::function that is running. Detached, it is inert; let it die after
    // the current dispatch.
    loop_.queueInLoop([retired = std::shared_ptr<Watcher>(std::move(watcher_))] {});
  } else {
    watcher_.reset();
  }
}

void UdpEndpoint::allocateBuffers() {
  if (buffer_) return;  // once per endpoint: re-opening reuses the same area
  const auto batch = static_cast<std::size_t>(options_.batch);
  const std::size_t size = options_.maxDatagram;
  // No zero-fill: the kernel writes before anything reads.
  buffer_ = std::make_unique_for_overwrite<char[]>(batch * size);
  iovecs_.resize(batch);
  addrs_.resize(batch);
  msgs_.resize(batch);  // value-initialized: zero flags, no control data
  for (std::size_t i = 0; i < batch; ++i) {
    // A datagram of exactly maxDatagram bytes fits; a longer one comes back
    // with MSG_TRUNC in its msg_flags, so no spare byte is needed to detect it.
    iovecs_[i] = iovec{buffer_.get() + i * size, size};
    msghdr& h = msgs_[i].msg_hdr;
    h.msg_name = &addrs_[i];
    h.msg_iov = &iovecs_[i];
    h.msg_iovlen = 1;
  }
}

void UdpEndpoint::handleRead() {
  // Called for EPOLLIN and for EPOLLERR alike: a pending socket error is
  // taken (and cleared) by the receive, so it cannot spin the loop.
  for (auto& m : msgs_) m.msg_hdr.msg_namelen = sizeof(sockaddr_storage);  // in/out
  // One call per readiness, never "until EAGAIN": the loop is level-triggered,
  // so what is left makes the socket ready again, after the other watchers.
  // MSG_TRUNC makes msg_len the real length of a truncated datagram (for the
  // log); MSG_TRUNC in each msg_flags is what marks it.
  const int n = ::recvmmsg(socket_.fd(), msgs_.data(), static_cast<unsigned>(msgs_.size()),
                           MSG_DONTWAIT | MSG_TRUNC, nullptr);
  if (n < 0) {
    handleReceiveError(errno);
    return;
  }
  const std::uint64_t generation = generation_;
  struct ReadScope {
    bool& flag;
    explicit ReadScope(bool& f) : flag(f) { flag = true; }
    ~ReadScope() { flag = false; }
    ReadScope(const ReadScope&) = delete;
    ReadScope& operator=(const ReadScope&) = delete;
  } scope(inReadHandler_);
  for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
    const msghdr& h = msgs_[i].msg_hdr;
    const std::size_t len = msgs_[i].msg_len;
    if ((h.msg_flags & MSG_TRUNC) != 0) {
      ++stats_.truncated;
      KEEL_DEBUG("udp fd {}: dropped a {}-byte datagram (maxDatagram {})", socket_.fd(), len,
                 options_.maxDatagram);
      continue;
    }
    ++stats_.datagramsIn;
    stats_.bytesIn += len;
    if (!cb_) continue;  // a send-only endpoint: counted, then discarded
    const SocketAddress from(static_cast<const sockaddr*>(h.msg_name), h.msg_namelen);
    cb_(*this, std::span<const char>(static_cast<const char*>(h.msg_iov->iov_base), len), from);
    if (generation_ != generation) return;  // the callback closed or re-opened us
  }
}

void UdpEndpoint::handleReceiveError(int err) {
  if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) return;  // readiness comes again
  if (isIcmpError(err)) {
    // An ICMP error for our connected peer: a property of the last send, not
    // a receive failure. Keep it for the next send and keep reading.
    pendingError_ = errnoCode(err);
    KEEL_DEBUG("udp fd {}: peer error {}", socket_.fd(), pendingError_.message());
    return;
  }
  ++stats_.receiveErrors;
  KEEL_WARN("udp fd {}: recvmmsg: {}", socket_.fd(), errnoCode(err).message());
}

}  // namespace keel
