// Client and Connector, connecting, on real sockets over loopback and
// Unix-domain sockets: connect and exchange bytes (TCP, Unix, IPv6), refused
// connects, retry with growing back-off, giving up, stop ending the
// retries, and a connect timeout against a full accept queue. The
// established connection and the Client's lifetime are client_test.cc.
#include <gtest/gtest.h>

#include "net/ClientFixture.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using namespace keel::test;  // the fixture (net/ClientFixture.h) and support/TestNet.h

// ---- Connector ------------------------------------------------------------------

TEST(Connector, JitterStaysWithinItsBoundsAndVaries) {
  std::mt19937 rng(12345);
  const Duration base = 100ms;
  Duration lo = Duration::max();
  Duration hi = Duration::zero();
  for (int i = 0; i < 2000; ++i) {
    const Duration d = Connector::jittered(base, 20, rng);
    ASSERT_GE(d, 80ms);
    ASSERT_LE(d, 120ms);
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  // Spread across most of the +/-20 % range, not one value.
  EXPECT_LT(lo, 85ms);
  EXPECT_GT(hi, 115ms);

  EXPECT_EQ(Connector::jittered(base, 0, rng), base);
  EXPECT_EQ(Connector::jittered(Duration::zero(), 20, rng), Duration::zero());
  for (int i = 0; i < 100; ++i) {
    // Out-of-range percentages are clamped: never negative, never past 2x.
    const Duration d = Connector::jittered(base, 500, rng);
    ASSERT_GE(d, Duration::zero());
    ASSERT_LE(d, 200ms);
    EXPECT_EQ(Connector::jittered(base, -5, rng), base);
  }
  // Huge delays neither overflow nor go negative.
  for (int i = 0; i < 100; ++i) {
    const Duration d = Connector::jittered(Duration::max(), 100, rng);
    ASSERT_GE(d, Duration::zero());
  }
}

TEST(Connector, StopRightAfterStartMakesNoAttempt) {
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  Connector connector(loop, server.address());
  int calls = 0;
  connector.setConnected([&](Socket) { ++calls; });
  connector.setFailed([&](std::error_code) { ++calls; });
  connector.start();
  EXPECT_TRUE(connector.retryPending());  // the first attempt waits for the next turn of the loop
  connector.stop();
  EXPECT_TRUE(connector.idle());
  runFor(loop, 50ms);
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(connector.attempts(), 0);
  EXPECT_EQ(server.accepted(), 0);
}

// The first attempt is made in the iteration that started the series, not
// on the timer wheel's next tick: one loop turn that does not wait (the
// loop would otherwise sleep up to a tick, 1 ms, before connecting).
TEST(Connector, FirstAttemptRunsInTheSameLoopIteration) {
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  Connector connector(loop, server.address());
  connector.setConnected([](Socket) {});
  connector.setFailed([](std::error_code) {});
  loop.runOnce(Duration::zero());  // the loop's time is now, as inside a running loop
  connector.start();
  EXPECT_EQ(connector.attempts(), 0);  // not inside start()
  const std::uint64_t before = loop.iterations();
  loop.runOnce(Duration::zero());
  EXPECT_EQ(loop.iterations(), before + 1);
  EXPECT_EQ(connector.attempts(), 1);
  EXPECT_FALSE(connector.retryPending());
}
// ---- Client: connecting -----------------------------------------------------------

TEST(Client, ConnectsOverTcpAndExchangesBytesThroughThePipeline) {
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  Seen seen;
  Client client(loop, server.address());
  client.setPipelineInit(recordInto(seen, "hello, keel"));
  std::vector<std::error_code> failures;
  client.setConnectFailed([&](std::error_code ec) { failures.push_back(ec); });

  EXPECT_EQ(client.state(), ClientState::Disconnected);
  client.connect();
  EXPECT_EQ(client.state(), ClientState::Connecting);
  EXPECT_EQ(seen.connected, 0) << "callbacks never run inside connect()";

  ASSERT_TRUE(runUntil(loop, [&] { return seen.data == "hello, keel"; })) << seen.data;
  EXPECT_EQ(client.state(), ClientState::Connected);
  EXPECT_EQ(client.attempts(), 1);
  EXPECT_TRUE(failures.empty());
  Connection::Ptr conn = client.connection();
  ASSERT_TRUE(conn);
  EXPECT_EQ(conn->state(), ConnectionState::Open);
  EXPECT_EQ(conn->peerAddress(), server.address());
  EXPECT_EQ(server.accepted(), 1);

  // More bytes from the application side, through the whole pipeline.
  EXPECT_TRUE(conn->send(std::string_view(" again")));
  ASSERT_TRUE(runUntil(loop, [&] { return seen.data == "hello, keel again"; })) << seen.data;

  // connect() while connected does nothing.
  client.connect();
  runFor(loop, 50ms);
  EXPECT_EQ(server.accepted(), 1);
  EXPECT_EQ(client.attempts(), 1);
  EXPECT_EQ(client.connection(), conn);
  EXPECT_EQ(seen.events, std::vector<std::string>{"connected"});
}

TEST(Client, ConnectsOverAUnixSocket) {
  TempPath path("keel_client_test");
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.start(*SocketAddress::unixPath(path.str())));
  Seen seen;
  Client client(loop, server.address());
  client.setPipelineInit(recordInto(seen, "over unix"));
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.data == "over unix"; })) << seen.data;
  EXPECT_EQ(client.state(), ClientState::Connected);
  EXPECT_EQ(client.attempts(), 1);
  ASSERT_TRUE(client.connection());
  EXPECT_TRUE(client.connection()->localAddress().isUnix());
}

