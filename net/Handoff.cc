// The old process's side of the handoff (net/Handoff.h): everything runs on
// its loop, non-blocking, with one deadline per exchange, so serving traffic
// never waits on a successor.
#include "keel/net/Handoff.h"

#include <cerrno>
#include <cstring>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "keel/core/EventLoop.h"
#include "keel/core/Log.h"
#include "keel/core/Watcher.h"
#include "keel/net/internal/HandoffWire.h"

namespace keel {

namespace {

class HandoffCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "keel.handoff"; }
  std::string message(int e) const override {
    switch (static_cast<HandoffError>(e)) {
      case HandoffError::Protocol:
        return "handoff: the other side does not speak this protocol";
      case HandoffError::Version:
        return "handoff: unsupported protocol version";
      case HandoffError::Timeout:
        return "handoff: timed out";
      case HandoffError::Refused:
        return "handoff: the running process closed the channel";
      case HandoffError::BadPath:
        return "handoff: path empty or too long for a Unix socket";
      case HandoffError::InUse:
        return "handoff: another live process listens on the path";
    }
    return "handoff: unknown error";
  }
};

std::error_code lastError() noexcept { return {errno, std::generic_category()}; }

// Same user (or root): anyone who can connect must not walk off with the
// listening sockets, whatever the permissions on PATH are.
bool trustedPeer(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  return cred.uid == 0 || cred.uid == ::geteuid();
}

}  // namespace

const std::error_category& handoffCategory() noexcept {
  static const HandoffCategory category;
  return category;
}

std::error_code make_error_code(HandoffError e) noexcept { return {static_cast<int>(e), handoffCategory()}; }

HandoffServer::HandoffServer(EventLoop& loop, std::string path, Export exportListeners, HandedOff onHandedOff,
                             HandoffOptions options)
    : loop_(loop),
      path_(std::move(path)),
      export_(std::move(exportListeners)),
      onHandedOff_(std::move(onHandedOff)),
      options_(options) {}

HandoffServer::~HandoffServer() {
  if (deadline_.valid()) loop_.cancel(deadline_);
  channelWatch_.reset();
  closeListener();
}

std::error_code HandoffServer::listen() {
  KEEL_ASSERT_IN_LOOP(loop_, "HandoffServer::listen");
  const auto addr = handoff::unixAddress(path_);
  if (!addr) return HandoffError::BadPath;
  for (int attempt = 0; attempt < 2; ++attempt) {
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) return lastError();
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr->addr), addr->length) == 0) {
      if (::listen(fd.get(), 4) != 0) return lastError();
      listener_ = std::move(fd);
      break;
    }
    if (errno != EADDRINUSE || addr->abstract || attempt > 0) {
      return errno == EADDRINUSE ? make_error_code(HandoffError::InUse) : lastError();
    }
    // A socket file is there. Somebody accepting on it is a live process; a
    // refused connect means a stale file of a process that is gone.
    Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe) return lastError();
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr->addr), addr->length) == 0 ||
        errno != ECONNREFUSED)
      return HandoffError::InUse;
    KEEL_INFO("handoff: removing the stale socket file {}", path_);
    ::unlink(path_.c_str());
  }
  if (!addr->abstract) {
    struct stat st {};
    if (::stat(path_.c_str(), &st) == 0) {
      inode_ = st.st_ino;
      device_ = st.st_dev;
    }
  }
  listenWatch_ = std::make_unique<Watcher>(loop_, listener_.get(), [this](std::uint32_t) { onAcceptable(); });
  if (auto ec = listenWatch_->enable(Watcher::kRead)) {
    closeListener();
    return ec;
  }
  KEEL_INFO("handoff: a successor can take over through {}", path_);
  return {};
}

void HandoffServer::closeListener() {
  listenWatch_.reset();
  if (!listener_) return;
  listener_.reset();
  // A successor may already have bound a new file at PATH: remove only ours.
  struct stat st {};
  if (inode_ != 0 && ::stat(path_.c_str(), &st) == 0 && st.st_ino == inode_ && st.st_dev == device_)
    ::unlink(path_.c_str());
  inode_ = 0;
}

