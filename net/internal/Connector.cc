#include "keel/net/internal/Connector.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include <sys/epoll.h>

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
    : loop_(loop),
      server_(server),
      options_(normalised(options)),
      backoff_(options_.retryInitial),
      rng_(seededEngine(this)) {}

Connector::~Connector() { stop(); }

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
  // Even an immediate first attempt goes through a (zero-delay) timer: the
  // caller never sees callbacks run inside start(), and a stop() right after
  // start() cancels it like any other pending attempt.
  scheduleAttempt(delayFirst ? nextDelay() : Duration::zero());
}

void Connector::stop() {
  if (attemptTimer_.valid()) loop_.cancel(attemptTimer_);
  attemptTimer_ = {};
  abandonSocket();
  state_ = State::Idle;
}

void Connector::abandonSocket() noexcept {
  if (timeoutTimer_.valid()) loop_.cancel(timeoutTimer_);
  timeoutTimer_ = {};
  // Out of epoll before the descriptor is closed (its number may be reused
  // at once); the Watcher object itself stays until the next attempt.
  if (watcher_) watcher_->detach();
  socket_.close();
}

Duration Connector::nextDelay() {
  const Duration delay = jittered(backoff_, options_.jitterPercent, rng_);
  backoff_ = backoff_ > options_.retryMax / 2 ? options_.retryMax : std::min(backoff_ * 2, options_.retryMax);
  return delay;
}

void Connector::scheduleAttempt(Duration delay) {
  state_ = State::Waiting;
  attemptTimer_ = loop_.runAfter(delay, [this] {
    attemptTimer_ = {};
    attempt();
  });
}

void Connector::attempt() {
  state_ = State::Connecting;
  attempts_.fetch_add(1, std::memory_order_relaxed);
  // Not inside the old watcher's callback here (attempts start from a timer),
  // so the previous attempt's watcher can go.
  watcher_.reset();
  std::error_code openError;
  socket_ = Socket::stream(server_.family(), openError);
  if (openError) {
    // EMFILE and friends: worth another try later, like any failed attempt.
    fail(openError);
    return;
  }
  const std::error_code ec = socket_.connect(server_);
  if (!ec) {
    succeed();
    return;
  }
  if (ec != std::errc::operation_in_progress) {
    fail(ec);
    return;
  }
  watcher_.emplace(loop_, socket_.fd(), [this](std::uint32_t events) { onWritable(events); });
  if (const std::error_code watchError = watcher_->setInterest(Watcher::kWrite)) {
    fail(watchError);
    return;
  }
  if (options_.connectTimeout > Duration::zero()) {
    timeoutTimer_ = loop_.runAfter(options_.connectTimeout, [this] {
      timeoutTimer_ = {};
      onTimeout();
    });
  }
}

void Connector::onWritable(std::uint32_t events) {
  if (state_ != State::Connecting) return;
  // Level-triggered: stop watching before anything else, or a connected
  // socket would report writable on every iteration.
  watcher_->detach();
  std::error_code ec = socket_.takeError();
  if (!ec && (events & (EPOLLERR | EPOLLHUP)) != 0) {
    ec = std::make_error_code(std::errc::not_connected);  // hung up without saying why
  } else if (!ec && socket_.isSelfConnect()) {
    KEEL_WARN("connect to {}: connected to itself (port in the ephemeral range, nothing listening)",
              server_.toString());
    ec = std::make_error_code(std::errc::connection_refused);
  }
  if (ec) {
    fail(ec);
  } else {
    succeed();
  }
}

void Connector::onTimeout() {
  if (state_ != State::Connecting) return;
  fail(std::make_error_code(std::errc::timed_out));
}

void Connector::succeed() {
  if (timeoutTimer_.valid()) loop_.cancel(timeoutTimer_);
  timeoutTimer_ = {};
  if (watcher_) watcher_->detach();
  state_ = State::Idle;
  backoff_ = options_.retryInitial;
  KEEL_DEBUG("connected to {} (attempt {})", server_.toString(), attempts());
  Socket connected = std::move(socket_);
  // Last: the callback may start or stop this connector.
  if (connected_) connected_(std::move(connected));
}

void Connector::fail(std::error_code ec) {
  abandonSocket();
  state_ = State::Idle;
  const int n = attempts();
  const bool again = retrySeries_ && (options_.maxAttempts == 0 || n < options_.maxAttempts);
  if (again) {
    const Duration delay = nextDelay();
    KEEL_DEBUG("connect to {} failed (attempt {}): {}; retrying in {} ms", server_.toString(), n,
               ec.message(), std::chrono::duration_cast<std::chrono::milliseconds>(delay).count());
    scheduleAttempt(delay);
  } else if (retrySeries_) {
    KEEL_INFO("connect to {} failed (attempt {}): {}; giving up", server_.toString(), n, ec.message());
  } else {
    KEEL_DEBUG("connect to {} failed: {}", server_.toString(), ec.message());
  }
  // Last: the callback may start or stop this connector.
  if (failed_) failed_(ec);
}

}  // namespace keel
