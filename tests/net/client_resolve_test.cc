// Client by host name and over several addresses: AddressRace's family
// interleaving and its race on loopback (a refused IPv6 address, a working
// IPv4 one), "localhost" on this machine and with both families in a
// private hosts file (the ::1 attempt is refused, 127.0.0.1 wins), an
// unknown name reported through ConnectFailed, and Happy Eyeballs past a
// black-holed first address in a network namespace: the client connects
// through the second address after the attempt delay, long before the first
// attempt's own timeout.
#include <gtest/gtest.h>

#include <thread>

#include "keel/net/internal/AddressRace.h"
#include "net/ClientFixture.h"
#include "net/ResolverIsolation.h"
#include "support/Netns.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using namespace keel::test;

SocketAddress v4(const char* host, std::uint16_t port) { return *SocketAddress::ipv4(host, port); }
SocketAddress v6(const char* host, std::uint16_t port) { return *SocketAddress::ipv6(host, port); }

// ---- AddressRace --------------------------------------------------------------------

TEST(AddressRace, InterleavesFamiliesStartingWithTheFirst) {
  const std::vector<SocketAddress> in = {v6("2001:db8::1", 1), v6("2001:db8::2", 1), v6("2001:db8::3", 1),
                                         v4("192.0.2.1", 1), v4("192.0.2.2", 1)};
  const std::vector<SocketAddress> want = {v6("2001:db8::1", 1), v4("192.0.2.1", 1), v6("2001:db8::2", 1),
                                           v4("192.0.2.2", 1), v6("2001:db8::3", 1)};
  EXPECT_EQ(AddressRace::interleave(in), want);
  const std::vector<SocketAddress> v4First = {v4("192.0.2.1", 1), v6("2001:db8::1", 1), v6("2001:db8::2", 1)};
  EXPECT_EQ(AddressRace::interleave({v4("192.0.2.1", 1), v6("2001:db8::1", 1), v6("2001:db8::2", 1)}),
            v4First);
  const std::vector<SocketAddress> same = {v4("192.0.2.2", 1), v4("192.0.2.1", 1)};
  EXPECT_EQ(AddressRace::interleave(same), same) << "one family: the order is kept";
  EXPECT_TRUE(AddressRace::interleave({}).empty());
}

TEST(AddressRace, ARefusedAddressPassesToTheNextAtOnce) {
  EventLoop loop;
  TestServer refusing(loop);
  if (!refusing.bind(SocketAddress::loopback6(0))) GTEST_SKIP() << "no IPv6 loopback here";
  TestServer server(loop);
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  // A long attempt delay: the second address can only start this soon
  // because the first failed.
  AddressRace race(loop, {.attemptDelay = 2s, .connectTimeout = 30s});
  std::optional<SocketAddress> winner;
  std::optional<std::error_code> lost;
  race.setWon([&](Socket s, const SocketAddress& peer) {
    EXPECT_TRUE(s.valid());
    winner = peer;
  });
  race.setLost([&](std::error_code ec) { lost = ec; });
  loop.runInLoop([&] { race.start({refusing.address(), server.address()}); });
  ASSERT_TRUE(runUntil(
      loop, [&] { return winner || lost; }, 1s))
      << "waited for the attempt delay";
  ASSERT_TRUE(winner) << lost->message();
  EXPECT_EQ(*winner, server.address());
  EXPECT_EQ(race.started(), 2u);
  EXPECT_FALSE(race.running());
}

TEST(AddressRace, LosesWithTheLastErrorWhenEveryAddressFails) {
  EventLoop loop;
  TestServer a(loop), b(loop);
  ASSERT_TRUE(a.bind(SocketAddress::loopback4(0)));
  ASSERT_TRUE(b.bind(SocketAddress::loopback4(0)));
  AddressRace race(loop, {});
  std::optional<std::error_code> lost;
  bool won = false;
  race.setWon([&](Socket, const SocketAddress&) { won = true; });
  race.setLost([&](std::error_code ec) { lost = ec; });
  loop.runInLoop([&] { race.start({a.address(), b.address()}); });
  ASSERT_TRUE(runUntil(loop, [&] { return lost.has_value(); }));
  EXPECT_FALSE(won);
  EXPECT_EQ(*lost, std::errc::connection_refused) << lost->message();
  EXPECT_EQ(race.started(), 2u);
}

// ---- Client by host name ------------------------------------------------------------

TEST(ClientResolve, ConnectsToLocalhostOnThisMachine) {
  EventLoop loop;
  TestServer server(loop);
  ASSERT_TRUE(server.start(SocketAddress::loopback4(0)));
  Seen seen;
  Client client(loop, "localhost", server.address().port());
  ASSERT_TRUE(client.host());
  EXPECT_EQ(client.host()->toString(), "localhost:" + std::to_string(server.address().port()));
  client.setPipelineInit(recordInto(seen, "by name"));
  std::vector<std::error_code> failures;
  client.setConnectFailed([&](std::error_code ec) { failures.push_back(ec); });
  client.connect();
  ASSERT_TRUE(runUntil(loop, [&] { return seen.data == "by name" || !failures.empty(); }));
  ASSERT_TRUE(failures.empty()) << failures[0].message();
  EXPECT_EQ(client.connection()->peerAddress(), server.address());
  EXPECT_EQ(client.attempts(), 1);
}

