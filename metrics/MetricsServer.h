// A small HTTP/1.1 endpoint that answers GET /metrics with a Registry's
// Prometheus text, on a port of its own and a loop thread of its own.
//
//   keel::Registry reg;
//   keel::MetricsServer metrics(reg, *keel::SocketAddress::parse("0.0.0.0:9464"));
//   if (auto ec = metrics.start()) { ...report ec... }
//
// Its own thread, so that a scrape (which sums every shard and, through the
// server's series, dumps TIME_WAIT sockets over netlink) never runs on an
// I/O loop, and an I/O loop that stalls still gets scraped. A scrape reads
// the shards directly; it never posts to the I/O loops and waits.
//
// It faces a network, so everything is capped (MetricsServerOptions): the
// request size, the connections, the time a connection may stay idle. One
// request per connection: the answer carries "Connection: close" (a scraper
// that scrapes every 15 s gains nothing from keep-alive). GET /metrics is
// 200; another path 404; another method 405; a request over the cap 431; a
// malformed one 400.
//
// Thread-safety: construct, start, stop and destroy on one thread (not the
// metrics loop's). The registry must outlive the MetricsServer.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <system_error>

#include "keel/core/LoopThread.h"
#include "keel/net/SocketAddress.h"

namespace keel {

class Registry;
class Server;

struct MetricsServerOptions {
  std::size_t maxConnections = 32;                   // concurrent scrapers
  std::size_t maxRequestBytes = 8 * 1024;            // request line + headers
  std::chrono::milliseconds idleTimeout{10'000};     // a silent connection is closed
  std::size_t outputBudget = std::size_t{16} << 20;  // queued answers across connections
};

class MetricsServer {
 public:
  MetricsServer(Registry& registry, SocketAddress listen, MetricsServerOptions options = {});
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Starts the thread, binds and listens.
  [[nodiscard]] std::error_code start();
  // Closes the listener and every connection, and joins the thread.
  void stop();
  // The bound address (with port 0, the port picked).
  [[nodiscard]] SocketAddress listenAddress() const { return bound_; }

 private:
  Registry& registry_;
  SocketAddress listen_;
  SocketAddress bound_;
  MetricsServerOptions options_;
  LoopThread thread_{"keel-metrics"};
  std::unique_ptr<Server> server_;  // created and destroyed on thread_'s loop
};

}  // namespace keel
