// keel-pingpong-keel: keel-pingpong's twin built on keel itself (EventLoop,
// Client, a Handler), so the bench can put keel on both ends of the wire:
// "keel client -> keel-echo" next to the blocking client's rows.
//
//   keel-pingpong-keel --host 127.0.0.1 --port P --size N --count C
//                      [--warmup W] [--nodelay 0|1] [--mode echo|wwr] [--json]
//
// Same options, same checks and the same output (text or one JSON line) as
// keel-pingpong (bench/pingpong_client.cc). One connection, one request in
// flight: the handler writes the request, collects the reply from onData
// until N bytes are in, compares it, takes the time and writes the next one.
// The difference to the blocking client is the event loop on this side:
// every reply costs an epoll_wait wake-up here too.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/net/Buffer.h>
#include <keel/net/Client.h>
#include <keel/net/Connection.h>
#include <keel/net/Pipeline.h>
#include <keel/net/SocketAddress.h>

namespace {

constexpr std::int64_t kMaxSize = std::int64_t{1} << 20;  // as keel-pingpong

struct Plan {
  std::size_t size = 0;
  std::int64_t warmup = 0;
  std::int64_t count = 0;
  bool wwr = false;
  int nodelay = 1;
};

// Drives the ping-pong from the loop thread. Samples are preallocated: the
// steady state allocates nothing (the connection reads into the loop's
// scratch area and lends it to onData).
class PingPong final : public keel::Handler {
 public:
  PingPong(const Plan& plan, std::vector<std::int64_t>* samples, std::string* error)
      : plan_(plan), samples_(samples), error_(error), request_(plan.size), reply_(plan.size) {
    for (std::size_t i = 0; i < plan_.size; ++i) request_[i] = static_cast<char>('a' + i % 26);
  }
  [[nodiscard]] std::string_view name() const noexcept override { return "pingpong"; }

  void onConnected(keel::HandlerContext& ctx) override {
    if (auto ec = ctx.connection().socket().setNoDelay(plan_.nodelay == 1)) {
      fail(ctx, "TCP_NODELAY: " + ec.message());
      return;
    }
    sendNext(ctx);
  }

  void onData(keel::HandlerContext& ctx, keel::Buffer& in) override {
    const std::size_t take = std::min(in.readableBytes(), plan_.size - got_);
    std::memcpy(reply_.data() + got_, in.peek(), take);
    in.retrieve(take);
    got_ += take;
    if (got_ < plan_.size) return;
    const auto end = std::chrono::steady_clock::now();
    if (!in.empty()) return fail(ctx, "more bytes than the request came back");
    if (std::memcmp(request_.data(), reply_.data(), plan_.size) != 0)
      return fail(ctx, "reply " + std::to_string(done_) + " differs from the request");
    if (done_ >= plan_.warmup)
      samples_->push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start_).count());
    if (++done_ == plan_.warmup + plan_.count) {
      ctx.loop().quit();
      return;
    }
    sendNext(ctx);
  }

  void onClosed(keel::HandlerContext& ctx, keel::CloseReason reason) override {
    if (done_ < plan_.warmup + plan_.count && error_->empty())
      *error_ = "connection closed (" + std::string(keel::toString(reason)) + ") after " +
                std::to_string(done_) + " round trips";
    ctx.loop().quit();
  }

 private:
  void sendNext(keel::HandlerContext& ctx) {
    request_[0] = static_cast<char>(done_);  // a stale or shifted reply shows up in the compare
    got_ = 0;
    start_ = std::chrono::steady_clock::now();
    const std::size_t half = plan_.size / 2;
    if (plan_.wwr) {
      // Two writes: with coalescing off (the default) each is its own send().
      ctx.write(std::span<const char>(request_.data(), half));
      ctx.write(std::span<const char>(request_.data() + half, plan_.size - half));
    } else {
      ctx.write(std::span<const char>(request_.data(), plan_.size));
    }
  }
  void fail(keel::HandlerContext& ctx, std::string why) {
    *error_ = std::move(why);
    ctx.loop().quit();
  }

  Plan plan_;
  std::vector<std::int64_t>* samples_;
  std::string* error_;
  std::vector<char> request_;
  std::vector<char> reply_;
  std::size_t got_ = 0;
  std::int64_t done_ = 0;
  std::chrono::steady_clock::time_point start_;
};