TEST(Client, ConnectsOverIpv6) {
  EventLoop loop;
  TestServer server(loop);
  if (!server.start(SocketAddress::loopback6(0))) GTEST_SKIP() << "no IPv6 loopback here";
  Seen seen;
  Client client(loop, server.address());
  client.setPipelineInit(recordInto(seen, "v6"));
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.data == "v6"; })) << seen.data;
  EXPECT_EQ(client.connection()->localAddress().family(), AF_INET6);
}

TEST(Client, RefusedConnectIsReportedThroughConnectFailed) {
  EventLoop loop;
  TestServer closedPort(loop);
  ASSERT_TRUE(closedPort.bind(SocketAddress::loopback4(0)));  // bound, never listening: connects get a reset
  Seen seen;
  Client client(loop, closedPort.address());
  client.setPipelineInit(recordInto(seen));
  std::vector<std::error_code> failures;
  std::vector<ClientState> statesInCallback;
  client.setConnectFailed([&](std::error_code ec) {
    failures.push_back(ec);
    statesInCallback.push_back(client.state());
  });
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return !failures.empty(); }));
  runFor(loop, 50ms);  // no retry without options.retry
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0], std::errc::connection_refused) << failures[0].message();
  EXPECT_EQ(statesInCallback, std::vector<ClientState>{ClientState::Disconnected});
  EXPECT_EQ(client.state(), ClientState::Disconnected);
  EXPECT_EQ(client.attempts(), 1);
  EXPECT_FALSE(client.connection());
  EXPECT_EQ(seen.connected, 0);
}

TEST(Client, MissingUnixSocketIsReportedThroughConnectFailed) {
  TempPath path("keel_client_test");  // nothing there
  EventLoop loop;
  Client client(loop, *SocketAddress::unixPath(path.str()));
  std::vector<std::error_code> failures;
  client.setConnectFailed([&](std::error_code ec) { failures.push_back(ec); });
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return !failures.empty(); }));
  EXPECT_EQ(failures[0], std::errc::no_such_file_or_directory) << failures[0].message();
  EXPECT_EQ(client.state(), ClientState::Disconnected);
}

TEST(Client, RetriesWithGrowingBackoffUntilTheServerListens) {
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.bind(SocketAddress::loopback4(0)));
  ClientOptions options = fastRetry();  // 20 ms, doubling, +/-20 %
  Seen seen;
  Client client(loop, server.address(), options);
  client.setPipelineInit(recordInto(seen, "finally"));
  std::vector<TimePoint> failedAt;
  std::vector<ClientState> statesInCallback;
  client.setConnectFailed([&](std::error_code ec) {
    EXPECT_EQ(ec, std::errc::connection_refused) << ec.message();
    failedAt.push_back(loop.now());
    statesInCallback.push_back(client.state());
  });
  bool listening = false;
  const TimerId open = loop.runAfter(300ms, [&] { listening = server.listen(); });
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.data == "finally"; })) << "never connected";
  loop.cancel(open);
  ASSERT_TRUE(listening);

  EXPECT_GT(client.attempts(), 1);
  EXPECT_EQ(static_cast<int>(failedAt.size()), client.attempts() - 1);
  EXPECT_EQ(client.state(), ClientState::Connected);
  for (ClientState s : statesInCallback)
    EXPECT_EQ(s, ClientState::Connecting) << "retry pending in the callback";

  // Failures at about 0, 20, 60, 140, 300 ms: each gap is one retry delay
  // (plus however late the loop got to it), and each is larger than the last.
  ASSERT_GE(failedAt.size(), 3u);
  Duration nominal = options.retryInitial;
  Duration previous = Duration::zero();
  for (std::size_t i = 1; i < failedAt.size(); ++i) {
    const Duration gap = failedAt[i] - failedAt[i - 1];
    EXPECT_GE(gap, nominal * 8 / 10) << "gap " << i;
    EXPECT_LE(gap, nominal * 12 / 10 + 100ms) << "gap " << i;
    EXPECT_GT(gap, previous) << "gap " << i << " did not grow";
    previous = gap;
    nominal *= 2;
  }
}

