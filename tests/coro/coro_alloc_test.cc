// No allocation per message in coroutine mode: the counting operator new of
// tests/net/alloc_test.cc, with a coroutine echo (CoConnection) on the
// server's loop thread. After a warm-up, 10,000 round trips must not
// allocate on the loop thread: raw bytes and frames, 64 B and 16 KiB, and a
// read under withTimeout (a timer armed and cancelled per message).
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "keel/coro/CoConnection.h"
#include "keel/coro/Timeout.h"
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

Task<> echo(CoConnection& conn) {
  for (;;) {
    auto in = co_await conn.read();
    if (!in || !co_await conn.write(*in)) co_return;
  }
}

Task<> frameEcho(CoConnection& conn) {
  for (;;) {
    auto f = co_await conn.readFrame();
    if (!f || !co_await conn.writeFrame(*f)) co_return;
  }
}

// A child task per message too: its frame comes back from the pool.
Task<Result<void>> echoOnce(CoConnection& conn) {
  auto in = co_await withTimeout(10s, conn.read());
  if (!in) co_return Result<void>(in.error());
  Result<void> w = co_await conn.write(*in);
  co_return w;
}

Task<> timedEcho(CoConnection& conn) {
  for (;;) {
    const Result<void> r = co_await echoOnce(conn);
    if (!r) co_return;
  }
}

// Control: a coroutine that copies every message into a std::string.
Task<> copyingEcho(CoConnection& conn) {
  for (;;) {
    auto in = co_await conn.read();
    if (!in) co_return;
    const std::string copy(in->begin(), in->end());
    if (!co_await conn.write(copy)) co_return;
  }
}

Server::PipelineInit coInit(CoConnection::Body body, bool framed) {
  return [body = std::move(body), framed](Connection& c) {
    if (framed) c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<CoConnection>(body);
  };
}

bool roundTrip(int fd, const std::string& out, std::string& in) {
  for (std::size_t done = 0; done < out.size();) {
    const ssize_t n = ::send(fd, out.data() + done, out.size() - done, MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  in.resize(out.size());
  for (std::size_t done = 0; done < in.size();) {
    const ssize_t n = ::recv(fd, in.data() + done, in.size() - done, 0);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

std::uint64_t loopAllocs(ServerThread& srv) {
  std::uint64_t value = 0;
  srv.runAndWait([&value] { value = counting_new::t_allocs; });
  return value;
}

std::string makeMessage(std::size_t payload, bool framed) {
  std::string body = test::randomBytes(payload, static_cast<std::uint32_t>(payload));
  if (!framed) return body;
  char header[FrameCodec::kHeaderBytes];
  FrameCodec::encodeHeader(static_cast<std::uint32_t>(payload), header);
  return std::string(header, sizeof header) + body;
}

// Allocations on the loop thread during kMeasured round trips, the cost of
// reading the counter removed.
std::uint64_t measure(Server::PipelineInit init, std::size_t payload, bool framed) {
  ServerThread srv(SocketAddress::loopback4(0), {}, std::move(init));
  test::BlockingClient client(srv.address());
  EXPECT_TRUE(client.connected());
  client.setNoDelay(true);
  // Plain blocking calls below (the client's own calls poll).
  ::fcntl(client.fd(), F_SETFL, ::fcntl(client.fd(), F_GETFL) & ~O_NONBLOCK);
  const std::string msg = makeMessage(payload, framed);
  std::string back;
  back.reserve(msg.size());
  for (int i = 0; i < kWarmup; ++i) {
    if (!roundTrip(client.fd(), msg, back) || back != msg) {
      ADD_FAILURE() << "warm-up round trip " << i << " failed";
      return UINT64_MAX;
    }
  }
  const std::uint64_t r0 = loopAllocs(srv);
  const std::uint64_t r1 = loopAllocs(srv);
  const std::uint64_t baseline = r1 - r0;
  const std::uint64_t before = loopAllocs(srv);
  for (int i = 0; i < kMeasured; ++i) {
    if (!roundTrip(client.fd(), msg, back) || back != msg) {
      ADD_FAILURE() << "round trip " << i << " failed";
      return UINT64_MAX;
    }
  }
  const std::uint64_t raw = loopAllocs(srv) - before;
  const std::uint64_t measured = raw >= baseline ? raw - baseline : 0;
  std::printf(
      "[ figures  ] coroutine, %zu-byte %s messages: %llu allocation(s) on the loop thread in %d round "
      "trips\n",
      payload, framed ? "framed" : "raw", static_cast<unsigned long long>(measured), kMeasured);
  return measured;
}

TEST(CoroAllocation, AnAllocatingCoroutineIsCaught) {
  EXPECT_GE(measure(coInit(copyingEcho, false), 64, false), static_cast<std::uint64_t>(kMeasured));
}

TEST(CoroAllocation, Echo64ByteMessagesAllocateNothing) {
  EXPECT_EQ(measure(coInit(echo, false), 64, false), 0u);
}

TEST(CoroAllocation, Echo16KiBMessagesAllocateNothing) {
  EXPECT_EQ(measure(coInit(echo, false), 16 << 10, false), 0u);
}

TEST(CoroAllocation, FrameEcho64ByteFramesAllocateNothing) {
  EXPECT_EQ(measure(coInit(frameEcho, true), 64, true), 0u);
}

TEST(CoroAllocation, FrameEcho16KiBFramesAllocateNothing) {
  EXPECT_EQ(measure(coInit(frameEcho, true), 16 << 10, true), 0u);
}

TEST(CoroAllocation, AChildTaskAndATimeoutPerMessageAllocateNothing) {
  EXPECT_EQ(measure(coInit(timedEcho, false), 64, false), 0u);
}

}  // namespace
}  // namespace keel
