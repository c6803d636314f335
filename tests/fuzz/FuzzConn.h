// Shared by the fuzz targets that drive a real keel Connection: one loop for
// the whole process, and per input a fresh EmbeddedConnection (the real
// Connection and Pipeline on an in-memory transport: no sockets, and what
// the connection writes is read back with takeOutput()). Bytes are handed to
// the pipeline with Pipeline::fireData, the same entry the connection's read
// path uses, so every input runs in a few microseconds.
//
// Thread-safety: single-threaded (libFuzzer calls the target from one thread).
#pragma once

#include <cstdio>
#include <cstdlib>

#include "keel/core/EventLoop.h"
#include "keel/core/Log.h"
#include "keel/net/Connection.h"
#include "keel/net/EmbeddedConnection.h"

// An invariant broken by an input: say which, then abort so libFuzzer keeps
// the input as a crash artifact.
#define FUZZ_CHECK(cond)                                                                      \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

namespace keel::fuzz {

inline EventLoop& loop() {
  // Built on first use, from the fuzzing thread; never destroyed (libFuzzer
  // exits without unwinding the target's statics in a defined order).
  static EventLoop* const l = [] {
    setLogLevel(spdlog::level::off);  // a refused frame logs a warning per input otherwise
    return new EventLoop;
  }();
  return *l;
}

// A connection on an in-memory transport; start() opens it once the
// target has built its pipeline.
struct Pair {
  EmbeddedConnection ec{loop()};
  Connection* conn = &ec.connection();

  Pair() = default;
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;
  ~Pair() = default;  // EmbeddedConnection closes what is still open

  void start() { ec.start(); }
};

}  // namespace keel::fuzz
