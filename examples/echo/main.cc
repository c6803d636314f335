// keel-echo: the smallest useful keel server. Everything a client sends comes
// back unchanged.
//
//   keel-echo --port 7000 [--threads 2] [--unix /tmp/echo.sock]
//             [--profile kernel|latency|throughput] [--idle-timeout-ms 30000]
//             [--tls-cert FILE --tls-key FILE] [--coroutine] [--metrics-port P]
//             [--backend auto|epoll|io_uring]
//
// What it shows: a Server, a one-method Handler as the application, I/O
// loops on threads, and a clean stop on SIGINT/SIGTERM that lets every
// connection finish (Server::stopOnSignals) before the process exits. Two optional
// policy handlers go in front of the application without it knowing:
//   TcpTuning   the latency or throughput profile (net/TcpTuning.h);
//   IdleReaper  closes a connection that neither sent nor received anything
//               for --idle-timeout-ms (heartbeat/IdleReaper.h).
//   TlsHandler  with --tls-cert/--tls-key: TLS under everything above it,
//               after TcpTuning so the profile still sees every write.
// --coroutine: the same echo written as one coroutine per connection
// (coro/CoConnection.h), the last handler in place of Echo; the policy
// handlers in front are the same. docs/coroutines.md.
// Try it:  socat - TCP:127.0.0.1:7000   or   socat - UNIX-CONNECT:/tmp/echo.sock
//   TLS:   openssl s_client -quiet -CAfile ca.pem -connect localhost:7000
#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/coro/CoConnection.h>
#include <keel/heartbeat/IdleReaper.h>
#include <keel/net/Buffer.h>
#include <keel/net/Server.h>
#include <keel/net/TcpTuning.h>
#include "../common/ExampleMain.h"
#include "../common/ExampleMetrics.h"
#include "../common/ExampleTls.h"

namespace {

// The application is just the last handler in the connection's pipeline.
// It hands the bytes back (the connection sends at once, or queues what the
// kernel will not take yet) and marks them consumed.
class Echo final : public keel::Handler {
 public:
  std::string_view name() const noexcept override { return "echo"; }
  void onData(keel::HandlerContext& ctx, keel::Buffer& in) override {
    ctx.write(in.readable());
    in.retrieveAll();
  }
};

// The coroutine version: read what came, write it back, until EOF or close.
// write() completes at once below the high watermark and suspends above it,
// so a peer that does not read stops this loop instead of growing a queue.
keel::Task<> echoCoroutine(keel::CoConnection& conn) {
  for (;;) {
    auto in = co_await conn.read();
    if (!in) co_return;  // the peer's FIN, or the connection closed
    if (!co_await conn.write(*in)) co_return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-echo: echo server"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 7000;
  std::size_t threads = 0;
  std::string unixPath;
  std::string profileName = "kernel";
  std::int64_t idleMs = 0;
  app.add_option("--host", host, "address to bind (numeric IPv4 or IPv6)");
  app.add_option("--port", port, "TCP port (0 picks a free one)");
  app.add_option("--threads", threads, "I/O threads (0: all on the main loop)");
  std::string backend = "auto";
  keel::example::addBackendOption(app, backend);
  app.add_option("--unix", unixPath, "listen on this Unix-domain socket path instead of TCP");
  // IsMember refuses anything else with a message naming the accepted values
  // (exit status 105, CLI11's ValidationError).
  app.add_option("--profile", profileName, "TCP tuning: kernel (default), latency or throughput")
      ->check(CLI::IsMember(keel::example::kProfileNames));
  app.add_option("--idle-timeout-ms", idleMs, "close connections idle (no byte either way) this long; 0: off")
      ->check(CLI::NonNegativeNumber);
  bool coroutine = false;
  app.add_flag("--coroutine", coroutine,
               "echo with one coroutine per connection instead of a callback handler");
  keel::example::TlsFlags tlsFlags;
  keel::example::addTlsOptions(app, tlsFlags);
  keel::example::MetricsFlags metricsFlags;
  keel::example::addMetricsOptions(app, metricsFlags);
  CLI11_PARSE(app, argc, argv);
  keel::TlsContext::Ptr tls;
  if (tlsFlags.on() && !(tls = keel::example::serverTls(tlsFlags, "keel-echo"))) return 1;
  const keel::TcpProfile profile =
      keel::example::parseProfile(profileName).value_or(keel::TcpProfile::Kernel);

  const auto loopOptions = keel::example::loopOptionsFor(backend, "keel-echo");
  if (!loopOptions) return 1;
  keel::EventLoop loop(*loopOptions);

  auto addr = unixPath.empty() ? (host.find(':') != std::string::npos ? keel::SocketAddress::ipv6(host, port)
                                                                      : keel::SocketAddress::ipv4(host, port))
                               : keel::SocketAddress::unixPath(unixPath);
  if (!addr) {
    std::fprintf(stderr, "keel-echo: bad address\n");
    return 2;
  }
  if (!unixPath.empty()) ::unlink(unixPath.c_str());

  keel::ServerOptions options;
  options.ioThreads = threads;
  options.loopOptions = *loopOptions;
  keel::Server server(loop, *addr, options);
  // SIGINT/SIGTERM: a graceful stop, then the loop quits (exit 0); a
  // second signal aborts whatever is still open.
  if (const std::error_code ec = server.stopOnSignals({SIGINT, SIGTERM})) {
    std::fprintf(stderr, "keel-echo: signals: %s\n", ec.message().c_str());
    return 1;
  }
  keel::IdleLimits idle;
  idle.all = std::chrono::milliseconds(idleMs);
  // Runs on the connection's loop for every new connection. Order matters:
  // TcpTuning sits nearest the socket so it sees every write; the kernel
  // profile is the kernel's own defaults, so it needs no handler at all.
  server.setPipelineInit([profile, idle, tls, coroutine](keel::Connection& conn) {
    if (profile != keel::TcpProfile::Kernel) conn.pipeline().emplaceLast<keel::TcpTuning>(profile);
    if (tls) conn.pipeline().emplaceLast<keel::TlsHandler>(tls);
    if (idle.any()) conn.pipeline().emplaceLast<keel::IdleReaper>(idle, keel::IdleAction::Close);
    if (coroutine) {
      conn.pipeline().emplaceLast<keel::CoConnection>(echoCoroutine);
    } else {
      conn.pipeline().emplaceLast<Echo>();
    }
  });
  if (keel::example::startAndAnnounce(server, "keel-echo", tls ? " (tls)" : "") != 0) return 1;
  std::unique_ptr<keel::example::ExampleMetrics> metrics;
  if (keel::example::startMetrics(metricsFlags, server, host, "keel-echo", metrics) != 0) return 1;
  loop.loop();
  if (!unixPath.empty()) ::unlink(unixPath.c_str());
  return 0;
}
