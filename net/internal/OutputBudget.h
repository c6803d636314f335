// Internal to keel (not installed): the server-wide count of queued output
// bytes, shared by every connection of one Server across its loops.
//
// Connections report changes of their queue (never per message on the
// direct-send path, which queues nothing). A crossing of the limit, up or
// back down to the resume mark, calls `onChange` once, from whichever loop
// made it; the Server re-reads total() on its own loop and decides.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>

namespace keel {

class OutputBudget {
 public:
  OutputBudget(std::size_t limit, std::function<void()> onChange)
      : limit_(static_cast<std::int64_t>(limit)),
        resumeAt_(static_cast<std::int64_t>(limit / 4 * 3)),
        onChange_(std::move(onChange)) {}

  void add(std::int64_t delta) noexcept {
    const std::int64_t after = total_.fetch_add(delta, std::memory_order_relaxed) + delta;
    if (delta > 0 && after > limit_) {
      if (!over_.exchange(true, std::memory_order_acq_rel)) onChange_();
    } else if (delta < 0 && after <= resumeAt_) {
      if (over_.exchange(false, std::memory_order_acq_rel)) onChange_();
    }
  }

  [[nodiscard]] std::int64_t total() const noexcept { return total_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::int64_t limit() const noexcept { return limit_; }
  [[nodiscard]] std::int64_t resumeAt() const noexcept { return resumeAt_; }
  [[nodiscard]] bool over() const noexcept { return over_.load(std::memory_order_acquire); }

 private:
  const std::int64_t limit_;
  const std::int64_t resumeAt_;
  std::function<void()> onChange_;
  std::atomic<std::int64_t> total_{0};
  std::atomic<bool> over_{false};
};

}  // namespace keel
