#include "keel/coro/FramePool.h"

#include <array>
#include <new>

namespace keel {
namespace {

constexpr std::size_t kClasses = FramePool::kMaxPooledBytes / FramePool::kGranule;

struct FreeBlock {
  FreeBlock* next;
};

struct ThreadPool {
  std::array<FreeBlock*, kClasses> heads{};
  std::array<std::size_t, kClasses> counts{};
  FramePoolStats stats;

  void trim() noexcept {
    for (std::size_t c = 0; c < kClasses; ++c) {
      while (FreeBlock* b = heads[c]) {
        heads[c] = b->next;
        ::operator delete(b);
      }
      counts[c] = 0;
    }
    stats.cached = 0;
  }
  ~ThreadPool();
};

// Frames of coroutines that end during thread exit (a thread_local loop's
// coroutines) may be freed after this thread's pool is gone; t_poolGone
// sends them straight to operator delete. A trivially destructible flag,
// so it is valid for the whole thread exit.
thread_local bool t_poolGone = false;
thread_local ThreadPool t_pool;

ThreadPool::~ThreadPool() {
  trim();
  t_poolGone = true;
}

constexpr std::size_t classOf(std::size_t bytes) noexcept { return (bytes - 1) / FramePool::kGranule; }
constexpr std::size_t classBytes(std::size_t c) noexcept { return (c + 1) * FramePool::kGranule; }

}  // namespace

void* FramePool::allocate(std::size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes > kMaxPooledBytes || t_poolGone) return ::operator new(bytes);
  const std::size_t c = classOf(bytes);
  ThreadPool& pool = t_pool;
  if (FreeBlock* b = pool.heads[c]) {
    pool.heads[c] = b->next;
    --pool.counts[c];
    --pool.stats.cached;
    ++pool.stats.fromPool;
    return b;
  }
  ++pool.stats.fromSystem;
  return ::operator new(classBytes(c));
}

void FramePool::deallocate(void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes == 0) bytes = 1;
  if (bytes > kMaxPooledBytes || t_poolGone) {
    ::operator delete(p);
    return;
  }
  const std::size_t c = classOf(bytes);
  ThreadPool& pool = t_pool;
  if (pool.counts[c] >= kMaxCachedPerClass) {
    ::operator delete(p);
    return;
  }
  auto* b = static_cast<FreeBlock*>(p);
  b->next = pool.heads[c];
  pool.heads[c] = b;
  ++pool.counts[c];
  ++pool.stats.cached;
}

FramePoolStats FramePool::stats() noexcept { return t_poolGone ? FramePoolStats{} : t_pool.stats; }

void FramePool::trim() noexcept {
  if (!t_poolGone) t_pool.trim();
}

}  // namespace keel