void HandoffServer::onAcceptable() {
  for (;;) {
    Fd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!conn) return;  // EAGAIN, or an error that the next readiness retries
    if (channel_ || handedOff_) {
      KEEL_WARN("handoff: a second successor while one is served; closing it");
      ++failures_;
      continue;
    }
    if (!trustedPeer(conn.get())) {
      KEEL_WARN("handoff: successor of another uid; closing it");
      ++failures_;
      continue;
    }
    std::error_code ec;
    std::vector<Fd> fds = export_ ? export_(ec) : std::vector<Fd>{};
    if (!ec && (fds.empty() || fds.size() > kMaxAdoptedListeners)) ec = ListenerError::TooMany;
    if (ec) {
      KEEL_ERROR("handoff: cannot export the listening sockets: {}", ec.message());
      ++failures_;
      continue;
    }
    handoff::Header h{};
    std::memcpy(h.magic, handoff::kMagic.data(), sizeof h.magic);
    h.version = handoff::kVersion;
    h.count = static_cast<std::uint16_t>(fds.size());
    h.pid = static_cast<std::uint32_t>(::getpid());
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxAdoptedListeners)] = {};
    iovec iov{&h, sizeof h};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    for (std::size_t i = 0; i < fds.size(); ++i) {
      const int raw = fds[i].get();
      std::memcpy(CMSG_DATA(cm) + i * sizeof(int), &raw, sizeof raw);
    }
    // 12 bytes into an empty socket buffer: all or nothing, never EAGAIN in
    // practice; anything short is a failed exchange, not a retry.
    if (::sendmsg(conn.get(), &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof h)) {
      KEEL_ERROR("handoff: cannot send the listening sockets: {}", lastError().message());
      ++failures_;
      continue;
    }
    // Our dups go now; the successor holds its own references.
    fds.clear();
    channel_ = std::move(conn);
    ack_.clear();
    channelWatch_ =
        std::make_unique<Watcher>(loop_, channel_.get(), [this](std::uint32_t) { onChannelReadable(); });
    if (channelWatch_->enable(Watcher::kRead)) {
      failExchange("cannot watch the channel");
      continue;
    }
    deadline_ = loop_.runAfter(options_.timeout, [this] {
      deadline_ = {};
      failExchange("no ack in time");
    });
    KEEL_INFO("handoff: sent {} listening socket(s) to a successor; waiting for its ack", h.count);
  }
}

void HandoffServer::failExchange(const char* why) {
  KEEL_WARN("handoff: successor failed ({}); still serving", why);
  ++failures_;
  if (deadline_.valid()) loop_.cancel(deadline_);
  deadline_ = {};
  dropChannel();
}

void HandoffServer::dropChannel() {
  if (channelWatch_) {
    channelWatch_->detach();  // out of epoll before the descriptor closes
    // Destroyed later: this may run inside the watcher's own callback.
    loop_.queueInLoop([w = std::shared_ptr<Watcher>(std::move(channelWatch_))] {});
  }
  channel_.reset();
}

void HandoffServer::onChannelReadable() {
  char buf[8];
  const ssize_t n = ::recv(channel_.get(), buf, sizeof buf, 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) return failExchange(n == 0 ? "it closed the channel" : "read error");
  ack_.append(buf, static_cast<std::size_t>(n));
  if (ack_.size() < handoff::kAck.size()) return;
  if (ack_ != handoff::kAck) return failExchange("not an ack");
  if (deadline_.valid()) loop_.cancel(deadline_);
  deadline_ = {};
  handedOff_ = true;
  // PATH first, so that the successor can bind it as soon as it reads RLSD.
  closeListener();
  (void)::send(channel_.get(), handoff::kReleased.data(), handoff::kReleased.size(), MSG_NOSIGNAL);
  dropChannel();
  KEEL_INFO("handoff: the successor accepts now; handing over");
  if (onHandedOff_) onHandedOff_();
}

}  // namespace keel
