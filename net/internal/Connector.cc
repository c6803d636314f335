#include "keel/net/internal/Connector.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "keel/core/EventLoop.h"
#include "keel/core/Log.h"

namespace keel {
namespace {

// Each connector has its own engine, so clients created together still draw
// different delays. std::random_device may be unavailable (it throws then);
// the clock and the object's address are a weak but sufficient fallback: the
// jitter only has to spread clients out, not be unpredictable.
std::mt19937 seededEngine(const void* self) {
  try {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    return std::mt19937(seq);
  } catch (...) {
    const auto now = static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
    const auto addr = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(self));
    std::seed_seq seq{static_cast<std::uint32_t>(now), static_cast<std::uint32_t>(now >> 32),
                      static_cast<std::uint32_t>(addr), static_cast<std::uint32_t>(addr >> 32)};
    return std::mt19937(seq);
  }
}

ConnectorOptions normalised(ConnectorOptions o) {
  // A zero initial delay would retry on every tick of the loop.
  o.retryInitial = std::max<Duration>(o.retryInitial, std::chrono::milliseconds(1));
  o.retryMax = std::max(o.retryMax, o.retryInitial);
  o.jitterPercent = std::clamp(o.jitterPercent, 0, 100);
  o.maxAttempts = std::max(o.maxAttempts, 0);
  return o;
}

}  // namespace

Connector::Connector(EventLoop& loop, SocketAddress server, ConnectorOptions options)
    : Connector(loop, std::vector<SocketAddress>{server}, options) {}

Connector::Connector(EventLoop& loop, std::vector<SocketAddress> servers, ConnectorOptions options)
    : loop_(loop),
      servers_(AddressRace::interleave(std::move(servers))),
      options_(normalised(options)),
      backoff_(options_.retryInitial),
      rng_(seededEngine(this)),
      race_(loop, RaceOptions{options_.attemptDelay, options_.connectTimeout}) {
  race_.setWon([this](Socket socket, const SocketAddress& peer) { succeed(std::move(socket), peer); });
  race_.setLost([this](std::error_code ec) { fail(ec); });
}

Connector::Connector(EventLoop& loop, HostPort server, ConnectorOptions options)
    : Connector(loop, std::vector<SocketAddress>{}, options) {
  host_ = std::move(server);
}

Connector::~Connector() { stop(); }

std::string Connector::describe() const {
  if (host_) return host_->toString();
  if (servers_.empty()) return "(no address)";
  return servers_.size() == 1
             ? servers_.front().toString()
             : servers_.front().toString() + " (+" + std::to_string(servers_.size() - 1) + ")";
}

Duration Connector::jittered(Duration base, int percent, std::mt19937& rng) {
  if (base <= Duration::zero()) return Duration::zero();
  const Duration::rep pct = std::clamp(percent, 0, 100);
  const Duration::rep ns = base.count();
  if (pct == 0) return base;
  // ns * pct / 100 without the product overflowing for long delays.
  const Duration::rep spread = ns / 100 * pct + ns % 100 * pct / 100;
  std::uniform_int_distribution<Duration::rep> offset(-spread, spread);
  const Duration::rep d = offset(rng);
  if (d > 0 && ns > std::numeric_limits<Duration::rep>::max() - d) return Duration::max();
  return Duration(ns + d);  // >= 0: the spread is at most ns
}

void Connector::start() { beginSeries(options_.retry, false); }

void Connector::restart() { beginSeries(true, true); }

void Connector::beginSeries(bool retry, bool delayFirst) {
  stop();
  attempts_.store(0, std::memory_order_relaxed);
  backoff_ = options_.retryInitial;
  retrySeries_ = retry;
  // Even an immediate first attempt is deferred (to the end of this
  // iteration): the caller never sees callbacks run inside start(), and a
  // stop() right after start() cancels it like any other pending attempt.
  scheduleAttempt(delayFirst ? nextDelay() : Duration::zero());
}

void Connector::stop() {
  if (attemptTimer_.valid()) loop_.cancel(attemptTimer_);
  attemptTimer_ = {};
  loop_.cancelDeferred(attemptNow_);
  abandonAttempt();
  state_ = State::Idle;
}

void Connector::abandonAttempt() noexcept {
  lookup_.cancel();
  race_.abandon();
}

Duration Connector::nextDelay() {
  const Duration delay = jittered(backoff_, options_.jitterPercent, rng_);
  backoff_ = backoff_ > options_.retryMax / 2 ? options_.retryMax : std::min(backoff_ * 2, options_.retryMax);
  return delay;
}

void Connector::scheduleAttempt(Duration delay) {
  state_ = State::Waiting;
  if (delay <= Duration::zero()) {
    loop_.deferToEndOfIteration(attemptNow_);
    return;
  }
  attemptTimer_ = loop_.runAfter(delay, [this] {
    attemptTimer_ = {};
    attempt();
  });
}

void Connector::AttemptNow::runDeferred() { connector.attempt(); }

void Connector::attempt() {
  state_ = State::Connecting;
  attempts_.fetch_add(1, std::memory_order_relaxed);
  if (!host_) {
    race(servers_);
    return;
  }
  Resolver& resolver = options_.resolver != nullptr ? *options_.resolver : Resolver::defaultResolver();
  lookup_ = resolver.resolve(loop_, host_->host, host_->port, options_.resolve,
                             [this](std::error_code ec, std::vector<SocketAddress> addrs) {
                               if (state_ != State::Connecting) return;
                               if (ec) {
                                 KEEL_DEBUG("resolve {}: {}", host_->toString(), ec.message());
                                 fail(ec);
                               } else {
                                 race(AddressRace::interleave(std::move(addrs)));
                               }
                             });
}

void Connector::race(std::vector<SocketAddress> addrs) {
  // From a timer or the resolver's callback, never from start(): the race
  // may finish (and call back) at once.
  race_.start(std::move(addrs));
}

void Connector::succeed(Socket socket, const SocketAddress& peer) {
  state_ = State::Idle;
  backoff_ = options_.retryInitial;
  KEEL_DEBUG("connected to {} at {} (attempt {})", describe(), peer.toString(), attempts());
  // Last: the callback may start or stop this connector.
  if (connected_) connected_(std::move(socket));
}

void Connector::fail(std::error_code ec) {
  abandonAttempt();
  state_ = State::Idle;
  const int n = attempts();
  const bool again = retrySeries_ && (options_.maxAttempts == 0 || n < options_.maxAttempts);
  if (again) {
    const Duration delay = nextDelay();
    KEEL_DEBUG("connect to {} failed (attempt {}): {}; retrying in {} ms", describe(), n, ec.message(),
               std::chrono::duration_cast<std::chrono::milliseconds>(delay).count());
    scheduleAttempt(delay);
  } else if (retrySeries_) {
    KEEL_INFO("connect to {} failed (attempt {}): {}; giving up", describe(), n, ec.message());
  } else {
    KEEL_DEBUG("connect to {} failed: {}", describe(), ec.message());
  }
  // Last: the callback may start or stop this connector.
  if (failed_) failed_(ec);
}

}  // namespace keel
