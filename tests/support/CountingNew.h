// A counting global operator new/delete for the test binaries that need to
// see allocations: per-thread and process-wide counts, the largest single
// request, and backtraces on demand. malloc/free underneath.
//
// Opt-in by inclusion, in exactly ONE translation unit of a binary: this
// header DEFINES the replacement operators (a replacement cannot be inline),
// so a second TU including it fails to link, which is the guard. It is not
// part of the keel_test_support library on purpose: the linker takes a
// replacement operator new from any object it pulls in, so putting it there
// would silently replace the allocator of every test binary, and one that
// replaces its own would clash. Each binary that counts includes this
// header itself, and only that binary pays for it.
//
// Under AddressSanitizer this works too: the executable's operators interpose
// the ones in libasan, and ASan still sees (and checks) every block through
// its malloc/free.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>

#include <execinfo.h>
#include <unistd.h>

namespace keel::test::counting_new {

thread_local std::uint64_t t_allocs = 0;  // operator new calls on this thread
std::atomic<std::uint64_t> g_allocs{0};   // on every thread
std::atomic<std::size_t> g_largest{0};    // the largest single request, on every thread
// Tracing: threads that set t_traced print a backtrace for each allocation
// while g_traceBudget is positive.
thread_local bool t_traced = false;
thread_local bool t_inTrace = false;
std::atomic<int> g_traceBudget{0};

void trace(std::size_t n) noexcept {
  if (!t_traced || t_inTrace || g_traceBudget.load(std::memory_order_relaxed) <= 0) return;
  if (g_traceBudget.fetch_sub(1, std::memory_order_relaxed) <= 0) return;
  t_inTrace = true;  // backtrace() may allocate the first time (it loads libgcc_s)
  void* frames[48];
  const int depth = ::backtrace(frames, 48);
  char head[96];
  const int len = std::snprintf(head, sizeof head, "---- operator new(%zu) on a traced thread:\n", n);
  if (len > 0) {
    [[maybe_unused]] const ssize_t w = ::write(STDERR_FILENO, head, static_cast<std::size_t>(len));
  }
  ::backtrace_symbols_fd(frames, depth, STDERR_FILENO);
  t_inTrace = false;
}

void count(std::size_t n) noexcept {
  ++t_allocs;
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  std::size_t cur = g_largest.load(std::memory_order_relaxed);
  while (n > cur && !g_largest.compare_exchange_weak(cur, n, std::memory_order_relaxed)) {
  }
  trace(n);
}

void* allocate(std::size_t n) noexcept {
  count(n);
  return std::malloc(n != 0 ? n : 1);
}

void* allocateAligned(std::size_t n, std::align_val_t align) noexcept {
  count(n);
  std::size_t a = static_cast<std::size_t>(align);
  if (a < sizeof(void*)) a = sizeof(void*);
  void* p = nullptr;
  return ::posix_memalign(&p, a, n != 0 ? n : 1) == 0 ? p : nullptr;
}

// Out of line: with the replacement deletes inlined into their callers, GCC
// would otherwise see free() applied to what operator new returned and warn
// (-Wmismatched-new-delete), not knowing that this operator new is malloc.
[[gnu::noinline]] void release(void* p) noexcept { std::free(p); }

}  // namespace keel::test::counting_new

void* operator new(std::size_t n) {
  if (void* p = keel::test::counting_new::allocate(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = keel::test::counting_new::allocate(n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return keel::test::counting_new::allocate(n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return keel::test::counting_new::allocate(n);
}
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = keel::test::counting_new::allocateAligned(n, a)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) {
  if (void* p = keel::test::counting_new::allocateAligned(n, a)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return keel::test::counting_new::allocateAligned(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return keel::test::counting_new::allocateAligned(n, a);
}
void operator delete(void* p) noexcept { keel::test::counting_new::release(p); }
void operator delete[](void* p) noexcept { keel::test::counting_new::release(p); }
void operator delete(void* p, std::size_t) noexcept { keel::test::counting_new::release(p); }
void operator delete[](void* p, std::size_t) noexcept { keel::test::counting_new::release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { keel::test::counting_new::release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { keel::test::counting_new::release(p); }
void operator delete(void* p, std::align_val_t) noexcept { keel::test::counting_new::release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { keel::test::counting_new::release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  keel::test::counting_new::release(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  keel::test::counting_new::release(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  keel::test::counting_new::release(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  keel::test::counting_new::release(p);
}
