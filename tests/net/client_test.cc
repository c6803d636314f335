// Client and Connector on real sockets over loopback and Unix-domain sockets:
// connect and exchange bytes, refused connects, retry with growing back-off,
// connect timeout against a full accept queue, reconnect after the server
// closes, disconnect/stop ending the retries, destruction with work still
// queued from another thread, and use from a thread other than the loop's.
//
// The servers here are small and local to this file (keel Connections behind
// a hand-written accept loop, or plain blocking sockets), so these tests do
// not depend on keel's Server. Every wait is bounded.
#include "keel/net/Client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keel/core/EventLoop.h"
#include "keel/core/LoopThread.h"
#include "keel/core/Watcher.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/Handler.h"
#include "keel/net/Pipeline.h"
#include "keel/net/Socket.h"
#include "keel/net/SocketAddress.h"
#include "keel/net/internal/ConnectionAccess.h"
#include "keel/net/internal/Connector.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

constexpr Duration kWait = 5s;  // upper bound on every wait for something that should happen

// Runs the loop until `done` holds or `timeout` passes; returns done().
// A periodic timer checks the condition and a one-shot timer bounds the run,
// both quitting the loop, so no test can hang here.
bool runUntil(EventLoop& loop, const std::function<bool()>& done, Duration timeout = kWait) {
  if (done()) return true;
  // Timers count from the loop's cached now(), which is stale after the test
  // spent time outside the loop (building a large payload, say).
  loop.updateTime();
  const TimerId poll = loop.runEvery(1ms, [&] {
    if (done()) loop.quit();
  });
  const TimerId limit = loop.runAfter(timeout, [&] { loop.quit(); });
  loop.loop();
  loop.cancel(poll);
  loop.cancel(limit);
  return done();
}

void runFor(EventLoop& loop, Duration d) {
  runUntil(
      loop, [] { return false; }, d);
}

std::string uniqueSuffix() {
  static std::atomic<int> counter{0};
  return std::to_string(::getpid()) + "_" + std::to_string(counter.fetch_add(1));
}

class TempPath {
 public:
  TempPath() : path_("/tmp/keel_client_test_" + uniqueSuffix() + ".sock") { ::unlink(path_.c_str()); }
  ~TempPath() { ::unlink(path_.c_str()); }
  TempPath(const TempPath&) = delete;
  TempPath& operator=(const TempPath&) = delete;
  [[nodiscard]] const std::string& str() const { return path_; }

 private:
  std::string path_;
};

// What a client connection's pipeline saw, in order.
struct Seen {
  std::vector<std::string> events;  // "connected", "closed:<reason>"
  std::string data;
  int connected = 0;
  int closed = 0;
};

// The application end of a client connection: records events and bytes, and
// optionally greets the server when connected.
class RecordingHandler final : public Handler {
 public:
  RecordingHandler(Seen& seen, std::string greeting) : seen_(seen), greeting_(std::move(greeting)) {}
  std::string_view name() const noexcept override { return "recording"; }
  void onConnected(HandlerContext& ctx) override {
    seen_.events.emplace_back("connected");
    ++seen_.connected;
    if (!greeting_.empty()) ctx.write(Slices(greeting_));
    ctx.fireConnected();
  }
  void onData(HandlerContext&, Buffer& in) override {
    seen_.data += in.view();
    in.retrieveAll();
  }
  void onClosed(HandlerContext& ctx, CloseReason reason) override {
    seen_.events.push_back("closed:" + std::string(toString(reason)));
    ++seen_.closed;
    ctx.fireClosed(reason);
  }

 private:
  Seen& seen_;
  std::string greeting_;
};

class EchoHandler final : public Handler {
 public:
  std::string_view name() const noexcept override { return "echo"; }
  void onData(HandlerContext& ctx, Buffer& in) override {
    const std::string copy(in.view());
    in.retrieveAll();
    ctx.write(Slices(copy));
  }
};

// A small server on the test's loop: a listening keel Socket, an accept loop
// on a Watcher, and a keel Connection with an echo handler per accepted
// socket. `closeFirst` connections are closed by the server right after
// accepting them.
class TestServer {
 public:
  explicit TestServer(EventLoop& loop) : loop_(loop) {}
  ~TestServer() {
    watcher_.reset();
    for (auto& c : conns_) c->abort();
  }
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  // Bound but not listening yet: a TCP connect to it is refused (RST), and the
  // port stays reserved for the test until listen().
  [[nodiscard]] bool bind(const SocketAddress& addr) {
    socket_ = keel::test::openStream(addr.family());
    if (addr.isInet() && socket_.setReuseAddr(true)) return false;
    if (socket_.bind(addr)) return false;
    address_ = socket_.localAddress();
    return true;
  }
  [[nodiscard]] bool listen() {
    if (socket_.listen()) return false;
    watcher_ = std::make_unique<Watcher>(loop_, socket_.fd(), [this](std::uint32_t) { onReadable(); });
    if (watcher_->setInterest(Watcher::kRead)) return false;
    return true;
  }
  [[nodiscard]] bool start(const SocketAddress& addr) { return bind(addr) && listen(); }

  [[nodiscard]] const SocketAddress& address() const noexcept { return address_; }
  [[nodiscard]] int accepted() const noexcept { return static_cast<int>(conns_.size()); }
  [[nodiscard]] const std::vector<CloseReason>& closeReasons() const noexcept { return reasons_; }
  [[nodiscard]] Connection& connectionAt(std::size_t i) { return *conns_.at(i); }
  int closeFirst = 0;  // close this many accepted connections at once

 private:
  void onReadable() {
    for (;;) {
      std::error_code ec;
      Socket s = socket_.accept(nullptr, ec);
      if (!s.valid()) return;
      // Kept until the server goes (never released inside their own callbacks).
      auto conn = std::make_shared<Connection>(loop_, std::move(s), 1000 + conns_.size());
      conn->pipeline().emplaceLast<EchoHandler>();
      // This test server is an owner, as Server is: it uses the owner's access.
      ConnectionAccess::setClosedHook(
          *conn, [this](const Connection::Ptr& c) { reasons_.push_back(*c->closeReason()); });
      conns_.push_back(conn);
      ConnectionAccess::start(*conn);
      if (accepted() <= closeFirst) conn->close();
    }
  }

  EventLoop& loop_;
  Socket socket_;
  SocketAddress address_;
  std::unique_ptr<Watcher> watcher_;
  std::vector<Connection::Ptr> conns_;
  std::vector<CloseReason> reasons_;
};

Client::PipelineInit recordInto(Seen& seen, const std::string& greeting = {}) {
  return [&seen, greeting](Connection& c) {
    c.pipeline().addLast(std::make_unique<RecordingHandler>(seen, greeting));
  };
}

ClientOptions fastRetry() {
  ClientOptions o;
  o.retry = true;
  o.retryInitial = 20ms;
  o.retryMax = 1s;
  return o;
}

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
  TempPath path;
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
  TempPath path;  // nothing there
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
  options.retry = false;  // reconnecting does not need it
  options.reconnect = true;
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
  options.retry = false;
  options.reconnect = true;
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
  options.reconnect = true;
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
  options.reconnect = true;
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
  options.reconnect = true;
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
