#include "keel/net/Socket.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <string_view>

#include <linux/tcp.h>  // the full struct tcp_info (glibc's lacks the byte counters)
#include <netinet/in.h>
#include <sys/socket.h>

namespace keel {

namespace {

std::error_code lastError() noexcept { return {errno, std::generic_category()}; }

// "what on fd N": errorMessage() without the reason. std::system_error
// appends ": <reason>" itself, so an exception built from this prefix reads
// exactly as errorMessage() does.
std::string errorPrefix(std::string_view what, int fd) {
  std::string out(what);
  out += " on fd ";
  out += std::to_string(fd);
  return out;
}

[[noreturn]] void throwError(std::string_view what, int fd, std::error_code ec) {
  throw std::system_error(ec, errorPrefix(what, fd));
}

Socket makeSocket(sa_family_t family, int type, std::error_code& ec) noexcept {
  const int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ec = lastError();
    return Socket();
  }
  ec.clear();
  return Socket(Fd(fd));
}

// Seconds for TCP_KEEPIDLE / TCP_KEEPINTVL: at least 1, and an int. Values
// above the kernel's own limit are passed on so that it reports EINVAL.
int keepAliveSeconds(std::chrono::seconds s) noexcept {
  auto n = s.count();
  if (n < 1) return 1;
  if (n > INT_MAX) return INT_MAX;
  return static_cast<int>(n);
}

bool getSockName(int fd, SocketAddress& addr) noexcept {
  socklen_t len = SocketAddress::capacity();
  if (::getsockname(fd, addr.data(), &len) != 0) return false;
  addr.setLength(std::min(len, SocketAddress::capacity()));
  return true;
}

bool getPeerName(int fd, SocketAddress& addr) noexcept {
  socklen_t len = SocketAddress::capacity();
  if (::getpeername(fd, addr.data(), &len) != 0) return false;
  addr.setLength(std::min(len, SocketAddress::capacity()));
  return true;
}

}  // namespace

Socket Socket::tcp(sa_family_t family, std::error_code& ec) noexcept {
  return makeSocket(family, SOCK_STREAM, ec);
}

Socket Socket::udp(sa_family_t family, std::error_code& ec) noexcept {
  return makeSocket(family, SOCK_DGRAM, ec);
}

std::error_code Socket::bind(const SocketAddress& addr) noexcept {
  if (::bind(fd(), addr.data(), addr.length()) != 0) return lastError();
  return {};
}

std::error_code Socket::listen(int backlog) noexcept {
  if (::listen(fd(), backlog) != 0) return lastError();
  return {};
}

std::error_code Socket::connect(const SocketAddress& addr) noexcept {
  if (::connect(fd(), addr.data(), addr.length()) == 0) return {};
  int err = errno;
  // EINTR: POSIX says the connect then goes on asynchronously, exactly as
  // with EINPROGRESS; calling connect() again would only give EALREADY.
  // (A non-blocking AF_UNIX connect to a full backlog gives EAGAIN instead,
  // which is passed on as it is: nothing is under way in that case.)
  if (err == EINPROGRESS || err == EINTR) return std::make_error_code(std::errc::operation_in_progress);
  return {err, std::generic_category()};
}

