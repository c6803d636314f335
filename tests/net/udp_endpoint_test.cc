// UdpEndpoint on real loopback sockets: echo over IPv4 and IPv6, a thousand
// datagrams intact and in order, truncation, connected endpoints, ICMP port
// unreachable, stats and bind errors. Every wait is bounded. Delivery within
// one batch (one recvmmsg per readiness, closing or re-binding from inside
// the callback) is udp_endpoint_batch_test.cc.
#include "keel/net/UdpEndpoint.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <poll.h>

#include "keel/core/EventLoop.h"
#include "keel/net/Socket.h"
#include "keel/net/SocketAddress.h"
#include "net/UdpTestLoop.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using namespace keel::test;  // net/UdpTestLoop.h

bool haveIpv6Loopback() {
  try {
    Socket s = keel::test::openUdp(AF_INET6);
    return !s.bind(SocketAddress::loopback6(0));
  } catch (const std::system_error&) {
    return false;
  }
}

struct Received {
  std::string data;
  SocketAddress from;
};

// Two endpoints on one loop: the client sends, the server echoes, the client's
// callback quits the loop. A guard timer quits it too, so a lost datagram
// fails the test instead of hanging it.
void echoRoundTrip(const SocketAddress& local) {
  EventLoop loop;
  UdpEndpoint server(loop, [](UdpEndpoint& self, std::span<const char> data, const SocketAddress& from) {
    EXPECT_FALSE(self.sendTo(data, from));
  });
  ASSERT_FALSE(server.bind(local));
  std::vector<Received> got;
  UdpEndpoint client(loop, [&](UdpEndpoint&, std::span<const char> data, const SocketAddress& from) {
    got.push_back({text(data), from});
    loop.quit();
  });
  ASSERT_FALSE(client.bind(local));
  ASSERT_NE(server.localAddress().port(), 0);
  EXPECT_EQ(server.localAddress().family(), local.family());

  ASSERT_FALSE(client.sendTo(bytes("hello, datagram"), server.localAddress()));
  bool timedOut = false;
  const TimerId guard = loop.runAfter(5s, [&] {
    timedOut = true;
    loop.quit();
  });
  loop.loop();
  loop.cancel(guard);

  ASSERT_FALSE(timedOut);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, "hello, datagram");
  EXPECT_EQ(got[0].from, server.localAddress());
  EXPECT_EQ(server.stats().datagramsIn, 1u);
  EXPECT_EQ(server.stats().datagramsOut, 1u);
  EXPECT_EQ(client.stats().datagramsOut, 1u);
  EXPECT_EQ(client.stats().datagramsIn, 1u);
}

TEST(UdpEndpoint, EchoRoundTripIpv4) { echoRoundTrip(SocketAddress::loopback4(0)); }

TEST(UdpEndpoint, EchoRoundTripIpv6) {
  if (!haveIpv6Loopback()) GTEST_SKIP() << "no IPv6 loopback";
  echoRoundTrip(SocketAddress::loopback6(0));
}

TEST(UdpEndpoint, ThousandRandomDatagramsArriveIntactAndInOrder) {
  constexpr std::size_t kCount = 1000;
  // Loopback drops silently when the receive buffer is full, so the sender
  // keeps at most this many datagrams in flight (well under 212 KB).
  constexpr std::size_t kWindow = 32;
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<std::size_t> sizeDist(1, 1400);
  std::uniform_int_distribution<int> byteDist(0, 255);
  std::vector<std::string> payloads(kCount);
  std::uint64_t totalBytes = 0;
  for (auto& p : payloads) {
    p.resize(sizeDist(rng));
    for (char& c : p) c = static_cast<char>(byteDist(rng));
    totalBytes += p.size();
  }

  EventLoop loop;
  UdpEndpoint sender(loop, {});
  ASSERT_FALSE(sender.bind(SocketAddress::loopback4(0)));
  std::size_t sent = 0;
  std::size_t received = 0;
  std::size_t mismatches = 0;
  std::size_t sendFailures = 0;
  SocketAddress target;
  auto pump = [&] {
    while (sent < kCount && sent - received < kWindow) {
      if (sender.sendTo(bytes(payloads[sent]), target)) {
        ++sendFailures;
        return;  // retried on the next delivery
      }
      ++sent;
    }
  };
  UdpEndpoint receiver(loop, [&](UdpEndpoint&, std::span<const char> data, const SocketAddress& from) {
    // Compared with the payload sent at this position: a lost, reordered or
    // damaged datagram shows up as a mismatch.
    if (received >= kCount || text(data) != payloads[received] || !(from == sender.localAddress()))
      ++mismatches;
    ++received;
    pump();
  });
  ASSERT_FALSE(receiver.bind(SocketAddress::loopback4(0)));
  target = receiver.localAddress();

  pump();
  ASSERT_TRUE(runUntil(
      loop, [&] { return received == kCount; }, 20s))
      << "received " << received;
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(sendFailures, 0u);
  EXPECT_EQ(receiver.stats().datagramsIn, kCount);
  EXPECT_EQ(receiver.stats().bytesIn, totalBytes);
  EXPECT_EQ(receiver.stats().truncated, 0u);
  EXPECT_EQ(sender.stats().datagramsOut, kCount);
  EXPECT_EQ(sender.stats().bytesOut, totalBytes);
}

