// The io_uring form of the loop's readiness wait (LoopBackend::IoUring).
//
// Each watcher's interest is a one-shot IORING_OP_POLL_ADD, re-armed after
// its callback ran. A one-shot poll checks readiness when it is armed, so a
// socket left unread is reported again: the same level-triggered contract as
// the epoll backend, which every Connection, acceptor and UDP endpoint relies
// on. Interest changes and re-arms are queued as SQEs and reach the kernel
// with the next wait, in the same io_uring_enter: one system call per loop
// turn for the whole batch, where epoll needs one epoll_ctl per change.
//
// Completions name a slot and its generation, never a Watcher's address:
// a watcher removed while its poll is in flight bumps the generation, and the
// late completion is dropped without touching freed memory.
//
// Internal to keel: the installed headers never include it.
#pragma once

#include <cstdint>
#include <memory>
#include <system_error>
#include <vector>

#include "keel/core/Time.h"

struct io_uring;
struct io_uring_sqe;

namespace keel {

class Watcher;
enum class LoopBackend : std::uint8_t;

namespace detail {

// Auto resolved: KEEL_LOOP_BACKEND when set, else epoll.
[[nodiscard]] LoopBackend resolveLoopBackend(LoopBackend asked);

class UringPoller {
 public:
  struct Completion {
    std::uint64_t token;
    std::int32_t res;
  };
  // The wake-up descriptor's completions carry this token.
  static constexpr std::uint64_t kWakeToken = ~std::uint64_t{0};

  // Null, with the reason in `ec`, where io_uring cannot be used here (no
  // liburing at build time, kernel.io_uring_disabled, seccomp, old kernel).
  [[nodiscard]] static std::unique_ptr<UringPoller> create(int wakeFd, std::error_code& ec);
  ~UringPoller();
  UringPoller(const UringPoller&) = delete;
  UringPoller& operator=(const UringPoller&) = delete;

  // Loop thread. `events` is a non-empty epoll mask; remove() is for 0.
  [[nodiscard]] std::error_code set(Watcher& w, std::uint32_t events) noexcept;
  void remove(Watcher& w) noexcept;

  // Submits what is queued and waits up to `timeout` (Duration::max(): no
  // limit) for completions; returns how many (at most `max`) it kept until the
  // next wait. Throws std::system_error on a ring failure.
  [[nodiscard]] std::size_t wait(Duration timeout, std::size_t max);
  // Runs the watcher of the i-th completion of the last wait and re-arms it.
  // Returns true for the wake-up descriptor's (the loop drains it and calls
  // rearmWake).
  bool dispatch(std::size_t i);
  void rearmWake();
  // Hands queued SQEs to the kernel now. For a removal outside a loop
  // iteration: the kernel keeps a descriptor's file open while a poll on it
  // is in flight, so an owner's close() would not send its FIN until then.
  int flush() noexcept;  // 0 or a negative errno

 private:
  struct Slot {
    Watcher* watcher = nullptr;
    std::uint32_t gen = 0;
  };
  UringPoller() = default;
  bool arm(Watcher& w) noexcept;
  void cancel(Watcher& w) noexcept;
  [[nodiscard]] std::uint64_t tokenOf(const Watcher& w) const noexcept;
  io_uring_sqe* sqe() noexcept;  // null when the queue stays full
  int enable() noexcept;

  std::unique_ptr<io_uring> ring_;
  int wakeFd_ = -1;
  bool enabled_ = false;        // the ring starts disabled (see create())
  bool deferTaskRun_ = false;   // SINGLE_ISSUER | DEFER_TASKRUN accepted
  bool skipSuccess_ = false;    // IOSQE_CQE_SKIP_SUCCESS understood (5.17+)
  Watcher* current_ = nullptr;  // being dispatched: its re-arm waits for the callback
  std::vector<Completion> batch_;
  std::vector<Slot> slots_;
  std::vector<std::uint32_t> free_;
};

}  // namespace detail
}  // namespace keel
