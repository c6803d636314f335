// The echo server on the full stack, driven by plain blocking clients over
// real loopback sockets: sizes from 1 B to 8 MiB, half-close in both
// directions, reset without TIME_WAIT, IPv6 and Unix-domain, many clients.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <sys/socket.h>
#include <unistd.h>

#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::BlockingClient;
using test::ServerThread;

class Echo final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    ctx.write(in.readable());
    in.retrieveAll();
  }
};

Server::PipelineInit echoInit() {
  return [](Connection& c) { c.pipeline().emplaceLast<Echo>(); };
}

TEST(EchoServer, MessagesFromOneByteToEightMiBComeBackIntact) {
  ServerThread srv(SocketAddress::loopback4(0), {}, echoInit());
  BlockingClient client(srv.address());
  ASSERT_TRUE(client.connected());
  for (std::size_t size : {1u, 2u, 100u, 1460u, 4096u, 65536u, 1u << 20, 8u << 20}) {
    const std::string msg = test::randomBytes(size, static_cast<std::uint32_t>(size));
    const std::string back = client.echo(msg);
    ASSERT_EQ(back.size(), msg.size()) << "size " << size;
    ASSERT_TRUE(back == msg) << "corrupted at size " << size;
  }
}

TEST(EchoServer, ClientHalfCloseStillGetsEverythingBackThenEof) {
  ServerThread srv(SocketAddress::loopback4(0), {}, echoInit());
  BlockingClient client(srv.address(), 10000ms);
  ASSERT_TRUE(client.connected());
  const std::string msg = test::randomBytes(8 << 20, 7);
  std::string back;
  bool eof = false;
  // Read on another thread while this one writes 8 MiB and then sends FIN.
  std::thread reader([&] { back = client.recvUntilEof(&eof); });
  ASSERT_TRUE(client.sendAll(msg));
  client.shutdownWrite();
  reader.join();
  EXPECT_TRUE(eof) << "server must close after delivering the reply";
  ASSERT_EQ(back.size(), msg.size());
  EXPECT_TRUE(back == msg);
}

// Sends a big reply on connect, then shutdown(): the queued reply must reach
// the client in full before its EOF.
class BigReplyThenShutdown final : public Handler {
 public:
  explicit BigReplyThenShutdown(std::string reply) : reply_(std::move(reply)) {}
  void onConnected(HandlerContext& ctx) override {
    ctx.write(reply_);
    ctx.shutdown();
    EXPECT_GT(ctx.connection().outputBytes(), 0u) << "the reply should not fit the socket buffers at once";
  }
  void onPeerHalfClosed(HandlerContext& ctx, PeerFin& fin) override { ctx.firePeerHalfClosed(fin); }

 private:
  std::string reply_;
};

TEST(EchoServer, ServerShutdownDeliversAQueuedEightMiBReply) {
  const std::string reply = test::randomBytes(8 << 20, 9);
  std::atomic<int> closedReason{-1};
  std::atomic<bool> queued{false};
  struct Watch final : Handler {
    std::atomic<int>* out;
    std::atomic<bool>* queued;
    Watch(std::atomic<int>* o, std::atomic<bool>* q) : out(o), queued(q) {}
    void onConnected(HandlerContext& ctx) override {
      ctx.fireConnected();  // the reply and the shutdown are queued when this returns
      *queued = ctx.connection().outputBytes() > 0;
    }
    void onClosed(HandlerContext& ctx, CloseReason r) override {
      *out = static_cast<int>(r);
      ctx.fireClosed(r);
    }
  };
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    c.pipeline().emplaceLast<Watch>(&closedReason, &queued);
    c.pipeline().emplaceLast<BigReplyThenShutdown>(reply);
  });
  BlockingClient client(srv.address(), 10000ms);
  ASSERT_TRUE(client.connected());
  // Read only once the server has queued the reply behind its shutdown.
  ASSERT_TRUE(test::eventually([&] { return queued.load(); }));
  bool eof = false;
  const std::string got = client.recvUntilEof(&eof);
  EXPECT_TRUE(eof);
  ASSERT_EQ(got.size(), reply.size());
  EXPECT_TRUE(got == reply);
  // Our FIN completes the server's shutdown.
  client.close();
  EXPECT_TRUE(
      test::eventually([&] { return closedReason.load() == static_cast<int>(CloseReason::Shutdown); }));
}

