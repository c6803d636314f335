// Client lifecycle: disconnect()'s completion (after the close, with no
// connection, from another thread, dropped by destruction), the Reconnect
// policy's middle setting, and the loop-thread checks that abort naming the
// function called from the wrong thread.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "net/ClientFixture.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using namespace keel::test;

// ---- disconnect(done) ---------------------------------------------------------------

TEST(ClientDisconnect, CompletionRunsOnceTheConnectionHasClosed) {
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  Seen seen;
  Client client(loop, server.address());
  client.setPipelineInit(recordInto(seen, "x"));
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.data == "x"; }));
  int done = 0;
  std::vector<std::string> eventsAtDone;
  ClientState stateAtDone = ClientState::Connected;
  bool connectionAtDone = true;
  client.disconnect([&] {
    ++done;
    eventsAtDone = seen.events;
    stateAtDone = client.state();
    connectionAtDone = client.connection() != nullptr;
  });
  EXPECT_EQ(done, 0) << "never inside disconnect()";
  ASSERT_TRUE(runUntil(loop, [&] { return done > 0; }));
  EXPECT_EQ(eventsAtDone, (std::vector<std::string>{"connected", "closed:local-close"}));
  EXPECT_EQ(stateAtDone, ClientState::Disconnected);
  EXPECT_FALSE(connectionAtDone);
  runFor(loop, 20ms);
  EXPECT_EQ(done, 1);
}

TEST(ClientDisconnect, CompletionWithoutAConnectionRunsOnALaterTurn) {
  EventLoop loop;
  Client client(loop, SocketAddress::loopback4(9));
  bool done = false;
  client.disconnect([&] { done = true; });
  EXPECT_FALSE(done) << "never inside disconnect()";
  ASSERT_TRUE(runUntil(loop, [&] { return done; }));
}

TEST(ClientDisconnect, CompletionWhileRetryingEndsTheRetries) {
  EventLoop loop;
  TestServer closedPort(loop);
  ASSERT_TRUE(closedPort.bind(SocketAddress::loopback4(0)));
  ClientOptions options = fastRetry();
  options.retryInitial = 5ms;
  Client client(loop, closedPort.address(), options);
  int failures = 0;
  client.setConnectFailed([&](std::error_code) { ++failures; });
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return failures >= 2; }));
  bool done = false;
  client.disconnect([&] { done = true; });
  ASSERT_TRUE(runUntil(loop, [&] { return done; }));
  const int attempts = client.attempts();
  runFor(loop, 50ms);
  EXPECT_EQ(client.attempts(), attempts);
  EXPECT_EQ(client.state(), ClientState::Disconnected);
}

TEST(ClientDisconnect, CompletionFromAnotherThreadRunsOnTheLoop) {
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  Seen seen;
  Client client(loop, server.address());
  client.setPipelineInit(recordInto(seen, "x"));
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.data == "x"; }));
  std::atomic<bool> onLoop{false};
  std::atomic<bool> done{false};
  std::thread other([&] {
    client.disconnect([&] {
      onLoop = loop.isInLoopThread();
      done = true;
    });
  });
  other.join();
  ASSERT_TRUE(runUntil(loop, [&] { return done.load(); }));
  EXPECT_TRUE(onLoop);
  EXPECT_EQ(seen.closed, 1);
}

TEST(ClientDisconnect, DestroyingTheClientDropsAPendingCompletion) {
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  ClientOptions options;
  // The server never closes: the close waits for its FIN (up to 30 s).
  options.close = ClientOptions::Close::PeerFirst;
  options.peerCloseTimeout = 30s;
  Seen seen;
  auto client = std::make_unique<Client>(loop, server.address(), options);
  client->setPipelineInit(recordInto(seen, "x"));
  client->connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.data == "x"; }));
  bool done = false;
  client->disconnect([&] { done = true; });
  runFor(loop, 20ms);
  ASSERT_FALSE(done) << "the close was expected to wait for the server";
  client.reset();
  EXPECT_EQ(seen.events, (std::vector<std::string>{"connected", "closed:abort"}));
  runFor(loop, 20ms);
  EXPECT_FALSE(done);
}

// ---- Reconnect::UntilConnected --------------------------------------------------------

TEST(ClientReconnect, UntilConnectedDoesNotReplaceALostConnection) {
  EventLoop loop;
  TestServer server(loop);
  server.closeFirst = 1;
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  ClientOptions options = fastRetry();
  ASSERT_EQ(options.reconnect, ClientOptions::Reconnect::UntilConnected);
  Seen seen;
  Client client(loop, server.address(), options);
  client.setPipelineInit(recordInto(seen));
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.closed == 1; }));
  runFor(loop, 100ms);  // several back-off delays: no new connection
  EXPECT_EQ(server.accepted(), 1);
  EXPECT_EQ(client.state(), ClientState::Disconnected);
}

// ---- the wrong thread -----------------------------------------------------------------

TEST(ClientDeathTest, DestroyingOnAnotherThreadAbortsNamingTheDestructor) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        EventLoop loop;
        auto client = std::make_unique<Client>(loop, SocketAddress::loopback4(9));
        std::thread other([&] { client.reset(); });
        other.join();
      },
      "Client::~Client called on a thread that does not own EventLoop");
}

TEST(ClientDeathTest, SettersAfterConnectOnAnotherThreadAbortNamingTheSetter) {
#ifdef NDEBUG
  GTEST_SKIP() << "loop-thread assertions are compiled out with NDEBUG";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        EventLoop loop;
        Client client(loop, SocketAddress::loopback4(9));
        client.connect();
        std::thread other([&] { client.setPipelineInit({}); });
        other.join();
      },
      "Client::setPipelineInit called on a thread");
  EXPECT_DEATH(
      {
        EventLoop loop;
        Client client(loop, SocketAddress::loopback4(9));
        client.connect();
        std::thread other([&] { client.setConnectFailed({}); });
        other.join();
      },
      "Client::setConnectFailed called on a thread");
#endif
}

TEST(ClientThreads, SettersBeforeConnectWorkFromAnyThread) {
  EventLoop loop;
  Client client(loop, SocketAddress::loopback4(9));
  std::thread other([&] {
    client.setPipelineInit([](Connection&) {});
    client.setConnectFailed([](std::error_code) {});
  });
  other.join();
  SUCCEED() << "no abort";
}

TEST(ClientDeathTest, CancellingALookupOnAnotherThreadAbortsNamingIt) {
#ifdef NDEBUG
  GTEST_SKIP() << "loop-thread assertions are compiled out with NDEBUG";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        EventLoop loop;
        Resolver resolver;
        ResolveRequest r =
            resolver.resolve(loop, "127.0.0.1", 1, {}, [](std::error_code, std::vector<SocketAddress>) {});
        std::thread other([&] { r.cancel(); });
        other.join();
      },
      "ResolveRequest::cancel called on a thread");
#endif
}

}  // namespace
}  // namespace keel
