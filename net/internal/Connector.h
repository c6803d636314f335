// Internal to keel (not installed): Client's connect attempts.
//
// Establishes one outgoing stream connection (TCP or Unix-domain) without
// blocking the loop, retrying failed attempts with exponential back-off.
//
// One attempt: when the target is a host name, resolve it first (through
// the Resolver, on the loop: so each retry sees DNS changes, and a failed
// lookup is a failed attempt, retried like a refused connect); then race the
// addresses in the Happy Eyeballs manner (AddressRace: families
// interleaved, the next address after attemptDelay or at once when one
// fails, the first to connect wins). Each address has its own connect
// timeout (std::errc::timed_out: a SYN dropped by a firewall or a full
// accept queue is otherwise retried by the kernel for minutes). The attempt
// fails when every address has failed. A TCP socket that ends up connected
// to itself (possible when the server's port is in the ephemeral range and
// nothing listens on it) counts as refused.
//
// A series of attempts starts with start() (first attempt on the next turn of
// the loop) or restart() (first attempt after one back-off delay: used after
// an established connection was lost, so a server that drops everyone is not
// hammered). Within a series each failure waits before the next attempt; the
// delays double from retryInitial up to retryMax, and each is moved by a
// random amount of up to +/- jitterPercent so that many clients that lost the
// same server do not come back in lockstep. A success resets the back-off.
//
// Callbacks run on the loop thread, never inside start(), restart() or
// stop(). After stop() (or destruction) no callback runs. A callback may call
// stop(), start() or restart(), but must not destroy the connector; defer that
// with EventLoop::queueInLoop.
//
// Thread-safety: loop thread only (construction and attempts() excepted).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <system_error>
#include <vector>

#include "keel/core/EventLoop.h"
#include "keel/core/Time.h"
#include "keel/core/TimerWheel.h"
#include "keel/net/Resolver.h"
#include "keel/net/Socket.h"
#include "keel/net/SocketAddress.h"
#include "keel/net/internal/AddressRace.h"

namespace keel {

struct ConnectorOptions {
  Duration connectTimeout = std::chrono::seconds(5);       // per address; zero or less: no limit
  Duration attemptDelay = std::chrono::milliseconds(250);  // Happy Eyeballs; clamped to 10 ms .. 2 s
  bool retry = false;                                      // start(): retry failed attempts
  Duration retryInitial = std::chrono::milliseconds(100);  // at least 1 ms
  Duration retryMax = std::chrono::seconds(30);            // the doubling stops here
  // Each delay is moved at random by up to this share of itself (clamped to
  // 0..100), so a delay taken at the cap may exceed retryMax by that much.
  int jitterPercent = 20;
  int maxAttempts = 0;           // per series; 0 = unlimited
  ResolveOptions resolve;        // host-name targets
  Resolver* resolver = nullptr;  // not owned; null: Resolver::defaultResolver()
};

class Connector {
 public:
  // The connected socket; the callee takes ownership.
  using Connected = std::function<void(Socket socket)>;
  // One attempt failed. retryPending() says whether another one follows.
  using Failed = std::function<void(std::error_code ec)>;

  Connector(EventLoop& loop, SocketAddress server, ConnectorOptions options = {});
  // Several addresses of one server, raced in this order (families interleaved).
  Connector(EventLoop& loop, std::vector<SocketAddress> servers, ConnectorOptions options = {});
  // A host name (or numeric address), resolved at the start of every attempt.
  Connector(EventLoop& loop, HostPort server, ConnectorOptions options = {});
  ~Connector();  // loop thread: abandons an attempt in flight, cancels the timers
  Connector(const Connector&) = delete;
  Connector& operator=(const Connector&) = delete;

  void setConnected(Connected cb) { connected_ = std::move(cb); }
  void setFailed(Failed cb) { failed_ = std::move(cb); }

  // Begins a new series (abandoning anything under way): the first attempt
  // runs at the end of the current loop iteration (never inside start());
  // failures are retried when options.retry is set.
  void start();
  // Begins a new series whose first attempt waits one back-off delay, and
  // whose failures are always retried (up to maxAttempts): for reconnecting
  // after an established connection was lost.
  void restart();
  // Abandons the attempt in flight and any pending retry. Idempotent.
  void stop();

  // An attempt is in flight (resolving, or sockets created and no handshake finished).
  [[nodiscard]] bool connecting() const noexcept { return state_ == State::Connecting; }
  // Waiting for a timer before the next attempt.
  [[nodiscard]] bool retryPending() const noexcept { return state_ == State::Waiting; }
  [[nodiscard]] bool idle() const noexcept { return state_ == State::Idle; }
  // Attempts made in the current series (the successful one included). Any thread.
  [[nodiscard]] int attempts() const noexcept { return attempts_.load(std::memory_order_relaxed); }
  // The configured addresses (empty for a host-name target).
  [[nodiscard]] const std::vector<SocketAddress>& servers() const noexcept { return servers_; }
  [[nodiscard]] const std::optional<HostPort>& host() const noexcept { return host_; }
  // "host:port", or the first address: for log lines.
  [[nodiscard]] std::string describe() const;
  [[nodiscard]] const ConnectorOptions& options() const noexcept { return options_; }

  // `base` moved uniformly at random within +/- percent of itself (percent
  // clamped to 0..100), computed in integer nanoseconds. Never negative.
  [[nodiscard]] static Duration jittered(Duration base, int percent, std::mt19937& rng);

 private:
  enum class State : std::uint8_t { Idle, Waiting, Connecting };
  // An attempt due now. Not a zero-delay timer: the wheel fires on its next
  // 1 ms tick, which put about 1.1 ms in front of every first connect.
  struct AttemptNow final : Deferred {
    explicit AttemptNow(Connector& c) noexcept : connector(c) {}
    void runDeferred() override;
    Connector& connector;
  };

  void beginSeries(bool retry, bool delayFirst);
  void scheduleAttempt(Duration delay);
  // The next retry delay (jittered), doubling the back-off for the one after.
  Duration nextDelay();
  void attempt();
  void race(std::vector<SocketAddress> addrs);
  void succeed(Socket socket, const SocketAddress& peer);
  void fail(std::error_code ec);
  void abandonAttempt() noexcept;

  EventLoop& loop_;
  std::vector<SocketAddress> servers_;
  std::optional<HostPort> host_;
  ConnectorOptions options_;
  Connected connected_;
  Failed failed_;
  State state_ = State::Idle;
  bool retrySeries_ = false;  // failures in this series are retried
  std::atomic<int> attempts_{0};
  Duration backoff_;  // un-jittered delay before the next retry
  std::mt19937 rng_;
  TimerId attemptTimer_;          // the next attempt (Waiting)
  AttemptNow attemptNow_{*this};  // the same, due at once (Waiting)
  ResolveRequest lookup_;         // the attempt's resolution (host-name targets)
  AddressRace race_;
};

}  // namespace keel