TEST(EchoServer, PeerFinWithPendingOutputIsDeliveredNotDropped) {
  // The client sends a request and FIN at once, then reads slowly; the
  // server's reply is far larger than the socket buffers.
  const std::string reply = test::randomBytes(4 << 20, 3);
  struct Replier final : Handler {
    const std::string* reply;
    explicit Replier(const std::string* r) : reply(r) {}
    void onData(HandlerContext& ctx, Buffer& in) override {
      in.retrieveAll();
      ctx.write(*reply);
    }
  };
  std::weak_ptr<Connection> conn;  // loop thread
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    conn = c.weak_from_this();
    c.pipeline().emplaceLast<Replier>(&reply);
  });
  BlockingClient client(srv.address(), 10000ms);
  ASSERT_TRUE(client.sendAll("GET"));
  client.shutdownWrite();
  // Read only once the FIN has reached the server's socket (a peek there
  // reads end-of-stream: "GET" is consumed) while the reply is queued.
  // Backpressure has paused reading, so keel itself has not seen it yet.
  auto finArrivedWhileQueued = [&] {
    bool yes = false;
    srv.runAndWait([&] {
      const auto c = conn.lock();
      char byte = 0;
      yes = c && c->outputBytes() > 0 && ::recv(c->socket().fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
    });
    return yes;
  };
  ASSERT_TRUE(test::eventually(finArrivedWhileQueued));
  bool eof = false;
  const std::string got = client.recvUntilEof(&eof);
  EXPECT_TRUE(eof);
  ASSERT_EQ(got.size(), reply.size());
  EXPECT_TRUE(got == reply);
}

TEST(EchoServer, AbortResetsThePeerAndLeavesNoTimeWait) {
  std::atomic<bool> aborted{false};
  struct AbortOnData final : Handler {
    std::atomic<bool>* flag;
    explicit AbortOnData(std::atomic<bool>* f) : flag(f) {}
    void onData(HandlerContext& ctx, Buffer& in) override {
      in.retrieveAll();
      ctx.connection().abort();
      *flag = true;
    }
  };
  ServerThread srv(SocketAddress::loopback4(0), {},
                   [&](Connection& c) { c.pipeline().emplaceLast<AbortOnData>(&aborted); });
  BlockingClient client(srv.address());
  const std::uint16_t clientPort = client.localAddress().port();
  ASSERT_TRUE(client.sendAll("x"));
  ASSERT_TRUE(test::eventually([&] { return aborted.load(); }));
  bool eof = false;
  int err = 0;
  (void)client.recvUntilEof(&eof, &err);
  EXPECT_FALSE(eof);
  EXPECT_EQ(err, ECONNRESET);
  client.close();
  // Real time must pass: TIME_WAIT is the kernel's, and "none appeared" has
  // no event to wait for. A graceful close would reach TIME_WAIT one
  // loopback round trip after the close; this is many of those.
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(test::countTimeWait(clientPort, srv.address().port()), 0)
      << "a reset leaves no TIME_WAIT on either side";
}

