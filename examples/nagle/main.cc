// keel-nagle: the 40 ms write-write-read stall, and a server that removes it.
//
//   keel-nagle demo [--rounds 3 --requests 10]        both servers in-process, side by side
//   keel-nagle server --port 7005 --profile kernel|latency
//   keel-nagle client --port 7005 [--rounds 3 --requests 10]
//
// The client is the kind you do not control: Nagle on (the default), and
// each 20-byte request written in two 10-byte pieces before it reads the
// 20-byte answer. The server answers only once a WHOLE request is in. So:
// the first piece leaves at once; Nagle holds the second until the first is
// ACKed; the server has nothing to say yet, so its kernel delays that ACK
// (about 40 ms on Linux). Every request costs ~40 ms instead of ~50 us.
// TcpTuning's latency profile re-arms TCP_QUICKACK after every read, so the
// ACK goes out at once and the client's Nagle lets the second piece go: the
// server alone fixes a client it cannot change (net/TcpTuning.h).
// The figures depend on the machine; the shape (milliseconds against
// microseconds) is the point.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/core/SignalWatcher.h>
#include <keel/net/Buffer.h>
#include <keel/net/Server.h>
#include <keel/net/TcpTuning.h>

namespace {

constexpr std::size_t kRequest = 20;  // sent as two writes of kRequest / 2

// The application: answers (echoes) a request only once all of it is in.
class WholeRequests final : public keel::Handler {
 public:
  void onData(keel::HandlerContext& ctx, keel::Buffer& in) override {
    while (in.readableBytes() >= kRequest && !ctx.connection().closed()) {
      ctx.write(std::span<const char>(in.peek(), kRequest));
      in.retrieve(kRequest);
    }
  }
};

std::unique_ptr<keel::Server> makeServer(keel::EventLoop& loop, std::uint16_t port,
                                         keel::TcpProfile profile) {
  auto server = std::make_unique<keel::Server>(loop, keel::SocketAddress::loopback4(port));
  server->setPipelineInit([profile](keel::Connection& c) {
    c.pipeline().emplaceLast<keel::TcpTuning>(profile);  // first: nearest the socket
    c.pipeline().emplaceLast<WholeRequests>();
  });
  if (auto ec = server->start()) {
    std::fprintf(stderr, "keel-nagle: port %u: %s\n", port, ec.message().c_str());
    return nullptr;
  }
  return server;
}

struct Round {
  double p50Ms = 0, maxMs = 0;
};

// The plain client: blocking socket, Nagle on. Calls `report` after each round.
bool runClient(std::uint16_t port, int rounds, int requests, const std::function<void(int, Round)>& report) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const timeval fiveSeconds{5, 0};  // a broken server must not hang the client
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &fiveSeconds, sizeof fiveSeconds);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    std::perror(("keel-nagle: connect to port " + std::to_string(port)).c_str());
    ::close(fd);
    return false;
  }
  char req[kRequest] = "0123456789abcdefghi", reply[kRequest];
  std::vector<double> ms(static_cast<std::size_t>(requests));
  for (int r = 1; r <= rounds; ++r) {
    for (double& sample : ms) {
      const auto start = std::chrono::steady_clock::now();
      bool ok = ::send(fd, req, kRequest / 2, MSG_NOSIGNAL) == kRequest / 2 &&
                ::send(fd, req + kRequest / 2, kRequest / 2, MSG_NOSIGNAL) == kRequest / 2;
      ok = ok && ::recv(fd, reply, kRequest, MSG_WAITALL) == static_cast<ssize_t>(kRequest);
      if (!ok) {
        std::fprintf(stderr, "keel-nagle: request failed in round %d\n", r);
        ::close(fd);
        return false;
      }
      sample = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    }
    std::sort(ms.begin(), ms.end());
    report(r, {ms[(ms.size() - 1) / 2], ms.back()});
  }
  ::close(fd);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-nagle: Nagle + delayed ACK, and the latency profile that removes the stall"};
  app.require_subcommand(1);
  std::uint16_t port = 7005;
  int rounds = 3, requests = 10;
  std::string profileName = "kernel";
  CLI::App* server = app.add_subcommand("server", "answer whole 20-byte requests");
  CLI::App* client = app.add_subcommand("client", "write-write-read with Nagle on; p50/max per round");
  CLI::App* demo = app.add_subcommand("demo", "both profiles in this process, side by side");
  server->add_option("--port", port, "TCP port on 127.0.0.1 (0 picks a free one)");
  server->add_option("--profile", profileName, "kernel or latency")
      ->check(CLI::IsMember({"kernel", "latency"}));
  client->add_option("--port", port, "server port")->required();
  for (CLI::App* sub : {client, demo}) {
    sub->add_option("--rounds", rounds, "rounds")->check(CLI::Range(1, 1000));
    sub->add_option("--requests", requests, "requests per round")->check(CLI::Range(1, 100000));
  }
  CLI11_PARSE(app, argc, argv);
  auto print = [](int r, Round x) {
    std::printf("round %d: p50 %.3f ms  max %.3f ms\n", r, x.p50Ms, x.maxMs);
  };

  if (client->parsed()) return runClient(port, rounds, requests, print) ? 0 : 1;

  keel::EventLoop loop;
  keel::SignalWatcher signals = keel::SignalWatcher::quitOnTerminate(loop);
  if (server->parsed()) {
    auto srv = makeServer(loop, port,
                          profileName == "latency" ? keel::TcpProfile::Latency : keel::TcpProfile::Kernel);
    if (!srv) return 1;
    std::printf("keel-nagle listening on %s (profile %s)\n", srv->listenAddress().toString().c_str(),
                profileName.c_str());
    std::fflush(stdout);
    loop.loop();
    return 0;
  }

  // demo: both servers on this thread's loop; the client runs on another
  // thread against each in turn, then stops the loop.
  auto kernel = makeServer(loop, 0, keel::TcpProfile::Kernel);
  auto latency = makeServer(loop, 0, keel::TcpProfile::Latency);
  if (!kernel || !latency) return 1;
  std::printf("%d rounds of %d write-write-read requests, client Nagle on\n", rounds, requests);
  std::vector<Round> results[2];
  bool ok = true;
  std::thread clientThread([&] {
    for (int i = 0; i < 2 && ok; ++i)
      ok = runClient((i == 0 ? kernel : latency)->listenAddress().port(), rounds, requests,
                     [&](int, Round x) { results[i].push_back(x); });
    loop.quit();  // thread-safe
  });
  loop.loop();
  clientThread.join();
  for (int r = 0; ok && r < rounds; ++r)
    std::printf("round %d: kernel p50 %.3f ms max %.3f ms | latency p50 %.3f ms max %.3f ms\n", r + 1,
                results[0][r].p50Ms, results[0][r].maxMs, results[1][r].p50Ms, results[1][r].maxMs);
  return ok ? 0 : 1;
}