Socket Socket::accept(SocketAddress* peer, std::error_code& ec) noexcept {
  SocketAddress addr;
  socklen_t len = SocketAddress::capacity();
  int newFd;
  do {
    newFd = ::accept4(fd(), peer != nullptr ? addr.data() : nullptr, peer != nullptr ? &len : nullptr,
                      SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (newFd < 0 && errno == EINTR);
  if (newFd < 0) {
    ec = lastError();
    return Socket();
  }
  ec.clear();
  if (peer != nullptr) {
    addr.setLength(std::min(len, SocketAddress::capacity()));
    *peer = addr;
  }
  return Socket(Fd(newFd));
}

std::error_code Socket::shutdownWrite() noexcept {
  if (::shutdown(fd(), SHUT_WR) != 0) return lastError();
  return {};
}

SocketAddress Socket::localAddress() const {
  SocketAddress addr;
  if (!getSockName(fd(), addr)) throwError("getsockname", fd(), lastError());
  return addr;
}

SocketAddress Socket::peerAddress() const {
  SocketAddress addr;
  if (!getPeerName(fd(), addr)) throwError("getpeername", fd(), lastError());
  return addr;
}

std::error_code Socket::takeError() const noexcept {
  int err = 0;
  socklen_t len = sizeof(err);
  if (::getsockopt(fd(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) return lastError();
  if (err == 0) return {};
  return {err, std::generic_category()};
}

bool Socket::isSelfConnect() const {
  // Asked right after a connect completes; a peer that has already gone
  // (getpeername: ENOTCONN) is simply not this socket itself.
  SocketAddress local;
  SocketAddress peer;
  if (!getSockName(fd(), local) || !getPeerName(fd(), peer)) return false;
  return local.isInet() && local == peer;
}

// ---- options ----------------------------------------------------------------

std::error_code Socket::setInt(int level, int name, int value) noexcept {
  if (::setsockopt(fd(), level, name, &value, sizeof(value)) != 0) return lastError();
  return {};
}

int Socket::getInt(int level, int name, const char* what) const {
  int value = 0;
  socklen_t len = sizeof(value);
  if (::getsockopt(fd(), level, name, &value, &len) != 0) throwError(what, fd(), lastError());
  return value;
}

std::error_code Socket::setNoDelay(bool on) noexcept { return setInt(IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0); }

std::error_code Socket::setQuickAck(bool on) noexcept {
  return setInt(IPPROTO_TCP, TCP_QUICKACK, on ? 1 : 0);
}

std::error_code Socket::setCork(bool on) noexcept { return setInt(IPPROTO_TCP, TCP_CORK, on ? 1 : 0); }

std::error_code Socket::setKeepAlive(bool on) noexcept {
  return setInt(SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0);
}

std::error_code Socket::setKeepAliveParams(std::chrono::seconds idle, std::chrono::seconds interval,
                                           int count) noexcept {
  // Three separate options: on an error the ones before it stay applied.
  if (auto ec = setInt(IPPROTO_TCP, TCP_KEEPIDLE, keepAliveSeconds(idle))) return ec;
  if (auto ec = setInt(IPPROTO_TCP, TCP_KEEPINTVL, keepAliveSeconds(interval))) return ec;
  return setInt(IPPROTO_TCP, TCP_KEEPCNT, count);
}

std::error_code Socket::setUserTimeout(std::chrono::milliseconds timeout) noexcept {
  // The kernel takes an unsigned int but rejects anything that is negative
  // as an int; 0 means "use the system default".
  auto ms = timeout.count();
  if (ms < 0 || ms > INT_MAX) return std::make_error_code(std::errc::invalid_argument);
  return setInt(IPPROTO_TCP, TCP_USER_TIMEOUT, static_cast<int>(ms));
}

std::error_code Socket::setLinger(Linger linger) noexcept {
  auto secs = linger.timeout.count();
  if (secs < 0 || secs > INT_MAX) return std::make_error_code(std::errc::invalid_argument);
  ::linger value{};
  value.l_onoff = linger.on ? 1 : 0;
  value.l_linger = static_cast<int>(secs);
  if (::setsockopt(fd(), SOL_SOCKET, SO_LINGER, &value, sizeof(value)) != 0) return lastError();
  return {};
}

std::error_code Socket::setReuseAddr(bool on) noexcept {
  return setInt(SOL_SOCKET, SO_REUSEADDR, on ? 1 : 0);
}

std::error_code Socket::setReusePort(bool on) noexcept {
  return setInt(SOL_SOCKET, SO_REUSEPORT, on ? 1 : 0);
}

std::error_code Socket::setSendBuffer(int bytes) noexcept { return setInt(SOL_SOCKET, SO_SNDBUF, bytes); }

std::error_code Socket::setReceiveBuffer(int bytes) noexcept { return setInt(SOL_SOCKET, SO_RCVBUF, bytes); }

std::error_code Socket::setIpv6Only(bool on) noexcept {
  return setInt(IPPROTO_IPV6, IPV6_V6ONLY, on ? 1 : 0);
}

bool Socket::noDelay() const { return getInt(IPPROTO_TCP, TCP_NODELAY, "getsockopt(TCP_NODELAY)") != 0; }

bool Socket::quickAck() const { return getInt(IPPROTO_TCP, TCP_QUICKACK, "getsockopt(TCP_QUICKACK)") != 0; }

bool Socket::cork() const { return getInt(IPPROTO_TCP, TCP_CORK, "getsockopt(TCP_CORK)") != 0; }

bool Socket::keepAlive() const { return getInt(SOL_SOCKET, SO_KEEPALIVE, "getsockopt(SO_KEEPALIVE)") != 0; }

std::chrono::seconds Socket::keepIdle() const {
  return std::chrono::seconds(getInt(IPPROTO_TCP, TCP_KEEPIDLE, "getsockopt(TCP_KEEPIDLE)"));
}

std::chrono::seconds Socket::keepInterval() const {
  return std::chrono::seconds(getInt(IPPROTO_TCP, TCP_KEEPINTVL, "getsockopt(TCP_KEEPINTVL)"));
}

int Socket::keepCount() const { return getInt(IPPROTO_TCP, TCP_KEEPCNT, "getsockopt(TCP_KEEPCNT)"); }

std::chrono::milliseconds Socket::userTimeout() const {
  auto ms = static_cast<unsigned int>(getInt(IPPROTO_TCP, TCP_USER_TIMEOUT, "getsockopt(TCP_USER_TIMEOUT)"));
  return std::chrono::milliseconds(ms);
}

Linger Socket::linger() const {
  ::linger value{};
  socklen_t len = sizeof(value);
  if (::getsockopt(fd(), SOL_SOCKET, SO_LINGER, &value, &len) != 0)
    throwError("getsockopt(SO_LINGER)", fd(), lastError());
  return Linger{value.l_onoff != 0, std::chrono::seconds(value.l_linger)};
}

bool Socket::reuseAddr() const { return getInt(SOL_SOCKET, SO_REUSEADDR, "getsockopt(SO_REUSEADDR)") != 0; }

bool Socket::reusePort() const { return getInt(SOL_SOCKET, SO_REUSEPORT, "getsockopt(SO_REUSEPORT)") != 0; }

int Socket::sendBuffer() const { return getInt(SOL_SOCKET, SO_SNDBUF, "getsockopt(SO_SNDBUF)"); }

int Socket::receiveBuffer() const { return getInt(SOL_SOCKET, SO_RCVBUF, "getsockopt(SO_RCVBUF)"); }

bool Socket::ipv6Only() const { return getInt(IPPROTO_IPV6, IPV6_V6ONLY, "getsockopt(IPV6_V6ONLY)") != 0; }

std::optional<TcpInfo> Socket::tcpInfo() const noexcept {
  // A kernel older than these headers fills in less; the rest stays zero.
  tcp_info raw{};
  socklen_t len = sizeof(raw);
  if (::getsockopt(fd(), IPPROTO_TCP, TCP_INFO, &raw, &len) != 0) return std::nullopt;
  TcpInfo info;
  info.state = raw.tcpi_state;
  info.rtt = std::chrono::microseconds(raw.tcpi_rtt);
  info.rttvar = std::chrono::microseconds(raw.tcpi_rttvar);
  info.retransmits = raw.tcpi_retransmits;
  info.totalRetrans = raw.tcpi_total_retrans;
  info.unacked = raw.tcpi_unacked;
  info.lost = raw.tcpi_lost;
  info.sndCwnd = raw.tcpi_snd_cwnd;
  info.sndMss = raw.tcpi_snd_mss;
  info.rcvSpace = raw.tcpi_rcv_space;
  info.bytesAcked = raw.tcpi_bytes_acked;
  info.bytesReceived = raw.tcpi_bytes_received;
  info.lastDataRecv = std::chrono::milliseconds(raw.tcpi_last_data_recv);
  info.lastAckRecv = std::chrono::milliseconds(raw.tcpi_last_ack_recv);
  info.notsentBytes = raw.tcpi_notsent_bytes;
  info.segsOut = raw.tcpi_segs_out;
  info.segsIn = raw.tcpi_segs_in;
  return info;
}

std::string Socket::errorMessage(std::string_view what, int fd, std::error_code ec) {
  std::string out = errorPrefix(what, fd);
  out += ": ";
  out += ec.message();
  return out;
}

}  // namespace keel
