// TcpTuning on real sockets: each profile's options read back with
// getsockopt on the server's accepted socket, QUICKACK re-armed on every
// read, profiles switched at run time, coalescing under Latency, corking
// under Throughput, Unix-domain sockets left alone, failures counted. It
// also makes the Nagle + delayed-ACK stall visible as behaviour: a client
// with Nagle on that writes a request in two pieces waits for the server's
// delayed ACK on the Kernel profile, and does not on the Latency profile.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/TcpTuning.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::BlockingClient;
using test::ServerThread;

// Options of the server's accepted socket, read back with getsockopt.
struct Options {
  bool noDelay = false;
  bool cork = false;
  bool quickAck = false;
  bool coalesce = false;
};

class Echo final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    ctx.write(in.readable());
    in.retrieveAll();
  }
};

class Sink final : public Handler {
 public:
  void onData(HandlerContext&, Buffer& in) override { in.retrieveAll(); }
};

// One server, one connection, TcpTuning first; `app` is the handler after it.
template <class App, class... Args>
struct Fixture {
  std::weak_ptr<Connection> conn;
  std::unique_ptr<ServerThread> srv;

  explicit Fixture(TcpProfile profile, Args... args)
      : Fixture(SocketAddress::loopback4(0), profile, args...) {}
  Fixture(SocketAddress listen, TcpProfile profile, Args... args) {
    srv = std::make_unique<ServerThread>(listen, ServerOptions{}, [=, this](Connection& c) {
      conn = c.weak_from_this();
      c.pipeline().emplaceLast<TcpTuning>(profile);
      c.pipeline().emplaceLast<App>(args...);
    });
  }
  // Runs f(conn, tuning) on the loop once the connection exists.
  template <class F>
  void onLoop(F f) {
    // conn is written on the loop thread, so it is read there too.
    ASSERT_TRUE(test::eventually([&] {
      bool yes = false;
      srv->runAndWait([&] { yes = !conn.expired(); });
      return yes;
    }));
    srv->runAndWait([&] {
      if (auto c = conn.lock()) f(*c, *c->pipeline().find<TcpTuning>());
    });
  }
  Options options() {
    Options o;
    onLoop([&](Connection& c, TcpTuning&) {
      o.noDelay = c.socket().noDelay();
      o.cork = c.socket().cork();
      o.quickAck = c.socket().quickAck();
      o.coalesce = c.options().coalesceWrites;
    });
    return o;
  }
  std::uint64_t reads() {
    std::uint64_t n = 0;
    onLoop([&](Connection& c, TcpTuning&) { n = c.stats().reads; });
    return n;
  }
};

TEST(TcpTuning, KernelProfileLeavesNagleOnCorkOffAndCoalescingOff) {
  Fixture<Echo> fx(TcpProfile::Kernel);
  BlockingClient client(fx.srv->address());
  EXPECT_EQ(client.echo("hello"), "hello");
  const Options o = fx.options();
  EXPECT_FALSE(o.noDelay);
  EXPECT_FALSE(o.cork);
  EXPECT_FALSE(o.coalesce);
  fx.onLoop([](Connection&, TcpTuning& t) {
    EXPECT_EQ(t.profile(), TcpProfile::Kernel);
    EXPECT_TRUE(t.tcp());
    EXPECT_EQ(t.quickAcksArmed(), 0u);
    EXPECT_EQ(t.optionFailures(), 0u);
  });
}

