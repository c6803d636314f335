// keel-heartbeat: application-level PING-PONG, and what a dead peer looks like.
//
//   keel-heartbeat server --port 7002
//   keel-heartbeat client --port 7002 --keepalive-ms 1000 --interval-ms 500 --probes 3
//   over TLS:  server --tls-cert FILE --tls-key FILE;  client --tls-ca FILE
//   (the client verifies the server's certificate against FILE and --host)
//
// What it shows: TCP alone does not notice a peer that stopped answering (a
// hung process, a machine that vanished): the kernel keeps ACKing, or keeps
// retransmitting for minutes. The Heartbeat handler sends a PING after
// --keepalive-ms of silence, then one every --interval-ms, and declares the
// peer dead after --probes unanswered ones. Both ends frame their messages
// with FrameCodec; PINGs and PONGs are control frames, so they can share the
// connection with application frames (heartbeat/HeartbeatMessage.h).
// Try: run both, then `kill -STOP <server pid>` and watch the client.
//
// Client exit status: 0 stopped by SIGINT/SIGTERM, 1 could not connect (or
// the TLS handshake failed), 2 bad arguments, 3 the peer is dead (heartbeat timeout), 4 the server
// closed or reset the connection (e.g. it was killed: its kernel still says
// goodbye, so this is noticed at once, without the heartbeat).
#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/core/SignalWatcher.h>
#include <keel/heartbeat/Heartbeat.h>
#include <keel/heartbeat/HeartbeatMessage.h>
#include <keel/heartbeat/PongResponder.h>
#include <keel/net/Client.h>
#include <keel/net/FrameCodec.h>
#include <keel/net/Server.h>
#include "../common/ExampleTls.h"

namespace {

using Ms = std::chrono::duration<double, std::milli>;

// Sits just before the Heartbeat: every control frame passes through it on its
// way in, and when the Heartbeat counted a new PONG, the RTT is printed.
class RttPrinter final : public keel::Handler {
 public:
  void onUserEvent(keel::HandlerContext& ctx, const keel::UserEvent& ev) override {
    auto* hb = ctx.pipeline().find<keel::Heartbeat>();
    const std::uint64_t before = hb != nullptr ? hb->pongsReceived() : 0;
    ctx.fireUserEvent(ev);
    if (hb != nullptr && hb->pongsReceived() != before) {
      std::printf("rtt %.3f ms (smoothed %.3f ms)\n", Ms(hb->lastRtt()).count(),
                  Ms(hb->smoothedRtt()).count());
      std::fflush(stdout);
    }
  }
};

// The application end of the client: reports how the connection ended.
class Report final : public keel::Handler {
 public:
  explicit Report(int* exitCode) : exitCode_(exitCode) {}
  void onConnected(keel::HandlerContext& ctx) override {
    std::printf("connected to %s\n", ctx.connection().peerAddress().toString().c_str());
    std::fflush(stdout);
  }
  void onUserEvent(keel::HandlerContext&, const keel::UserEvent& ev) override {
    const auto* hb = dynamic_cast<const keel::HeartbeatEvent*>(&ev);
    if (hb == nullptr || hb->kind != keel::HeartbeatEvent::Kind::PeerDead) return;
    std::printf(
        "peer dead after %lld ms (%llu PINGs unanswered)\n",
        static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(hb->silence).count()),
        static_cast<unsigned long long>(hb->pingsUnanswered));
    std::fflush(stdout);
    *exitCode_ = 3;  // the Heartbeat closes the connection next (with a reset)
  }
  void onClosed(keel::HandlerContext& ctx, keel::CloseReason reason) override {
    const auto* tls = ctx.pipeline().find<keel::TlsHandler>();
    if (*exitCode_ < 0 && tls != nullptr && tls->error()) {
      // A failed handshake is a connection that never came up, not a server going away.
      std::fprintf(stderr, "keel-heartbeat: TLS: %s (%s)\n", tls->error().message().c_str(),
                   tls->errorDetail().c_str());
      *exitCode_ = 1;
    } else if (*exitCode_ < 0) {
      std::fprintf(stderr, "keel-heartbeat: server closed the connection (%s)\n",
                   std::string(toString(reason)).c_str());
      *exitCode_ = 4;
    }
    ctx.loop().quit();
  }