TEST(EchoServer, GracefulCloseByTheServerPutsTimeWaitOnTheServerSide) {
  struct CloseOnData final : Handler {
    void onData(HandlerContext& ctx, Buffer& in) override {
      ctx.write(in.readable());
      in.retrieveAll();
      ctx.close();
    }
  };
  ServerThread srv(SocketAddress::loopback4(0), {},
                   [](Connection& c) { c.pipeline().emplaceLast<CloseOnData>(); });
  BlockingClient client(srv.address());
  const std::uint16_t clientPort = client.localAddress().port();
  ASSERT_TRUE(client.sendAll("bye"));
  bool eof = false;
  EXPECT_EQ(client.recvUntilEof(&eof), "bye");
  EXPECT_TRUE(eof);
  client.close();  // our FIN answers the server's
  // The active closer (the server) holds the TIME_WAIT; on loopback both
  // ends are local, so the entry shows the client's port as the remote one.
  EXPECT_TRUE(
      test::eventually([&] { return test::countTimeWait(clientPort, srv.address().port()) == 1; }, 2000ms));
}

TEST(EchoServer, Ipv6AndUnixDomain) {
  {
    ServerThread srv(SocketAddress::loopback6(0), {}, echoInit());
    BlockingClient client(srv.address());
    ASSERT_TRUE(client.connected()) << "IPv6 loopback unavailable?";
    EXPECT_EQ(client.echo("over ipv6"), "over ipv6");
  }
  {
    const std::string path = "/tmp/keel-echo-test-" + std::to_string(::getpid()) + ".sock";
    ::unlink(path.c_str());
    ServerThread srv(*SocketAddress::unixPath(path), {}, echoInit());
    BlockingClient client(srv.address());
    ASSERT_TRUE(client.connected());
    const std::string msg = test::randomBytes(1 << 20, 11);
    EXPECT_TRUE(client.echo(msg) == msg);
    ::unlink(path.c_str());
  }
  {
    auto addr = *SocketAddress::unixAbstract("keel-echo-test-" + std::to_string(::getpid()));
    ServerThread srv(addr, {}, echoInit());
    BlockingClient client(srv.address());
    ASSERT_TRUE(client.connected());
    EXPECT_EQ(client.echo("abstract"), "abstract");
  }
}

TEST(EchoServer, ThousandConcurrentConnectionsOnTwoLoops) {
  ServerOptions options;
  options.ioThreads = 2;
  ServerThread srv(SocketAddress::loopback4(0), options, echoInit());
  constexpr int kClients = 1000;
  std::vector<std::unique_ptr<BlockingClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<BlockingClient>(srv.address()));
    ASSERT_TRUE(clients.back()->connected()) << "client " << i;
  }
  EXPECT_TRUE(test::eventually([&] { return srv.server().connectionCount() == kClients; }));
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(clients[static_cast<std::size_t>(i)]->sendAll("client " + std::to_string(i) + ";"));
  }
  for (int i = 0; i < kClients; ++i) {
    const std::string expect = "client " + std::to_string(i) + ";";
    ASSERT_EQ(clients[static_cast<std::size_t>(i)]->recvExact(expect.size()), expect);
  }
  clients.clear();
  EXPECT_TRUE(test::eventually([&] { return srv.server().connectionCount() == 0; }));
  EXPECT_EQ(srv.server().stats().accepted, static_cast<std::uint64_t>(kClients));
}

TEST(EchoServer, SendFromFourThreadsAtOnceKeepsEachThreadsOrder) {
  std::promise<Connection::Ptr> connected;
  struct Capture final : Handler {
    std::promise<Connection::Ptr>* p;
    explicit Capture(std::promise<Connection::Ptr>* pp) : p(pp) {}
    void onConnected(HandlerContext& ctx) override { p->set_value(ctx.connection().shared_from_this()); }
  };
  ServerThread srv(SocketAddress::loopback4(0), {},
                   [&](Connection& c) { c.pipeline().emplaceLast<Capture>(&connected); });
  BlockingClient client(srv.address(), 10000ms);
  Connection::Ptr conn = connected.get_future().get();
  constexpr int kThreads = 4, kPerThread = 2000;
  std::vector<std::thread> senders;
  for (int t = 0; t < kThreads; ++t) {
    senders.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        char line[32];
        const int n = std::snprintf(line, sizeof line, "%d:%05d\n", t, i);
        EXPECT_TRUE(conn->send(std::string_view(line, static_cast<std::size_t>(n))));
      }
    });
  }
  for (auto& s : senders) s.join();
  const std::size_t expected = static_cast<std::size_t>(kThreads * kPerThread) * 8;
  const std::string all = client.recvExact(expected);
  ASSERT_EQ(all.size(), expected);
  std::vector<int> next(kThreads, 0);
  for (std::size_t pos = 0; pos < all.size(); pos += 8) {
    const int t = all[pos] - '0';
    ASSERT_GE(t, 0);
    ASSERT_LT(t, kThreads);
    EXPECT_EQ(std::stoi(all.substr(pos + 2, 5)), next[static_cast<std::size_t>(t)]++) << "thread " << t;
    ASSERT_EQ(all[pos + 7], '\n');
  }
  conn.reset();
}

