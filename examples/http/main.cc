// keel-http: a minimal HTTP/1.1 "hello" server with keep-alive and request
// pipelining.
//
//   keel-http --port 8080 [--threads 2] [--idle-seconds 60]
//   curl http://127.0.0.1:8080/        -> hello
//   wrk -t1 -c50 -d5s http://127.0.0.1:8080/
//
// Routes: GET or HEAD / -> 200 "hello\n"; another method on / -> 405; any
// other path -> 404. What it shows:
//   - a stateful parser (HttpParser.h) as the last handler, fed straight
//     from the connection's input buffer; it consumes what it used;
//   - pipelining: every request one read brought in is answered, in order,
//     into one reply buffer that leaves with a single send;
//   - bad input (400/413/431/505, and 501 for chunked request bodies, which
//     keel-http refuses: see HttpParser.h) gets its status line, then a graceful
//     shutdown (FIN, then the rest of the peer's bytes are read and dropped
//     until its FIN), so the peer actually reads the error instead of a reset;
//   - keel's caps doing the rest: a client that pipelines without reading
//     stops being read at the output high watermark, and an idle keep-alive
//     connection is closed by the IdleReaper.
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/core/SignalWatcher.h>
#include <keel/heartbeat/IdleReaper.h>
#include <keel/net/Buffer.h>
#include <keel/net/Server.h>

#include "HttpParser.h"

namespace {

using keel::http::ParseStatus;

// The Date header, formatted at most once per second per loop thread: the
// loop's cached now() (read once per iteration) tells when a second passed,
// so a request costs no clock read at all.
std::string_view httpDate(keel::TimePoint now) {
  thread_local std::int64_t second = -1;
  thread_local char text[40];
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  if (s != second) {
    second = s;
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    (void)std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  }
  return text;
}

// Replies of one read. One per thread: handlers on a loop run one at a time,
// and an idle connection keeps no memory. Flushed whenever it passes 64 KiB.
std::string& replyScratch() {
  thread_local std::string out;
  return out;
}

void appendResponse(std::string& out, std::string_view status, std::string_view body, bool sendBody,
                    bool keepAlive, int versionMinor, keel::TimePoint now) {
  out += versionMinor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ";
  out += status;
  out += "\r\nServer: keel-http\r\nDate: ";
  out += httpDate(now);
  out += "\r\nContent-Type: text/plain\r\nContent-Length: ";
  out += std::to_string(body.size());  // small: fits std::string's inline buffer
  if (!keepAlive) {
    out += "\r\nConnection: close";
  } else if (versionMinor == 0) {
    out += "\r\nConnection: keep-alive";  // HTTP/1.0 defaults to close: say we keep it
  }
  if (status.starts_with("405")) out += "\r\nAllow: GET, HEAD";
  out += "\r\n\r\n";
  if (sendBody) out += body;
}

class HttpHello final : public keel::Handler {
 public:
  std::string_view name() const noexcept override { return "http-hello"; }
  void onData(keel::HandlerContext& ctx, keel::Buffer& in) override {
    if (done_) return in.retrieveAll();  // shutting down: drain and drop
    std::string& out = replyScratch();
    out.clear();
    const keel::TimePoint now = ctx.loop().now();
    keel::http::HttpRequest req;
    while (!done_) {
      const keel::http::ParseResult r = parser_.parse(in.readable(), req);
      in.retrieve(r.consumed);
      if (r.status == ParseStatus::NeedMore) break;
      if (r.status == ParseStatus::Error) {
        std::fprintf(stderr, "keel-http: %s: %d %s, closing\n",
                     ctx.connection().peerAddress().toString().c_str(), r.error,
                     std::string(r.reason).c_str());
        appendResponse(out, keel::http::statusLine(r.error), std::string(r.reason) + "\n", true, false, 1,
                       now);
        done_ = true;
        break;
      }
      const std::string_view path = req.target.substr(0, req.target.find('?'));
      const bool body = req.method != keel::http::Method::Head;
      if (path != "/") {
        appendResponse(out, "404 Not Found", "not found\n", body, req.keepAlive, req.versionMinor, now);
      } else if (req.method == keel::http::Method::Other) {
        appendResponse(out, "405 Method Not Allowed", "GET or HEAD only\n", true, req.keepAlive,
                       req.versionMinor, now);
      } else {
        appendResponse(out, "200 OK", "hello\n", body, req.keepAlive, req.versionMinor, now);
      }
      done_ = !req.keepAlive;
      if (out.size() >= std::size_t{64} * 1024) {
        ctx.write(out);
        out.clear();
      }
    }
    if (!out.empty()) ctx.write(out);
    if (done_) {
      in.retrieveAll();  // pipelined requests behind a close are not answered
      ctx.shutdown();
    }
  }

 private:
  keel::http::HttpParser parser_;
  bool done_ = false;  // a close was decided: later bytes are dropped
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-http: minimal HTTP/1.1 hello server"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;
  std::size_t threads = 0;
  int idleSeconds = 60;
  app.add_option("--host", host, "address to bind (numeric IPv4 or IPv6)");
  app.add_option("--port", port, "TCP port (0 picks a free one)");
  app.add_option("--threads", threads, "I/O threads (0: all on the main loop)");
  app.add_option("--idle-seconds", idleSeconds, "close keep-alive connections idle this long (0: never)");
  CLI11_PARSE(app, argc, argv);

  keel::EventLoop loop;
  bool stopping = false;
  keel::Server* serverPtr = nullptr;
  keel::SignalWatcher signals(loop, {SIGINT, SIGTERM}, [&](int) {
    if (stopping || serverPtr == nullptr) return loop.quit();
    stopping = true;
    serverPtr->stop([&loop] { loop.quit(); });
  });

  auto addr = host.find(':') != std::string::npos ? keel::SocketAddress::ipv6(host, port)
                                                  : keel::SocketAddress::ipv4(host, port);
  if (!addr) {
    std::fprintf(stderr, "keel-http: bad address %s\n", host.c_str());
    return 2;
  }
  keel::ServerOptions options;
  options.ioThreads = threads;
  options.connection.pauseReadingAtHighWatermark = true;  // pipelining without reading: stop reading
  options.connection.shutdownTimeout = std::chrono::seconds(5);
  keel::Server server(loop, *addr, options);
  serverPtr = &server;
  const keel::IdleLimits idle{.reader = std::chrono::seconds(idleSeconds)};
  server.setPipelineInit([idle](keel::Connection& c) {
    (void)c.socket().setNoDelay(true);  // a reply is complete when written: no reason to wait
    if (idle.any()) c.pipeline().emplaceLast<keel::IdleReaper>(idle, keel::IdleAction::Close);
    c.pipeline().emplaceLast<HttpHello>();
  });
  if (auto ec = server.start()) {
    std::fprintf(stderr, "keel-http: %s: %s\n", addr->toString().c_str(), ec.message().c_str());
    return 1;
  }
  std::printf("keel-http listening on %s\n", server.listenAddress().toString().c_str());
  std::fflush(stdout);
  loop.loop();
  return 0;
}