TEST(Client, GivesUpAfterMaxAttempts) {
  EventLoop loop;
  TestServer closedPort(loop);
  ASSERT_TRUE(closedPort.bind(SocketAddress::loopback4(0)));
  ClientOptions options = fastRetry();
  options.retryInitial = 5ms;
  options.maxAttempts = 3;
  Client client(loop, closedPort.address(), options);
  std::vector<ClientState> statesInCallback;
  client.setConnectFailed([&](std::error_code) { statesInCallback.push_back(client.state()); });
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return statesInCallback.size() == 3; }));
  runFor(loop, 100ms);
  EXPECT_EQ(statesInCallback, (std::vector<ClientState>{ClientState::Connecting, ClientState::Connecting,
                                                        ClientState::Disconnected}));
  EXPECT_EQ(client.attempts(), 3);
  EXPECT_EQ(client.state(), ClientState::Disconnected);
}

TEST(Client, StopEndsTheRetries) {
  EventLoop loop;
  TestServer closedPort(loop);
  ASSERT_TRUE(closedPort.bind(SocketAddress::loopback4(0)));
  ClientOptions options = fastRetry();
  options.retryInitial = 5ms;
  options.retryMax = 10ms;
  Client client(loop, closedPort.address(), options);
  int failures = 0;
  client.setConnectFailed([&](std::error_code) { ++failures; });
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return failures >= 3; }));
  client.stop();
  EXPECT_EQ(client.state(), ClientState::Disconnected);
  const int attempts = client.attempts();
  runFor(loop, 100ms);
  EXPECT_EQ(client.attempts(), attempts);
  EXPECT_EQ(failures, attempts);
}

// The kernel drops SYNs to a listener whose accept queue is full, so a
// connect to it hangs until the client gives up. listen(fd, 0) leaves room
// for about one connection; fill it with connects nobody accepts until one
// of them no longer completes.
TEST(Client, ConnectTimeoutFailsAnAttemptThatHangs) {
  Socket listener = keel::test::openStream(AF_INET);
  ASSERT_FALSE(listener.bind(SocketAddress::loopback4(0)));
  ASSERT_FALSE(listener.listen(0));
  const SocketAddress target = listener.localAddress();
  std::vector<Socket> fillers;
  bool full = false;
  for (int i = 0; i < 16 && !full; ++i) {
    Socket s = keel::test::openStream(AF_INET);
    const std::error_code ec = s.connect(target);
    if (ec == std::errc::operation_in_progress) {
      pollfd p{s.fd(), POLLOUT, 0};
      full = ::poll(&p, 1, 200) == 0;
    } else {
      ASSERT_FALSE(ec) << ec.message();
    }
    fillers.push_back(std::move(s));
  }
  if (!full)
    GTEST_SKIP() << "this kernel completed every connect to a full accept queue; cannot make one hang";

  EventLoop loop;
  ClientOptions options;
  options.connectTimeout = 150ms;
  Client client(loop, target, options);
  std::vector<std::error_code> failures;
  client.setConnectFailed([&](std::error_code ec) { failures.push_back(ec); });
  const TimePoint start = Clock::now();
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return !failures.empty(); }));
  const Duration took = Clock::now() - start;
  EXPECT_EQ(failures[0], std::errc::timed_out) << failures[0].message();
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(client.state(), ClientState::Disconnected);
  EXPECT_FALSE(client.connection());
}

}  // namespace
}  // namespace keel
