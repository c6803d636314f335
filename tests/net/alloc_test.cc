// No allocation per message in steady state: this binary replaces the global
// operator new/delete with counting versions (support/CountingNew.h: one
// thread_local counter per thread plus a process-wide total), runs an echo
// server on a loop thread, and ping-pongs messages from a plain blocking
// socket. After a warm-up, 10,000 round trips must not allocate a single
// time on the server's loop thread: raw echo with 64-byte and 16 KiB
// messages, and the same through FrameCodec.
//
// When a case does allocate, the test turns on tracing and runs a few more
// round trips, printing the backtrace of every allocation on the loop thread
// (addresses resolve with addr2line -f -C -e <binary> +OFFSET, or gdb's
// `info symbol`).
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include <execinfo.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/FrameCodec.h"
#include "support/CountingNew.h"  // this binary's one TU that replaces operator new
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::ServerThread;
namespace counting_new = test::counting_new;

constexpr int kWarmup = 1000;
constexpr int kMeasured = 10000;

class Echo final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    ctx.write(in.readable());
    in.retrieveAll();
  }
};

class FrameEcho final : public Handler {
 public:
  void onFrame(HandlerContext& ctx, std::span<const char> frame) override { ctx.writeFrame(frame); }
};

// Control: copies every message into a std::string before echoing it, so it
// allocates once per read. Proves the counter sees the loop thread.
class CopyingEcho final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    const std::string copy(in.view());
    ctx.write(copy);
    in.retrieveAll();
  }
};

Server::PipelineInit echoInit() {
  return [](Connection& c) { c.pipeline().emplaceLast<Echo>(); };
}

Server::PipelineInit frameEchoInit() {
  return [](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<FrameEcho>();
  };
}

// A plain blocking TCP client with send/receive timeouts (so a broken server
// fails the test instead of hanging it).
class PingClient {
 public:
  explicit PingClient(const SocketAddress& addr)
      : fd_(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    if (!fd_) return;
    timeval tv{};
    tv.tv_sec = 5;
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    const int one = 1;
    ::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd_.get(), addr.data(), addr.length()) != 0) fd_.reset();
  }
  [[nodiscard]] bool connected() const noexcept { return fd_.valid(); }

  // Sends `out` and reads the same number of bytes back into `in`.
  bool roundTrip(const std::string& out, std::string& in) {
    for (std::size_t done = 0; done < out.size();) {
      const ssize_t n = ::send(fd_.get(), out.data() + done, out.size() - done, MSG_NOSIGNAL);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        return false;
      }
      done += static_cast<std::size_t>(n);
    }
    in.resize(out.size());
    for (std::size_t done = 0; done < in.size();) {
      const ssize_t n = ::recv(fd_.get(), in.data() + done, in.size() - done, 0);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        return false;
      }
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

 private:
  Fd fd_;
};

// The loop thread's allocation count, read by a task on the loop. The read
// happens first thing in the task; anything the task machinery allocates on
// the loop thread afterwards would show up in the next read, which is why
// the callers subtract a measured baseline of one read.
std::uint64_t loopAllocs(ServerThread& srv) {
  std::uint64_t value = 0;
  srv.runAndWait([&value] { value = counting_new::t_allocs; });
  return value;
}

void setLoopTracing(ServerThread& srv, bool on) {
  srv.runAndWait([on] { counting_new::t_traced = on; });
}

struct Outcome {
  std::uint64_t baseline = 0;  // allocations of one loopAllocs() itself
  std::uint64_t measured = 0;  // during kMeasured round trips, baseline removed
  std::uint64_t total = 0;     // all threads, the same window (client side included)
};

// The message is a framed one when `framed`: 4-byte big-endian length, payload.
std::string makeMessage(std::size_t payload, bool framed) {
  std::string body = test::randomBytes(payload, static_cast<std::uint32_t>(payload));
  if (!framed) return body;
  char header[FrameCodec::kHeaderBytes];
  FrameCodec::encodeHeader(static_cast<std::uint32_t>(payload), header);
  return std::string(header, sizeof header) + body;
}

