// Internal to keel (not installed): one connect "attempt" over several
// addresses of the same server, in the Happy Eyeballs manner (RFC 8305).
//
// The first address is tried at once; each further one starts when the
// previous has not finished within `attemptDelay` (the RFC's "connection
// attempt delay", 250 ms), or at once when the previous failed. The first
// connect to complete wins and every other attempt is closed. The race is
// lost when every address has failed (refused, unreachable, or its own
// connectTimeout passed); the error reported is the last one seen.
//
// interleave() orders the addresses as RFC 8305 section 4 asks: families
// alternate, starting with the family of the first address (getaddrinfo has
// already sorted by preference, RFC 6724), so a broken IPv6 path costs one
// attempt delay, not one timeout per IPv6 address.
//
// Callbacks may run inside start() (a Unix-domain connect completes at once,
// a refused one fails at once): the caller starts a race from a timer or a
// task, never from code that cannot take a callback. A callback may call
// start() or abandon(), but must not destroy the race.
//
// Thread-safety: loop thread only.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <system_error>
#include <vector>

#include "keel/core/Time.h"
#include "keel/core/TimerWheel.h"
#include "keel/core/Watcher.h"
#include "keel/net/Socket.h"
#include "keel/net/SocketAddress.h"

namespace keel {

class EventLoop;

struct RaceOptions {
  Duration attemptDelay = std::chrono::milliseconds(250);  // clamped to 10 ms .. 2 s (RFC 8305 section 8)
  Duration connectTimeout = std::chrono::seconds(5);       // per address; zero or less: no limit
};

class AddressRace {
 public:
  using Won = std::function<void(Socket socket, const SocketAddress& peer)>;
  using Lost = std::function<void(std::error_code ec)>;

  AddressRace(EventLoop& loop, RaceOptions options);
  ~AddressRace();
  AddressRace(const AddressRace&) = delete;
  AddressRace& operator=(const AddressRace&) = delete;

  void setWon(Won cb) { won_ = std::move(cb); }
  void setLost(Lost cb) { lost_ = std::move(cb); }

  // Abandons a race under way and starts one over `addrs` in that order (an
  // empty list loses at once with std::errc::invalid_argument).
  void start(std::vector<SocketAddress> addrs);
  // Closes every attempt and cancels the timers; no callback follows.
  void abandon() noexcept;
  [[nodiscard]] bool running() const noexcept { return running_; }
  // Sockets opened by the current (or last) race: one per address tried.
  [[nodiscard]] std::size_t started() const noexcept { return attempts_.size(); }

  [[nodiscard]] static std::vector<SocketAddress> interleave(std::vector<SocketAddress> addrs);

 private:
  struct Attempt {
    SocketAddress peer;
    Socket socket;
    TimerId timeout;
    // Only detached inside its own callback, never destroyed there; declared
    // after socket so it is destroyed before the descriptor is closed.
    std::optional<Watcher> watcher;
  };

  void startNext();
  void onEvent(Attempt& a, std::uint32_t events);
  void failed(Attempt& a, std::error_code ec);
  void close(Attempt& a) noexcept;
  void win(Attempt& a);
  void lose();

  EventLoop& loop_;
  RaceOptions options_;
  Won won_;
  Lost lost_;
  std::vector<SocketAddress> addrs_;
  std::size_t next_ = 0;  // the next address to try
  int inFlight_ = 0;
  bool running_ = false;
  TimerId delayTimer_;
  std::error_code lastError_;
  // This race's attempts, kept until the next start() (never destroyed
  // inside a watcher's callback).
  std::vector<std::unique_ptr<Attempt>> attempts_;
};

}  // namespace keel
