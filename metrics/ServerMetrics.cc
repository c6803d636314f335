#include "keel/metrics/ServerMetrics.h"

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "keel/core/EventLoop.h"
#include "keel/heartbeat/HeartbeatSchedule.h"
#include "keel/net/Server.h"

namespace keel {
namespace {

MetricLabels with(const MetricLabels& base, std::string_view key, std::string_view value) {
  MetricLabels l = base;
  l.emplace_back(std::string(key), std::string(value));
  return l;
}

// The per-scrape snapshot every server series reads. Written by the scrape
// hook and read by the series, all under the registry's lock.
struct ServerSnapshot {
  Server* server;
  ServerStats stats;
};

double toSeconds(Duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

void publishServerMetrics(Registry& registry, Server& server, const MetricLabels& labels) {
  auto snap = std::make_shared<ServerSnapshot>(ServerSnapshot{&server, {}});
  registry.onScrape([snap] { snap->stats = snap->server->stats(); });
  auto read = [snap](auto field) {
    return [snap, field]() -> double { return static_cast<double>(snap->stats.*field); };
  };
  registry.counterFn("keel_connections_accepted", "Connections accepted (admitted past every limit).", labels,
                     read(&ServerStats::accepted));
  registry.gaugeFn("keel_connections_open", "Connections open now.", labels, read(&ServerStats::open));
  for (std::size_t i = 0; i < static_cast<std::size_t>(kCloseReasonCount); ++i) {
    const auto reason = static_cast<CloseReason>(i);
    registry.counterFn("keel_connections_closed", "Connections closed, by CloseReason.",
                       with(labels, "reason", toString(reason)),
                       [snap, i] { return static_cast<double>(snap->stats.closedBy[i]); });
  }
  const char* refusedHelp =
      "Connections closed at accept: full (maxConnections), no_fd (EMFILE/ENFILE), "
      "per_peer (maxConnectionsPerPeer).";
  registry.counterFn("keel_connections_refused", refusedHelp, with(labels, "cause", "full"),
                     read(&ServerStats::refusedFull));
  registry.counterFn("keel_connections_refused", refusedHelp, with(labels, "cause", "no_fd"),
                     read(&ServerStats::droppedNoFd));
  registry.counterFn("keel_connections_refused", refusedHelp, with(labels, "cause", "per_peer"),
                     read(&ServerStats::refusedPerPeer));
  registry.counterFn("keel_received_bytes", "Bytes read from sockets, counted when each connection closes.",
                     labels, read(&ServerStats::bytesIn));
  registry.counterFn("keel_sent_bytes", "Bytes written to sockets, counted when each connection closes.",
                     labels, read(&ServerStats::bytesOut));
  registry.counterFn("keel_backpressure_pauses",
                     "Times reading paused on every connection for the output budget.", labels,
                     read(&ServerStats::budgetPauses));
  registry.counterFn("keel_overload_closes",
                     "Connections reset because the output budget stayed exceeded past its grace.", labels,
                     read(&ServerStats::budgetCloses));
  registry.gaugeFn("keel_queued_output_bytes", "Output bytes queued across all connections now.", labels,
                   read(&ServerStats::queuedOutput));
  registry.gaugeFn("keel_time_wait_sockets",
                   "Sockets in TIME_WAIT on the listening port (netlink sock_diag).", labels,
                   read(&ServerStats::timeWait));

  const auto loops = server.pool().loops();
  bool baseListed = false;
  for (std::size_t i = 0; i < loops.size(); ++i) {
    baseListed = baseListed || loops[i] == &server.loop();
    publishLoopMetrics(registry, *loops[i], std::to_string(i), labels);
  }
  if (!baseListed) publishLoopMetrics(registry, server.loop(), "base", labels);
}

void publishLoopMetrics(Registry& registry, EventLoop& loop, std::string_view name,
                        const MetricLabels& labels) {
  loop.measureLoad();
  const MetricLabels l = with(labels, "loop", name);
  EventLoop* p = &loop;
  registry.counterFn("keel_loop_iterations", "Event loop iterations (epoll_wait returns).", l,
                     [p] { return static_cast<double>(p->load().iterations); });
  registry.counterFn("keel_loop_busy_seconds",
                     "Time the loop spent working (epoll_wait return to the next call); rate() of it is the "
                     "loop's utilisation, 0 to 1.",
                     l, [p] { return toSeconds(p->load().busy); });
  registry.gaugeFn("keel_loop_queued_tasks", "Tasks posted to the loop and not run yet.", l,
                   [p] { return static_cast<double>(p->load().queuedTasks); });
  registry.gaugeFn("keel_loop_pending_timers", "Timers armed on the loop's wheel.", l,
                   [p] { return static_cast<double>(p->load().pendingTimers); });
  registry.gaugeFn("keel_loop_lag_seconds",
                   "How late the loop's last lag probe fired (every 250 ms; resolution one wheel tick).", l,
                   [p] { return toSeconds(p->load().lag); });
}

void publishHeartbeatMetrics(Registry& registry, HeartbeatOptions& options, const MetricLabels& labels) {
  options.rttMetric = &registry.histogram("keel_heartbeat_rtt_seconds", "Heartbeat PING to PONG round trips.",
                                          Registry::latencyBuckets(), labels);
  options.deadPeerMetric =
      &registry.counter("keel_heartbeat_dead_peers", "Peers the Heartbeat declared dead.", labels);
}

}  // namespace keel