TEST(TcpTuning, LatencyProfileSetsNoDelayCoalescesAndRearmsQuickAckAfterEveryRead) {
  Fixture<Sink> fx(TcpProfile::Latency);
  BlockingClient client(fx.srv->address());
  client.setNoDelay(true);
  // Separate reads: wait for each message to be read before sending the next.
  for (std::uint64_t i = 1; i <= 10; ++i) {
    ASSERT_TRUE(client.sendAll("ping"));
    ASSERT_TRUE(test::eventually([&] { return fx.reads() >= i; }));
  }
  const Options o = fx.options();
  EXPECT_TRUE(o.noDelay);
  EXPECT_FALSE(o.cork);
  EXPECT_TRUE(o.coalesce);
  // Nothing was sent back, so nothing put the socket back into delayed-ACK
  // (ping-pong) mode since the last re-arm.
  EXPECT_TRUE(o.quickAck);
  fx.onLoop([](Connection& c, TcpTuning& t) {
    EXPECT_GE(c.stats().reads, 10u);
    EXPECT_EQ(t.quickAcksArmed(), c.stats().reads) << "one re-arm per read, not once";
    EXPECT_EQ(t.optionFailures(), 0u);
  });
}

// Many one-byte writes from a single onData.
class Chatty final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    for (char c : in.view()) ctx.write(std::string_view(&c, 1));
    in.retrieveAll();
  }
};

TEST(TcpTuning, LatencyCoalescesTheWritesOfOneIterationIntoOneSend) {
  Fixture<Chatty> fx(TcpProfile::Latency);
  BlockingClient client(fx.srv->address());
  EXPECT_EQ(client.echo("abcdefghijklmnop"), "abcdefghijklmnop");
  fx.onLoop([](Connection& c, TcpTuning&) {
    EXPECT_EQ(c.stats().writes, 1u) << "sixteen writes in one iteration must leave as one send";
  });
}

// Writes in two pieces and records the cork state in between; with
// `flushBetween`, flushes after the first piece.
struct CorkProbe {
  std::atomic<int> corkedAfterFirstWrite{-1};
  std::atomic<int> corkedAfterFlush{-1};
};

class CorkWatcher final : public Handler {
 public:
  CorkWatcher(CorkProbe* probe, bool flushBetween) : probe_(probe), flushBetween_(flushBetween) {}
  void onData(HandlerContext& ctx, Buffer& in) override {
    if (in.view() == "quiet") {  // answers nothing: no cork needed
      in.retrieveAll();
      return;
    }
    ctx.write("head:");
    probe_->corkedAfterFirstWrite = ctx.connection().socket().cork() ? 1 : 0;
    if (flushBetween_) {
      ctx.flush();
      probe_->corkedAfterFlush = ctx.connection().socket().cork() ? 1 : 0;
    }
    ctx.write(in.readable());
    in.retrieveAll();
  }

 private:
  CorkProbe* probe_;
  bool flushBetween_;
};

TEST(TcpTuning, ThroughputCorksTheDispatchsWritesAndUncorksWhenItReturns) {
  CorkProbe probe;
  Fixture<CorkWatcher, CorkProbe*, bool> fx(TcpProfile::Throughput, &probe, false);
  BlockingClient client(fx.srv->address());
  ASSERT_TRUE(client.sendAll("body"));
  EXPECT_EQ(client.recvExact(9), "head:body");
  EXPECT_EQ(probe.corkedAfterFirstWrite.load(), 1) << "corked while the answer is being written";
  const Options o = fx.options();
  EXPECT_FALSE(o.cork) << "uncorked once the dispatch returned";
  EXPECT_FALSE(o.noDelay) << "Nagle stays on";
  EXPECT_FALSE(o.coalesce);
  // A read that writes nothing costs no cork.
  ASSERT_TRUE(client.sendAll("quiet"));
  ASSERT_TRUE(test::eventually([&] { return fx.reads() == 2; }));
  fx.onLoop([](Connection&, TcpTuning& t) {
    EXPECT_EQ(t.corks(), 1u);
    EXPECT_EQ(t.optionFailures(), 0u);
  });
}