void pingPong(Server::PipelineInit init, std::size_t payload, bool framed, Outcome& out,
              bool traceIfAny = true) {
  ServerThread srv(SocketAddress::loopback4(0), {}, std::move(init));
  PingClient client(srv.address());
  ASSERT_TRUE(client.connected());
  const std::string msg = makeMessage(payload, framed);
  std::string back;
  back.reserve(msg.size());

  for (int i = 0; i < kWarmup; ++i) {
    ASSERT_TRUE(client.roundTrip(msg, back)) << "warm-up round trip " << i << ": " << std::strerror(errno);
    ASSERT_TRUE(back == msg) << "warm-up round trip " << i << " came back corrupted";
  }

  // The cost of reading the counter, measured the same way.
  const std::uint64_t r0 = loopAllocs(srv);
  const std::uint64_t r1 = loopAllocs(srv);
  out.baseline = r1 - r0;

  const std::uint64_t totalBefore = counting_new::g_allocs.load();
  const std::uint64_t before = loopAllocs(srv);
  for (int i = 0; i < kMeasured; ++i) {
    ASSERT_TRUE(client.roundTrip(msg, back)) << "round trip " << i << ": " << std::strerror(errno);
    ASSERT_TRUE(back == msg) << "round trip " << i << " came back corrupted";
  }
  const std::uint64_t after = loopAllocs(srv);
  out.total = counting_new::g_allocs.load() - totalBefore;
  const std::uint64_t raw = after - before;
  out.measured = raw >= out.baseline ? raw - out.baseline : 0;

  std::printf(
      "[ figures  ] %zu-byte %s messages: %llu allocation(s) on the loop thread in %d round trips "
      "(%.4f per message; one counter read costs %llu), %llu on all threads\n",
      payload, framed ? "framed" : "raw", static_cast<unsigned long long>(out.measured), kMeasured,
      static_cast<double>(out.measured) / kMeasured, static_cast<unsigned long long>(out.baseline),
      static_cast<unsigned long long>(out.total));

  if (out.measured != 0 && traceIfAny) {
    // Find out who: a few more round trips with every loop-thread allocation
    // printed with its backtrace.
    setLoopTracing(srv, true);
    counting_new::g_traceBudget = 8;
    for (int i = 0; i < 100; ++i) {
      if (!client.roundTrip(msg, back)) break;
    }
    counting_new::g_traceBudget = 0;
    setLoopTracing(srv, false);
  }
}

TEST(SteadyStateAllocation, CountingOperatorNewSeesAllocationsOnThisThread) {
  // The harness itself: a plain new on this thread is counted, once.
  const std::uint64_t before = counting_new::t_allocs;
  auto* p = new int(7);
  const std::uint64_t after = counting_new::t_allocs;
  delete p;
  EXPECT_EQ(after - before, 1u);
}

TEST(SteadyStateAllocation, AnAllocatingHandlerOnTheLoopIsCaught) {
  // The measurement is not vacuous: a handler that allocates once per
  // message shows up as (at least) one allocation per round trip.
  Outcome o;
  pingPong([](Connection& c) { c.pipeline().emplaceLast<CopyingEcho>(); }, 64, false, o,
           /*traceIfAny=*/false);
  if (HasFatalFailure()) return;
  EXPECT_GE(o.measured, static_cast<std::uint64_t>(kMeasured));
}

TEST(SteadyStateAllocation, Echo64ByteMessagesAllocateNothing) {
  Outcome o;
  pingPong(echoInit(), 64, false, o);
  if (HasFatalFailure()) return;
  EXPECT_EQ(o.baseline, 0u) << "reading the counter on the loop allocates";
  EXPECT_EQ(o.measured, 0u) << "allocations on the loop thread during " << kMeasured
                            << " echo round trips of 64 bytes (backtraces on stderr)";
}

TEST(SteadyStateAllocation, Echo16KiBMessagesAllocateNothing) {
  Outcome o;
  pingPong(echoInit(), 16 << 10, false, o);
  if (HasFatalFailure()) return;
  EXPECT_EQ(o.baseline, 0u) << "reading the counter on the loop allocates";
  EXPECT_EQ(o.measured, 0u) << "allocations on the loop thread during " << kMeasured
                            << " echo round trips of 16 KiB (backtraces on stderr)";
}

TEST(SteadyStateAllocation, FrameCodecEcho64ByteFramesAllocateNothing) {
  Outcome o;
  pingPong(frameEchoInit(), 64, true, o);
  if (HasFatalFailure()) return;
  EXPECT_EQ(o.baseline, 0u) << "reading the counter on the loop allocates";
  EXPECT_EQ(o.measured, 0u) << "allocations on the loop thread during " << kMeasured
                            << " framed round trips of 64 bytes (backtraces on stderr)";
}

TEST(SteadyStateAllocation, FrameCodecEcho16KiBFramesAllocateNothing) {
  Outcome o;
  pingPong(frameEchoInit(), 16 << 10, true, o);
  if (HasFatalFailure()) return;
  EXPECT_EQ(o.baseline, 0u) << "reading the counter on the loop allocates";
  EXPECT_EQ(o.measured, 0u) << "allocations on the loop thread during " << kMeasured
                            << " framed round trips of 16 KiB (backtraces on stderr)";
}

}  // namespace
}  // namespace keel