TEST(UdpEndpoint, OversizedDatagramIsCountedAsTruncatedAndNotDelivered) {
  EventLoop loop;
  std::vector<std::string> got;
  UdpOptions options;
  options.maxDatagram = 100;
  UdpEndpoint receiver(
      loop,
      [&](UdpEndpoint&, std::span<const char> data, const SocketAddress&) { got.push_back(text(data)); },
      options);
  ASSERT_FALSE(receiver.bind(SocketAddress::loopback4(0)));
  UdpEndpoint sender(loop, {});
  ASSERT_FALSE(sender.bind(SocketAddress::loopback4(0)));

  const std::string tooBig(500, 'x');
  const std::string exact(100, 'y');  // exactly maxDatagram: fits
  const std::string normal(50, 'z');
  ASSERT_FALSE(sender.sendTo(bytes(tooBig), receiver.localAddress()));
  ASSERT_FALSE(sender.sendTo(bytes(exact), receiver.localAddress()));
  ASSERT_FALSE(sender.sendTo(bytes(normal), receiver.localAddress()));

  ASSERT_TRUE(runUntil(loop, [&] { return got.size() == 2; }));
  runFor(loop, 20ms);  // nothing else may show up, in particular no 100-byte prefix of tooBig
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], exact);
  EXPECT_EQ(got[1], normal);
  EXPECT_EQ(receiver.stats().truncated, 1u);
  EXPECT_EQ(receiver.stats().datagramsIn, 2u);
  EXPECT_EQ(receiver.stats().bytesIn, 150u);
  EXPECT_EQ(receiver.stats().receiveErrors, 0u);
}

TEST(UdpEndpoint, ConnectedEndpointSendsAndReceivesOnlyFromItsPeer) {
  EventLoop loop;
  std::vector<Received> atServer;
  UdpEndpoint server(loop, [&](UdpEndpoint& self, std::span<const char> data, const SocketAddress& from) {
    atServer.push_back({text(data), from});
    EXPECT_FALSE(self.sendTo(bytes("re:" + text(data)), from));
  });
  ASSERT_FALSE(server.bind(SocketAddress::loopback4(0)));

  std::vector<Received> atClient;
  UdpEndpoint client(loop, [&](UdpEndpoint&, std::span<const char> data, const SocketAddress& from) {
    atClient.push_back({text(data), from});
  });
  ASSERT_FALSE(client.connect(server.localAddress()));  // not bound: connect creates the socket
  ASSERT_TRUE(client.socket().valid());
  EXPECT_EQ(client.localAddress().family(), AF_INET);
  EXPECT_NE(client.localAddress().port(), 0);  // the kernel picked one

  // A third party's datagram is filtered by the kernel: the client is connected.
  UdpEndpoint stranger(loop, {});
  ASSERT_FALSE(stranger.bind(SocketAddress::loopback4(0)));
  ASSERT_FALSE(stranger.sendTo(bytes("intruder"), client.localAddress()));

  ASSERT_FALSE(client.send(bytes("ping")));
  ASSERT_TRUE(runUntil(loop, [&] { return !atClient.empty(); }));
  ASSERT_FALSE(client.send(bytes("pong")));
  ASSERT_TRUE(runUntil(loop, [&] { return atClient.size() == 2; }));
  runFor(loop, 20ms);

  ASSERT_EQ(atServer.size(), 2u);
  EXPECT_EQ(atServer[0].data, "ping");
  EXPECT_EQ(atServer[0].from, client.localAddress());
  ASSERT_EQ(atClient.size(), 2u);
  EXPECT_EQ(atClient[0].data, "re:ping");
  EXPECT_EQ(atClient[1].data, "re:pong");
  EXPECT_EQ(atClient[0].from, server.localAddress());
  EXPECT_EQ(client.stats().datagramsIn, 2u);  // the intruder never reached it
}