TEST(TcpTuning, ThroughputUncorksOnAnExplicitFlush) {
  CorkProbe probe;
  Fixture<CorkWatcher, CorkProbe*, bool> fx(TcpProfile::Throughput, &probe, true);
  BlockingClient client(fx.srv->address());
  ASSERT_TRUE(client.sendAll("body"));
  EXPECT_EQ(client.recvExact(9), "head:body");
  EXPECT_EQ(probe.corkedAfterFirstWrite.load(), 1);
  EXPECT_EQ(probe.corkedAfterFlush.load(), 0);
  EXPECT_FALSE(fx.options().cork);
}

TEST(TcpTuning, SwitchingProfileAtRunTimeChangesTheOptions) {
  Fixture<Echo> fx(TcpProfile::Kernel);
  BlockingClient client(fx.srv->address());
  EXPECT_EQ(client.echo("x"), "x");
  Options o = fx.options();
  EXPECT_FALSE(o.noDelay);
  EXPECT_FALSE(o.coalesce);

  fx.onLoop([](Connection&, TcpTuning& t) { t.setProfile(TcpProfile::Latency); });
  o = fx.options();
  EXPECT_TRUE(o.noDelay);
  EXPECT_TRUE(o.coalesce);
  const std::uint64_t before = fx.reads();
  EXPECT_EQ(client.echo("y"), "y");
  fx.onLoop([&](Connection& c, TcpTuning& t) { EXPECT_EQ(t.quickAcksArmed(), c.stats().reads - before); });

  fx.onLoop([](Connection&, TcpTuning& t) { t.setProfile(TcpProfile::Throughput); });
  o = fx.options();
  EXPECT_FALSE(o.noDelay);
  EXPECT_FALSE(o.coalesce);
  EXPECT_FALSE(o.cork);
  std::uint64_t armed = 0;
  fx.onLoop([&](Connection&, TcpTuning& t) { armed = t.quickAcksArmed(); });
  EXPECT_EQ(client.echo("z"), "z");
  fx.onLoop([&](Connection&, TcpTuning& t) {
    EXPECT_EQ(t.quickAcksArmed(), armed) << "no re-arming outside Latency";
    EXPECT_EQ(t.corks(), 1u);
  });

  fx.onLoop([](Connection&, TcpTuning& t) { t.setProfile(TcpProfile::Kernel); });
  o = fx.options();
  EXPECT_FALSE(o.noDelay);
  EXPECT_FALSE(o.cork);
  EXPECT_FALSE(o.coalesce);

  // Removing the handler leaves the Kernel profile behind.
  fx.onLoop([](Connection& c, TcpTuning& t) {
    t.setProfile(TcpProfile::Latency);
    EXPECT_TRUE(c.pipeline().remove<TcpTuning>());
    EXPECT_FALSE(c.socket().noDelay());
    EXPECT_FALSE(c.options().coalesceWrites);
  });
  EXPECT_EQ(client.echo("still works"), "still works");
}

TEST(TcpTuning, UnixDomainSocketsSkipTcpOptionsButStillCoalesce) {
  const std::string path = "/tmp/keel-tcp-tuning-test-" + std::to_string(::getpid()) + ".sock";
  ::unlink(path.c_str());
  {
    Fixture<Chatty> fx(*SocketAddress::unixPath(path), TcpProfile::Latency);
    BlockingClient client(fx.srv->address());
    ASSERT_TRUE(client.connected());
    EXPECT_EQ(client.echo("over unix"), "over unix");
    fx.onLoop([](Connection& c, TcpTuning& t) {
      EXPECT_FALSE(t.tcp());
      EXPECT_EQ(t.optionFailures(), 0u) << "skipped, not failed";
      EXPECT_EQ(t.quickAcksArmed(), 0u);
      EXPECT_TRUE(c.options().coalesceWrites);
      EXPECT_EQ(c.stats().writes, 1u);
      t.setProfile(TcpProfile::Throughput);
      EXPECT_EQ(t.optionFailures(), 0u);
    });
    EXPECT_EQ(client.echo("corked?"), "corked?");
    fx.onLoop([](Connection&, TcpTuning& t) {
      EXPECT_EQ(t.corks(), 0u);
      EXPECT_EQ(t.optionFailures(), 0u);
    });
  }
  ::unlink(path.c_str());
}

