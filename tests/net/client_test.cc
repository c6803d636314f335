// Client on real sockets over loopback, once connected: the pipeline sees
// the connection and its end, reconnect after the server closes,
// disconnect/stop ending the retries, destruction with work still queued
// from another thread, and use from a thread other than the loop's. Every
// wait is bounded. Connecting and retrying are client_connect_test.cc.
#include <gtest/gtest.h>

#include "net/ClientFixture.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using namespace keel::test;  // the fixture (net/ClientFixture.h) and support/TestNet.h

// ---- Client: the established connection ---------------------------------------------

TEST(Client, PipelineSeesConnectedThenPeerClosedWhenTheServerCloses) {
  EventLoop loop;
  TestServer server(loop);
  server.closeFirst = 1;
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  Seen seen;
  Client client(loop, server.address());
  client.setPipelineInit(recordInto(seen));
  client.connect();
  ASSERT_TRUE(
      runUntil(loop, [&] { return seen.closed == 1 && client.state() == ClientState::Disconnected; }));
  EXPECT_EQ(seen.events, (std::vector<std::string>{"connected", "closed:peer-closed"}));
  EXPECT_FALSE(client.connection());
  runFor(loop, 50ms);  // no reconnect unless asked for
  EXPECT_EQ(server.accepted(), 1);
}

TEST(Client, PipelineInitMayCloseTheConnectionBeforeItStarts) {
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  Seen seen;
  Client client(loop, server.address());
  client.setPipelineInit([&](Connection& c) {
    c.pipeline().addLast(std::make_unique<RecordingHandler>(seen, ""));
    c.close();  // refused by the application: must not be started afterwards
  });
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.closed == 1; }));
  EXPECT_EQ(seen.events, std::vector<std::string>{"closed:local-close"});
  EXPECT_EQ(client.state(), ClientState::Disconnected);
  EXPECT_FALSE(client.connection());
}

TEST(Client, ReconnectsAfterTheServerClosesTheConnection) {
  EventLoop loop;
  TestServer server(loop);
  server.closeFirst = 1;
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  ClientOptions options = fastRetry();
  options.reconnect = ClientOptions::Reconnect::Always;
  Seen seen;
  Client client(loop, server.address(), options);
  // No greeting: bytes sent to a connection the server has already closed
  // would be answered with a reset, and the close would not be a clean FIN.
  client.setPipelineInit(recordInto(seen));
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return server.accepted() == 2 && seen.connected == 2; }))
      << "accepted " << server.accepted();
  EXPECT_EQ(seen.events, (std::vector<std::string>{"connected", "closed:peer-closed", "connected"}));
  EXPECT_EQ(client.state(), ClientState::Connected);
  EXPECT_EQ(client.attempts(), 1);  // the reconnect series
  ASSERT_TRUE(client.connection());
  EXPECT_EQ(client.connection()->state(), ConnectionState::Open);
  EXPECT_TRUE(client.connection()->send(std::string_view("hi")));
  ASSERT_TRUE(runUntil(loop, [&] { return seen.data == "hi"; })) << seen.data;
  runFor(loop, 100ms);
  EXPECT_EQ(server.accepted(), 2);
}

TEST(Client, ReconnectKeepsRetryingWhileTheServerIsDown) {
  EventLoop loop;
  auto server = std::make_unique<TestServer>(loop);
  server->closeFirst = 1;
  ASSERT_TRUE(server->start(SocketAddress::loopback4(0)));
  const SocketAddress address = server->address();
  ClientOptions options = fastRetry();
  options.reconnect = ClientOptions::Reconnect::Always;
  options.retryInitial = 10ms;
  Seen seen;
  Client client(loop, address, options);
  client.setPipelineInit(recordInto(seen));
  int failures = 0;
  client.setConnectFailed([&](std::error_code) { ++failures; });
  client.connect();
  // The first connection is closed by the server; then the server goes away
  // entirely (bound, not listening) and the reconnect series keeps failing.
  ASSERT_TRUE(runUntil(loop, [&] { return seen.closed == 1; }));
  server.reset();
  server = std::make_unique<TestServer>(loop);
  ASSERT_TRUE(server->bind(address));
  ASSERT_TRUE(runUntil(loop, [&] { return failures >= 3; }));
  EXPECT_EQ(client.state(), ClientState::Connecting);
  ASSERT_TRUE(server->listen());
  ASSERT_TRUE(runUntil(loop, [&] { return seen.connected == 2; }));
  EXPECT_EQ(client.state(), ClientState::Connected);
  EXPECT_EQ(client.attempts(), failures + 1);
}

