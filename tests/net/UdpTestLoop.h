// What the UdpEndpoint tests share: byte views of strings and bounded runs
// of a loop.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "keel/core/EventLoop.h"

namespace keel::test {

using namespace std::chrono_literals;

inline std::span<const char> bytes(std::string_view s) { return {s.data(), s.size()}; }
inline std::string text(std::span<const char> d) { return {d.begin(), d.end()}; }

// Runs loop iterations until done() holds; false when `timeout` passes first.
inline bool runUntil(EventLoop& loop, const std::function<bool()>& done, Duration timeout = 5s) {
  const TimePoint deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    loop.runOnce(10ms);
  }
  return true;
}

// Runs loop iterations for about `d` (to let stray datagrams arrive, or not).
inline void runFor(EventLoop& loop, Duration d) {
  const TimePoint end = Clock::now() + d;
  while (Clock::now() < end) loop.runOnce(5ms);
}

}  // namespace keel::test