TEST(EchoServer, GracefulStopShutsEveryConnectionDownAndCallsDone) {
  ServerThread srv(SocketAddress::loopback4(0), {}, echoInit());
  std::vector<std::unique_ptr<BlockingClient>> clients;
  for (int i = 0; i < 10; ++i) clients.push_back(std::make_unique<BlockingClient>(srv.address()));
  ASSERT_TRUE(test::eventually([&] { return srv.server().connectionCount() == 10; }));
  std::atomic<bool> done{false};
  srv.runAndWait([&] { srv.server().stop([&] { done = true; }); });
  // Each client sees the server's FIN, answers with its own, and the stop completes.
  for (auto& c : clients) {
    bool eof = false;
    (void)c->recvUntilEof(&eof);
    EXPECT_TRUE(eof);
    c->close();
  }
  EXPECT_TRUE(test::eventually([&] { return done.load(); }));
  EXPECT_EQ(srv.server().connectionCount(), 0u);
  // No longer accepting.
  BlockingClient late(srv.address(), 500ms);
  EXPECT_FALSE(late.connected() && late.sendAll("x") && late.recvExact(1) == "x");
}

TEST(EchoServer, ReusePortGivesEachLoopItsOwnListener) {
  ServerOptions options;
  options.ioThreads = 2;
  options.reusePort = true;
  std::mutex m;
  std::set<EventLoop*> loopsUsed;
  ServerThread srv(SocketAddress::loopback4(0), options, [&](Connection& c) {
    {
      std::lock_guard lock(m);
      loopsUsed.insert(&c.loop());
    }
    c.pipeline().emplaceLast<Echo>();
  });
  std::vector<std::unique_ptr<BlockingClient>> clients;
  for (int i = 0; i < 64; ++i) {
    clients.push_back(std::make_unique<BlockingClient>(srv.address()));
    ASSERT_EQ(clients.back()->echo("rp" + std::to_string(i)), "rp" + std::to_string(i));
  }
  std::lock_guard lock(m);
  // The kernel hashes connections over the two SO_REUSEPORT listeners; with
  // 64 distinct client ports both are all but certain to get some.
  EXPECT_EQ(loopsUsed.size(), 2u);
}

TEST(EchoServer, MaxConnectionsRefusesTheExtraOnesAndKeepsServingTheRest) {
  ServerOptions options;
  options.maxConnections = 5;
  ServerThread srv(SocketAddress::loopback4(0), options, echoInit());
  std::vector<std::unique_ptr<BlockingClient>> clients;
  for (int i = 0; i < 5; ++i) {
    clients.push_back(std::make_unique<BlockingClient>(srv.address()));
    ASSERT_EQ(clients.back()->echo("ok"), "ok");
  }
  BlockingClient extra(srv.address());
  bool eof = false;
  (void)extra.recvUntilEof(&eof);
  EXPECT_TRUE(eof) << "the sixth connection is closed at once";
  EXPECT_EQ(srv.server().stats().refusedFull, 1u);
  for (auto& c : clients) EXPECT_EQ(c->echo("still"), "still");
}

}  // namespace
}  // namespace keel