TEST(TcpTuning, AFailingSetsockoptIsCountedNotIgnored) {
  // A UDP socket claims to be inet, so the TCP options are tried, and the
  // kernel refuses them (ENOPROTOOPT).
  EventLoop loop;
  Socket udp = keel::test::openUdp(AF_INET);
  ASSERT_FALSE(udp.bind(SocketAddress::loopback4(0)));
  ASSERT_FALSE(udp.connect(udp.localAddress()));
  auto conn = std::make_shared<Connection>(loop, std::move(udp), 1);
  TcpTuning& t = conn->pipeline().emplaceLast<TcpTuning>(TcpProfile::Latency);
  EXPECT_EQ(t.optionFailures(), 2u) << "TCP_NODELAY and TCP_QUICKACK";
  t.setProfile(TcpProfile::Kernel);
  EXPECT_EQ(t.optionFailures(), 4u) << "TCP_NODELAY and TCP_CORK";
}

// Answers a 20-byte request with its 20 bytes, only once all 20 are in.
class RequestReply final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    while (in.readableBytes() >= 20) {
      ctx.write(std::span<const char>(in.peek(), 20));
      in.retrieve(20);
    }
  }
};

// write(10 B), write(10 B), read(20 B) from a client with Nagle on: the
// second write waits until the first is acknowledged.
std::vector<double> exchanges(BlockingClient& client, int warmup, int count) {
  std::vector<double> ms;
  const std::string header(10, 'h');
  const std::string body(10, 'b');
  for (int i = 0; i < warmup + count; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!client.sendAll(header) || !client.sendAll(body)) break;
    if (client.recvExact(20).size() != 20) break;
    const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - t0;
    if (i >= warmup) ms.push_back(took.count());
  }
  return ms;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? -1 : v[v.size() / 2];
}

TEST(TcpTuning, NagleAndDelayedAckStallOnKernelProfileIsGoneOnLatencyProfile) {
  // One connection: first on the Kernel profile, then switched at run time
  // to Latency. The client is the same throughout and keeps Nagle on: the
  // server alone rescues a client it does not control.
  Fixture<RequestReply> fx(TcpProfile::Kernel);
  BlockingClient client(fx.srv->address());
  ASSERT_TRUE(client.connected());
  // A fresh connection starts in quick-ack mode; the warm-up leaves it.
  const std::vector<double> kernel = exchanges(client, 4, 8);
  ASSERT_EQ(kernel.size(), 8u);

  fx.onLoop([](Connection&, TcpTuning& t) { t.setProfile(TcpProfile::Latency); });
  const std::vector<double> latency = exchanges(client, 2, 20);
  ASSERT_EQ(latency.size(), 20u);

  const double kernelMs = median(kernel);
  const double latencyMs = median(latency);
  std::printf("write(10)+write(10)+read(20), client Nagle on: Kernel p50 %.3f ms, Latency p50 %.3f ms\n",
              kernelMs, latencyMs);
  RecordProperty("kernel_p50_us", static_cast<int>(kernelMs * 1000));
  RecordProperty("latency_p50_us", static_cast<int>(latencyMs * 1000));
  EXPECT_LT(latencyMs, 10.0) << "QUICKACK re-armed after each read must release the client's second segment";
  fx.onLoop([](Connection&, TcpTuning& t) { EXPECT_GE(t.quickAcksArmed(), 22u); });
  if (kernelMs < 30.0) {
    GTEST_SKIP() << "the delayed-ACK stall did not reproduce on this kernel: Kernel profile p50 " << kernelMs
                 << " ms";
  }
  EXPECT_GE(kernelMs, 30.0);
}

}  // namespace
}  // namespace keel
