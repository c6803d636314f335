// keel-upload: "send everything, half-close, read the answer" over TCP.
//
//   keel-upload server --port 7004
//   keel-upload client --port 7004 --file big.iso
//   or with socat:  socat -t 5 - TCP:127.0.0.1:7004 < big.iso
//
// The client streams a file and then calls shutdown(SHUT_WR): its FIN says
// "that was all", while its read side stays open. The server counts the
// bytes and hashes them (FNV-1a, 64 bit), and only after that FIN answers
// "<bytes> <hash as 16 hex digits>\n", then closes.
//
// What it shows: a peer's FIN is an event, not a teardown. Many frameworks
// close the connection on the FIN (read() == 0) and the answer is lost. In
// keel the HalfClose handler's StayOpen policy keeps the connection open
// after the FIN so the application can still write (net/HalfClose.h). On
// the client side, Connection::shutdown() flushes, sends the FIN and keeps
// reading until the server's own FIN. The client never holds more than
// about the high watermark (1 MiB) of the file in memory: it pauses at the
// watermark and resumes on onWritable.
//
// Client exit status: 0 the server's answer matches the client's own count
// and hash, 1 a file or connection error (or interrupted), 3 the answers differ.
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/core/SignalWatcher.h>
#include <keel/heartbeat/IdleReaper.h>
#include <keel/net/Buffer.h>
#include <keel/net/Client.h>
#include <keel/net/HalfClose.h>
#include <keel/net/Server.h>

namespace {

// Byte count and FNV-1a 64 of a stream, fed in pieces.
struct Digest {
  std::uint64_t bytes = 0;
  std::uint64_t hash = 0xcbf29ce484222325ULL;  // FNV offset basis
  void add(std::span<const char> data) {
    for (const char c : data) hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;  // FNV prime
    bytes += data.size();
  }
  std::string text() const {
    char out[48];
    std::snprintf(out, sizeof out, "%" PRIu64 " %016" PRIx64, bytes, hash);
    return out;
  }
};

// Server side: digest what arrives; answer on the peer's FIN.
class Receiver final : public keel::Handler {
 public:
  void onData(keel::HandlerContext&, keel::Buffer& in) override {
    digest_.add(in.readable());
    in.retrieveAll();
  }
  void onPeerHalfClosed(keel::HandlerContext& ctx, keel::PeerFin&) override {
    (void)ctx.write(digest_.text() + "\n");
    ctx.close();  // flush the answer, then close (TIME_WAIT stays here, the cheap side)
  }

 private:
  Digest digest_;
};

// Client side: stream the file under the watermark, half-close, read the answer.
class Sender final : public keel::Handler {
 public:
  Sender(std::FILE* file, int* exitCode) : file_(file), exitCode_(exitCode) {}
  void onConnected(keel::HandlerContext& ctx) override { pump(ctx); }
  void onWritable(keel::HandlerContext& ctx) override { pump(ctx); }
  void onData(keel::HandlerContext&, keel::Buffer& in) override {
    if (answer_.size() < 256) answer_.append(in.view().substr(0, 256));  // a cap on a misbehaving server
    in.retrieveAll();
  }
  void onClosed(keel::HandlerContext& ctx, keel::CloseReason reason) override {
    if (!answer_.empty() && answer_.back() == '\n') answer_.pop_back();
    if (!sent_) {
      std::fprintf(stderr, "keel-upload: connection lost while sending (%s)\n",
                   std::string(toString(reason)).c_str());
    } else if (answer_.empty()) {
      std::fprintf(stderr, "keel-upload: no answer from the server (%s)\n",
                   std::string(toString(reason)).c_str());
    } else if (answer_ == own_.text()) {
      std::printf("server: %s\nmatch\n", answer_.c_str());
      *exitCode_ = 0;
    } else {
      std::printf("server: %s\nclient: %s\nMISMATCH\n", answer_.c_str(), own_.text().c_str());
      *exitCode_ = 3;
    }
    ctx.loop().quit();
  }

