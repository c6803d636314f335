// --metrics-port P, shared by the example servers: Prometheus text at
// http://HOST:P/metrics (HOST: the server's --host), with every series of
// metrics/ServerMetrics.h. Off unless given; port 0 picks a free port. The
// line "NAME metrics listening on ADDR" follows the server's own
// "listening on" line, so scripts that wait for the first line still get
// the server's address.
//
// Header-only glue, like ExampleMain.h.
#pragma once

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>

#include <keel/metrics/MetricsServer.h>
#include <keel/metrics/Registry.h>
#include <keel/metrics/ServerMetrics.h>
#include <keel/net/Server.h>

namespace keel::example {

struct MetricsFlags {
  int port = -1;
  [[nodiscard]] bool on() const noexcept { return port >= 0; }
};

inline void addMetricsOptions(CLI::App& app, MetricsFlags& flags) {
  app.add_option("--metrics-port", flags.port, "serve Prometheus metrics at http://HOST:PORT/metrics")
      ->check(CLI::Range(0, 65535));
}

// Declared after the Server in main(), so it is destroyed first: the last
// scrape ends before the server it reads goes away. The registry outlives
// the endpoint that reads it (member order).
struct ExampleMetrics {
  Registry registry;
  std::unique_ptr<MetricsServer> endpoint;
};

// After startAndAnnounce. Returns main()'s exit code: 0 when off or serving,
// 1 (with a message) when the port cannot be bound.
[[nodiscard]] inline int startMetrics(const MetricsFlags& flags, Server& server, const std::string& host,
                                      std::string_view name, std::unique_ptr<ExampleMetrics>& out) {
  if (!flags.on()) return 0;
  const auto port = static_cast<std::uint16_t>(flags.port);
  auto addr =
      host.find(':') != std::string::npos ? SocketAddress::ipv6(host, port) : SocketAddress::ipv4(host, port);
  if (!addr) {
    std::fprintf(stderr, "%.*s: bad metrics address\n", static_cast<int>(name.size()), name.data());
    return 1;
  }
  auto m = std::make_unique<ExampleMetrics>();
  publishServerMetrics(m->registry, server);
  m->endpoint = std::make_unique<MetricsServer>(m->registry, *addr);
  if (const std::error_code ec = m->endpoint->start()) {
    std::fprintf(stderr, "%.*s: cannot serve metrics: %s\n", static_cast<int>(name.size()), name.data(),
                 ec.message().c_str());
    return 1;
  }
  const std::string line =
      std::string(name) + " metrics listening on " + m->endpoint->listenAddress().toString() + "\n";
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
  out = std::move(m);
  return 0;
}

}  // namespace keel::example