TEST(Client, DisconnectClosesGracefullyAndStopsReconnecting) {
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  ClientOptions options = fastRetry();
  options.reconnect = ClientOptions::Reconnect::Always;
  Seen seen;
  Client client(loop, server.address(), options);
  client.setPipelineInit(recordInto(seen, "bye"));
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.data == "bye"; }));

  // From another thread: queued, then run by the loop.
  std::thread other([&] { client.disconnect(); });
  other.join();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.closed == 1 && server.closeReasons().size() == 1; }));
  EXPECT_EQ(seen.events, (std::vector<std::string>{"connected", "closed:local-close"}));
  EXPECT_EQ(server.closeReasons()[0], CloseReason::PeerClosed);
  runFor(loop, 150ms);  // several retry delays: no reconnect
  EXPECT_EQ(server.accepted(), 1);
  EXPECT_EQ(client.state(), ClientState::Disconnected);
  EXPECT_FALSE(client.connection());

  // connect() afterwards works again.
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.connected == 2; }));
  EXPECT_EQ(server.accepted(), 2);
}

TEST(Client, StopLeavesTheConnectionButDoesNotReconnect) {
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  ClientOptions options = fastRetry();
  options.reconnect = ClientOptions::Reconnect::Always;
  Seen seen;
  Client client(loop, server.address(), options);
  client.setPipelineInit(recordInto(seen, "x"));
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.data == "x"; }));
  client.stop();
  EXPECT_EQ(client.state(), ClientState::Connected);
  runFor(loop, 30ms);
  ASSERT_TRUE(client.connection());
  EXPECT_EQ(client.connection()->state(), ConnectionState::Open);

  server.connectionAt(0).close();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.closed == 1; }));
  runFor(loop, 100ms);
  EXPECT_EQ(server.accepted(), 1);
  EXPECT_EQ(client.state(), ClientState::Disconnected);
}

TEST(Client, ConnectWhileTheOldConnectionIsClosingConnectsOnceItHasClosed) {
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  ClientOptions options;
  // A peer that does not read makes the close wait for the output to drain.
  options.connection.closeTimeout = 100ms;
  Seen seen;
  Client client(loop, server.address(), options);
  client.setPipelineInit(recordInto(seen));
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.connected == 1 && server.accepted() == 1; }));
  server.connectionAt(0).pauseReading();
  Connection::Ptr conn = client.connection();
  // Small kernel buffers on the sending side so that a few MiB are enough to
  // leave output queued in the connection.
  ASSERT_FALSE(conn->socket().setSendBuffer(64 << 10));
  const std::string big(4 << 20, 'x');
  ASSERT_TRUE(conn->send(std::string_view(big)));
  ASSERT_GT(conn->outputBytes(), 0u);
  client.disconnect();
  ASSERT_EQ(conn->state(), ConnectionState::Closing);
  client.connect();
  EXPECT_EQ(client.connection(), conn);
  // The close times out (abort), then the new connection is made.
  ASSERT_TRUE(runUntil(loop, [&] { return seen.connected == 2; }));
  EXPECT_EQ(seen.events, (std::vector<std::string>{"connected", "closed:local-close", "connected"}));
  EXPECT_EQ(server.accepted(), 2);
  EXPECT_NE(client.connection(), conn);
}

// ---- lifetime and threads -----------------------------------------------------------

TEST(Client, DestructionAbortsTheConnectionAndOrphansQueuedWork) {
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  ClientOptions options = fastRetry();
  options.reconnect = ClientOptions::Reconnect::Always;
  Seen seen;
  auto client = std::make_unique<Client>(loop, server.address(), options);
  client->setPipelineInit(recordInto(seen, "x"));
  client->connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.data == "x"; }));
  Connection::Ptr conn = client->connection();
  ASSERT_TRUE(conn);

  // Work queued from other threads, still pending when the client goes.
  std::thread other([&] {
    client->connect();
    client->disconnect();
    client->stop();
  });
  other.join();
  client.reset();
  EXPECT_TRUE(conn->closed());
  EXPECT_EQ(conn->closeReason(), CloseReason::Abort);
  EXPECT_EQ(seen.events, (std::vector<std::string>{"connected", "closed:abort"}));

  ASSERT_TRUE(runUntil(loop, [&] { return server.closeReasons().size() == 1; }));
  EXPECT_EQ(server.closeReasons()[0], CloseReason::PeerReset);
  runFor(loop, 100ms);  // the orphaned tasks ran (and did nothing); no reconnect
  EXPECT_EQ(server.accepted(), 1);
}

