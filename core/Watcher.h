// Readiness registration for one descriptor on one EventLoop.
//
// A Watcher never owns its fd: the object that owns the descriptor (a Socket,
// an eventfd wrapper...) owns the Watcher too and destroys it first. The
// destructor removes the fd from epoll, so a destroyed watcher can never be
// dispatched, even later in the same epoll_wait batch.
//
// Interest changes cost an epoll_ctl only when the interest actually changes.
//
// A watcher must not be destroyed from inside its own callback (the callback
// object would be destroyed while it runs); owners defer their destruction
// with EventLoop::queueInLoop, as Connection and Server do.
//
// Thread-safety: loop thread only (construction excepted).
#pragma once

#include <cstdint>
#include <functional>
#include <system_error>

#include <sys/epoll.h>

namespace keel {

class EventLoop;

class Watcher {
 public:
  // Called with the epoll event mask (EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP, EPOLLERR).
  using Callback = std::function<void(std::uint32_t events)>;

  static constexpr std::uint32_t kRead = EPOLLIN;
  static constexpr std::uint32_t kWrite = EPOLLOUT;
  static constexpr std::uint32_t kPeerHalfClose = EPOLLRDHUP;

  Watcher(EventLoop& loop, int fd, Callback cb);
  ~Watcher();
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  // Fails (and leaves the interest unchanged) when epoll_ctl fails: the
  // owner closes its descriptor then; the loop is not affected.
  [[nodiscard]] std::error_code setInterest(std::uint32_t events) noexcept;
  [[nodiscard]] std::error_code enable(std::uint32_t events) noexcept {
    return setInterest(interest_ | events);
  }
  [[nodiscard]] std::error_code disable(std::uint32_t events) noexcept {
    return setInterest(interest_ & ~events);
  }
  // Removes the fd from epoll now (before the owner closes it). Idempotent.
  void detach();

  [[nodiscard]] std::uint32_t interest() const noexcept { return interest_; }
  [[nodiscard]] bool wants(std::uint32_t e) const noexcept { return (interest_ & e) != 0; }
  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] EventLoop& loop() const noexcept { return loop_; }

 private:
  friend class EventLoop;
  void dispatch(std::uint32_t events) { cb_(events); }

  EventLoop& loop_;
  int fd_;
  std::uint32_t interest_ = 0;
  bool registered_ = false;
  Callback cb_;
};

}  // namespace keel
