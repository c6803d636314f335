#include "keel/net/internal/AddressRace.h"

#include <algorithm>

#include <sys/epoll.h>

#include "keel/core/EventLoop.h"
#include "keel/core/Log.h"

namespace keel {

AddressRace::AddressRace(EventLoop& loop, RaceOptions options) : loop_(loop), options_(options) {
  options_.attemptDelay =
      std::clamp<Duration>(options_.attemptDelay, std::chrono::milliseconds(10), std::chrono::seconds(2));
}

AddressRace::~AddressRace() { abandon(); }

std::vector<SocketAddress> AddressRace::interleave(std::vector<SocketAddress> addrs) {
  if (addrs.size() < 3 && (addrs.size() < 2 || addrs[0].family() != addrs[1].family())) return addrs;
  const sa_family_t first = addrs.front().family();
  std::vector<SocketAddress> same;
  std::vector<SocketAddress> other;
  for (const auto& a : addrs) (a.family() == first ? same : other).push_back(a);
  std::vector<SocketAddress> out;
  out.reserve(addrs.size());
  for (std::size_t i = 0; i < std::max(same.size(), other.size()); ++i) {
    if (i < same.size()) out.push_back(same[i]);
    if (i < other.size()) out.push_back(other[i]);
  }
  return out;
}

void AddressRace::start(std::vector<SocketAddress> addrs) {
  abandon();
  // Not inside an attempt's watcher callback (see the header), so the last
  // race's watchers can go now.
  attempts_.clear();
  addrs_ = std::move(addrs);
  next_ = 0;
  inFlight_ = 0;
  lastError_ = std::make_error_code(std::errc::invalid_argument);  // reported only for an empty list
  running_ = true;
  startNext();
}

void AddressRace::abandon() noexcept {
  if (delayTimer_.valid()) loop_.cancel(delayTimer_);
  delayTimer_ = {};
  for (auto& a : attempts_) close(*a);
  inFlight_ = 0;
  running_ = false;
}

void AddressRace::close(Attempt& a) noexcept {
  if (a.timeout.valid()) loop_.cancel(a.timeout);
  a.timeout = {};
  // Out of epoll before the descriptor is closed: its number may be reused at once.
  if (a.watcher) a.watcher->detach();
  a.socket.close();
}

void AddressRace::startNext() {
  if (delayTimer_.valid()) loop_.cancel(delayTimer_);
  delayTimer_ = {};
  while (running_ && next_ < addrs_.size()) {
    auto& a = *attempts_.emplace_back(std::make_unique<Attempt>());
    a.peer = addrs_[next_++];
    std::error_code ec;
    a.socket = Socket::stream(a.peer.family(), ec);
    if (!ec) ec = a.socket.connect(a.peer);
    if (!ec) {
      win(a);
      return;
    }
    if (ec == std::errc::operation_in_progress) {
      a.watcher.emplace(loop_, a.socket.fd(), [this, &a](std::uint32_t events) { onEvent(a, events); });
      ec = a.watcher->setInterest(Watcher::kWrite);
    }
    if (ec) {
      // Refused, unreachable, no such family here, EMFILE: the next address at once.
      KEEL_DEBUG("connect to {}: {}", a.peer.toString(), ec.message());
      lastError_ = ec;
      close(a);
      continue;
    }
    ++inFlight_;
    if (options_.connectTimeout > Duration::zero()) {
      a.timeout = loop_.runAfter(options_.connectTimeout, [this, &a] {
        a.timeout = {};
        failed(a, std::make_error_code(std::errc::timed_out));
      });
    }
    if (next_ < addrs_.size()) {
      delayTimer_ = loop_.runAfter(options_.attemptDelay, [this] {
        delayTimer_ = {};
        startNext();
      });
    }
    return;
  }
  if (running_ && inFlight_ == 0) lose();
}

void AddressRace::onEvent(Attempt& a, std::uint32_t events) {
  if (!a.socket.valid()) return;
  // Level-triggered: stop watching first, or a connected socket would report
  // writable on every iteration.
  a.watcher->detach();
  std::error_code ec = a.socket.takeError();
  if (!ec && (events & (EPOLLERR | EPOLLHUP)) != 0) {
    ec = std::make_error_code(std::errc::not_connected);  // hung up without saying why
  } else if (!ec && a.socket.isSelfConnect()) {
    KEEL_WARN("connect to {}: connected to itself (port in the ephemeral range, nothing listening)",
              a.peer.toString());
    ec = std::make_error_code(std::errc::connection_refused);
  }
  if (ec) {
    failed(a, ec);
  } else {
    win(a);
  }
}

void AddressRace::failed(Attempt& a, std::error_code ec) {
  if (!a.socket.valid()) return;
  KEEL_DEBUG("connect to {}: {}", a.peer.toString(), ec.message());
  close(a);
  --inFlight_;
  lastError_ = ec;
  if (next_ < addrs_.size()) {
    startNext();  // a failure does not wait for the attempt delay
  } else if (inFlight_ == 0) {
    lose();
  }
}

void AddressRace::win(Attempt& a) {
  if (a.timeout.valid()) loop_.cancel(a.timeout);
  a.timeout = {};
  if (a.watcher) a.watcher->detach();
  Socket socket = std::move(a.socket);
  const SocketAddress peer = a.peer;
  abandon();  // the losers
  // Last: the callback may start or abandon the race.
  if (won_) won_(std::move(socket), peer);
}

void AddressRace::lose() {
  abandon();
  if (lost_) lost_(lastError_);
}

}  // namespace keel