 private:
  // Reads and writes file chunks until the output queue passes the high
  // watermark (then onWritable calls again) or the file ends.
  void pump(keel::HandlerContext& ctx) {
    keel::Connection& c = ctx.connection();
    while (!sent_ && c.outputBytes() <= c.options().highWatermark) {
      const std::size_t n = std::fread(chunk_, 1, sizeof chunk_, file_);
      if (n == 0) {
        if (std::ferror(file_)) return ctx.close(keel::CloseReason::Error);
        sent_ = true;
        ctx.shutdown();  // FIN: "that was everything"; reading goes on
        return;
      }
      own_.add({chunk_, n});
      ctx.write(std::span<const char>(chunk_, n));
      if (c.closed()) return;
    }
  }

  std::FILE* file_;
  int* exitCode_;
  bool sent_ = false;
  Digest own_;
  std::string answer_;
  char chunk_[64 << 10];
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-upload: stream a file, half-close, get its size and hash back"};
  app.require_subcommand(1);
  std::string host = "127.0.0.1", path;
  std::uint16_t port = 7004;
  std::int64_t idleMs = 30'000;
  CLI::App* server = app.add_subcommand("server", "digest uploads, answer after the client's FIN");
  CLI::App* client = app.add_subcommand("client", "upload a file and check the answer");
  for (CLI::App* sub : {server, client}) {
    sub->add_option("--host", host, "address (numeric IPv4)");
    sub->add_option("--port", port, "TCP port (server: 0 picks a free one)");
  }
  client->add_option("--file", path, "file to send")->required()->check(CLI::ExistingFile);
  server->add_option("--idle-timeout-ms", idleMs, "close an upload that sends nothing this long; 0: never")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);

  const auto addr = keel::SocketAddress::ipv4(host, port);
  if (!addr) {
    std::fprintf(stderr, "keel-upload: bad address %s\n", host.c_str());
    return 2;
  }
  keel::EventLoop loop;

  if (server->parsed()) {
    keel::Server srv(loop, *addr);
    // A client that stalls mid-upload would hold its descriptor forever:
    // the IdleReaper closes it after --idle-timeout-ms without a byte.
    keel::IdleLimits idle;
    idle.reader = std::chrono::milliseconds(idleMs);
    srv.setPipelineInit([idle](keel::Connection& c) {
      c.pipeline().emplaceLast<keel::HalfClose>(keel::HalfClosePolicy::StayOpen);
      if (idle.any()) c.pipeline().emplaceLast<keel::IdleReaper>(idle, keel::IdleAction::Close);
      c.pipeline().emplaceLast<Receiver>();
    });
    if (auto ec = srv.start()) {
      std::fprintf(stderr, "keel-upload: %s: %s\n", addr->toString().c_str(), ec.message().c_str());
      return 1;
    }
    // The server's normal way out: uploads in progress get their answers
    // (up to the stop timeout), then exit 0.
    if (auto ec = srv.stopOnSignals({SIGINT, SIGTERM})) {
      std::fprintf(stderr, "keel-upload: signals: %s\n", ec.message().c_str());
      return 1;
    }
    std::printf("keel-upload listening on %s\n", srv.listenAddress().toString().c_str());
    std::fflush(stdout);
    loop.loop();
    return 0;
  }

  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) {
    std::perror(("keel-upload: " + path).c_str());
    return 1;
  }
  int exitCode = 1;
  keel::SignalWatcher signals(loop, {SIGINT, SIGTERM}, [&](int) { loop.quit(); });  // interrupted: exit 1
  keel::Client cli(loop, *addr);
  cli.setPipelineInit([&](keel::Connection& c) { c.pipeline().emplaceLast<Sender>(file.get(), &exitCode); });
  cli.setConnectFailed([&](std::error_code ec) {
    std::fprintf(stderr, "keel-upload: cannot connect to %s: %s\n", addr->toString().c_str(),
                 ec.message().c_str());
    loop.quit();
  });
  cli.connect();
  loop.loop();
  return exitCode;
}
