// keel-churn: the TIME_WAIT experiment behind docs/time-wait.md.
//
//   keel-churn server --host H --port P --close client-first|server-first
//   keel-churn client --host H --port P --count N --close client-first|server-first
//
// The client makes N short request/response connections one after another.
// With client-first the client closes after the reply (TIME_WAIT lands on the
// client and holds an ephemeral port for 60 s); with server-first the server
// closes after replying and the client waits for that FIN with
// Connection::awaitPeerClose (TIME_WAIT lands on the server). The client
// prints one JSON line: successes, failures, the first error, and the
// TIME_WAIT entries it holds afterwards.
#include <chrono>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/core/Log.h>
#include <keel/core/SignalWatcher.h>
#include <keel/net/Buffer.h>
#include <keel/net/Client.h>
#include <keel/net/Server.h>
#include <keel/net/TimeWaitCounter.h>

namespace {

using namespace std::chrono_literals;

class Responder final : public keel::Handler {
 public:
  explicit Responder(bool serverFirst) : serverFirst_(serverFirst) {}
  void onData(keel::HandlerContext& ctx, keel::Buffer& in) override {
    if (in.view().find('\n') == std::string_view::npos) return;  // wait for the whole request
    in.retrieveAll();
    ctx.write("a\n");
    if (serverFirst_) ctx.close();  // we close first: TIME_WAIT stays here
  }

 private:
  bool serverFirst_;
};

// One request, one reply, then close the way the mode says.
class Requester final : public keel::Handler {
 public:
  Requester(bool serverFirst, bool* replied, bool* done)
      : serverFirst_(serverFirst), replied_(replied), done_(done) {}
  void onConnected(keel::HandlerContext& ctx) override { ctx.write("q\n"); }
  void onData(keel::HandlerContext& ctx, keel::Buffer& in) override {
    if (in.view().find('\n') == std::string_view::npos) return;
    in.retrieveAll();
    *replied_ = true;
    if (serverFirst_) {
      ctx.connection().awaitPeerClose(2s);  // let the server close first
    } else {
      ctx.close();
    }
  }
  void onClosed(keel::HandlerContext&, keel::CloseReason) override { *done_ = true; }

 private:
  bool serverFirst_;
  bool* replied_;
  bool* done_;
};

int runServer(const keel::SocketAddress& addr, bool serverFirst) {
  keel::EventLoop loop;
  keel::SignalWatcher signals(loop, {SIGINT, SIGTERM}, [&](int) { loop.quit(); });
  keel::ServerOptions options;
  options.maxConnections = 100000;
  keel::Server server(loop, addr, options);
  server.setPipelineInit(
      [serverFirst](keel::Connection& c) { c.pipeline().emplaceLast<Responder>(serverFirst); });
  if (auto ec = server.start()) {
    std::fprintf(stderr, "keel-churn server: %s\n", ec.message().c_str());
    return 1;
  }
  std::printf("keel-churn listening on %s\n", server.listenAddress().toString().c_str());
  std::fflush(stdout);
  loop.loop();
  return 0;
}

int runClient(const keel::SocketAddress& addr, bool serverFirst, int count) {
  keel::setLogLevel(spdlog::level::err);  // EADDRNOTAVAIL is the expected failure here
  keel::EventLoop loop;
  int ok = 0, failed = 0;
  std::string firstError;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < count; ++i) {
    bool replied = false, done = false;
    keel::ClientOptions options;
    options.connectTimeout = 2s;
    keel::Client client(loop, addr, options);
    client.setConnectFailed([&](std::error_code ec) {
      if (firstError.empty()) firstError = ec.message();
      done = true;
    });
    client.setPipelineInit(
        [&](keel::Connection& c) { c.pipeline().emplaceLast<Requester>(serverFirst, &replied, &done); });
    client.connect();
    while (!done) loop.runOnce(50ms);
    if (replied) {
      ++ok;
    } else {
      ++failed;
    }
    loop.runOnce(0ms);  // let the client drop the closed connection
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto tw = keel::countTimeWait({0, addr.port()});
  std::printf(
      "{\"mode\":\"%s\",\"count\":%d,\"ok\":%d,\"failed\":%d,\"first_error\":\"%s\",\"client_time_wait\":%zu,"
      "\"seconds\":%.2f}\n",
      serverFirst ? "server-first" : "client-first", count, ok, failed, firstError.c_str(), tw.value_or(0),
      seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-churn: short connections and where their TIME_WAIT lands"};
  app.require_subcommand(1);
  std::string host = "127.0.0.1", close = "client-first";
  std::uint16_t port = 9000;
  int count = 1000;
  for (auto* sub :
       {app.add_subcommand("server", "answer each request"), app.add_subcommand("client", "churn")}) {
    sub->add_option("--host", host);
    sub->add_option("--port", port);
    sub->add_option("--close", close)->check(CLI::IsMember({"client-first", "server-first"}));
  }
  app.get_subcommand("client")->add_option("--count", count)->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  auto addr = keel::SocketAddress::ipv4(host, port);
  if (!addr) {
    std::fprintf(stderr, "keel-churn: bad host %s\n", host.c_str());
    return 2;
  }
  const bool serverFirst = close == "server-first";
  return app.got_subcommand("server") ? runServer(*addr, serverFirst) : runClient(*addr, serverFirst, count);
}
