// A real Prometheus server scrapes keel-echo's /metrics, and the figures are
// queried back through Prometheus's HTTP API: the series survive a real
// scraper's parser, not only promtool's. Skipped when the prometheus binary
// (Debian's prometheus package) is not installed.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/Child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

// A port nothing listens on right now (bound, read, released): Prometheus
// cannot be asked for port 0 and then tell which one it got.
std::uint16_t freePort() {
  Socket s = openTcp(AF_INET);
  if (s.bind(SocketAddress::loopback4(0))) return 0;
  return s.localAddress().port();
}

std::string get(const std::string& url) {
  Child curl({"curl", "-sS", "--max-time", "5", url});
  std::string body = curl.readAll();
  (void)curl.wait();
  return body;
}

// A scratch directory, removed with everything in it.
struct ScratchDir {
  ScratchDir() : path(std::filesystem::temp_directory_path() / ("keel_prometheus_" + uniqueSuffix())) {
    std::filesystem::create_directories(path / "data");
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path path;
};

// The value of the first sample of an instant query, or "" while there is none.
std::string queryValue(std::uint16_t port, const std::string& query) {
  const auto j = nlohmann::json::parse(
      get("http://127.0.0.1:" + std::to_string(port) + "/api/v1/query?query=" + query), nullptr, false);
  if (j.is_discarded() || j.value("status", "") != "success") return {};
  const auto& result = j["data"]["result"];
  if (!result.is_array() || result.empty()) return {};
  return result[0]["value"][1].get<std::string>();
}

TEST(MetricsExamplesPrometheus, ARealPrometheusScrapesKeelEcho) {
  if (!haveTool("prometheus")) GTEST_SKIP() << "prometheus not installed (Debian package prometheus)";
  if (!haveTool("curl")) GTEST_SKIP() << "curl not installed (scripts/install-deps.sh)";
  Child echo({binaryPath("keel-echo"), "--port", "0", "--metrics-port", "0"});
  const std::uint16_t port = awaitListening(echo);
  const std::uint16_t metricsPort = awaitListening(echo);
  ASSERT_NE(metricsPort, 0) << echo.stderrText();
  constexpr int kConnections = 3;
  for (int i = 0; i < kConnections; ++i) {
    BlockingClient c(SocketAddress::loopback4(port));
    ASSERT_EQ(c.echo("ping"), "ping");
  }

  ScratchDir dir;
  const std::string config = (dir.path / "prometheus.yml").string();
  std::ofstream(config) << "global: {scrape_interval: 1s}\n"
                           "scrape_configs:\n"
                           "  - job_name: keel\n"
                           "    static_configs: [{targets: ['127.0.0.1:"
                        << metricsPort << "']}]\n";
  const std::uint16_t promPort = freePort();
  ASSERT_NE(promPort, 0);
  Child prometheus(
      {"prometheus", "--config.file=" + config, "--storage.tsdb.path=" + (dir.path / "data").string(),
       "--web.listen-address=127.0.0.1:" + std::to_string(promPort), "--log.level=warn"},
      ChildOptions{.stdinFile = {}, .stdoutToNull = true});
  ASSERT_TRUE(eventually([&] { return queryValue(promPort, "up") == "1"; }, 30s))
      << "Prometheus never scraped keel-echo: " << prometheus.stderrText();
  EXPECT_TRUE(eventually(
      [&] { return queryValue(promPort, "keel_connections_accepted_total") == std::to_string(kConnections); },
      10s));
  EXPECT_TRUE(eventually(
      [&] {
        return queryValue(promPort, "keel_connections_closed_total%7Breason%3D%22peer-closed%22%7D") ==
               std::to_string(kConnections);
      },
      10s));
  EXPECT_EQ(queryValue(promPort, "count(keel_loop_busy_seconds_total)"), "1") << "one loop with --threads 0";
  prometheus.terminate();
  EXPECT_EQ(echo.terminate(), 0);
}

}  // namespace
}  // namespace keel::test
