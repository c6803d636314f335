// UdpEndpoint delivery within one batch, on real loopback sockets: one
// recvmmsg per readiness leaves the rest for later iterations, and closing
// or re-binding from inside the message callback stops the rest of the
// batch. Every wait is bounded.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "keel/core/EventLoop.h"
#include "keel/net/SocketAddress.h"
#include "keel/net/UdpEndpoint.h"
#include "net/UdpTestLoop.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using namespace keel::test;  // net/UdpTestLoop.h

TEST(UdpEndpoint, OneRecvmmsgPerReadinessLeavesTheRestForLaterIterations) {
  EventLoop loop;
  UdpOptions options;
  options.batch = 4;
  std::size_t got = 0;
  UdpEndpoint rx(
      loop, [&](UdpEndpoint&, std::span<const char>, const SocketAddress&) { ++got; }, options);
  ASSERT_FALSE(rx.bind(SocketAddress::loopback4(0)));
  UdpEndpoint tx(loop, {});
  ASSERT_FALSE(tx.bind(SocketAddress::loopback4(0)));
  for (int i = 0; i < 10; ++i) ASSERT_FALSE(tx.sendTo(bytes("d"), rx.localAddress()));
  // Real time must pass: the test needs every datagram in the receive queue
  // before the first readiness, and a UDP socket tells how big its next
  // datagram is, never how many are queued. Loopback queues them during
  // sendto in practice; this is margin.
  std::this_thread::sleep_for(20ms);

  loop.runOnce(1s);
  EXPECT_EQ(got, 4u);  // one batch per readiness, not "until EAGAIN"
  loop.runOnce(1s);
  EXPECT_EQ(got, 8u);  // level-triggered: the rest is ready again
  ASSERT_TRUE(runUntil(loop, [&] { return got == 10; }));
}

TEST(UdpEndpoint, CloseInsideTheCallbackStopsDelivery) {
  EventLoop loop;
  std::size_t got = 0;
  UdpEndpoint rx(loop, [&](UdpEndpoint& self, std::span<const char>, const SocketAddress&) {
    ++got;
    self.close();  // the rest of the batch is not delivered
  });
  ASSERT_FALSE(rx.bind(SocketAddress::loopback4(0)));
  UdpEndpoint tx(loop, {});
  ASSERT_FALSE(tx.bind(SocketAddress::loopback4(0)));
  for (int i = 0; i < 5; ++i) ASSERT_FALSE(tx.sendTo(bytes("d"), rx.localAddress()));
  // Real time must pass: all five must be queued before the first readiness
  // (see OneRecvmmsgPerReadinessLeavesTheRestForLaterIterations above).
  std::this_thread::sleep_for(20ms);

  ASSERT_TRUE(runUntil(loop, [&] { return got == 1; }));
  runFor(loop, 20ms);
  EXPECT_EQ(got, 1u);
  EXPECT_FALSE(rx.socket().valid());

  // And it opens again.
  ASSERT_FALSE(rx.bind(SocketAddress::loopback4(0)));
  ASSERT_FALSE(tx.sendTo(bytes("again"), rx.localAddress()));
  ASSERT_TRUE(runUntil(loop, [&] { return got == 2; }));
}

TEST(UdpEndpoint, RebindInsideTheCallbackMovesToTheNewSocket) {
  EventLoop loop;
  std::vector<std::string> got;
  UdpEndpoint rx(loop, [&](UdpEndpoint& self, std::span<const char> data, const SocketAddress&) {
    got.push_back(text(data));
    if (got.size() == 1) {
      self.close();
      EXPECT_FALSE(self.bind(SocketAddress::loopback4(0)));
    }
  });
  ASSERT_FALSE(rx.bind(SocketAddress::loopback4(0)));
  const SocketAddress first = rx.localAddress();
  UdpEndpoint tx(loop, {});
  ASSERT_FALSE(tx.bind(SocketAddress::loopback4(0)));
  ASSERT_FALSE(tx.sendTo(bytes("one"), first));
  ASSERT_FALSE(tx.sendTo(bytes("two"), first));  // read with "one", dropped by the close
  // Real time must pass: "two" must be queued before the first readiness
  // (see OneRecvmmsgPerReadinessLeavesTheRestForLaterIterations above).
  std::this_thread::sleep_for(20ms);

  ASSERT_TRUE(runUntil(loop, [&] { return got.size() == 1; }));
  ASSERT_TRUE(rx.socket().valid());
  ASSERT_NE(rx.localAddress(), first);
  ASSERT_FALSE(tx.sendTo(bytes("three"), rx.localAddress()));
  ASSERT_TRUE(runUntil(loop, [&] { return got.size() == 2; }));
  runFor(loop, 20ms);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], "one");
  EXPECT_EQ(got[1], "three");
}

}  // namespace
}  // namespace keel
