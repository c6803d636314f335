// A loop on a manual clock, for tests of timing decisions: time moves only
// when the test says so, so "not before the deadline" and "at the deadline"
// are exact instants instead of sleeps with a margin.
//
//   test::ManualLoop m;
//   keel::EmbeddedConnection ec(m.loop);
//   ...
//   m.advance(199ms);  // every timer due meanwhile fires at its own instant
#pragma once

#include "keel/core/EventLoop.h"
#include "keel/core/LoopClock.h"
#include "keel/core/Time.h"

namespace keel::test {

struct ManualLoop {
  ManualClock clock;
  EventLoop loop{LoopOptions{.clock = &clock}};

  void advance(Duration d) { advanceLoop(loop, clock, d); }
  [[nodiscard]] TimePoint now() const { return loop.now(); }
};

}  // namespace keel::test