TEST(UdpEndpoint, PortUnreachableIsReportedOnALaterSendAndReadingContinues) {
  EventLoop loop;
  // A port nobody listens on: bind one, note it, close it.
  UdpEndpoint probe(loop, {});
  ASSERT_FALSE(probe.bind(SocketAddress::loopback4(0)));
  const SocketAddress deadPeer = probe.localAddress();
  probe.close();

  std::vector<std::string> got;
  UdpEndpoint client(loop, [&](UdpEndpoint&, std::span<const char> data, const SocketAddress&) {
    got.push_back(text(data));
  });
  ASSERT_FALSE(client.connect(deadPeer));
  ASSERT_FALSE(client.send(bytes("anyone there?")));  // accepted; the ICMP error comes back asynchronously

  // The error makes the socket readable-with-error. The read path must take
  // it without spinning the loop and without counting a receive failure.
  const std::uint64_t before = loop.iterations();
  runFor(loop, 100ms);
  EXPECT_LT(loop.iterations() - before, 60u) << "the loop spun on EPOLLERR";
  EXPECT_EQ(client.stats().receiveErrors, 0u);
  EXPECT_FALSE(client.socket().takeError()) << "the read path should have taken the error from the socket";

  // ... and hand it to the next send, which does not send.
  const std::error_code ec = client.send(bytes("still there?"));
  EXPECT_EQ(ec, std::errc::connection_refused) << ec.message();
  EXPECT_EQ(client.stats().sendErrors, 1u);
  EXPECT_EQ(client.stats().datagramsOut, 1u);
  // Reported once: the send after that goes out again.
  // The peer comes back on the same port; reading on the same socket goes on.
  UdpEndpoint peer(loop, [](UdpEndpoint& self, std::span<const char> data, const SocketAddress& from) {
    EXPECT_FALSE(self.sendTo(data, from));
  });
  ASSERT_FALSE(peer.bind(deadPeer)) << "port " << deadPeer.port() << " was taken in the meantime";
  ASSERT_FALSE(client.send(bytes("back again")));
  ASSERT_TRUE(runUntil(loop, [&] { return !got.empty(); }));
  EXPECT_EQ(got[0], "back again");
  EXPECT_EQ(client.stats().datagramsIn, 1u);
  EXPECT_EQ(client.stats().datagramsOut, 2u);
  EXPECT_EQ(client.stats().sendErrors, 1u);
}

TEST(UdpEndpoint, PortUnreachableIsAlsoReportedWhenTheLoopHasNotRun) {
  // Without a loop iteration in between, the kernel itself fails the next send.
  EventLoop loop;
  UdpEndpoint probe(loop, {});
  ASSERT_FALSE(probe.bind(SocketAddress::loopback4(0)));
  const SocketAddress deadPeer = probe.localAddress();
  probe.close();

  UdpEndpoint client(loop, {});
  ASSERT_FALSE(client.connect(deadPeer));
  ASSERT_FALSE(client.send(bytes("1")));
  // The ICMP port-unreachable sets the socket's error, which poll reports
  // without clearing it: wait for that instead of for a margin.
  pollfd p{client.socket().fd(), 0, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1) << "no ICMP error arrived";
  ASSERT_NE(p.revents & POLLERR, 0);
  EXPECT_EQ(client.send(bytes("2")), std::errc::connection_refused);
  EXPECT_EQ(client.stats().sendErrors, 1u);
  runFor(loop, 20ms);  // nothing pending: the loop stays quiet
  EXPECT_EQ(client.stats().receiveErrors, 0u);
}

