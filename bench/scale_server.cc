// keel-scale-server: the server side of bench section 4 (connection scale).
// Every accepted connection gets the pipeline a long-lived service would
// give it, [FrameCodec][Heartbeat][IdleReaper], and then stays idle: the
// only traffic is the heartbeat's PING/PONG (keel-scale-client answers).
//
//   keel-scale-server --port 0 [--keepalive-ms 1000 --interval-ms 1000 --probes 3]
//                     [--idle-ms 120000] [--max-connections 20000] [--handlers all|codec|none]
//
// One loop (no I/O threads), so the process's CPU time is the loop's. The
// bench reads memory and CPU from /proc; this process answers commands on
// stdin, one per line, each with one JSON line on stdout:
//   stats                  connections, PINGs sent, PONGs received, and the
//                          Heartbeat handlers' RTT figures: the last RTT of
//                          every connection that has one, as percentiles
//   heartbeat K I N        replace every connection's Heartbeat with
//                          keepalive K ms, interval I ms, N probes
// EOF on stdin, SIGINT or SIGTERM stops it (exit status 0).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/core/SignalWatcher.h>
#include <keel/core/Watcher.h>
#include <keel/heartbeat/Heartbeat.h>
#include <keel/heartbeat/IdleReaper.h>
#include <keel/net/FrameCodec.h>
#include <keel/net/Pipeline.h>
#include <keel/net/Server.h>

