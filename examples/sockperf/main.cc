// keel-sockperf: a responder for sockperf's TCP and UDP wire format, so the
// stock `sockperf ping-pong` / `sockperf under-load` clients can measure keel.
//
//   keel-sockperf --port 11111 [--threads 2] [--backend auto|epoll|io_uring]
//   sockperf ping-pong -i 127.0.0.1 -p 11111 [--tcp] -m 64
//
// What it shows: one port served over TCP (a Server with a framing handler:
// the stream is cut by each message's length field, with a cap) and over UDP
// (a UdpEndpoint: one message per datagram) from the same loop, and a reply
// path that writes everything one read produced with a single send.
// SockperfFrame.h describes the format.
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/net/Buffer.h>
#include <keel/net/Connection.h>
#include <keel/net/Server.h>
#include <keel/net/UdpEndpoint.h>

#include "../common/ExampleMain.h"
#include "SockperfFrame.h"

namespace {

namespace sp = keel::sockperf;

// Replies of one read, gathered so they leave with one send. One per thread:
// handlers on a loop run one at a time, so connections can share it, and an
// idle connection holds no memory. Its size is bounded by one read.
std::string& replyScratch() {
  thread_local std::string out;
  return out;
}

class SockperfResponder final : public keel::Handler {
 public:
  std::string_view name() const noexcept override { return "sockperf"; }
  void onConnected(keel::HandlerContext& ctx) override {
    // sockperf measures one message at a time: Nagle would hold a reply
    // while the previous one is unacknowledged. Set once, no per-read cost.
    (void)ctx.connection().socket().setNoDelay(true);
    ctx.fireConnected();
  }
  void onData(keel::HandlerContext& ctx, keel::Buffer& in) override {
    std::string& out = replyScratch();
    out.clear();
    for (;;) {
      const sp::FrameResult r = sp::parseFrame(in.readable());
      if (r.status == sp::FrameStatus::NeedMore) break;  // the rest of it comes in a later read
      if (r.status != sp::FrameStatus::Complete) {
        std::fprintf(stderr, "keel-sockperf: %s: message length %u: %s (cap %zu), closing\n",
                     ctx.connection().peerAddress().toString().c_str(), r.header.length,
                     std::string(sp::toString(r.status)).c_str(), sp::kMaxMessage);
        in.retrieveAll();
        ctx.close(keel::CloseReason::ProtocolError);
        return;
      }
      if (sp::wantsReply(r.header)) {
        const std::size_t at = out.size();
        out.resize(at + r.consumed);
        sp::writeReply(in.readable().first(r.consumed), out.data() + at);
      }
      in.retrieve(r.consumed);
    }
    if (!out.empty()) ctx.write(out);
  }
};

// UDP: each datagram must be exactly one message. The reply area is sized
// once for the largest one, so answering allocates nothing.
struct UdpResponder {
  std::array<char, sp::kMaxMessage> reply{};
  std::uint64_t invalid = 0;
  void onDatagram(keel::UdpEndpoint& ep, std::span<const char> data, const keel::SocketAddress& from) {
    const sp::FrameResult r = sp::parseFrame(data);
    if (r.status != sp::FrameStatus::Complete || r.consumed != data.size()) {
      if (invalid++ < 5) {  // a few lines, not a flood an attacker controls
        std::fprintf(stderr,
                     "keel-sockperf: udp %s: %zu-byte datagram is not one sockperf message, dropped\n",
                     from.toString().c_str(), data.size());
      }
      return;
    }
    if (!sp::wantsReply(r.header)) return;
    sp::writeReply(data, reply.data());
    (void)ep.sendTo({reply.data(), data.size()},
                    from);  // UDP: a full socket buffer drops it, as sockperf expects
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-sockperf: sockperf-compatible responder (TCP and UDP on one port)"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 11111;
  std::size_t threads = 0;
  app.add_option("--host", host, "numeric IPv4 address to bind");
  app.add_option("--port", port, "TCP and UDP port (0 picks a free one)");
  app.add_option("--threads", threads, "I/O threads for TCP (0: everything on the main loop)");
  std::string backend = "auto";
  keel::example::addBackendOption(app, backend);
  CLI11_PARSE(app, argc, argv);

  const auto loopOptions = keel::example::loopOptionsFor(backend, "keel-sockperf");
  if (!loopOptions) return 1;
  keel::EventLoop loop(*loopOptions);
  std::unique_ptr<keel::Server> server;
  UdpResponder responder;
  keel::UdpEndpoint udp(
      loop, [&responder](keel::UdpEndpoint& ep, std::span<const char> d, const keel::SocketAddress& from) {
        responder.onDatagram(ep, d, from);
      });

  // TCP picks the port first; UDP must then get the same number. With
  // --port 0 another process may hold that UDP port, so try a few times.
  for (int attempt = 0;; ++attempt) {
    auto addr = keel::SocketAddress::ipv4(host, port);
    if (!addr) {
      std::fprintf(stderr, "keel-sockperf: bad address %s\n", host.c_str());
      return 2;
    }
    keel::ServerOptions options;
    options.ioThreads = threads;
    options.loopOptions = *loopOptions;
    server = std::make_unique<keel::Server>(loop, *addr, options);
    server->setPipelineInit([](keel::Connection& c) { c.pipeline().emplaceLast<SockperfResponder>(); });
    if (auto ec = server->start()) {
      std::fprintf(stderr, "keel-sockperf: tcp %s: %s\n", addr->toString().c_str(), ec.message().c_str());
      return 1;
    }
    const keel::SocketAddress bound = server->listenAddress();
    auto ec = udp.bind(bound);
    if (!ec) break;
    server.reset();
    if (port != 0 || attempt == 10) {
      std::fprintf(stderr, "keel-sockperf: udp %s: %s\n", bound.toString().c_str(), ec.message().c_str());
      return 1;
    }
  }
  // SIGINT/SIGTERM: TCP stops gracefully (a second signal aborts it), then
  // UDP closes and the loop quits.
  if (auto ec = server->stopOnSignals({SIGINT, SIGTERM}, [&] {
        udp.close();
        loop.quit();
      })) {
    std::fprintf(stderr, "keel-sockperf: signals: %s\n", ec.message().c_str());
    return 1;
  }
  std::printf("keel-sockperf listening on %s (tcp+udp)\n", server->listenAddress().toString().c_str());
  std::fflush(stdout);
  loop.loop();
  std::fprintf(stderr, "keel-sockperf: udp %llu datagrams in, %llu replies, %llu invalid\n",
               static_cast<unsigned long long>(udp.stats().datagramsIn),
               static_cast<unsigned long long>(udp.stats().datagramsOut),
               static_cast<unsigned long long>(responder.invalid));
  return 0;
}