TEST(Client, DestructionDuringRetriesCancelsThem) {
  EventLoop loop;
  TestServer closedPort(loop);
  ASSERT_TRUE(closedPort.bind(SocketAddress::loopback4(0)));
  ClientOptions options = fastRetry();
  options.retryInitial = 5ms;
  int failures = 0;
  {
    Client client(loop, closedPort.address(), options);
    client.setConnectFailed([&](std::error_code) { ++failures; });
    client.connect();
    ASSERT_TRUE(runUntil(loop, [&] { return failures >= 2; }));
  }
  const int seenSoFar = failures;
  runFor(loop, 100ms);
  EXPECT_EQ(failures, seenSoFar);
}

TEST(Client, UsableFromAThreadOtherThanTheLoops) {
  // A plain blocking echo server on this thread; the client lives on a loop thread.
  Socket listener = keel::test::openStream(AF_INET);
  ASSERT_FALSE(listener.bind(SocketAddress::loopback4(0)));
  ASSERT_FALSE(listener.listen());
  const SocketAddress address = listener.localAddress();

  LoopThread thread("client-test");
  EventLoop& loop = thread.start();
  std::mutex mutex;
  std::condition_variable changed;
  std::string received;  // guarded by mutex

  class Collect final : public Handler {
   public:
    Collect(std::mutex& m, std::condition_variable& cv, std::string& out) : m_(m), cv_(cv), out_(out) {}
    void onData(HandlerContext&, Buffer& in) override {
      {
        std::lock_guard lock(m_);
        out_ += in.view();
      }
      in.retrieveAll();
      cv_.notify_all();
    }

   private:
    std::mutex& m_;
    std::condition_variable& cv_;
    std::string& out_;
  };

  std::unique_ptr<Client> client;
  Connection::Ptr conn;
  auto onLoop = [&](const std::function<void()>& f) {
    std::promise<void> done;
    loop.runInLoop([&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  };
  // The client must die on its loop thread, also when an assertion below
  // returns early.
  struct OnExit {
    std::function<void()> f;
    ~OnExit() { f(); }
  } destroyOnLoop{[&] {
    onLoop([&] {
      conn.reset();
      client.reset();
    });
  }};
  onLoop([&] {
    client = std::make_unique<Client>(loop, address);
    client->setPipelineInit(
        [&](Connection& c) { c.pipeline().emplaceLast<Collect>(mutex, changed, received); });
  });

  client->connect();  // from this thread
  pollfd p{listener.fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1) << "no connection to accept";
  std::error_code ec;
  Socket accepted = listener.accept(nullptr, ec);
  ASSERT_FALSE(ec) << ec.message();

  // connection() from this thread, once the loop has published it.
  ASSERT_TRUE(test::eventually([&] { return (conn = client->connection()) != nullptr; },
                               std::chrono::duration_cast<std::chrono::milliseconds>(kWait)));
  EXPECT_EQ(client->state(), ClientState::Connected);
  EXPECT_EQ(client->attempts(), 1);

  ASSERT_TRUE(conn->send(std::string_view("ping")));  // Connection::send from this thread
  char buf[16];
  p = pollfd{accepted.fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  const ssize_t n = ::recv(accepted.fd(), buf, sizeof buf, 0);
  ASSERT_EQ(n, 4);
  ASSERT_EQ(::send(accepted.fd(), buf, 4, MSG_NOSIGNAL), 4);
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(changed.wait_for(lock, kWait, [&] { return received == "ping"; })) << received;
  }

  client->disconnect();  // from this thread
  p = pollfd{accepted.fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  EXPECT_EQ(::recv(accepted.fd(), buf, sizeof buf, 0), 0) << "expected the client's FIN";
}

}  // namespace
}  // namespace keel
