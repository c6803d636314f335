// The new process's side of the handoff (net/Handoff.h): blocking calls
// with SO_RCVTIMEO/SO_SNDTIMEO deadlines, made from main() before the loop
// runs, so nothing else waits on them.
#include <cerrno>
#include <cstring>

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "keel/core/Log.h"
#include "keel/net/Handoff.h"
#include "keel/net/internal/HandoffWire.h"

namespace keel {

namespace {

std::error_code lastError() noexcept {
  if (errno == EAGAIN || errno == EWOULDBLOCK) return HandoffError::Timeout;  // SO_RCVTIMEO ran out
  return {errno, std::generic_category()};
}

bool setTimeouts(int fd, std::chrono::milliseconds timeout) noexcept {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
  timeval tv{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
  return ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0 &&
         ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0;
}

// Exactly `want` bytes (a short read is the old process gone).
std::error_code readExactly(int fd, char* out, std::size_t want) noexcept {
  while (want > 0) {
    const ssize_t n = ::recv(fd, out, want, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return lastError();
    if (n == 0) return HandoffError::Refused;
    out += n;
    want -= static_cast<std::size_t>(n);
  }
  return {};
}

}  // namespace

std::optional<Takeover> requestHandoff(const std::string& path, std::error_code& ec, HandoffOptions options) {
  ec.clear();
  const auto addr = handoff::unixAddress(path);
  if (!addr) {
    ec = HandoffError::BadPath;
    return std::nullopt;
  }
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd || !setTimeouts(fd.get(), options.timeout)) {
    ec = lastError();
    return std::nullopt;
  }
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr->addr), addr->length) != 0) {
    if (errno == ENOENT || errno == ECONNREFUSED) return std::nullopt;  // nobody there: bind
    ec = lastError();
    return std::nullopt;
  }
  handoff::Header h{};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxAdoptedListeners)] = {};
  iovec iov{&h, sizeof h};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    // CLOEXEC from the start: no window in which a fork+exec elsewhere in
    // the process could inherit a listener.
    n = ::recvmsg(fd.get(), &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    ec = lastError();
    return std::nullopt;
  }
  Takeover t;
  // Own every descriptor that arrived before judging anything else, so that
  // every failure path below closes them.
  for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm != nullptr; cm = CMSG_NXTHDR(&msg, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int raw = -1;
      std::memcpy(&raw, CMSG_DATA(cm) + i * sizeof(int), sizeof raw);
      t.listeners.emplace_back(raw);
    }
  }
  if (n == 0) {
    ec = HandoffError::Refused;
    return std::nullopt;
  }
  if (static_cast<std::size_t>(n) < sizeof h) {
    ec = readExactly(fd.get(), reinterpret_cast<char*>(&h) + n, sizeof h - static_cast<std::size_t>(n));
    if (ec) return std::nullopt;
  }
  if (std::memcmp(h.magic, handoff::kMagic.data(), sizeof h.magic) != 0 ||
      (msg.msg_flags & MSG_CTRUNC) != 0) {
    ec = HandoffError::Protocol;
    return std::nullopt;
  }
  if (h.version != handoff::kVersion) {
    ec = HandoffError::Version;
    return std::nullopt;
  }
  if (h.count == 0 || h.count != t.listeners.size()) {
    ec = HandoffError::Protocol;
    return std::nullopt;
  }
  for (const Fd& l : t.listeners) {
    if ((ec = checkListener(l.get()))) return std::nullopt;
  }
  t.previousPid = static_cast<pid_t>(h.pid);
  t.channel_ = std::move(fd);
  t.options_ = options;
  return t;
}

std::error_code Takeover::confirm() {
  if (!channel_) return std::make_error_code(std::errc::not_connected);
  Fd fd = std::move(channel_);
  const ssize_t n = ::send(fd.get(), handoff::kAck.data(), handoff::kAck.size(), MSG_NOSIGNAL);
  if (n != static_cast<ssize_t>(handoff::kAck.size())) {
    // The old process gave up (its timeout) and closed the channel.
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return HandoffError::Refused;
    return n < 0 ? lastError() : HandoffError::Protocol;
  }
  char got[handoff::kReleased.size()];
  if (auto ec = readExactly(fd.get(), got, sizeof got)) return ec;
  if (std::string_view(got, sizeof got) != handoff::kReleased) return HandoffError::Protocol;
  return {};
}

}  // namespace keel