double percentileUs(const std::vector<std::int64_t>& sorted, double p) {
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  std::size_t idx = std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1);
  return static_cast<double>(sorted[idx]) / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-pingpong-keel: ping-pong latency client on keel's event loop"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::int64_t size = 0;
  std::int64_t count = 0;
  std::int64_t warmup = 1000;
  int nodelay = 1;
  std::string mode = "echo";
  bool json = false;
  app.add_option("--host", host, "server address (numeric IPv4 or IPv6)")->capture_default_str();
  app.add_option("--port", port, "server TCP port")->required();
  app.add_option("--size", size, "bytes per request (and per reply)")->required();
  app.add_option("--count", count, "timed round trips")->required();
  app.add_option("--warmup", warmup, "untimed round trips first")->capture_default_str();
  app.add_option("--nodelay", nodelay, "TCP_NODELAY on the client socket (0|1)")->capture_default_str();
  app.add_option("--mode", mode, "echo: one write per request; wwr: two writes (halves), then read")
      ->capture_default_str();
  app.add_flag("--json", json, "print one JSON object on one line");
  CLI11_PARSE(app, argc, argv);

  auto fail = [](const char* msg, std::int64_t got) {
    std::fprintf(stderr, "keel-pingpong-keel: %s (got %lld)\n", msg, static_cast<long long>(got));
    return 2;
  };
  if (port == 0) return fail("--port must be in 1..65535", port);
  if (size < 1 || size > kMaxSize) return fail("--size must be in 1..1048576 bytes", size);
  if (count < 1) return fail("--count must be >= 1", count);
  if (warmup < 0) return fail("--warmup must be >= 0", warmup);
  if (nodelay != 0 && nodelay != 1) return fail("--nodelay must be 0 or 1", nodelay);
  if (mode != "echo" && mode != "wwr") {
    std::fprintf(stderr, "keel-pingpong-keel: --mode must be echo or wwr (got \"%s\")\n", mode.c_str());
    return 2;
  }
  if (mode == "wwr" && size < 2) return fail("--mode wwr needs --size >= 2 (two non-empty writes)", size);
  auto addr = host.find(':') != std::string::npos ? keel::SocketAddress::ipv6(host, port)
                                                  : keel::SocketAddress::ipv4(host, port);
  if (!addr) {
    std::fprintf(stderr, "keel-pingpong-keel: bad address %s\n", host.c_str());
    return 2;
  }

  const Plan plan{static_cast<std::size_t>(size), warmup, count, mode == "wwr", nodelay};
  std::vector<std::int64_t> samples;
  samples.reserve(static_cast<std::size_t>(count));
  std::string error;
  {
    keel::EventLoop loop;
    keel::Client client(loop, *addr);
    client.setPipelineInit(
        [&](keel::Connection& c) { c.pipeline().emplaceLast<PingPong>(plan, &samples, &error); });
    client.setConnectFailed([&](std::error_code ec) {
      error = "connect " + addr->toString() + ": " + ec.message();
      loop.quit();
    });
    client.connect();
    loop.loop();
  }
  if (!error.empty() || samples.size() != static_cast<std::size_t>(count)) {
    std::fprintf(stderr, "keel-pingpong-keel: %s\n", error.empty() ? "stopped early" : error.c_str());
    return 1;
  }

  double sum = 0;
  for (auto s : samples) sum += static_cast<double>(s);
  const double meanUs = sum / static_cast<double>(samples.size()) / 1000.0;
  std::sort(samples.begin(), samples.end());
  const double p50 = percentileUs(samples, 50), p90 = percentileUs(samples, 90),
               p99 = percentileUs(samples, 99), p999 = percentileUs(samples, 99.9),
               maxUs = static_cast<double>(samples.back()) / 1000.0;
  if (json) {
    std::printf(
        "{\"size\":%lld,\"count\":%lld,\"warmup\":%lld,\"mode\":\"%s\",\"nodelay\":%d,"
        "\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,\"p999_us\":%.3f,\"max_us\":%.3f,\"mean_us\":%.3f}"
        "\n",
        static_cast<long long>(size), static_cast<long long>(count), static_cast<long long>(warmup),
        mode.c_str(), nodelay, p50, p90, p99, p999, maxUs, meanUs);
  } else {
    std::printf("keel-pingpong-keel %s:%u size=%lld count=%lld warmup=%lld mode=%s nodelay=%d\n",
                host.c_str(), port, static_cast<long long>(size), static_cast<long long>(count),
                static_cast<long long>(warmup), mode.c_str(), nodelay);
    std::printf("  p50 %.2f us  p90 %.2f us  p99 %.2f us  p99.9 %.2f us  max %.2f us  mean %.2f us\n", p50,
                p90, p99, p999, maxUs, meanUs);
  }
  return 0;
}
