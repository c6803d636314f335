// Issue 12's library defaults, against hostile clients over real loopback
// sockets: backpressure on by default, the server-wide output budget, and
// the per-peer connection cap. Memory is bounded through the server's own
// queued-byte counters (ServerStats::queuedOutput), which hold under every
// build; tests/examples/echo_backpressure_test.cc checks peak RSS of the
// real keel-echo too.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keel/net/Buffer.h"
#include "keel/net/Server.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

class Echo final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    (void)ctx.write(in.readable());
    in.retrieveAll();
  }
};

TEST(Budget, NonReadingClientsAreHeldByBackpressureByDefault) {
  ServerOptions options;  // the defaults: nothing opted in
  ServerThread srv(SocketAddress::loopback4(0), options,
                   [](Connection& c) { c.pipeline().emplaceLast<Echo>(); });
  constexpr int kClients = 8;
  std::vector<std::unique_ptr<BlockingClient>> clients;
  for (int i = 0; i < kClients; ++i) clients.push_back(std::make_unique<BlockingClient>(srv.address()));
  std::vector<std::size_t> sent(kClients);
  std::vector<std::thread> pushers;
  for (int i = 0; i < kClients; ++i) {
    pushers.emplace_back([&, i] { sent[i] = pushWithoutReading(clients[i]->fd(), 100u << 20, 8s); });
  }
  for (auto& t : pushers) t.join();
  const ServerStats st = srv.server().stats();
  std::size_t total = 0;
  for (std::size_t s : sent) total += s;
  const auto& c = options.connection;
  std::printf("[measure] %d clients pushed %zu bytes without reading; server queued %zu bytes\n", kClients,
              total, st.queuedOutput);
  EXPECT_LT(total, std::size_t{kClients} * (100u << 20)) << "TCP backpressure must have stopped the clients";
  // Each connection stops reading at the high watermark: what is queued is
  // at most that plus one read per connection.
  EXPECT_LE(st.queuedOutput, kClients * (c.highWatermark + c.maxReadPerEvent));
  EXPECT_EQ(st.closedBy[static_cast<std::size_t>(CloseReason::Overloaded)], 0u) << "paused, not dropped";
  // A polite client is still served meanwhile.
  BlockingClient polite(srv.address());
  EXPECT_EQ(polite.echo("still served"), "still served");
}

TEST(Budget, TheServerWideBudgetPausesEveryoneThenResetsTheLargestQueues) {
  ServerOptions options;
  options.outputBudget = 3u << 20;  // below what 8 paused connections hold
  options.outputBudgetGrace = 300ms;
  ServerThread srv(SocketAddress::loopback4(0), options,
                   [](Connection& c) { c.pipeline().emplaceLast<Echo>(); });
  constexpr int kClients = 8;
  std::vector<std::unique_ptr<BlockingClient>> clients;
  for (int i = 0; i < kClients; ++i) clients.push_back(std::make_unique<BlockingClient>(srv.address()));
  std::vector<std::thread> pushers;
  for (int i = 0; i < kClients; ++i) {
    pushers.emplace_back([&, i] { (void)pushWithoutReading(clients[i]->fd(), 16u << 20, 4s); });
  }
  for (auto& t : pushers) t.join();
  ASSERT_TRUE(eventually([&] { return srv.server().stats().budgetCloses > 0; }, 10s));
  ASSERT_TRUE(eventually([&] { return srv.server().stats().queuedOutput <= options.outputBudget; }, 10s));
  const ServerStats st = srv.server().stats();
  std::printf("[measure] budget %zu: %llu pause(s), %llu connection(s) reset, %zu bytes still queued\n",
              options.outputBudget, static_cast<unsigned long long>(st.budgetPauses),
              static_cast<unsigned long long>(st.budgetCloses), st.queuedOutput);
  EXPECT_GE(st.budgetPauses, 1u);
  EXPECT_LT(st.budgetCloses, static_cast<std::uint64_t>(kClients)) << "only the largest queues, not everyone";
  EXPECT_EQ(st.closedBy[static_cast<std::size_t>(CloseReason::Overloaded)], st.budgetCloses);
}

// A blocking TCP client bound to `source` (another loopback address).
int connectFrom(const char* source, const SocketAddress& server) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  ::inet_pton(AF_INET, source, &src.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0 ||
      ::connect(fd, server.data(), server.length()) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// True when the server closed the connection (EOF or reset) within 2 s.
bool closedByServer(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 2000) != 1) return false;
  char c;
  return ::recv(fd, &c, 1, 0) <= 0;
}

TEST(Budget, APerPeerCapKeepsOneAddressFromTakingEverySlot) {
  ServerOptions options;
  options.maxConnectionsPerPeer = 3;
  ServerThread srv(SocketAddress::loopback4(0), options,
                   [](Connection& c) { c.pipeline().emplaceLast<Echo>(); });
  std::vector<int> fds;
  for (int i = 0; i < 5; ++i) fds.push_back(connectFrom("127.0.0.1", srv.address()));
  for (int fd : fds) ASSERT_GE(fd, 0);
  int refused = 0;
  for (int i = 3; i < 5; ++i) refused += closedByServer(fds[static_cast<std::size_t>(i)]) ? 1 : 0;
  EXPECT_EQ(refused, 2);
  EXPECT_TRUE(eventually([&] { return srv.server().stats().refusedPerPeer == 2; }));
  // The three admitted ones are served, and another address is admitted.
  ASSERT_EQ(::send(fds[0], "a", 1, 0), 1);
  char c = 0;
  EXPECT_EQ(::recv(fds[0], &c, 1, 0), 1);
  const int other = connectFrom("127.0.0.2", srv.address());
  ASSERT_GE(other, 0);
  ASSERT_EQ(::send(other, "b", 1, 0), 1);
  EXPECT_EQ(::recv(other, &c, 1, 0), 1);
  EXPECT_EQ(c, 'b');
  // Closing one frees a slot for its address.
  ::close(fds[0]);
  ASSERT_TRUE(eventually([&] { return srv.server().connectionCount() == 3; }));
  const int again = connectFrom("127.0.0.1", srv.address());
  ASSERT_GE(again, 0);
  ASSERT_EQ(::send(again, "c", 1, 0), 1);
  EXPECT_EQ(::recv(again, &c, 1, 0), 1);
  for (int fd : {fds[1], fds[2], fds[3], fds[4], other, again}) ::close(fd);
}

}  // namespace
}  // namespace keel::test
