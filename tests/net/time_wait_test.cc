// TIME_WAIT accounting through netlink sock_diag, checked against the
// kernel's own /proc view, on real loopback connections.
#include "keel/net/TimeWaitCounter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <vector>

#include "keel/core/LoopThread.h"
#include "keel/net/Buffer.h"
#include "keel/net/Client.h"
#include "keel/net/Connection.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

class ReplyThenClose final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    ctx.write(in.readable());
    in.retrieveAll();
    ctx.close();  // the server closes first: TIME_WAIT lands here
  }
};

TEST(TimeWaitCounter, CountsTheServersTimeWaitEntriesLikeProcDoes) {
  test::ServerThread srv(SocketAddress::loopback4(0), {},
                         [](Connection& c) { c.pipeline().emplaceLast<ReplyThenClose>(); });
  const auto before = serverTimeWait(srv.address());
  ASSERT_TRUE(before.has_value()) << "neither sock_diag nor /proc/net/tcp readable";
  // The port may have been some earlier test's ephemeral port, with its
  // TIME_WAIT entries still there: what counts is what this test adds.
  const std::size_t clientSideBefore = countTimeWait({0, srv.address().port()}).value_or(0);
  constexpr int kConnections = 20;
  for (int i = 0; i < kConnections; ++i) {
    test::BlockingClient c(srv.address());
    ASSERT_TRUE(c.sendAll("q"));
    bool eof = false;
    EXPECT_EQ(c.recvUntilEof(&eof), "q");
    EXPECT_TRUE(eof);
  }  // each client closes after the server's FIN: the server side holds TIME_WAIT
  ASSERT_TRUE(
      test::eventually([&] { return serverTimeWait(srv.address()).value_or(0) >= *before + kConnections; }));
  // The client side holds none: entries towards the server's port are the
  // server's own (on loopback both ends are local, so filter by direction).
  EXPECT_EQ(countTimeWait({0, srv.address().port()}).value_or(99), clientSideBefore);
  // Same figure as the kernel's text view.
  EXPECT_EQ(serverTimeWait(srv.address()).value(),
            static_cast<std::size_t>(test::countTimeWait(srv.address().port())) -
                countTimeWait({0, srv.address().port()}).value());
}

}  // namespace
}  // namespace keel

namespace keel {
namespace {

// The request/response close mode: after the reply the client waits for the
// server's FIN, so the client side ends with no TIME_WAIT at all.
class Asker final : public Handler {
 public:
  explicit Asker(std::atomic<int>* replies) : replies_(replies) {}
  void onConnected(HandlerContext& ctx) override { ctx.write("q"); }
  void onData(HandlerContext& ctx, Buffer& in) override {
    in.retrieveAll();
    ++*replies_;
    (void)ctx;
  }

 private:
  std::atomic<int>* replies_;
};

// Replies at once but closes only 100 ms later, so a client that closes
// right after the reply is the first to send FIN.
class ReplyThenServerClosesLater final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    in.retrieveAll();
    ctx.write("a");
    std::weak_ptr<Connection> weak = ctx.connection().shared_from_this();
    (void)ctx.loop().runAfter(100ms, [weak] {
      if (auto c = weak.lock()) c->close();
    });
  }
};

// Runs `n` request/response connections with the given close mode; returns
// the client's local ports.
std::vector<std::uint16_t> churn(const SocketAddress& server, ClientOptions::Close mode, int n) {
  LoopThread clientThread;
  EventLoop& loop = clientThread.start();
  std::atomic<int> replies{0};
  std::vector<std::uint16_t> ports;
  for (int i = 0; i < n; ++i) {
    ClientOptions options;
    options.close = mode;
    auto client = std::make_shared<Client>(loop, server, options);
    std::promise<void> made;
    loop.runInLoop([&] {
      client->setPipelineInit([&](Connection& c) { c.pipeline().emplaceLast<Asker>(&replies); });
      client->connect();
      made.set_value();
    });
    made.get_future().wait();
    EXPECT_TRUE(test::eventually([&] { return replies.load() == i + 1; }));
    if (auto conn = client->connection()) ports.push_back(conn->localAddress().port());
    client->disconnect();
    EXPECT_TRUE(test::eventually([&] { return client->state() == ClientState::Disconnected; }));
    std::promise<void> gone;
    loop.runInLoop([&] {
      client.reset();
      gone.set_value();
    });
    gone.get_future().wait();
  }
  clientThread.stop();
  return ports;
}

std::size_t clientSideTimeWait(const std::vector<std::uint16_t>& ports, std::uint16_t serverPort) {
  std::size_t n = 0;
  for (std::uint16_t p : ports) n += countTimeWait({p, serverPort}).value_or(0);  // local port = the client's
  return n;
}

TEST(TimeWaitCounter, ClientWithPeerFirstCloseLeavesNoClientSideTimeWait) {
  test::ServerThread srv(SocketAddress::loopback4(0), {},
                         [](Connection& c) { c.pipeline().emplaceLast<ReplyThenServerClosesLater>(); });
  // Control: closing first puts every TIME_WAIT on the client.
  const auto localFirst = churn(srv.address(), ClientOptions::Close::LocalFirst, 5);
  ASSERT_EQ(localFirst.size(), 5u);
  EXPECT_EQ(clientSideTimeWait(localFirst, srv.address().port()), 5u);
  // PeerFirst: the client waits for the server's FIN; none on the client.
  const auto peerFirst = churn(srv.address(), ClientOptions::Close::PeerFirst, 5);
  ASSERT_EQ(peerFirst.size(), 5u);
  EXPECT_EQ(clientSideTimeWait(peerFirst, srv.address().port()), 0u);
  EXPECT_GE(serverTimeWait(srv.address()).value_or(0), 5u);
  EXPECT_GE(srv.server().stats().timeWait, 5u) << "the server's metrics carry the count";
}

}  // namespace
}  // namespace keel
