// Shared by the fuzz targets that drive a real keel Connection: one loop for
// the whole process, and per input a fresh Connection on one end of a Unix
// socketpair (the other end is kept so bytes the connection writes can be
// read back). Bytes are handed to the pipeline with Pipeline::fireData, the
// same entry the connection's read path uses, so no readv is in the way of
// the fuzzer's input and every input runs in a few microseconds.
//
// Thread-safety: single-threaded (libFuzzer calls the target from one thread).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>

#include <sys/socket.h>

#include "keel/core/EventLoop.h"
#include "keel/core/Fd.h"
#include "keel/core/Log.h"
#include "keel/net/Connection.h"
#include "keel/net/Socket.h"

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

// A started connection and the peer end of its socketpair.
struct Pair {
  Connection::Ptr conn;
  Fd peer;

  Pair() {
    int sv[2];
    FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    peer = Fd(sv[1]);
    conn = std::make_shared<Connection>(loop(), Socket(Fd(sv[0])), 1);
  }
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;
  ~Pair() {
    if (!conn->closed()) conn->forceClose(CloseReason::LocalClose);
    conn.reset();
    loop().runOnce(Duration::zero());  // lets the loop drop what it queued for the connection
  }
};

}  // namespace keel::fuzz
