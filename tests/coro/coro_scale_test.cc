// 10,000 concurrent coroutine connections on one server loop: the clients
// are a forked child process (so each side stays under the 20,000-file
// limit), each sends one message and reads its echo while every connection
// stays open; then the server has 10,000 live coroutines at once.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <vector>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel/coro/CoConnection.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

constexpr int kConnections = 10000;

bool readFull(int fd, void* p, std::size_t n) {
  auto* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = ::read(fd, c, n);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return false;
    }
    c += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// The child: only syscalls after the vector is reserved. Exit status 0 when
// every connection echoed; it holds them open until the parent says go.
[[noreturn]] void runClients(int portPipe, int donePipe, int goPipe) {
  std::vector<int> fds;
  fds.reserve(kConnections);
  std::uint16_t port = 0;
  if (!readFull(portPipe, &port, sizeof port)) std::_Exit(10);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  for (int i = 0; i < kConnections; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) std::_Exit(11);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) std::_Exit(12);
    fds.push_back(fd);
    const char c = static_cast<char>('a' + i % 26);
    if (::send(fd, &c, 1, MSG_NOSIGNAL) != 1) std::_Exit(13);
  }
  for (int i = 0; i < kConnections; ++i) {
    char c = 0;
    if (::recv(fds[static_cast<std::size_t>(i)], &c, 1, MSG_WAITALL) != 1) std::_Exit(14);
    if (c != static_cast<char>('a' + i % 26)) std::_Exit(15);
  }
  const char ok = 1;
  if (::write(donePipe, &ok, 1) != 1) std::_Exit(16);
  char go = 0;
  (void)readFull(goPipe, &go, 1);
  for (const int fd : fds) ::close(fd);
  std::_Exit(0);
}

TEST(CoroScale, TenThousandConcurrentCoroutineConnections) {
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < kConnections + 200 && lim.rlim_max >= kConnections + 200) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
    ::getrlimit(RLIMIT_NOFILE, &lim);
  }
  if (lim.rlim_cur < kConnections + 200) {
    GTEST_SKIP() << "RLIMIT_NOFILE is " << lim.rlim_cur << "; 10,000 connections need " << kConnections + 200;
  }
  int portPipe[2], donePipe[2], goPipe[2];
  ASSERT_EQ(::pipe(portPipe), 0);
  ASSERT_EQ(::pipe(donePipe), 0);
  ASSERT_EQ(::pipe(goPipe), 0);
  // Forked before the server thread starts: the child is single-threaded.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) runClients(portPipe[0], donePipe[1], goPipe[0]);

  std::atomic<int> live{0};
  std::atomic<int> peak{0};
  {
    ServerOptions options;
    options.maxConnections = kConnections + 100;
    test::ServerThread srv(SocketAddress::loopback4(0), options, [&](Connection& c) {
      c.pipeline().emplaceLast<CoConnection>([&](CoConnection& conn) -> Task<> {
        const int now = ++live;
        int seen = peak.load();
        while (now > seen && !peak.compare_exchange_weak(seen, now)) {
        }
        for (;;) {
          auto in = co_await conn.read();
          if (!in || !co_await conn.write(*in)) break;
        }
        --live;
      });
    });
    const std::uint16_t port = srv.address().port();
    ASSERT_EQ(::write(portPipe[1], &port, sizeof port), static_cast<ssize_t>(sizeof port));
    char ok = 0;
    const bool echoed = readFull(donePipe[0], &ok, 1);
    EXPECT_TRUE(echoed) << "the client process failed before every connection had echoed";
    if (echoed) {
      EXPECT_EQ(live.load(), kConnections);
      EXPECT_EQ(srv.server().connectionCount(), static_cast<std::size_t>(kConnections));
    }
    ASSERT_EQ(::write(goPipe[1], "g", 1), 1);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "client exit status " << WEXITSTATUS(status);
    EXPECT_TRUE(test::eventually([&] { return live.load() == 0; }, 20000ms)) << live.load() << " still live";
  }
  EXPECT_EQ(peak.load(), kConnections);
  for (int fd : {portPipe[0], portPipe[1], donePipe[0], donePipe[1], goPipe[0], goPipe[1]}) ::close(fd);
}

}  // namespace
}  // namespace keel
