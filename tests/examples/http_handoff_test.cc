// keel-http restarted under load: `wrk` keeps loading it while a second
// keel-http --handoff PATH takes the listening sockets over; wrk must see no
// socket error and no non-2xx response, and the old process must exit 0
// once drained. Once with one loop, once with reuse-port loops (2 handing
// to 3). Plus: an idle keep-alive connection is closed by the drain, a
// request on a kept-alive connection after the handoff is answered with
// `Connection: close`, and keel-http serves a socket passed by systemd's
// socket activation (LISTEN_FDS) through a small sh launcher.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>

#include "support/Child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> httpArgs(const std::string& handoff, const std::vector<std::string>& extra) {
  std::vector<std::string> argv{binaryPath("keel-http"), "--port", "0", "--handoff", handoff};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

std::string url(std::uint16_t port) { return "http://127.0.0.1:" + std::to_string(port) + "/"; }

// Old keel-http under wrk; a new one takes over mid-run; the old one exits 0.
void handoffUnderLoad(const std::vector<std::string>& oldFlags, const std::vector<std::string>& newFlags,
                      int wrkThreads, int wrkConnections) {
  if (!haveTool("wrk")) GTEST_SKIP() << "wrk not installed (scripts/install-deps.sh)";
  TempPath path("keel_http_handoff");
  Child old(httpArgs(path.str(), oldFlags));
  const std::uint16_t port = awaitListening(old);
  ASSERT_NE(port, 0) << old.stderrText();
  Child wrk({"wrk", "-t" + std::to_string(wrkThreads), "-c" + std::to_string(wrkConnections), "-d4s",
             "--latency", url(port)});
  wrk.closeStdin();
  // Pacing, not synchronisation: the handoff should land in the middle of
  // the load, and nothing below depends on exactly when.
  std::this_thread::sleep_for(1500ms);
  Child successor(httpArgs(path.str(), newFlags));
  std::string line;
  ASSERT_EQ(awaitListening(successor, &line), port) << line << successor.stderrText();
  EXPECT_EQ(old.wait(15s), 0) << old.stderrText();
  const std::string report = wrk.readAll(20s);
  EXPECT_EQ(wrk.wait(10s), 0) << report;
  // The old one had live connections to drain, and the new one says whom it replaced.
  const std::string oldLog = old.stderrText();
  const auto draining = numberAfter(oldLog, "draining ");
  ASSERT_TRUE(draining.has_value()) << oldLog;
  EXPECT_GT(std::stoi(*draining), 0) << oldLog;
  EXPECT_NE(successor.stderrText().find("took over from pid"), std::string::npos) << successor.stderrText();
  // wrk's summary has "N requests in"; its error lines appear only when nonzero.
  ASSERT_NE(report.find(" requests in "), std::string::npos) << report;
  EXPECT_EQ(report.find("Socket errors"), std::string::npos) << report;
  EXPECT_EQ(report.find("Non-2xx"), std::string::npos) << report;
  std::printf("%s\n", report.c_str());
  // The successor serves on the same port, and stops cleanly.
  Child curl({"curl", "-s", url(port)});
  curl.closeStdin();
  EXPECT_EQ(curl.readAll(10s), "hello\n");
  EXPECT_EQ(successor.terminate(), 0) << successor.stderrText();
}

TEST(HttpHandoff, WrkSeesNoErrorsAcrossAHandoff) { handoffUnderLoad({}, {}, 1, 20); }

TEST(HttpHandoff, WrkSeesNoErrorsAcrossAHandoffOfReusePortLoops) {
  handoffUnderLoad({"--threads", "2", "--reuse-port"}, {"--threads", "3", "--reuse-port"}, 2, 40);
}

TEST(HttpHandoff, KeptAliveConnectionsCloseAfterTheirNextResponseOrWhenIdle) {
  TempPath path("keel_http_handoff");
  Child old(httpArgs(path.str(), {}));
  const std::uint16_t port = awaitListening(old);
  ASSERT_NE(port, 0) << old.stderrText();
  const std::string get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  BlockingClient busy(SocketAddress::loopback4(port)), idle(SocketAddress::loopback4(port));
  for (BlockingClient* c : {&busy, &idle}) {
    ASSERT_TRUE(c->sendAll(get));
    const std::string r = c->recvExact(std::string_view("HTTP/1.1 200 OK\r\n").size());
    ASSERT_EQ(r, "HTTP/1.1 200 OK\r\n");
  }
  // Drop the rest of both first responses (the head and "hello\n").
  auto restOfResponse = [](BlockingClient& c) {
    std::string got;
    while (got.find("\r\n\r\nhello\n") == std::string::npos) {
      const std::string b = c.recvExact(1);
      if (b.empty()) return got;
      got += b;
    }
    return got;
  };
  ASSERT_NE(restOfResponse(busy).find("hello"), std::string::npos);
  ASSERT_NE(restOfResponse(idle).find("hello"), std::string::npos);
  Child successor(httpArgs(path.str(), {}));
  ASSERT_EQ(awaitListening(successor), port) << successor.stderrText();
  // Wait for the old one to begin its drain before the busy client asks again.
  ASSERT_TRUE(eventually([&] { return old.stderrText().find("draining") != std::string::npos; }))
      << old.stderrText();
  ASSERT_TRUE(busy.sendAll(get));
  bool eof = false;
  const std::string last = busy.recvUntilEof(&eof);
  EXPECT_TRUE(eof);
  EXPECT_NE(last.find("HTTP/1.1 200 OK"), std::string::npos) << last;
  EXPECT_NE(last.find("Connection: close"), std::string::npos) << last;
  const std::string nothing = idle.recvUntilEof(&eof);  // closed by the drain's idle check
  EXPECT_TRUE(eof);
  EXPECT_EQ(nothing, "");
  busy.close();  // the server's graceful shutdowns wait for these FINs
  idle.close();
  EXPECT_EQ(old.wait(15s), 0) << old.stderrText();
  EXPECT_EQ(successor.terminate(), 0) << successor.stderrText();
}

TEST(HttpActivation, ServesTheSocketSystemdPassed) {
  if (!haveTool("curl")) GTEST_SKIP() << "curl not installed (scripts/install-deps.sh)";
  Socket listener = openTcp(AF_INET);
  ASSERT_FALSE(listener.bind(SocketAddress::loopback4(0)));
  ASSERT_FALSE(listener.listen());
  const std::uint16_t port = listener.localAddress().port();
  // Inherited by the launcher (no FD_CLOEXEC), and above 9 so that it is
  // never fd 3 itself (bash, not sh: dash takes single-digit fds only).
  Fd inherited(::fcntl(listener.fd(), F_DUPFD, 10));
  ASSERT_TRUE(inherited.valid());
  const std::string fd = std::to_string(inherited.get());
  // What systemd does before exec: the socket on fd 3, LISTEN_PID = the
  // process that will run keel-http (exec keeps the shell's pid). --port 1
  // would fail to bind as a user: serving proves it adopted instead.
  Child http({"bash", "-c",
              "exec 3<&" + fd + " " + fd +
                  "<&-; export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http; exec " +
                  binaryPath("keel-http") + " --port 1"});
  inherited.reset();
  ASSERT_EQ(awaitListening(http), port) << http.stderrText();
  EXPECT_NE(http.stderrText().find("1 socket(s) from systemd"), std::string::npos) << http.stderrText();
  Child curl({"curl", "-s", url(port)});
  curl.closeStdin();
  EXPECT_EQ(curl.readAll(10s), "hello\n");
  EXPECT_EQ(http.terminate(), 0) << http.stderrText();
}

}  // namespace
}  // namespace keel::test
