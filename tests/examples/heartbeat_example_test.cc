// keel-heartbeat: the example's own client against its own server, both as
// child processes. The server is frozen with SIGSTOP (the kernel keeps the
// connection up and ACKs everything, only the application stops answering),
// killed with SIGKILL (its kernel closes the connection), or absent.
//
// (Named heartbeat_example_test, not heartbeat_test: tests/heartbeat/ already
// has a heartbeat_test binary.)
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>

#include "support/Child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

std::string bin() { return binaryPath("keel-heartbeat"); }

// A port on which nothing listens (bound, then released).
std::uint16_t closedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST(HeartbeatExample, ClientPrintsRttsThenPeerDeadWhenServerIsStopped) {
  Child server({bin(), "server", "--port", "0"});
  const std::uint16_t port = awaitListening(server);
  ASSERT_NE(port, 0) << server.stderrText();

  constexpr int kKeepalive = 300, kInterval = 200, kProbes = 3;
  Child client({bin(), "client", "--port", std::to_string(port), "--keepalive-ms", std::to_string(kKeepalive),
                "--interval-ms", std::to_string(kInterval), "--probes", std::to_string(kProbes)});
  auto line = client.readLine();
  ASSERT_TRUE(line.has_value()) << client.stderrText();
  EXPECT_EQ(line->rfind("connected to 127.0.0.1:", 0), 0u) << *line;

  // A PING after each keepalive period of silence, each answered: RTT lines.
  constexpr std::string_view rtt = "rtt {f} ms (smoothed {f} ms)";
  for (int i = 0; i < 3; ++i) {
    line = client.readLine();
    ASSERT_TRUE(line.has_value()) << "no RTT line " << i << "; " << client.stderrText();
    EXPECT_TRUE(matchFormat(*line, rtt)) << *line;
  }

  server.signal(SIGSTOP);
  // The server's kernel still ACKs the PINGs; only the missing PONGs tell.
  // Lines printed before the stop took effect may still be RTTs.
  constexpr std::string_view dead = "peer dead after {n} ms ({n} PINGs unanswered)";
  std::vector<std::string> m;
  for (;;) {
    line = client.readLine(20s);
    ASSERT_TRUE(line.has_value()) << "no 'peer dead' line; " << client.stderrText();
    if (matchFormat(*line, dead, &m)) break;
    ASSERT_TRUE(matchFormat(*line, rtt)) << "unexpected line: " << *line;
  }
  // A behaviour bound, not a timing figure: dead after the configured
  // silence (keepalive + interval * probes), give or take 2 s of scheduling.
  const int deadMs = std::stoi(m[0]);
  const int expected = kKeepalive + kInterval * kProbes;
  EXPECT_GE(deadMs, expected - 2000) << *line;
  EXPECT_LE(deadMs, expected + 2000) << *line;
  EXPECT_EQ(std::stoi(m[1]), kProbes);
  EXPECT_EQ(client.wait(), 3) << client.stderrText();

  EXPECT_EQ(server.terminate(), 0) << "the server, continued, stops cleanly on SIGTERM";
}

TEST(HeartbeatExample, NoServerIsAClearErrorNotExitThree) {
  Child client({bin(), "client", "--port", std::to_string(closedPort())});
  const auto st = client.wait();
  ASSERT_TRUE(st.has_value());
  EXPECT_NE(*st, 0);
  EXPECT_NE(*st, 3);
  const std::string err = client.stderrText();
  EXPECT_NE(err.find("cannot connect"), std::string::npos) << err;
  EXPECT_NE(err.find("refused"), std::string::npos) << err;
}

TEST(HeartbeatExample, ServerKilledIsNoticedAtOnceWithExitFour) {
  Child server({bin(), "server", "--port", "0"});
  const std::uint16_t port = awaitListening(server);
  ASSERT_NE(port, 0) << server.stderrText();
  // A keepalive of a minute: if the client ends within the wait below, the
  // heartbeat had nothing to do with it.
  Child client({bin(), "client", "--port", std::to_string(port), "--keepalive-ms", "60000"});
  const auto line = client.readLine();
  ASSERT_TRUE(line.has_value()) << client.stderrText();
  ASSERT_EQ(line->rfind("connected to", 0), 0u) << *line;
  server.signal(SIGKILL);
  EXPECT_EQ(server.wait(), 128 + SIGKILL);
  EXPECT_EQ(client.wait(20s), 4) << client.stderrText();
  EXPECT_NE(client.stderrText().find("server closed the connection"), std::string::npos)
      << client.stderrText();
}

TEST(HeartbeatExample, ClientStopsCleanlyOnSigterm) {
  Child server({bin(), "server", "--port", "0"});
  const std::uint16_t port = awaitListening(server);
  ASSERT_NE(port, 0) << server.stderrText();
  Child client({bin(), "client", "--port", std::to_string(port)});
  ASSERT_TRUE(client.readLine().has_value()) << client.stderrText();
  EXPECT_EQ(client.terminate(), 0) << client.stderrText();
  EXPECT_EQ(server.terminate(), 0);
}

TEST(HeartbeatExample, BadArgumentsAreRefused) {
  for (const char* probes : {"0", "-1", "many"}) {
    Child client({bin(), "client", "--port", "1", "--probes", probes});
    const auto st = client.wait();
    ASSERT_TRUE(st.has_value());
    EXPECT_NE(*st, 0);
    EXPECT_NE(*st, 3);
    EXPECT_NE(client.stderrText().find("--probes"), std::string::npos) << client.stderrText();
  }
  Child none({bin()});
  EXPECT_NE(none.wait(), 0) << "a subcommand is required";
}

}  // namespace
}  // namespace keel::test
