// keel-presence: who is online, and what they are doing. The finished
// program of docs/tutorial.md.
//
//   keel-presence server --port 7010 --threads 2
//   keel-presence client --host localhost --port 7010 --name alice
//   keel-presence client --port 7010 --name bob --interval-ms 500
//
// Each client JOINs under a name and sends a STATUS every --interval-ms;
// every other member receives it (a ConnectionGroup broadcast, across the
// server's I/O loops). What it shows:
//  - a stopped client (kill -STOP) is dropped by the server's heartbeat at
//    its deadline, keepalive + probes x interval, and the others are told;
//  - a member that is alive but silent (answers PINGs, sends no STATUS) is
//    closed after --silence-ms by an IdleReaper that counts frames only;
//  - the heartbeat keeps measuring RTT on a busy connection (sampling mode);
//  - clients reconnect (with back-off) when the server restarts.
//
// Server stdout: "keel-presence listening on ADDR", then "join NAME from
// ADDR", "dead NAME silent MS ms", "leave NAME REASON rtt MS ms (N samples)".
// Client stdout: "connected to ADDR", "< FRAME" for each frame received,
// "disconnected REASON". Exit status: 0 stopped by a signal or --count done,
// 1 cannot listen or connect, 2 bad arguments.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/core/SignalWatcher.h>
#include <keel/net/Client.h>
#include <keel/net/Server.h>

#include "../common/ExampleMain.h"
#include "PresenceClient.h"
#include "PresenceServer.h"
#include "Protocol.h"

namespace {

int runServer(const keel::SocketAddress& addr, std::size_t threads, presence::ServerConfig config) {
  keel::EventLoop loop;
  presence::Room room;
  room.config = config;
  keel::ServerOptions options;
  options.ioThreads = threads;
  // A refused JOIN or STATUS is answered with an ERROR frame before the
  // close, so a protocol error must end with a FIN, not the default reset
  // (which would discard the answer). A dead peer is still reset.
  options.connection.resetOnReasons = keel::reasonBit(keel::CloseReason::HeartbeatTimeout);
  keel::Server server(loop, addr, options);
  server.setPipelineInit([&room](keel::Connection& c) { presence::initPipeline(c, room); });
  // SIGINT/SIGTERM: a graceful stop (members get a FIN after what they are
  // owed), then the loop quits; a second signal aborts what is left.
  if (const std::error_code ec = server.stopOnSignals({SIGINT, SIGTERM})) {
    std::fprintf(stderr, "keel-presence: signals: %s\n", ec.message().c_str());
    return 1;
  }
  if (const int rc = keel::example::startAndAnnounce(server, "keel-presence")) return rc;
  loop.loop();
  return 0;
}

int runClient(const std::string& host, std::uint16_t port, presence::ClientConfig config,
              std::chrono::milliseconds retryMax) {
  keel::EventLoop loop;
  presence::ClientState state{std::move(config)};
  keel::ClientOptions options;
  // Stay connected: retry a refused connect, and replace a lost connection,
  // with back-off (doubling up to retryMax, jittered).
  options.reconnect = keel::ClientOptions::Reconnect::Always;
  options.retryMax = retryMax;
  // A host name is resolved off the loop before each attempt; its IPv6 and
  // IPv4 addresses are raced (Happy Eyeballs).
  keel::Client client(loop, host, port, options);
  client.setPipelineInit([&](keel::Connection& c) {
    // --count reached: leave cleanly (the last STATUS is delivered, then a
    // FIN), and quit once the connection has closed.
    presence::initClientPipeline(c, state, [&] { client.disconnect([&loop] { loop.quit(); }); });
  });
  keel::SignalWatcher signals = keel::SignalWatcher::quitOnTerminate(loop);
  client.connect();
  loop.loop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-presence: a presence service (JOIN, STATUS, who is online)"};
  app.require_subcommand(1);
  std::string host = "127.0.0.1";
  std::uint16_t port = 7010;
  std::size_t threads = 2;
  std::int64_t keepaliveMs = 1000, probeMs = 500, silenceMs = 10'000, intervalMs = 200, retryMaxMs = 1000,
               rttSampleMs = 1000;
  int probes = 3;
  presence::ClientConfig clientConfig;
  CLI::App* server = app.add_subcommand("server", "keep the directory and relay statuses");
  CLI::App* client = app.add_subcommand("client", "join and send a status every interval");
  for (CLI::App* sub : {server, client}) {
    sub->add_option("--host", host, "server: numeric address to bind; client: host name or address");
    sub->add_option("--port", port, "TCP port (server: 0 picks a free one)");
    sub->add_option("--keepalive-ms", keepaliveMs, "silence before the first PING")
        ->check(CLI::PositiveNumber);
    sub->add_option("--probe-ms", probeMs, "between unanswered PINGs")->check(CLI::PositiveNumber);
    sub->add_option("--probes", probes, "unanswered PINGs before the peer is dead")
        ->check(CLI::Range(1, 100));
  }
  server->add_option("--threads", threads, "I/O loops")->check(CLI::Range(0, 64));
  server
      ->add_option("--rtt-sample-ms", rttSampleMs,
                   "measure RTT with a PING this often, whatever the traffic; 0: off")
      ->check(CLI::NonNegativeNumber);
  server->add_option("--silence-ms", silenceMs, "close a member that sent no STATUS for this long")
      ->check(CLI::PositiveNumber);
  client->add_option("--name", clientConfig.name, "who you are (1-32 of A-Za-z0-9_-)")->required();
  client->add_option("--interval-ms", intervalMs, "between STATUS frames")->check(CLI::PositiveNumber);
  client->add_option("--count", clientConfig.count, "STATUS frames to send, then leave (0: forever)");
  client->add_option("--retry-max-ms", retryMaxMs, "longest back-off between reconnects")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  keel::HeartbeatOptions hb;
  hb.keepaliveTime = std::chrono::milliseconds(keepaliveMs);
  hb.probeInterval = std::chrono::milliseconds(probeMs);
  hb.probeCount = probes;
  if (server->parsed()) {
    const auto addr = keel::SocketAddress::parse(host + ":" + std::to_string(port));
    if (!addr) {
      std::fprintf(stderr, "keel-presence: bad address %s (the server binds a numeric address)\n",
                   host.c_str());
      return 2;
    }
    presence::ServerConfig config;
    config.heartbeat = hb;
    config.heartbeat.rttSampleInterval = std::chrono::milliseconds(rttSampleMs);
    config.silence = std::chrono::milliseconds(silenceMs);
    return runServer(*addr, threads, config);
  }
  if (!presence::validName(clientConfig.name)) {
    std::fprintf(stderr, "keel-presence: bad name %s\n", clientConfig.name.c_str());
    return 2;
  }
  clientConfig.interval = std::chrono::milliseconds(intervalMs);
  clientConfig.heartbeat = hb;
  return runClient(host, port, std::move(clientConfig), std::chrono::milliseconds(retryMaxMs));
}
