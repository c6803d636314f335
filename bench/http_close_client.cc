// keel-http-close: one HTTP request per connection, on keel's Client, for
// bench section 9's keep-alive against close-per-request rows.
//
//   keel-http-close --port P --seconds S [--close peer-first|local-first]
//                   [--warmup N] [--json]
//
// Each cycle connects, sends "GET / HTTP/1.1" with "Connection: close",
// reads the whole response (Content-Length), and then closes through
// Client::disconnect(). With ClientOptions::Close::PeerFirst the client
// does not send the first FIN: it waits for keel-http's (which answers a
// "Connection: close" request and then shuts its side down), so the
// TIME_WAIT entry lands on the server. With LocalFirst it closes as soon as
// the response is complete, racing the server's FIN. The bench counts the
// TIME_WAIT entries on each side; this program reports the cycles.
//
// Cycles run one after another (one connection at a time, like wrk -c1).
// Two latencies per cycle: the request (first byte written to the last
// byte of the response read) and the whole cycle (connect() to closed).
// Samples go into vectors reserved up front; the library allocates a
// Connection per cycle, which is what close-per-request costs anyway.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/core/Log.h>
#include <keel/net/Buffer.h>
#include <keel/net/Client.h>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kRequest = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
constexpr std::size_t kMaxSamples = std::size_t{1} << 20;

struct Cycle {
  Clock::time_point sent;
  bool replied = false;
  bool closed = false;
  bool bad = false;  // a response we could not parse, or a non-200
  std::int64_t requestNs = 0;
};

// Reads one response and hands the close to the Client.
class OneRequest final : public keel::Handler {
 public:
  OneRequest(keel::Client* client, Cycle* cycle) : client_(client), cycle_(cycle) {}
  [[nodiscard]] std::string_view name() const noexcept override { return "one-request"; }

  void onConnected(keel::HandlerContext& ctx) override {
    cycle_->sent = Clock::now();
    ctx.write(kRequest);
  }
  void onData(keel::HandlerContext&, keel::Buffer& in) override {
    if (cycle_->replied) return in.retrieveAll();
    const std::string_view v = in.view();
    const std::size_t head = v.find("\r\n\r\n");
    if (head == std::string_view::npos) return;  // the rest of the headers is still coming
    constexpr std::string_view kLength = "Content-Length: ";
    const std::size_t at = v.find(kLength);
    std::size_t body = 0;
    if (at != std::string_view::npos && at < head) {
      for (std::size_t i = at + kLength.size(); i < head && v[i] >= '0' && v[i] <= '9'; ++i)
        body = body * 10 + static_cast<std::size_t>(v[i] - '0');
    }
    if (v.size() < head + 4 + body) return;
    cycle_->requestNs =
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - cycle_->sent).count();
    cycle_->bad = !v.starts_with("HTTP/1.1 200");
    cycle_->replied = true;
    in.retrieveAll();
    client_->disconnect();  // LocalFirst: FIN now; PeerFirst: wait for the server's
  }
  void onClosed(keel::HandlerContext&, keel::CloseReason) override { cycle_->closed = true; }

 private:
  keel::Client* client_;
  Cycle* cycle_;
};

double percentileUs(const std::vector<std::int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  std::size_t idx = std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1);
  return static_cast<double>(sorted[idx]) / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-http-close: one request per connection on keel's Client"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  double seconds = 1.0;
  int warmup = 100;
  std::string close = "peer-first";
  bool json = false;
  app.add_option("--host", host, "numeric IPv4 address")->capture_default_str();
  app.add_option("--port", port, "keel-http's port")->required();
  app.add_option("--seconds", seconds, "timed run length")
      ->check(CLI::Range(0.05, 600.0))
      ->capture_default_str();
  app.add_option("--warmup", warmup, "untimed cycles first")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--close", close, "who sends the first FIN")
      ->check(CLI::IsMember({"peer-first", "local-first"}))
      ->capture_default_str();
  app.add_flag("--json", json, "print one JSON object on one line");
  CLI11_PARSE(app, argc, argv);
  auto addr = keel::SocketAddress::ipv4(host, port);
  if (!addr || port == 0) {
    std::fprintf(stderr, "keel-http-close: bad address %s:%u\n", host.c_str(), port);
    return 2;
  }
  keel::setLogLevel(spdlog::level::err);

  keel::EventLoop loop;
  keel::ClientOptions options;
  options.connectTimeout = 2s;
  options.close =
      close == "peer-first" ? keel::ClientOptions::Close::PeerFirst : keel::ClientOptions::Close::LocalFirst;
  options.peerCloseTimeout = 2s;
  keel::Client client(loop, *addr, options);
  Cycle cycle;
  int connectFailures = 0;
  std::string firstError;
  client.setConnectFailed([&](std::error_code ec) {
    ++connectFailures;
    if (firstError.empty()) firstError = ec.message();
    cycle.closed = true;
  });
  client.setPipelineInit([&](keel::Connection& c) { c.pipeline().emplaceLast<OneRequest>(&client, &cycle); });

  std::vector<std::int64_t> requestNs, cycleNs;
  requestNs.reserve(kMaxSamples);
  cycleNs.reserve(kMaxSamples);
  long long bad = 0, unanswered = 0, connections = 0;
  Clock::time_point timedStart{}, deadline{};
  for (long long i = 0;; ++i) {
    const bool timed = i >= warmup;
    const auto start = Clock::now();
    if (i == warmup) {
      timedStart = start;
      deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    }
    if (timed && (start >= deadline || cycleNs.size() == kMaxSamples)) break;
    cycle = Cycle{};
    ++connections;  // warm-up ones too: each leaves its TIME_WAIT somewhere
    client.connect();
    while (!cycle.closed) loop.runOnce(50ms);
    loop.runOnce(0ms);  // the client drops the closed connection at the end of that turn
    if (!timed) continue;
    if (!cycle.replied) {
      ++unanswered;
      continue;
    }
    if (cycle.bad) ++bad;
    requestNs.push_back(cycle.requestNs);
    cycleNs.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - timedStart).count();
  std::sort(requestNs.begin(), requestNs.end());
  std::sort(cycleNs.begin(), cycleNs.end());
  const double rps = static_cast<double>(cycleNs.size()) / elapsed;
  if (json) {
    std::printf(
        "{\"close\":\"%s\",\"connections\":%lld,\"requests\":%zu,\"seconds\":%.3f,\"rps\":%.1f,\"p50_us\":%."
        "3f,\"p99_us\":%.3f,"
        "\"cycle_p50_us\":%.3f,\"cycle_p99_us\":%.3f,\"bad_responses\":%lld,\"unanswered\":%lld,"
        "\"connect_failures\":%d,\"first_error\":\"%s\"}\n",
        close.c_str(), connections, cycleNs.size(), elapsed, rps, percentileUs(requestNs, 50),
        percentileUs(requestNs, 99), percentileUs(cycleNs, 50), percentileUs(cycleNs, 99), bad, unanswered,
        connectFailures, firstError.c_str());
  } else {
    std::printf(
        "keel-http-close %s: %zu requests in %.2f s, %.0f req/s; request p50 %.1f us p99 %.1f us; "
        "cycle p50 %.1f us p99 %.1f us\n",
        close.c_str(), cycleNs.size(), elapsed, rps, percentileUs(requestNs, 50), percentileUs(requestNs, 99),
        percentileUs(cycleNs, 50), percentileUs(cycleNs, 99));
  }
  // Failures are figures (reported above), not a reason to lose the run's output.
  return cycleNs.empty() ? 1 : 0;
}
