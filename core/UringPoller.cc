#include "keel/core/internal/UringPoller.h"

#include <cerrno>
#include <limits>

#include <sys/epoll.h>

#include "keel/core/Log.h"
#include "keel/core/Watcher.h"

#if KEEL_HAVE_URING
#include <liburing.h>
#endif

namespace keel::detail {

#if KEEL_HAVE_URING

namespace {

// 1,024 SQEs cover a loop turn's re-arms (at most maxEventsPerWait) and its
// interest changes; a fuller turn submits early, it does not fail. The
// completion queue is larger because each watcher can have one poll and one
// removal outstanding; the kernel keeps overflowed completions (FEAT_NODROP)
// rather than dropping them, so the size is a speed matter, not a limit.
constexpr unsigned kSqEntries = 1024;
constexpr unsigned kCqEntries = 16384;
// Poll removals: their completions (only failures, where CQE_SKIP is known)
// mean nothing to the loop.
constexpr std::uint64_t kIgnoreToken = ~std::uint64_t{0} - 1;

[[noreturn]] void throwRing(int negErrno, const char* what) {
  throw std::system_error(-negErrno, std::generic_category(), what);
}

}  // namespace

std::unique_ptr<UringPoller> UringPoller::create(int wakeFd, std::error_code& ec) {
  std::unique_ptr<UringPoller> p(new UringPoller);
  p->ring_ = std::make_unique<io_uring>();
  p->wakeFd_ = wakeFd;
  // SINGLE_ISSUER binds the ring to the task that submits to it, and a loop
  // may be built on one thread and run on another (LoopThread, tests): the
  // ring starts disabled and is enabled by its first submit, which is always
  // on the loop's thread. DEFER_TASKRUN then runs completion work only when
  // the loop asks for events, never by interrupting it mid-callback.
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED | IORING_SETUP_SINGLE_ISSUER |
                 IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL;
  params.cq_entries = kCqEntries;
  int rc = io_uring_queue_init_params(kSqEntries, p->ring_.get(), &params);
  if (rc == -EINVAL) {  // a kernel before 6.1: without the task-run flags
    params = {};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = kCqEntries;
    rc = io_uring_queue_init_params(kSqEntries, p->ring_.get(), &params);
    p->enabled_ = true;
  } else {
    p->deferTaskRun_ = true;
  }
  if (rc < 0) {
    // EPERM: kernel.io_uring_disabled or a seccomp filter; ENOSYS: no
    // io_uring in this kernel; ENOMEM: the memory cgroup said no.
    ec = std::error_code(-rc, std::generic_category());
    p->ring_.reset();
    return nullptr;
  }
  p->skipSuccess_ = (params.features & IORING_FEAT_CQE_SKIP) != 0;
  p->rearmWake();
  return p;
}

UringPoller::~UringPoller() {
  if (ring_) io_uring_queue_exit(ring_.get());
}

int UringPoller::enable() noexcept {
  if (enabled_) return 0;
  // io_uring_register rather than io_uring_enable_rings: Debian's liburing
  // 2.3 leaves the latter out of its shared library's symbol map.
  const int rc =
      io_uring_register(static_cast<unsigned>(ring_->ring_fd), IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
  if (rc < 0) return rc;
  enabled_ = true;
  return 0;
}

io_uring_sqe* UringPoller::sqe() noexcept {
  io_uring_sqe* s = io_uring_get_sqe(ring_.get());
  if (s == nullptr && flush() == 0) s = io_uring_get_sqe(ring_.get());
  return s;
}

int UringPoller::flush() noexcept {
  if (io_uring_sq_ready(ring_.get()) == 0) return 0;
  if (const int rc = enable(); rc < 0) return rc;
  // EEXIST: a thread other than the loop's submitted first (the ring is
  // single-issuer), which the loop-thread assertions catch in debug builds.
  // With DEFER_TASKRUN a cancelled poll lets go of its file only when the
  // loop asks for events, so a flush asks for them too (without waiting);
  // what completes is reaped by the next wait.
  const int rc = deferTaskRun_ ? io_uring_submit_and_get_events(ring_.get()) : io_uring_submit(ring_.get());
  if (rc < 0 && rc != -EINTR && rc != -EBUSY) {
    KEEL_WARN("io_uring_submit: {}", std::generic_category().message(-rc));
    return rc;
  }
  return 0;
}

std::uint64_t UringPoller::tokenOf(const Watcher& w) const noexcept {
  return (std::uint64_t{slots_[w.slot_].gen} << 32) | w.slot_;
}

void UringPoller::rearmWake() {
  io_uring_sqe* s = sqe();
  if (s == nullptr) throwRing(-EBUSY, "io_uring: no submission entry for the wake-up descriptor");
  io_uring_prep_poll_add(s, wakeFd_, EPOLLIN);
  io_uring_sqe_set_data64(s, kWakeToken);
}

bool UringPoller::arm(Watcher& w) noexcept {
  io_uring_sqe* s = sqe();
  if (s == nullptr) return false;
  io_uring_prep_poll_add(s, w.fd_, w.interest_);
  io_uring_sqe_set_data64(s, tokenOf(w));
  w.armed_ = true;
  return true;
}

void UringPoller::cancel(Watcher& w) noexcept {
  if (!w.armed_) return;
  // Without an SQE the poll stays in flight; the generation below still
  // makes its completion harmless.
  if (io_uring_sqe* s = sqe()) {
    io_uring_prep_poll_remove(s, tokenOf(w));
    io_uring_sqe_set_data64(s, kIgnoreToken);
    if (skipSuccess_) s->flags |= IOSQE_CQE_SKIP_SUCCESS;
  }
  w.armed_ = false;
  // A completion of the old poll may already sit in the queue: the new
  // generation makes the loop drop it.
  ++slots_[w.slot_].gen;
}

std::error_code UringPoller::set(Watcher& w, std::uint32_t events) noexcept {
  if (!w.registered_) {
    if (free_.empty()) {
      w.slot_ = static_cast<std::uint32_t>(slots_.size());
      slots_.push_back({});
    } else {
      w.slot_ = free_.back();
      free_.pop_back();
    }
    slots_[w.slot_].watcher = &w;
    w.registered_ = true;
  }
  cancel(w);
  const std::uint32_t old = w.interest_;
  w.interest_ = events;
  // The watcher being dispatched is re-armed once its callback returns,
  // with whatever interest it has then.
  if (&w != current_ && !arm(w)) {
    w.interest_ = old;
    return std::make_error_code(std::errc::no_buffer_space);
  }
  return {};
}

void UringPoller::remove(Watcher& w) noexcept {
  if (w.registered_) {
    cancel(w);
    Slot& slot = slots_[w.slot_];
    slot.watcher = nullptr;
    ++slot.gen;
    free_.push_back(w.slot_);
  }
  w.registered_ = false;
  w.armed_ = false;
  w.interest_ = 0;
}

std::size_t UringPoller::wait(Duration timeout, std::size_t max) {
  if (const int rc = enable(); rc < 0) throwRing(rc, "io_uring_enable_rings");
  io_uring_cqe* first = nullptr;
  int rc = 0;
  if (timeout == Duration::max()) {
    rc = io_uring_submit_and_wait(ring_.get(), 1);
  } else {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
    __kernel_timespec ts{};
    ts.tv_sec = ns / 1'000'000'000;
    ts.tv_nsec = ns % 1'000'000'000;
    rc = io_uring_submit_and_wait_timeout(ring_.get(), &first, 1, &ts, nullptr);
  }
  // ETIME: the timeout; EINTR: a signal handler ran; EBUSY/EAGAIN: the
  // completion queue overflowed and must be reaped first. None is a fault.
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN)
    throwRing(rc, "io_uring_enter");
  // Copied out and consumed at once: callbacks may submit (a full queue
  // flushes early), and the batch must not move under them.
  if (batch_.size() < max) batch_.resize(max);
  std::size_t n = 0;
  unsigned head = 0;
  io_uring_cqe* cqe = nullptr;
  io_uring_for_each_cqe(ring_.get(), head, cqe) {
    if (n == max) break;
    batch_[n++] = Completion{cqe->user_data, cqe->res};
  }
  io_uring_cq_advance(ring_.get(), static_cast<unsigned>(n));
  return n;
}

bool UringPoller::dispatch(std::size_t i) {
  const Completion c = batch_[i];
  if (c.token == kWakeToken) return true;
  if (c.token == kIgnoreToken) return false;
  const auto index = static_cast<std::uint32_t>(c.token);
  const auto gen = static_cast<std::uint32_t>(c.token >> 32);
  if (index >= slots_.size() || slots_[index].gen != gen || slots_[index].watcher == nullptr) return false;
  Watcher& w = *slots_[index].watcher;
  w.armed_ = false;
  std::uint32_t events = 0;
  if (c.res >= 0) {
    events = static_cast<std::uint32_t>(c.res);
  } else {
    // The poll itself failed (EBADF: closed under its watcher; ENOMEM).
    // Reported as an error, and not re-armed: its owner closes it.
    KEEL_WARN("io_uring poll on fd {}: {}", w.fd_, std::generic_category().message(-c.res));
    events = EPOLLERR | EPOLLHUP;
  }
  current_ = &w;
  w.dispatch(events);
  current_ = nullptr;
  // The callback may have removed or re-armed it; the slot says which.
  const Slot& slot = slots_[index];
  if (c.res >= 0 && slot.watcher == &w && !w.armed_ && w.interest_ != 0 && !arm(w)) {
    KEEL_WARN("io_uring: no submission entry to re-arm fd {}", w.fd_);
  }
  return false;
}

#else  // no liburing at build time

std::unique_ptr<UringPoller> UringPoller::create(int, std::error_code& ec) {
  ec = std::make_error_code(std::errc::function_not_supported);
  return nullptr;
}
UringPoller::~UringPoller() = default;
std::error_code UringPoller::set(Watcher&, std::uint32_t) noexcept { return {}; }
void UringPoller::remove(Watcher&) noexcept {}
std::size_t UringPoller::wait(Duration, std::size_t) { return 0; }
bool UringPoller::dispatch(std::size_t) { return false; }
void UringPoller::rearmWake() {}
int UringPoller::flush() noexcept { return 0; }

#endif

}  // namespace keel::detail
