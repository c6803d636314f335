// Readiness registration for one descriptor on one EventLoop, on either
// backend (LoopBackend): the callback sees epoll's event bits on both.
//
// A Watcher never owns its fd: the object that owns the descriptor (a Socket,
// an eventfd wrapper...) owns the Watcher too and destroys it first. The
// destructor removes the fd from the loop, so a destroyed watcher can never be
// dispatched, even later in the same batch of events.
//
// Interest changes cost an epoll_ctl (or an SQE, on io_uring) only when the
// interest actually changes.
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
namespace detail {
class UringPoller;
}

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
  // owner closes its descriptor then; the loop is not affected. io_uring
  // reports such a failure later, as EPOLLERR|EPOLLHUP to the callback.
  [[nodiscard]] std::error_code setInterest(std::uint32_t events) noexcept;
  [[nodiscard]] std::error_code enable(std::uint32_t events) noexcept {
    return setInterest(interest_ | events);
  }
  [[nodiscard]] std::error_code disable(std::uint32_t events) noexcept {
    return setInterest(interest_ & ~events);
  }
  // Removes the fd from the loop now (before the owner closes it). Idempotent.
  void detach();

  [[nodiscard]] std::uint32_t interest() const noexcept { return interest_; }
  [[nodiscard]] bool wants(std::uint32_t e) const noexcept { return (interest_ & e) != 0; }
  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] EventLoop& loop() const noexcept { return loop_; }

 private:
  friend class EventLoop;
  friend class detail::UringPoller;
  void dispatch(std::uint32_t events) { cb_(events); }

  EventLoop& loop_;
  int fd_;
  std::uint32_t interest_ = 0;
  bool registered_ = false;  // epoll: in the interest list; io_uring: holds slot_
  bool armed_ = false;       // io_uring: a poll is queued or in flight
  std::uint32_t slot_ = 0;   // io_uring: index in the poller's slot table
  Callback cb_;
};

}  // namespace keel
