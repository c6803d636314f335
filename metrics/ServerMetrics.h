// The series keel publishes about itself: a Server's connections and bytes,
// its loops' load, and Heartbeat's round trips and dead peers.
// docs/operations.md lists every series and what it means.
//
//   keel::Registry reg;
//   keel::Server server(loop, addr);
//   ...server.start()...
//   keel::publishServerMetrics(reg, server);   // after start(): the loops exist
//   keel::MetricsServer metrics(reg, metricsAddr);
//
// Server and loop series are callback series: they read the counters the
// server and the loops keep anyway (ServerStats, EventLoop::load()) when
// scraped, so the I/O path does no metrics work for them. One ServerStats
// snapshot is taken per scrape (it costs a netlink dump for TIME_WAIT) and
// every server series reads that snapshot.
//
// Lifetime: the server (and its loops) must outlive the last scrape: stop
// the MetricsServer before destroying the server.
#pragma once

#include "keel/metrics/Registry.h"

namespace keel {

class EventLoop;
class Server;
struct HeartbeatOptions;

// Connections, bytes, refusals, the output budget and TIME_WAIT, plus
// publishLoopMetrics for the server's base loop and every I/O loop (label
// loop="base" and loop="0".."N-1"; with no I/O threads the base loop is
// loop="0"). `labels` go on every series (e.g. {{"server", "http"}}).
void publishServerMetrics(Registry& registry, Server& server, const MetricLabels& labels = {});

// One loop's iterations, busy time, queued tasks, pending timers and lag,
// labelled loop=`name`. Turns on the loop's load measurement
// (EventLoop::measureLoad), which costs one clock read per iteration.
void publishLoopMetrics(Registry& registry, EventLoop& loop, std::string_view name,
                        const MetricLabels& labels = {});

// Points `options` at the heartbeat series (registering them once): every
// Heartbeat built from these options then records each PONG's round trip and
// each dead peer. Without this the Heartbeat does no metrics work at all.
void publishHeartbeatMetrics(Registry& registry, HeartbeatOptions& options, const MetricLabels& labels = {});

}  // namespace keel
