// Where coroutine frames come from: a free list per size class, per thread.
//
// Every keel coroutine (Task<T>, the roots of spawn() and CoConnection)
// allocates its frame through here (promise_type::operator new). A frame
// that is freed goes back on its size class's list, and the next coroutine
// of that size takes it, so a program that starts and ends coroutines at a
// steady rate stops calling the global allocator once the lists hold its
// peak. Per thread rather than per loop because a loop runs on one thread:
// no lock, no atomic, and nothing to look up.
//
// A frame freed on another thread than the one it came from goes on the
// freeing thread's list: blocks are plain operator-new memory of the class
// size, so any list can take any block. Nothing needs forbidding, and a
// thread's cache is given back to the global allocator when the thread ends.
//
// Caps: frames up to kMaxPooledBytes are pooled, in kGranule-byte classes;
// bigger ones go straight to operator new. Each class keeps at most
// kMaxCachedPerClass free frames (beyond that a freed frame is released), so
// a burst of coroutines does not pin its peak memory for ever.
#pragma once

#include <cstddef>
#include <cstdint>

namespace keel {

struct FramePoolStats {
  std::uint64_t fromPool = 0;    // allocations served from a free list
  std::uint64_t fromSystem = 0;  // allocations that called operator new
  std::size_t cached = 0;        // free frames held by this thread now
};

class FramePool {
 public:
  static constexpr std::size_t kGranule = 64;
  static constexpr std::size_t kMaxPooledBytes = 4096;
  static constexpr std::size_t kMaxCachedPerClass = 1024;

  [[nodiscard]] static void* allocate(std::size_t bytes);
  static void deallocate(void* p, std::size_t bytes) noexcept;
  // This thread's figures.
  [[nodiscard]] static FramePoolStats stats() noexcept;
  // Gives this thread's free frames back to operator delete.
  static void trim() noexcept;
};

}  // namespace keel
