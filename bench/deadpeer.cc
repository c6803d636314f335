// keel-deadpeer: bench section 5, how long a dead peer goes unnoticed.
//
//   keel-deadpeer responder [--host 127.0.0.1] [--port 0]
//   keel-deadpeer prober --host H --port P --fault "shell command" [--watch-ms 8000]
//                        [--heartbeat-ms 1000] [--probes 3] [--user-timeout-ms 4000]
//
// The responder is a keel server whose connections answer PINGs
// ([FrameCodec][PongResponder]); it prints "keel-deadpeer listening on
// HOST:PORT". The prober opens three connections to it, each watched by one
// mechanism with the same budget (1 s x 3 by default, 4 s in all):
//   heartbeat     keel's Heartbeat: PING after 1 s of silence, dead after 3
//                 more unanswered seconds
//   keepalive     kernel SO_KEEPALIVE, TCP_KEEPIDLE 1 / KEEPINTVL 1 / KEEPCNT 3
//   user-timeout  TCP_USER_TIMEOUT 4 s, with a 4-byte frame written every
//                 250 ms (the option needs data in flight to do anything)
// Once all three are up and the heartbeat has had a PONG, the prober runs
// the fault command (e.g. `kill -STOP PID`, or `ip -n NS link set DEV down`),
// starts the clock when it returns, and notes when each connection closes.
// It stops when all three have closed or --watch-ms has passed, and prints
// one JSON line: per mechanism {"detected":bool,"ms":..,"reason":".."}.
//
// Mirrors tests/heartbeat/heartbeat_test.cc (Detection.*), which asserts
// the same outcomes; this binary only measures.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/core/SignalWatcher.h>
#include <keel/heartbeat/Heartbeat.h>
#include <keel/heartbeat/KeepAlive.h>
#include <keel/heartbeat/PongResponder.h>
#include <keel/net/Client.h>
#include <keel/net/FrameCodec.h>
#include <keel/net/Pipeline.h>
#include <keel/net/Server.h>

namespace {

using std::chrono::milliseconds;

struct Outcome {
  bool connected = false;
  bool closed = false;
  long quietMs = -1;  // at the fault: ms since the last segment from the peer (TCP_INFO), -1 unknown
  keel::TimePoint closedAt{};
  keel::CloseReason reason = keel::CloseReason::LocalClose;
};

// The application end of each probed connection: notes the close.
class Watch final : public keel::Handler {
 public:
  explicit Watch(Outcome* o) noexcept : o_(o) {}
  void onConnected(keel::HandlerContext& ctx) override {
    o_->connected = true;
    ctx.fireConnected();
  }
  void onClosed(keel::HandlerContext& ctx, keel::CloseReason r) override {
    o_->closed = true;
    o_->closedAt = keel::Clock::now();
    o_->reason = r;
    ctx.fireClosed(r);
  }

 private:
  Outcome* o_;
};

// Keeps a small frame in flight every `period`, for TCP_USER_TIMEOUT.
class Ticker final : public keel::Handler {
 public:
  explicit Ticker(milliseconds period) noexcept : period_(period) {}
  ~Ticker() override { stop(); }
  void onConnected(keel::HandlerContext& ctx) override {
    loop_ = &ctx.loop();
    timer_ = loop_->runEvery(period_, [&ctx] { ctx.writeFrame(std::string_view("tick")); });
    ctx.fireConnected();
  }
  void onClosed(keel::HandlerContext& ctx, keel::CloseReason r) override {
    stop();
    ctx.fireClosed(r);
  }
  void handlerRemoved(keel::HandlerContext&) override { stop(); }

 private:
  void stop() noexcept {
    if (loop_ != nullptr && timer_.valid()) loop_->cancel(timer_);
    timer_ = {};
  }
  milliseconds period_;
  keel::EventLoop* loop_ = nullptr;
  keel::TimerId timer_;
};

// Milliseconds since the last segment of any kind arrived on fd, or -1.
long quietMs(int fd) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
  return static_cast<long>(std::min(info.tcpi_last_data_recv, info.tcpi_last_ack_recv));
}

