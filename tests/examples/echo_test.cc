// keel-echo driven by real clients: socat, nc and the bench's keel-pingpong,
// each a separate process, plus plain sockets for the idle-timeout checks.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>
#include <nlohmann/json.hpp>

#include "support/Child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

std::string echoBin() { return binaryPath("keel-echo"); }

// A running keel-echo with the given extra arguments; port 0 when it failed.
struct EchoServer {
  explicit EchoServer(std::vector<std::string> extra) {
    std::vector<std::string> argv{echoBin(), "--port", "0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    child = std::make_unique<Child>(argv);
    port = awaitListening(*child, &line);
  }
  ~EchoServer() {
    if (child) {
      EXPECT_EQ(child->terminate(), 0) << "keel-echo did not stop cleanly on SIGTERM";
    }
  }
  std::unique_ptr<Child> child;
  std::uint16_t port = 0;
  std::string line;
};

TEST(EchoExample, PrintsListeningLineAndStopsCleanly) {
  EchoServer s({});
  ASSERT_NE(s.port, 0) << s.child->stderrText();
  EXPECT_EQ(s.line.rfind("keel-echo listening on 127.0.0.1:", 0), 0u) << s.line;
}

TEST(EchoExample, SocatRoundTripOfALine) {
  if (!haveTool("socat")) GTEST_SKIP() << "socat not installed (scripts/install-deps.sh)";
  EchoServer s({});
  ASSERT_NE(s.port, 0) << s.child->stderrText();
  Child socat({"socat", "-t", "2", "-", "TCP:127.0.0.1:" + std::to_string(s.port)});
  ASSERT_TRUE(socat.write("hello keel\n"));
  EXPECT_EQ(socat.readLine(), "hello keel");
  ASSERT_TRUE(socat.write("second line\n"));
  EXPECT_EQ(socat.readLine(), "second line");
  socat.closeStdin();  // socat half-closes; the server finishes and closes
  EXPECT_EQ(socat.wait(), 0) << socat.stderrText();
}

TEST(EchoExample, NcRoundTripOfALine) {
  if (!haveTool("nc")) GTEST_SKIP() << "nc not installed (scripts/install-deps.sh)";
  EchoServer s({});
  ASSERT_NE(s.port, 0) << s.child->stderrText();
  // -N: shutdown(SHUT_WR) after stdin's EOF, so nc exits when the echo is back.
  Child nc({"nc", "-N", "127.0.0.1", std::to_string(s.port)});
  ASSERT_TRUE(nc.write("through netcat\n"));
  nc.closeStdin();
  EXPECT_EQ(nc.readAll(), "through netcat\n");
  EXPECT_EQ(nc.wait(), 0) << nc.stderrText();
}

TEST(EchoExample, PingpongClientCompletesWithCountCorrect) {
  const std::string pingpong = binaryPath("keel-pingpong");
  if (::access(pingpong.c_str(), X_OK) != 0) GTEST_SKIP() << pingpong << " not built (bench target)";
  for (const char* threads : {"0", "2"}) {
    EchoServer s({"--threads", threads});
    ASSERT_NE(s.port, 0) << s.child->stderrText();
    Child pp({pingpong, "--port", std::to_string(s.port), "--size", "64", "--count", "2000", "--warmup",
              "100", "--json"});
    const auto out = pp.readLine(60s);
    ASSERT_EQ(pp.wait(60s), 0) << pp.stderrText();
    ASSERT_TRUE(out.has_value());
    const auto j = nlohmann::json::parse(*out);
    EXPECT_EQ(j.at("count").get<int>(), 2000) << *out;
    EXPECT_EQ(j.at("size").get<int>(), 64);
    EXPECT_GT(j.at("p50_us").get<double>(), 0.0);
  }
}

TEST(EchoExample, IdleTimeoutClosesTheIdleConnectionOnly) {
  EchoServer s({"--idle-timeout-ms", "300"});
  ASSERT_NE(s.port, 0) << s.child->stderrText();
  const SocketAddress addr = SocketAddress::loopback4(s.port);
  BlockingClient idle(addr, 5000ms);
  BlockingClient active(addr, 5000ms);
  ASSERT_TRUE(idle.connected());
  ASSERT_TRUE(active.connected());
  // The active client talks every 50 ms for 1.5 s (five idle periods); every
  // byte must come back and its connection must stay open throughout.
  const auto until = std::chrono::steady_clock::now() + 1500ms;
  int rounds = 0;
  while (std::chrono::steady_clock::now() < until) {
    const std::string msg = "tick " + std::to_string(rounds++);
    ASSERT_TRUE(active.sendAll(msg));
    ASSERT_EQ(active.recvExact(msg.size()), msg) << "active connection lost at round " << rounds;
    std::this_thread::sleep_for(50ms);
  }
  // The idle one was closed by the server: read returns EOF (not a timeout).
  bool eof = false;
  int err = 0;
  EXPECT_EQ(idle.recvUntilEof(&eof, &err), "");
  EXPECT_TRUE(eof) << "idle connection not closed; errno " << err;
  ASSERT_TRUE(active.sendAll("still here"));
  EXPECT_EQ(active.recvExact(10), "still here");
}

TEST(EchoExample, EveryProfileIsAcceptedAndServes) {
  const std::string pingpong = binaryPath("keel-pingpong");
  const bool havePingpong = ::access(pingpong.c_str(), X_OK) == 0;
  for (const char* profile : {"kernel", "latency", "throughput"}) {
    SCOPED_TRACE(profile);
    EchoServer s({"--profile", profile});
    ASSERT_NE(s.port, 0) << s.child->stderrText();
    BlockingClient c(SocketAddress::loopback4(s.port));
    const std::string data = randomBytes(200'000, 7);
    EXPECT_EQ(c.echo(data), data);
    if (havePingpong) {
      // Write-write-read with Nagle on: an echo server answers the first
      // piece at once, so this completes under every profile.
      Child pp({pingpong, "--port", std::to_string(s.port), "--size", "20", "--count", "20", "--warmup", "0",
                "--mode", "wwr", "--nodelay", "0", "--json"});
      EXPECT_EQ(pp.wait(60s), 0) << pp.stderrText();
    }
  }
}

TEST(EchoExample, InvalidProfileIsRefusedWithAClearMessage) {
  Child bad({echoBin(), "--port", "0", "--profile", "fastest"});
  const auto status = bad.wait(10s);
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(*status, 0);
  const std::string err = bad.stderrText();
  EXPECT_NE(err.find("--profile"), std::string::npos) << err;
  EXPECT_NE(err.find("fastest"), std::string::npos) << err;
  EXPECT_NE(err.find("latency"), std::string::npos) << "the message should name the accepted values: " << err;
  EXPECT_EQ(bad.readAll(1s).find("listening"), std::string::npos);
}

TEST(EchoExample, UnixSocketWithSocat) {
  if (!haveTool("socat")) GTEST_SKIP() << "socat not installed (scripts/install-deps.sh)";
  const std::string path = "/tmp/keel-echo-test-" + std::to_string(::getpid()) + ".sock";
  {
    Child server({echoBin(), "--unix", path});
    const auto line = server.readLine(15s);
    ASSERT_TRUE(line.has_value()) << server.stderrText();
    EXPECT_NE(line->find("keel-echo listening on unix:" + path), std::string::npos) << *line;
    Child socat({"socat", "-t", "2", "-", "UNIX-CONNECT:" + path});
    ASSERT_TRUE(socat.write("over a unix socket\n"));
    EXPECT_EQ(socat.readLine(), "over a unix socket");
    socat.closeStdin();
    EXPECT_EQ(socat.wait(), 0) << socat.stderrText();
    EXPECT_EQ(server.terminate(), 0);
  }
  EXPECT_NE(::access(path.c_str(), F_OK), 0) << "the socket file should be removed on exit";
}

}  // namespace
}  // namespace keel::test
