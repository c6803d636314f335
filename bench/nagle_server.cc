// keel-rr: the request/reply server behind the Nagle / delayed-ACK matrix.
//
//   keel-rr --port P [--request-size 20] [--reply-size N]
//           [--profile kernel|latency|throughput] [--threads T]
//           [--reply-writes K] [--coalesce profile|on|off] [--quickack-when-silent]
//
// Unlike an echo server, which answers every piece of a request as it
// arrives (so its reply carries the ACK the client's Nagle is waiting for,
// and the stall never shows), keel-rr answers only once a WHOLE request of
// --request-size bytes is in. A client that writes a request in two pieces
// with Nagle on then holds the second piece until the first is ACKed, while
// this side holds that ACK back (delayed ACK, about 40 ms) because it has
// nothing to send yet. The TcpTuning profile decides whether keel breaks
// that deadlock: Latency re-arms TCP_QUICKACK after every read.
//
// The reply is the request itself when --reply-size equals --request-size
// (the default), so keel-pingpong, which checks that the reply matches the
// request, can drive it. A shorter reply is the request's first bytes; a
// longer one is the request followed by filler.
//
// --reply-writes K sends each reply as K writes made in the same dispatch
// (the last takes the remainder): the server-side tinygram pattern, where
// the profile's answer to many small writes shows up on the wire. Write
// coalescing then decides whether they leave as one sendmsg; --coalesce
// overrides what the profile chose, so "latency without coalescing" (Nagle
// off, one segment per write) can be measured next to it.
//
// --quickack-when-silent turns on TcpTuning::setQuickAckOnlyWhenSilent
// (latency profile): no re-arm, and so no separate pure ACK, after a read
// whose dispatch answered.
//
// Prints "keel-rr listening on 127.0.0.1:P" once it accepts connections, and
// exits cleanly on SIGINT/SIGTERM.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/core/SignalWatcher.h>
#include <keel/net/Buffer.h>
#include <keel/net/Server.h>
#include <keel/net/TcpTuning.h>

namespace {

// The application handler: waits for whole requests, answers each with one
// write of the reply.
class RequestReply final : public keel::Handler {
 public:
  RequestReply(std::size_t requestSize, std::size_t replySize, std::size_t replyWrites)
      : requestSize_(requestSize), reply_(replySize, 'z'), replyWrites_(replyWrites) {}

  std::string_view name() const noexcept override { return "request-reply"; }

  void onData(keel::HandlerContext& ctx, keel::Buffer& in) override {
    while (in.readableBytes() >= requestSize_) {
      const char* reply = in.peek();
      if (reply_.size() != requestSize_) {
        std::memcpy(reply_.data(), in.peek(), std::min(requestSize_, reply_.size()));
        reply = reply_.data();
      }
      const std::size_t n = reply_.size();
      const std::size_t piece = std::max<std::size_t>(1, n / replyWrites_);
      std::size_t at = 0;
      for (std::size_t k = 1; k < replyWrites_ && at + piece < n; ++k, at += piece)
        ctx.write(std::span<const char>(reply + at, piece));
      ctx.write(std::span<const char>(reply + at, n - at));
      in.retrieve(requestSize_);
      if (ctx.connection().closed()) return;
    }
    // A partial request stays in the buffer until the rest arrives.
  }

 private:
  std::size_t requestSize_;
  std::vector<char> reply_;
  std::size_t replyWrites_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-rr: answers only whole requests (for the Nagle / delayed-ACK matrix)"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::size_t requestSize = 20;
  std::size_t replySize = 0;
  std::size_t threads = 0;
  std::string profileName = "kernel";
  std::size_t replyWrites = 1;
  std::string coalesce = "profile";
  bool quickAckWhenSilent = false;
  app.add_option("--host", host, "numeric IPv4 address to bind")->capture_default_str();
  app.add_option("--port", port, "TCP port (0 picks a free one)")->capture_default_str();
  app.add_option("--request-size", requestSize, "bytes in one request")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--reply-size", replySize, "bytes in one reply (default: the request size)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20));
  app.add_option("--profile", profileName, "TcpTuning profile installed on every connection")
      ->check(CLI::IsMember({"kernel", "latency", "throughput"}))
      ->capture_default_str();
  app.add_option("--reply-writes", replyWrites, "writes each reply is split into, in one dispatch")
      ->check(CLI::Range(std::size_t{1}, std::size_t{65536}))
      ->capture_default_str();
  app.add_option("--coalesce", coalesce, "write coalescing: as the profile sets it, or forced on/off")
      ->check(CLI::IsMember({"profile", "on", "off"}))
      ->capture_default_str();
  app.add_flag("--quickack-when-silent", quickAckWhenSilent,
               "latency profile: re-arm TCP_QUICKACK only after reads that wrote nothing");
  app.add_option("--threads", threads, "I/O threads (0: all on the main loop)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (replySize == 0) replySize = requestSize;

  const keel::TcpProfile profile = profileName == "latency"      ? keel::TcpProfile::Latency
                                   : profileName == "throughput" ? keel::TcpProfile::Throughput
                                                                 : keel::TcpProfile::Kernel;

  // Constructed before any I/O thread starts, so only this loop takes the signals.
  keel::EventLoop loop;
  bool stopping = false;
  keel::Server* serverPtr = nullptr;
  keel::SignalWatcher signals(loop, {SIGINT, SIGTERM}, [&](int) {
    if (stopping || serverPtr == nullptr) return loop.quit();
    stopping = true;
    serverPtr->stop([&loop] { loop.quit(); });
  });

  auto addr = keel::SocketAddress::ipv4(host, port);
  if (!addr) {
    std::fprintf(stderr, "keel-rr: bad address %s\n", host.c_str());
    return 2;
  }
  keel::ServerOptions options;
  options.ioThreads = threads;
  keel::Server server(loop, *addr, options);
  serverPtr = &server;
  server.setPipelineInit([=](keel::Connection& conn) {
    // TcpTuning first, nearest the socket, as its header asks.
    conn.pipeline().emplaceLast<keel::TcpTuning>(profile).setQuickAckOnlyWhenSilent(quickAckWhenSilent);
    // After the profile, which sets coalescing when it is added.
    if (coalesce != "profile") conn.setWriteCoalescing(coalesce == "on");
    conn.pipeline().emplaceLast<RequestReply>(requestSize, replySize, replyWrites);
  });
  if (auto ec = server.start()) {
    std::fprintf(stderr, "keel-rr: %s: %s\n", addr->toString().c_str(), ec.message().c_str());
    return 1;
  }
  std::printf("keel-rr listening on %s\n", server.listenAddress().toString().c_str());
  std::fflush(stdout);
  std::fprintf(
      stderr,
      "keel-rr: profile %s, request %zu B, reply %zu B in %zu writes, coalescing %s, %zu I/O threads\n",
      std::string(keel::toString(profile)).c_str(), requestSize, replySize, replyWrites, coalesce.c_str(),
      threads);
  loop.loop();
  return 0;
}