int runResponder(const std::string& host, std::uint16_t port) {
  auto addr = keel::SocketAddress::ipv4(host, port);
  if (!addr) {
    std::fprintf(stderr, "keel-deadpeer: bad address %s\n", host.c_str());
    return 2;
  }
  keel::EventLoop loop;
  keel::SignalWatcher signals(loop, {SIGINT, SIGTERM}, [&](int) { loop.quit(); });
  keel::Server server(loop, *addr);
  server.setPipelineInit([](keel::Connection& c) {
    c.pipeline().emplaceLast<keel::FrameCodec>();
    c.pipeline().emplaceLast<keel::PongResponder>();
  });
  if (auto ec = server.start()) {
    std::fprintf(stderr, "keel-deadpeer: %s: %s\n", addr->toString().c_str(), ec.message().c_str());
    return 1;
  }
  std::printf("keel-deadpeer listening on %s\n", server.listenAddress().toString().c_str());
  std::fflush(stdout);
  loop.loop();
  return 0;
}

struct ProbeConfig {
  std::string host;
  std::uint16_t port = 0;
  std::string fault;
  long watchMs = 8000, heartbeatMs = 1000, userTimeoutMs = 4000;
  int probes = 3;
};

int runProber(const ProbeConfig& cfg) {
  auto addr = keel::SocketAddress::ipv4(cfg.host, cfg.port);
  if (!addr || cfg.port == 0 || cfg.fault.empty() || cfg.watchMs < 1 || cfg.heartbeatMs < 1000 ||
      cfg.heartbeatMs % 1000 != 0 || cfg.probes < 1 || cfg.userTimeoutMs < 1) {
    std::fprintf(
        stderr,
        "keel-deadpeer: need numeric --host, --port, --fault; --heartbeat-ms a whole number of seconds "
        "(keepalive gets the same timing); positive --watch-ms, --probes, --user-timeout-ms\n");
    return 2;
  }
  const milliseconds beat(cfg.heartbeatMs);
  const keel::HeartbeatOptions hbOptions{
      .keepaliveTime = beat, .probeInterval = beat, .probeCount = cfg.probes};
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(beat);
  const keel::KeepAliveParams kaParams{
      .idle = secs, .interval = secs, .count = cfg.probes, .userTimeout = {}};

  keel::EventLoop loop;
  Outcome hb, ka, ut;
  std::string setupError;
  keel::Heartbeat* heartbeat = nullptr;  // loop thread; valid while hb is open
  keel::Client hbClient(loop, *addr), kaClient(loop, *addr), utClient(loop, *addr);
  hbClient.setPipelineInit([&](keel::Connection& c) {
    c.pipeline().emplaceLast<keel::FrameCodec>();
    heartbeat = &c.pipeline().emplaceLast<keel::Heartbeat>(hbOptions);
    c.pipeline().emplaceLast<Watch>(&hb);
  });
  kaClient.setPipelineInit([&](keel::Connection& c) {
    if (auto ec = keel::enableKernelKeepAlive(c.socket(), kaParams))
      setupError = "keepalive: " + ec.message();
    c.pipeline().emplaceLast<Watch>(&ka);
  });
  utClient.setPipelineInit([&](keel::Connection& c) {
    if (auto ec = c.socket().setUserTimeout(milliseconds(cfg.userTimeoutMs)))
      setupError = "TCP_USER_TIMEOUT: " + ec.message();
    c.pipeline().emplaceLast<keel::FrameCodec>();
    c.pipeline().emplaceLast<Ticker>(milliseconds(250));
    c.pipeline().emplaceLast<Watch>(&ut);
  });
  for (auto* c : {&hbClient, &kaClient, &utClient}) {
    c->setConnectFailed([&](std::error_code ec) {
      setupError = "connect " + addr->toString() + ": " + ec.message();
      loop.quit();
    });
    c->connect();
  }

  // Poll (20 ms) for: set up -> fault -> all closed or the watch is over.
  keel::TimePoint faultAt{};
  bool faulted = false;
  const auto setupDeadline = keel::Clock::now() + std::chrono::seconds(10);
  std::string faultError;
  keel::TimerId poll = loop.runEvery(milliseconds(20), [&] {
    const auto now = keel::Clock::now();
    if (!setupError.empty()) return loop.quit();
    if (!faulted) {
      const bool ready = hb.connected && ka.connected && ut.connected && heartbeat != nullptr && !hb.closed &&
                         heartbeat->pongsReceived() >= 1;
      if (!ready) {
        if (now > setupDeadline) {
          setupError = "connections not up with a PONG within 10 s";
          loop.quit();
        }
        return;
      }
      // Each mechanism counts its silence from the last sign of life, which
      // came at a different moment for each connection (the heartbeat's last
      // PONG, keepalive's last probe ACK). Note it, so the figures can be read
      // from that moment too.
      for (auto [client, outcome] : {std::pair{&hbClient, &hb}, {&kaClient, &ka}, {&utClient, &ut}}) {
        if (auto conn = client->connection()) outcome->quietMs = quietMs(conn->socket().fd());
      }
      const int rc = std::system(cfg.fault.c_str());
      faultAt = keel::Clock::now();
      faulted = true;
      if (rc != 0) {
        faultError = "fault command exited with " + std::to_string(rc);
        loop.quit();
      }
      return;
    }
    if ((hb.closed && ka.closed && ut.closed) || now - faultAt >= milliseconds(cfg.watchMs)) loop.quit();
  });
  loop.loop();
  loop.cancel(poll);
  if (!setupError.empty() || !faultError.empty()) {
    std::fprintf(stderr, "keel-deadpeer: %s\n", setupError.empty() ? faultError.c_str() : setupError.c_str());
    return 1;
  }

  auto row = [&](const Outcome& o) {
    if (!o.closed) return "{\"detected\":false,\"quiet_before_ms\":" + std::to_string(o.quietMs) + "}";
    const auto ms = std::chrono::duration<double, std::milli>(o.closedAt - faultAt).count();
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "{\"detected\":true,\"ms\":%.1f,\"quiet_before_ms\":%ld,\"reason\":\"%s\"}", ms, o.quietMs,
                  std::string(keel::toString(o.reason)).c_str());
    return std::string(buf);
  };
  std::printf(
      "{\"watched_ms\":%ld,\"heartbeat_ms\":%ld,\"probes\":%d,\"user_timeout_ms\":%ld,"
      "\"heartbeat\":%s,\"keepalive\":%s,\"user_timeout\":%s}\n",
      cfg.watchMs, cfg.heartbeatMs, cfg.probes, cfg.userTimeoutMs, row(hb).c_str(), row(ka).c_str(),
      row(ut).c_str());
  std::fflush(stdout);
  return 0;  // the clients abort what is still open (on this thread) as they go
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-deadpeer: dead-peer detection, keel heartbeat vs kernel keepalive (bench section 5)"};
  app.require_subcommand(1);
  std::string rHost = "127.0.0.1";
  std::uint16_t rPort = 0;
  auto* responder = app.add_subcommand("responder", "answer PINGs on every connection");
  responder->add_option("--host", rHost, "address to bind (numeric IPv4)")->capture_default_str();
  responder->add_option("--port", rPort, "TCP port (0 picks a free one)")->capture_default_str();
  ProbeConfig cfg;
  auto* prober = app.add_subcommand("prober", "connect, inject the fault, time each mechanism");
  prober->add_option("--host", cfg.host, "responder address (numeric IPv4)")->required();
  prober->add_option("--port", cfg.port, "responder port")->required();
  prober->add_option("--fault", cfg.fault, "shell command that kills the peer (run once everything is up)")
      ->required();
  prober->add_option("--watch-ms", cfg.watchMs, "give up waiting after this long")->capture_default_str();
  prober
      ->add_option("--heartbeat-ms", cfg.heartbeatMs, "heartbeat and keepalive idle/interval (whole seconds)")
      ->capture_default_str();
  prober->add_option("--probes", cfg.probes, "heartbeat probes and TCP_KEEPCNT")->capture_default_str();
  prober->add_option("--user-timeout-ms", cfg.userTimeoutMs, "TCP_USER_TIMEOUT")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (*responder) return runResponder(rHost, rPort);
  return runProber(cfg);
}
