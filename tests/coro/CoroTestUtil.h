// Helpers for the coroutine tests: drive a loop on the test thread until a
// condition holds (never a sleep as synchronisation).
#pragma once

#include <chrono>

#include "keel/core/EventLoop.h"

namespace keel::test {

// Runs `loop` until pred() or `limit` passes; returns pred().
template <class Pred>
bool runUntil(EventLoop& loop, Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return pred();
    loop.runOnce(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace keel::test