TEST(UdpEndpoint, StatsCountersMatch) {
  EventLoop loop;
  std::size_t calls = 0;
  UdpEndpoint rx(loop, [&](UdpEndpoint&, std::span<const char>, const SocketAddress&) { ++calls; });
  ASSERT_FALSE(rx.bind(SocketAddress::loopback4(0)));
  UdpEndpoint tx(loop, {});  // send-only: no callback
  ASSERT_FALSE(tx.bind(SocketAddress::loopback4(0)));

  const std::vector<std::size_t> sizes{0, 1, 10, 1000, 1472, 9000};  // a zero-length datagram is legal
  std::uint64_t total = 0;
  for (std::size_t size : sizes) {
    const std::string payload(size, 'p');
    ASSERT_FALSE(tx.sendTo(bytes(payload), rx.localAddress()));
    total += size;
  }
  ASSERT_TRUE(runUntil(loop, [&] { return calls == sizes.size(); }));
  EXPECT_EQ(rx.stats().datagramsIn, sizes.size());
  EXPECT_EQ(rx.stats().bytesIn, total);
  EXPECT_EQ(tx.stats().datagramsOut, sizes.size());
  EXPECT_EQ(tx.stats().bytesOut, total);

  // A send-only endpoint still counts what reaches it.
  ASSERT_FALSE(rx.sendTo(bytes("12345"), tx.localAddress()));
  ASSERT_TRUE(runUntil(loop, [&] { return tx.stats().datagramsIn == 1; }));
  EXPECT_EQ(tx.stats().bytesIn, 5u);

  // Failures count as sendErrors and nothing else.
  const std::string huge(70000, 'h');
  EXPECT_EQ(tx.sendTo(bytes(huge), rx.localAddress()), std::errc::message_size);
  EXPECT_EQ(tx.send(bytes("x")), std::errc::destination_address_required);  // not connected
  tx.close();
  tx.close();  // idempotent
  EXPECT_EQ(tx.sendTo(bytes("x"), rx.localAddress()), std::errc::bad_file_descriptor);
  EXPECT_EQ(tx.localAddress().family(), AF_UNSPEC);

  const UdpStats& s = tx.stats();
  EXPECT_EQ(s.sendErrors, 3u);
  EXPECT_EQ(s.datagramsOut, sizes.size());
  EXPECT_EQ(s.bytesOut, total);
  EXPECT_EQ(s.truncated, 0u);
  EXPECT_EQ(s.receiveErrors, 0u);
  EXPECT_EQ(rx.stats().sendErrors, 0u);
  EXPECT_EQ(rx.stats().datagramsOut, 1u);
}

TEST(UdpEndpoint, BindToAnAddressInUseFailsAndLeavesTheEndpointClosed) {
  EventLoop loop;
  UdpEndpoint a(loop, {});
  ASSERT_FALSE(a.bind(SocketAddress::loopback4(0)));
  UdpEndpoint b(loop, {});
  const std::error_code ec = b.bind(a.localAddress());
  EXPECT_EQ(ec, std::errc::address_in_use) << ec.message();
  EXPECT_FALSE(b.socket().valid());
  EXPECT_EQ(b.localAddress().family(), AF_UNSPEC);
  EXPECT_FALSE(b.bind(SocketAddress::loopback4(0)));                            // may be retried
  EXPECT_EQ(a.bind(SocketAddress::loopback4(0)), std::errc::invalid_argument);  // already bound
}

TEST(UdpEndpoint, ReusePortLetsTwoEndpointsShareAPort) {
  EventLoop loop;
  UdpOptions options;
  options.reusePort = true;
  UdpEndpoint a(loop, {}, options);
  ASSERT_FALSE(a.bind(SocketAddress::loopback4(0)));
  EXPECT_TRUE(a.socket().reusePort());
  UdpEndpoint b(loop, {}, options);
  EXPECT_FALSE(b.bind(a.localAddress()));
  EXPECT_EQ(b.localAddress(), a.localAddress());
}

}  // namespace
}  // namespace keel
