// keel-scale-client: the peer side of bench section 4 (connection scale).
// Opens N connections to keel-scale-server, each [FrameCodec][PongResponder]
// so the server's Heartbeat gets its PONGs, and then keeps them open and
// idle. A separate process from the server, so each side has the whole
// open-file limit to itself.
//
//   keel-scale-client --port P --connections N [--host 127.0.0.1] [--batch 500]
//
// Connections go up in batches (the next batch starts when the last one has
// connected or failed), which keeps the listen backlog from overflowing:
// a dropped SYN costs a 1 s retransmission. Once all have been tried it
// prints {"connected":..,"failed":..,"seconds":..} on one line. It then
// answers commands on stdin like the server: `stats` prints connections
// still open, PINGs answered and closes seen. EOF on stdin, SIGINT or
// SIGTERM stops it (exit status 0).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/core/SignalWatcher.h>
#include <keel/core/Watcher.h>
#include <keel/heartbeat/PongResponder.h>
#include <keel/net/Client.h>
#include <keel/net/FrameCodec.h>
#include <keel/net/Pipeline.h>

namespace {

struct Tally {
  std::size_t launched = 0, connected = 0, failed = 0, closed = 0;
  [[nodiscard]] std::size_t settled() const noexcept { return connected + failed; }
};

// Counts the connection's arrival and departure (loop thread).
class Counter final : public keel::Handler {
 public:
  Counter(Tally* t, std::function<void()>* onSettled) noexcept : tally_(t), onSettled_(onSettled) {}
  void onConnected(keel::HandlerContext& ctx) override {
    ++tally_->connected;
    (*onSettled_)();
    ctx.fireConnected();
  }
  void onClosed(keel::HandlerContext& ctx, keel::CloseReason r) override {
    ++tally_->closed;
    ctx.fireClosed(r);
  }

 private:
  Tally* tally_;
  std::function<void()>* onSettled_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-scale-client: N idle connections that answer heartbeats (bench section 4)"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::size_t connections = 0;
  std::size_t batch = 500;
  app.add_option("--host", host, "server address (numeric IPv4)")->capture_default_str();
  app.add_option("--port", port, "server TCP port")->required();
  app.add_option("--connections", connections, "connections to open")->required();
  app.add_option("--batch", batch, "connects in flight at once")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  auto addr = keel::SocketAddress::ipv4(host, port);
  if (!addr || port == 0 || connections == 0 || batch == 0) {
    std::fprintf(
        stderr,
        "keel-scale-client: need a numeric IPv4 --host, --port 1..65535, --connections/--batch >= 1\n");
    return 2;
  }

  keel::EventLoop loop;
  keel::SignalWatcher signals(loop, {SIGINT, SIGTERM}, [&](int) { loop.quit(); });
  Tally tally;
  std::vector<std::unique_ptr<keel::Client>> clients;
  clients.reserve(connections);
  const auto t0 = std::chrono::steady_clock::now();
  bool reported = false;

  std::function<void()> onSettled;
  auto launch = [&] {
    const std::size_t until = std::min(connections, tally.launched + batch);
    for (; tally.launched < until; ++tally.launched) {
      auto& c = clients.emplace_back(std::make_unique<keel::Client>(loop, *addr));
      c->setPipelineInit([&](keel::Connection& conn) {
        conn.pipeline().emplaceLast<keel::FrameCodec>();
        conn.pipeline().emplaceLast<keel::PongResponder>();
        conn.pipeline().emplaceLast<Counter>(&tally, &onSettled);
      });
      c->setConnectFailed([&](std::error_code ec) {
        if (tally.failed++ == 0)
          std::fprintf(stderr, "keel-scale-client: connect: %s\n", ec.message().c_str());
        onSettled();
      });
      c->connect();
    }
  };
  onSettled = [&] {
    if (tally.settled() < tally.launched) return;
    if (tally.launched < connections) return launch();
    if (reported) return;
    reported = true;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("{\"connected\":%zu,\"failed\":%zu,\"seconds\":%.3f}\n", tally.connected, tally.failed, s);
    std::fflush(stdout);
  };

  std::string pending;
  keel::Watcher commands(loop, STDIN_FILENO, [&](std::uint32_t) {
    char buf[256];
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
      commands.detach();
      loop.quit();
      return;
    }
    pending.append(buf, static_cast<std::size_t>(n));
    if (pending.size() > 4096) pending.erase(0, pending.size() - 4096);
    for (std::size_t eol; (eol = pending.find('\n')) != std::string::npos;) {
      const bool stats = pending.compare(0, eol, "stats") == 0;
      pending.erase(0, eol + 1);
      if (!stats) {
        std::printf("{\"error\":\"unknown command\"}\n");
      } else {
        std::size_t open = 0;
        std::uint64_t answered = 0;
        for (auto& c : clients) {
          if (auto conn = c->connection()) {
            ++open;
            if (auto* r = conn->pipeline().find<keel::PongResponder>()) answered += r->pingsAnswered();
          }
        }
        std::printf("{\"open\":%zu,\"closed\":%zu,\"pings_answered\":%llu}\n", open, tally.closed,
                    static_cast<unsigned long long>(answered));
      }
      std::fflush(stdout);
    }
  });
  if (const std::error_code ec = commands.enable(keel::Watcher::kRead)) {
    std::fprintf(stderr, "scale-client: cannot watch stdin: %s\n", ec.message().c_str());
    return 1;
  }

  launch();
  loop.loop();
  clients.clear();  // on the loop thread, as Client requires
  return 0;
}
