// --metrics-port on the example servers, end to end: keel-echo with two I/O
// loops gets known traffic from real sockets (connections, bytes, closes),
// curl scrapes /metrics, and the figures must be what the test did;
// promtool (Debian's prometheus package) must accept what keel-echo,
// keel-http and keel-resp expose.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/Child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

// An example server started with --metrics-port 0: its port and the metrics port.
struct Example {
  Example(const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> argv{binaryPath(name), "--port", "0", "--metrics-port", "0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    child = std::make_unique<Child>(argv);
    port = awaitListening(*child);
    metricsPort = awaitListening(*child, &metricsLine);
  }
  ~Example() {
    if (child) {
      EXPECT_EQ(child->terminate(), 0) << child->stderrText();
    }
  }
  [[nodiscard]] std::string url() const {
    return "http://127.0.0.1:" + std::to_string(metricsPort) + "/metrics";
  }
  std::unique_ptr<Child> child;
  std::uint16_t port = 0;
  std::uint16_t metricsPort = 0;
  std::string metricsLine;
};

std::string scrape(const Example& e) {
  Child curl({"curl", "-sS", "--fail", "--max-time", "5", e.url()});
  std::string body = curl.readAll();
  EXPECT_EQ(curl.wait(), 0) << curl.stderrText();
  return body;
}

// The value of one sample line: `series` is the name with its labels, as
// exposed (keel_connections_closed_total{reason="peer-closed"}).
std::optional<double> sample(const std::string& text, const std::string& series) {
  const std::string key = series + " ";
  for (std::size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + 1)) {
    if (at != 0 && text[at - 1] != '\n') continue;
    return std::stod(text.substr(at + key.size(), text.find('\n', at) - at - key.size()));
  }
  return std::nullopt;
}

// promtool's verdict on `text`: empty when accepted, its complaint otherwise.
std::string promtoolComplaint(const std::string& text) {
  TempPath file("keel_metrics_scrape");
  std::ofstream(file.str()) << text;
  Child promtool({"promtool", "check", "metrics"}, ChildOptions{.stdinFile = file.str()});
  const std::string out = promtool.readAll();
  const auto rc = promtool.wait();
  if (rc == 0) return {};
  return "exit " + std::to_string(rc.value_or(-1)) + ": " + out + promtool.stderrText();
}

TEST(MetricsExamples, EchoFiguresMatchTheTrafficTheTestSent) {
  if (!haveTool("curl")) GTEST_SKIP() << "curl not installed (scripts/install-deps.sh)";
  Example echo("keel-echo", {"--threads", "2"});
  ASSERT_NE(echo.port, 0) << echo.child->stderrText();
  ASSERT_NE(echo.metricsPort, 0) << echo.child->stderrText();
  EXPECT_EQ(echo.metricsLine.rfind("keel-echo metrics listening on 127.0.0.1:", 0), 0u) << echo.metricsLine;

  constexpr int kConnections = 6, kClosed = 4;
  constexpr std::size_t kBytes = 10000;
  const std::string payload = randomBytes(kBytes);
  std::vector<std::unique_ptr<BlockingClient>> clients;
  for (int i = 0; i < kConnections; ++i) {
    clients.push_back(std::make_unique<BlockingClient>(SocketAddress::loopback4(echo.port)));
    ASSERT_TRUE(clients.back()->connected());
    ASSERT_EQ(clients.back()->echo(payload), payload);
  }
  for (int i = 0; i < kClosed; ++i) clients[static_cast<std::size_t>(i)]->close();

  std::string text;
  ASSERT_TRUE(eventually(
      [&] {
        text = scrape(echo);
        return sample(text, "keel_connections_closed_total{reason=\"peer-closed\"}") == kClosed;
      },
      10s))
      << text;
  EXPECT_EQ(sample(text, "keel_connections_accepted_total"), kConnections) << text;
  EXPECT_EQ(sample(text, "keel_connections_open"), kConnections - kClosed) << text;
  EXPECT_EQ(sample(text, "keel_connections_refused_total{cause=\"full\"}"), 0) << text;
  // Bytes are added when a connection closes: the four closed ones.
  EXPECT_EQ(sample(text, "keel_received_bytes_total"), kClosed * kBytes) << text;
  EXPECT_EQ(sample(text, "keel_sent_bytes_total"), kClosed * kBytes) << text;
  EXPECT_EQ(sample(text, "keel_connections_closed_total{reason=\"error\"}"), 0) << text;
  for (const char* loop : {"0", "1", "base"}) {
    const std::string l = std::string("{loop=\"") + loop + "\"}";
    EXPECT_GT(sample(text, "keel_loop_iterations_total" + l).value_or(0), 0) << loop << "\n" << text;
    EXPECT_GT(sample(text, "keel_loop_busy_seconds_total" + l).value_or(0), 0) << loop << "\n" << text;
    EXPECT_TRUE(sample(text, "keel_loop_lag_seconds" + l).has_value()) << loop << "\n" << text;
    EXPECT_TRUE(sample(text, "keel_loop_queued_tasks" + l).has_value()) << loop << "\n" << text;
  }
  EXPECT_TRUE(sample(text, "keel_time_wait_sockets").has_value()) << text;
}

TEST(MetricsExamples, HttpCountsEachRequestsConnection) {
  if (!haveTool("curl")) GTEST_SKIP() << "curl not installed (scripts/install-deps.sh)";
  Example http("keel-http", {});
  ASSERT_NE(http.metricsPort, 0) << http.child->stderrText();
  constexpr int kRequests = 3;
  for (int i = 0; i < kRequests; ++i) {
    Child curl({"curl", "-sS", "--fail", "--max-time", "5", "-o", "/dev/null",
                "http://127.0.0.1:" + std::to_string(http.port) + "/"});
    ASSERT_EQ(curl.wait(), 0) << curl.stderrText();
  }
  std::string text;
  ASSERT_TRUE(eventually(
      [&] {
        text = scrape(http);
        return sample(text, "keel_connections_open") == 0;
      },
      10s))
      << text;
  EXPECT_EQ(sample(text, "keel_connections_accepted_total"), kRequests) << text;
}

TEST(MetricsExamples, PromtoolAcceptsWhatEachExampleExposes) {
  if (!haveTool("curl")) GTEST_SKIP() << "curl not installed (scripts/install-deps.sh)";
  if (!haveTool("promtool"))
    GTEST_SKIP() << "promtool not installed (Debian package prometheus, scripts/install-deps.sh)";
  for (const char* name : {"keel-echo", "keel-http", "keel-resp"}) {
    Example e(name, {"--threads", "1"});
    ASSERT_NE(e.metricsPort, 0) << name << ": " << e.child->stderrText();
    BlockingClient c(SocketAddress::loopback4(e.port));  // one connection, so not everything is zero
    ASSERT_TRUE(c.connected());
    const std::string text = scrape(e);
    ASSERT_FALSE(text.empty()) << name;
    EXPECT_EQ(promtoolComplaint(text), "") << name << "\n" << text;
  }
}

}  // namespace
}  // namespace keel::test