TEST(ClientResolve, LocalhostWithBothFamiliesTheRefusedIpv6AttemptLosesToIpv4) {
  IsolatedFiles files;
  files.hosts = "::1 localhost\n127.0.0.1 localhost\n";
  KEEL_RUN_ISOLATED(files, [] {
    EventLoop loop;
    TestServer server(loop);  // IPv4 only: [::1]:port refuses
    CHILD_CHECK(server.start(SocketAddress::loopback4(0)), "listen");
    ClientOptions options;
    options.attemptDelay = 2s;  // the IPv4 attempt can start early only because ::1 refused
    options.connectTimeout = 30s;
    Seen seen;  // outlives the client, whose destructor closes the connection
    Client client(loop, "localhost", server.address().port(), options);
    client.setPipelineInit(recordInto(seen, "v4 won"));
    std::vector<std::error_code> failures;
    client.setConnectFailed([&](std::error_code ec) { failures.push_back(ec); });
    client.connect();
    CHILD_CHECK(runUntil(
                    loop, [&] { return seen.data == "v4 won" || !failures.empty(); }, 1500ms),
                "not connected before the attempt delay");
    CHILD_CHECK(failures.empty(), failures[0].message());
    CHILD_CHECK(client.connection()->peerAddress() == server.address(),
                client.connection()->peerAddress().toString());
    CHILD_CHECK(client.attempts() == 1, std::to_string(client.attempts()));
    return std::string();
  });
}

TEST(ClientResolve, UnknownHostIsReportedThroughConnectFailed) {
  KEEL_RUN_ISOLATED(IsolatedFiles{}, [] {
    EventLoop loop;
    Client client(loop, "no-such-host.invalid", 80);
    std::vector<std::error_code> failures;
    std::vector<ClientState> states;
    client.setConnectFailed([&](std::error_code ec) {
      failures.push_back(ec);
      states.push_back(client.state());
    });
    client.connect();
    CHILD_CHECK(runUntil(loop, [&] { return !failures.empty(); }), "no failure reported");
    runFor(loop, 30ms);
    CHILD_CHECK(failures.size() == 1, std::to_string(failures.size()));
    CHILD_CHECK(failures[0] == ResolveError::HostNotFound, failures[0].message());
    CHILD_CHECK(states[0] == ClientState::Disconnected, std::string(toString(states[0])));
    return std::string();
  });
}

TEST(ClientResolve, AFailedLookupIsRetriedLikeARefusedConnect) {
  KEEL_RUN_ISOLATED(IsolatedFiles{}, [] {
    EventLoop loop;
    ClientOptions options = fastRetry();
    options.retryInitial = 5ms;
    options.maxAttempts = 3;
    Client client(loop, "no-such-host.invalid", 80, options);
    int failures = 0;
    client.setConnectFailed([&](std::error_code) { ++failures; });
    client.connect();
    CHILD_CHECK(runUntil(loop, [&] { return client.state() == ClientState::Disconnected && failures > 0; }),
                "did not give up");
    CHILD_CHECK(failures == 3, std::to_string(failures));
    CHILD_CHECK(client.attempts() == 3, std::to_string(client.attempts()));
    return std::string();
  });
}

// ---- Happy Eyeballs past a black hole -----------------------------------------------

// In namespace A of a veth pair, 198.18.0.9 is given a permanent neighbour
// entry with a MAC nobody has: SYNs to it leave through the veth and B drops
// them (not its MAC), so a connect to it neither completes nor fails.
TEST(ClientResolve, HappyEyeballsConnectsThroughTheSecondAddressWhileTheFirstHangs) {
  NetnsPair ns("khe");
  if (!ns.ok()) GTEST_SKIP() << ns.error();
  const auto [rc, out] = shell("ip -n " + ns.a() + " neigh replace 198.18.0.9 lladdr 02:00:00:00:00:99 dev " +
                               ns.a() + " nud permanent");
  if (rc != 0) GTEST_SKIP() << "cannot add a neighbour entry: " << out;

  std::string error;  // set by the thread in A
  bool blackholed = false;
  std::optional<SocketAddress> peer;
  std::vector<std::error_code> failures;
  int attempts = 0;
  std::thread inA([&] {
    if (!enterNetns(ns.a())) {
      error = "cannot enter " + ns.a();
      return;
    }
    // The precondition: a plain connect to the black hole stays in progress.
    Socket probe = openStream(AF_INET);
    if (probe.connect(v4("198.18.0.9", 9)) == std::errc::operation_in_progress) {
      pollfd p{probe.fd(), POLLOUT, 0};
      blackholed = ::poll(&p, 1, 300) == 0;
    }
    if (!blackholed) return;
    EventLoop loop;
    TestServer server(loop);
    if (!server.start(v4("198.18.0.1", 0))) {
      error = "listen on 198.18.0.1";
      return;
    }
    ClientOptions options;
    options.connectTimeout = 60s;  // far beyond the wait below: only the race can connect in time
    Seen seen;
    Client client(loop, {v4("198.18.0.9", server.address().port()), server.address()}, options);
    client.setPipelineInit(recordInto(seen, "around the hole"));
    client.setConnectFailed([&](std::error_code ec) { failures.push_back(ec); });
    client.connect();
    if (runUntil(loop, [&] { return seen.data == "around the hole" || !failures.empty(); }) &&
        client.connection()) {
      peer = client.connection()->peerAddress();
    }
    attempts = client.attempts();
  });
  inA.join();
  ASSERT_TRUE(error.empty()) << error;
  if (!blackholed) GTEST_SKIP() << "a connect to the neighbour without a host did not hang here";
  EXPECT_TRUE(failures.empty()) << failures[0].message();
  ASSERT_TRUE(peer) << "not connected";
  EXPECT_EQ(*peer, v4("198.18.0.1", peer->port()));
  EXPECT_EQ(attempts, 1);
}

}  // namespace
}  // namespace keel