 private:
  int* exitCode_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-heartbeat: application PING-PONG over TCP"};
  app.require_subcommand(1);
  std::string host = "127.0.0.1";
  std::uint16_t port = 7002;
  keel::HeartbeatOptions hb;
  hb.jitterPercent = 0;  // one connection: no herd to spread out, and a predictable demo
  std::int64_t keepaliveMs = 1000, intervalMs = 500;
  CLI::App* server = app.add_subcommand("server", "answer PINGs with PONGs");
  CLI::App* client = app.add_subcommand("client", "probe a server, print RTTs, report its death");
  for (CLI::App* sub : {server, client}) {
    sub->add_option("--host", host, "address (numeric IPv4)");
    sub->add_option("--port", port, "TCP port (server: 0 picks a free one)");
  }
  client->add_option("--keepalive-ms", keepaliveMs, "silence before the first PING")
      ->check(CLI::PositiveNumber);
  client->add_option("--interval-ms", intervalMs, "between unanswered PINGs")->check(CLI::PositiveNumber);
  client->add_option("--probes", hb.probeCount, "unanswered PINGs before the peer is dead")
      ->check(CLI::Range(1, 1000));
  keel::example::TlsFlags tlsFlags;
  keel::example::addTlsOptions(*server, tlsFlags);
  std::string tlsCa;
  client->add_option("--tls-ca", tlsCa, "connect over TLS, trusting this CA (PEM)")->check(CLI::ExistingFile);
  CLI11_PARSE(app, argc, argv);
  hb.keepaliveTime = std::chrono::milliseconds(keepaliveMs);
  hb.probeInterval = std::chrono::milliseconds(intervalMs);

  const auto addr = keel::SocketAddress::ipv4(host, port);
  if (!addr) {
    std::fprintf(stderr, "keel-heartbeat: bad address %s\n", host.c_str());
    return 2;
  }
  keel::EventLoop loop;

  if (server->parsed()) {
    // [FrameCodec][PongResponder]: the responder answers each PING from its
    // own position, keeps no state and needs no clock.
    keel::TlsContext::Ptr tls;
    if (tlsFlags.on() && !(tls = keel::example::serverTls(tlsFlags, "keel-heartbeat"))) return 1;
    keel::Server srv(loop, *addr);
    srv.setPipelineInit([tls](keel::Connection& c) {
      if (tls) c.pipeline().emplaceLast<keel::TlsHandler>(tls);
      c.pipeline().emplaceLast<keel::FrameCodec>();
      c.pipeline().emplaceLast<keel::PongResponder>();
    });
    if (auto ec = srv.start()) {
      std::fprintf(stderr, "keel-heartbeat: %s: %s\n", addr->toString().c_str(), ec.message().c_str());
      return 1;
    }
    if (auto ec = srv.stopOnSignals({SIGINT, SIGTERM})) {  // graceful stop, then exit 0
      std::fprintf(stderr, "keel-heartbeat: signals: %s\n", ec.message().c_str());
      return 1;
    }
    std::printf("keel-heartbeat listening on %s\n", srv.listenAddress().toString().c_str());
    std::fflush(stdout);
    loop.loop();
    return 0;
  }

  int exitCode = -1;
  keel::SignalWatcher signals(loop, {SIGINT, SIGTERM}, [&](int) {
    exitCode = 0;
    loop.quit();
  });
  // [FrameCodec][RttPrinter][Heartbeat][Report]. No retries: a refused
  // connect is reported once and ends the program.
  // TLS: the handshake finishes before Report's onConnected, so "connected"
  // means the server's certificate verified for --host.
  keel::TlsContext::Ptr tls;
  if (!tlsCa.empty()) {
    keel::TlsClientOptions o;
    o.caFile = tlsCa;
    std::error_code ec;
    if (!(tls = keel::TlsContext::client(o, ec))) {
      std::fprintf(stderr, "keel-heartbeat: TLS: %s\n", ec.message().c_str());
      return 2;
    }
  }
  keel::Client cli(loop, *addr);
  cli.setPipelineInit([&](keel::Connection& c) {
    if (tls) {
      keel::TlsHandlerOptions o;
      o.serverName = host;
      c.pipeline().emplaceLast<keel::TlsHandler>(tls, o);
    }
    c.pipeline().emplaceLast<keel::FrameCodec>();
    c.pipeline().emplaceLast<RttPrinter>();
    c.pipeline().emplaceLast<keel::Heartbeat>(hb);
    c.pipeline().emplaceLast<Report>(&exitCode);
  });
  cli.setConnectFailed([&](std::error_code ec) {
    std::fprintf(stderr, "keel-heartbeat: cannot connect to %s: %s\n", addr->toString().c_str(),
                 ec.message().c_str());
    exitCode = 1;
    loop.quit();
  });
  cli.connect();
  loop.loop();
  return exitCode < 0 ? 0 : exitCode;
}