namespace {

using std::chrono::milliseconds;

double percentileUs(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

// Walks every connection (all on this loop) and prints one JSON line.
void printStats(keel::Server& server) {
  std::size_t conns = 0, probing = 0;
  std::uint64_t pings = 0, pongs = 0, ignored = 0;
  std::vector<double> last, smoothed;
  last.reserve(server.connectionCount());
  smoothed.reserve(server.connectionCount());
  server.forEachConnection([&](const keel::Connection::Ptr& c) {
    ++conns;
    const auto* hb = c->pipeline().find<keel::Heartbeat>();
    if (hb == nullptr) return;
    probing += hb->probing() ? 1 : 0;
    pings += hb->pingsSent();
    pongs += hb->pongsReceived();
    ignored += hb->pongsIgnored();
    if (hb->pongsReceived() == 0) return;
    last.push_back(std::chrono::duration<double, std::micro>(hb->lastRtt()).count());
    smoothed.push_back(std::chrono::duration<double, std::micro>(hb->smoothedRtt()).count());
  });
  std::sort(last.begin(), last.end());
  std::sort(smoothed.begin(), smoothed.end());
  std::printf(
      "{\"connections\":%zu,\"probing\":%zu,\"pings\":%llu,\"pongs\":%llu,\"pongs_ignored\":%llu,"
      "\"rtt_samples\":%zu,\"rtt_p50_us\":%.1f,\"rtt_p90_us\":%.1f,\"rtt_p99_us\":%.1f,\"rtt_max_us\":%.1f,"
      "\"srtt_p50_us\":%.1f,\"srtt_p99_us\":%.1f}\n",
      conns, probing, static_cast<unsigned long long>(pings), static_cast<unsigned long long>(pongs),
      static_cast<unsigned long long>(ignored), last.size(), percentileUs(last, 50), percentileUs(last, 90),
      percentileUs(last, 99), last.empty() ? 0.0 : last.back(), percentileUs(smoothed, 50),
      percentileUs(smoothed, 99));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-scale-server: idle connections with Heartbeat + IdleReaper (bench section 4)"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  long keepaliveMs = 1000, intervalMs = 1000, idleMs = 120'000;
  int probes = 3;
  std::size_t maxConnections = 20'000;
  app.add_option("--host", host, "address to bind (numeric IPv4)")->capture_default_str();
  app.add_option("--port", port, "TCP port (0 picks a free one)")->capture_default_str();
  app.add_option("--keepalive-ms", keepaliveMs, "Heartbeat: silence before the first PING")
      ->capture_default_str();
  app.add_option("--interval-ms", intervalMs, "Heartbeat: between PINGs")->capture_default_str();
  app.add_option("--probes", probes, "Heartbeat: unanswered PINGs before the peer is dead")
      ->capture_default_str();
  app.add_option("--idle-ms", idleMs, "IdleReaper: close after this long with no traffic either way")
      ->capture_default_str();
  app.add_option("--max-connections", maxConnections, "Server cap")->capture_default_str();
  // For the memory breakdown in docs/performance.md: the same server with
  // fewer handlers per connection.
  std::string handlers = "all";
  app.add_option("--handlers", handlers, "all: codec+heartbeat+reaper; codec: FrameCodec only; none")
      ->check(CLI::IsMember({"all", "codec", "none"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (keepaliveMs < 1 || intervalMs < 1 || probes < 1 || idleMs < 1) {
    std::fprintf(stderr, "keel-scale-server: times and --probes must be positive\n");
    return 2;
  }
  auto addr = keel::SocketAddress::ipv4(host, port);
  if (!addr) {
    std::fprintf(stderr, "keel-scale-server: bad address %s\n", host.c_str());
    return 2;
  }

  keel::EventLoop loop;
  keel::SignalWatcher signals(loop, {SIGINT, SIGTERM}, [&](int) { loop.quit(); });
  keel::HeartbeatOptions hbOptions{.keepaliveTime = milliseconds(keepaliveMs),
                                   .probeInterval = milliseconds(intervalMs),
                                   .probeCount = probes};
  const keel::IdleLimits limits{
      .reader = milliseconds(0), .writer = milliseconds(0), .all = milliseconds(idleMs)};

  keel::ServerOptions options;
  options.maxConnections = maxConnections;
  keel::Server server(loop, *addr, options);
  server.setPipelineInit([&](keel::Connection& c) {
    if (handlers == "none") return;
    c.pipeline().emplaceLast<keel::FrameCodec>();
    if (handlers == "codec") return;
    c.pipeline().emplaceLast<keel::Heartbeat>(hbOptions);
    c.pipeline().emplaceLast<keel::IdleReaper>(limits, keel::IdleAction::Close);
  });

  // Commands on stdin, read by the loop itself (no thread).
  std::string pending;
  keel::Watcher commands(loop, STDIN_FILENO, [&](std::uint32_t) {
    char buf[512];
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
      commands.detach();
      loop.quit();
      return;
    }
    pending.append(buf, static_cast<std::size_t>(n));
    if (pending.size() > 4096) pending.erase(0, pending.size() - 4096);  // a cap, not a protocol
    for (std::size_t eol; (eol = pending.find('\n')) != std::string::npos;) {
      const std::string line = pending.substr(0, eol);
      pending.erase(0, eol + 1);
      long k = 0, i = 0;
      int p = 0;
      if (line == "stats") {
        printStats(server);
      } else if (std::sscanf(line.c_str(), "heartbeat %ld %ld %d", &k, &i, &p) == 3 && k > 0 && i > 0 &&
                 p > 0) {
        hbOptions = {.keepaliveTime = milliseconds(k), .probeInterval = milliseconds(i), .probeCount = p};
        std::size_t replaced = 0;
        server.forEachConnection([&](const keel::Connection::Ptr& c) {
          (void)c->pipeline().remove<keel::Heartbeat>();
          c->pipeline().emplaceLast<keel::Heartbeat>(hbOptions);
          ++replaced;
        });
        std::printf("{\"replaced\":%zu}\n", replaced);
        std::fflush(stdout);
      } else {
        std::printf("{\"error\":\"unknown command\"}\n");
        std::fflush(stdout);
      }
    }
  });
  if (const std::error_code ec = commands.enable(keel::Watcher::kRead)) {
    std::fprintf(stderr, "scale-server: cannot watch stdin: %s\n", ec.message().c_str());
    return 1;
  }

  if (auto ec = server.start()) {
    std::fprintf(stderr, "keel-scale-server: %s: %s\n", addr->toString().c_str(), ec.message().c_str());
    return 1;
  }
  std::printf("keel-scale-server listening on %s\n", server.listenAddress().toString().c_str());
  std::fflush(stdout);
  loop.loop();
  return 0;
}
