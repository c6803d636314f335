// keel-echo: the smallest useful keel server. Everything a client sends comes
// back unchanged.
//
//   keel-echo --port 7000 [--threads 2] [--unix /tmp/echo.sock]
//
// What it shows: a Server, a one-method Handler as the application, I/O
// loops on threads, and a clean stop on SIGINT/SIGTERM that lets every
// connection finish (Server::stop) before the process exits.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/core/SignalWatcher.h>
#include <keel/net/Buffer.h>
#include <keel/net/Server.h>

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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-echo: echo server"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 7000;
  std::size_t threads = 0;
  std::string unixPath;
  app.add_option("--host", host, "address to bind (numeric IPv4 or IPv6)");
  app.add_option("--port", port, "TCP port (0 picks a free one)");
  app.add_option("--threads", threads, "I/O threads (0: all on the main loop)");
  app.add_option("--unix", unixPath, "listen on this Unix-domain socket path instead of TCP");
  CLI11_PARSE(app, argc, argv);

  // Block SIGINT/SIGTERM before any thread starts, so only the loop sees them.
  keel::EventLoop loop;
  bool stopping = false;
  keel::Server* serverPtr = nullptr;
  keel::SignalWatcher signals(loop, {SIGINT, SIGTERM}, [&](int) {
    if (stopping || serverPtr == nullptr) return loop.quit();
    stopping = true;
    serverPtr->stop([&loop] { loop.quit(); });  // graceful: finish, then exit
  });

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
  keel::Server server(loop, *addr, options);
  serverPtr = &server;
  server.setPipelineInit([](keel::Connection& conn) { conn.pipeline().emplaceLast<Echo>(); });
  if (auto ec = server.start()) {
    std::fprintf(stderr, "keel-echo: %s: %s\n", addr->toString().c_str(), ec.message().c_str());
    return 1;
  }
  std::printf("keel-echo listening on %s\n", server.listenAddress().toString().c_str());
  std::fflush(stdout);
  loop.loop();
  if (!unixPath.empty()) ::unlink(unixPath.c_str());
  return 0;
}
