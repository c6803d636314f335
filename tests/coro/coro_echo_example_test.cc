// keel-echo --coroutine driven by real clients in this process, the server
// a separate process: round trips, a large echo under backpressure, the
// peer's FIN, and the idle reaper in front of the coroutine.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "support/Child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

struct CoroEcho {
  explicit CoroEcho(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{binaryPath("keel-echo"), "--port", "0", "--coroutine"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    child = std::make_unique<Child>(argv);
    port = awaitListening(*child, &line);
  }
  ~CoroEcho() {
    if (child) {
      EXPECT_EQ(child->terminate(), 0) << "keel-echo --coroutine did not stop cleanly on SIGTERM";
    }
  }
  [[nodiscard]] SocketAddress address() const { return SocketAddress::loopback4(port); }
  std::unique_ptr<Child> child;
  std::uint16_t port = 0;
  std::string line;
};

TEST(CoroEchoExample, RoundTripsFromSeveralClients) {
  CoroEcho s;
  ASSERT_NE(s.port, 0) << s.child->stderrText();
  std::vector<std::unique_ptr<BlockingClient>> clients;
  for (int i = 0; i < 8; ++i) {
    clients.push_back(std::make_unique<BlockingClient>(s.address()));
    ASSERT_TRUE(clients.back()->connected());
  }
  for (int round = 0; round < 20; ++round) {
    for (std::size_t i = 0; i < clients.size(); ++i) {
      const std::string msg = "client " + std::to_string(i) + " round " + std::to_string(round);
      EXPECT_EQ(clients[i]->echo(msg), msg);
    }
  }
}

TEST(CoroEchoExample, EchoesEightMegabytesIntact) {
  // Far above the 1 MiB high watermark: the coroutine's writes suspend while
  // the client is busy sending, and resume as it reads.
  CoroEcho s;
  ASSERT_NE(s.port, 0) << s.child->stderrText();
  BlockingClient client(s.address(), 20000ms);
  const std::string big = randomBytes(8 << 20, 3);
  EXPECT_TRUE(client.echo(big) == big);
}

TEST(CoroEchoExample, AnswersEverythingBeforeClosingAfterTheClientsFin) {
  CoroEcho s;
  ASSERT_NE(s.port, 0) << s.child->stderrText();
  BlockingClient client(s.address());
  ASSERT_TRUE(client.sendAll("last words"));
  client.shutdownWrite();
  bool eof = false;
  EXPECT_EQ(client.recvUntilEof(&eof), "last words");
  EXPECT_TRUE(eof);
}

TEST(CoroEchoExample, TheIdleReaperInFrontClosesAnIdleCoroutineConnection) {
  CoroEcho s({"--idle-timeout-ms", "100"});
  ASSERT_NE(s.port, 0) << s.child->stderrText();
  BlockingClient client(s.address());
  EXPECT_EQ(client.echo("ping"), "ping");
  bool eof = false;
  (void)client.recvUntilEof(&eof);
  EXPECT_TRUE(eof) << "the idle connection was not closed";
}

}  // namespace
}  // namespace keel::test
