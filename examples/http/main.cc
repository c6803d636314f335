// keel-http: a minimal HTTP/1.1 "hello" server with keep-alive and request
// pipelining.
//
//   keel-http --port 8080 [--threads 2 [--reuse-port]] [--idle-seconds 60]
//             [--header-timeout-ms 10000] [--body-timeout-ms 30000]
//             [--tls-cert FILE --tls-key FILE]
//             [--handoff PATH [--drain-timeout-ms 10000]] [--metrics-port P]
//   curl http://127.0.0.1:8080/        -> hello
//   wrk -t1 -c50 -d5s http://127.0.0.1:8080/
//   with TLS (ALPN http/1.1):  curl --cacert ca.pem https://localhost:8080/
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
//   - deadlines on whole messages, not on bytes: a request head must be
//     complete within --header-timeout-ms of its first byte (keel's
//     MessageDeadline) and a body within --body-timeout-ms of its head (a
//     loop timer here), else the client gets 408 and the connection closes.
//     A client trickling one byte a second looks busy to the IdleReaper
//     for ever; nginx's client_header_timeout answers it the same way;
//   - keel's caps doing the rest: a client that pipelines without reading
//     stops being read at the output high watermark, and an idle keep-alive
//     connection is closed by the IdleReaper;
//   - HTTPS by adding one handler: with --tls-cert/--tls-key a TlsHandler
//     goes nearest the socket, and everything above it (deadlines, parser,
//     pipelining, graceful shutdown) runs on plaintext unchanged;
//   - restarts that drop nobody (docs/operations.md): with --handoff
//     PATH a new keel-http takes the listening sockets of the running one
//     over PATH, and the old one drains: every request it has read is
//     answered, each keep-alive connection gets `Connection: close` on its
//     next response and closes after it, one idle for kDrainIdle closes
//     as it is, and the process exits 0 (what is left at --drain-timeout-ms
//     is shut down). Started by systemd with socket activation (LISTEN_FDS),
//     it serves the sockets it was given instead of binding.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/heartbeat/IdleReaper.h>
#include <keel/heartbeat/MessageDeadline.h>
#include <keel/net/Buffer.h>
#include <keel/net/Connection.h>
#include <keel/net/Server.h>
#include "../common/ExampleMain.h"
#include "../common/ExampleMetrics.h"
#include "../common/ExampleTls.h"

#include "HttpParser.h"
#include "Restart.h"

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

// The 408 that ends a request not complete in time, then a graceful
// shutdown: FIN after the 408, the peer's further bytes read and dropped
// until its FIN (or the connection's shutdownTimeout), so it gets to read
// the answer instead of a reset.
void answerTimeout(keel::HandlerContext& ctx, std::string_view what) {
  std::string out;
  appendResponse(out, "408 Request Timeout", std::string(what) + " not complete in time\n", true, false, 1,
                 ctx.loop().now());
  ctx.write(out);
  ctx.shutdown();
}

// Answers MessageDeadline's timeout of an unfinished request head with a
// 408. MessageDeadline sits before this handler and raises MessageTimeout
// towards the application at the deadline; the answer and its graceful
// shutdown end the connection (MessageDeadline then leaves it be). An idle
// keep-alive connection (IdleReaper) is not a request: it gets no 408.
class HeadTimeout final : public keel::Handler {
 public:
  std::string_view name() const noexcept override { return "http-head-timeout"; }
  void onData(keel::HandlerContext& ctx, keel::Buffer& in) override {
    if (answered_) return in.retrieveAll();  // after the 408: drain and drop
    ctx.fireData(in);
  }
  void onUserEvent(keel::HandlerContext& ctx, const keel::UserEvent& event) override {
    const auto* timeout = dynamic_cast<const keel::MessageTimeout*>(&event);
    if (timeout == nullptr || answered_) return ctx.fireUserEvent(event);
    answered_ = true;
    std::fprintf(stderr, "keel-http: %s: request head not complete in %lld ms: 408, closing\n",
                 ctx.connection().peerAddress().toString().c_str(),
                 static_cast<long long>(
                     std::chrono::duration_cast<std::chrono::milliseconds>(timeout->waited).count()));
    answerTimeout(ctx, "request head");
  }

 private:
  bool answered_ = false;
};

class HttpHello final : public keel::Handler {
 public:
  explicit HttpHello(std::chrono::milliseconds bodyTimeout) : bodyTimeout_(bodyTimeout) {}
  ~HttpHello() override {  // a torn-down connection skips handlerRemoved
    stopBodyClock();
    stopDrainClock();
  }
  HttpHello(const HttpHello&) = delete;
  HttpHello& operator=(const HttpHello&) = delete;

  std::string_view name() const noexcept override { return "http-hello"; }
  void handlerAdded(keel::HandlerContext& ctx) override {
    ctx_ = &ctx;
    loop_ = &ctx.loop();
    // Accepted in the moment between the handoff and the last accept here:
    // it missed DrainNow, and must not keep the drain waiting if idle.
    if (keel::http::gDraining.load(std::memory_order_relaxed)) armDrainClock();
  }
  void handlerRemoved(keel::HandlerContext&) override {
    stopBodyClock();
    stopDrainClock();
    ctx_ = nullptr;
  }
  void onClosed(keel::HandlerContext& ctx, keel::CloseReason reason) override {
    stopBodyClock();
    stopDrainClock();
    ctx.fireClosed(reason);
  }
  void onUserEvent(keel::HandlerContext& ctx, const keel::UserEvent& event) override {
    if (dynamic_cast<const keel::http::DrainNow*>(&event) == nullptr) return ctx.fireUserEvent(event);
    if (!done_ && !drainTimer_.valid()) armDrainClock();
  }
  void onData(keel::HandlerContext& ctx, keel::Buffer& in) override {
    ++reads_;
    if (done_) return in.retrieveAll();  // shutting down: drain and drop
    bool answered = false;               // a request completed in this call
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
      const std::string_view path = keel::http::requestPath(req.target);
      const bool body = req.method != keel::http::Method::Head;
      // Draining: this response is the connection's last.
      if (keel::http::gDraining.load(std::memory_order_relaxed)) req.keepAlive = false;
      if (path != "/") {
        appendResponse(out, "404 Not Found", "not found\n", body, req.keepAlive, req.versionMinor, now);
      } else if (req.method == keel::http::Method::Other) {
        appendResponse(out, "405 Method Not Allowed", "GET or HEAD only\n", true, req.keepAlive,
                       req.versionMinor, now);
      } else {
        appendResponse(out, "200 OK", "hello\n", body, req.keepAlive, req.versionMinor, now);
      }
      done_ = !req.keepAlive;
      answered = true;
      if (out.size() >= std::size_t{64} * 1024) {
        ctx.write(out);
        out.clear();
      }
    }
    if (!out.empty()) ctx.write(out);
    if (done_) {
      in.retrieveAll();  // pipelined requests behind a close are not answered
      stopBodyClock();
      stopDrainClock();
      ctx.shutdown();
      return;
    }
    partial_ = in.readableBytes() > 0 || parser_.inBody();
    trackBody(answered);
  }

 private:
  // The body deadline. Body bytes are consumed as they arrive (the parser
  // skips them), so MessageDeadline, which watches unconsumed input, never
  // sees a body as incomplete: this handler times it with one loop timer,
  // IdleReaper's way: the timer is armed once, and when it fires early (a
  // newer body began) it re-arms for the remainder.
  void trackBody(bool answered) {
    if (!parser_.inBody() || bodyTimeout_.count() <= 0) {
      inBody_ = false;
      return;
    }
    if (inBody_ && !answered) return;  // the same body continues: its clock keeps running
    inBody_ = true;
    bodySince_ = loop_->now();
    if (!bodyTimer_.valid()) armBodyClock(bodyTimeout_);
  }
  void armBodyClock(keel::Duration delay) {
    bodyTimer_ = loop_->runAfter(delay, [this] { onBodyClock(); });
  }
  void stopBodyClock() noexcept {
    if (bodyTimer_.valid() && loop_ != nullptr) loop_->cancel(bodyTimer_);
    bodyTimer_ = {};
  }
  // The drain's idle check: closes the connection when nothing arrived for
  // a whole kDrainIdle and no request is half read.
  void armDrainClock() {
    readsAtDrainCheck_ = reads_;
    drainTimer_ = loop_->runAfter(keel::http::kDrainIdle, [this] {
      drainTimer_ = {};
      if (ctx_ == nullptr || done_) return;
      if (reads_ != readsAtDrainCheck_ || partial_) return armDrainClock();
      done_ = true;
      stopBodyClock();
      ctx_->shutdown();  // a shutdown, not a close: `this` stays alive
    });
  }
  void stopDrainClock() noexcept {
    if (drainTimer_.valid() && loop_ != nullptr) loop_->cancel(drainTimer_);
    drainTimer_ = {};
  }
  void onBodyClock() {
    bodyTimer_ = {};
    if (ctx_ == nullptr || !inBody_ || done_) return;
    const keel::Duration waited = loop_->now() - bodySince_;
    if (waited < bodyTimeout_) return armBodyClock(bodyTimeout_ - waited);
    done_ = true;
    std::fprintf(stderr, "keel-http: %s: request body not complete in %lld ms: 408, closing\n",
                 ctx_->connection().peerAddress().toString().c_str(),
                 static_cast<long long>(bodyTimeout_.count()));
    answerTimeout(*ctx_, "request body");  // a shutdown, not a close: `this` stays alive
  }

  keel::http::HttpParser parser_;
  bool done_ = false;  // a close was decided: later bytes are dropped
  std::chrono::milliseconds bodyTimeout_;
  keel::HandlerContext* ctx_ = nullptr;  // valid between handlerAdded and handlerRemoved
  keel::EventLoop* loop_ = nullptr;
  keel::TimerId bodyTimer_;
  keel::TimePoint bodySince_{};  // when the body being skipped began (its head was complete)
  bool inBody_ = false;
  keel::TimerId drainTimer_;
  std::uint64_t reads_ = 0;  // onData calls, to tell an idle connection during a drain
  std::uint64_t readsAtDrainCheck_ = 0;
  bool partial_ = false;  // part of a request is in (or being skipped): not idle
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-http: minimal HTTP/1.1 hello server"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;
  std::size_t threads = 0;
  int idleSeconds = 60;
  std::int64_t headerTimeoutMs = 10'000;
  std::int64_t bodyTimeoutMs = 30'000;
  bool reusePort = false;
  std::string handoffPath;
  std::int64_t drainTimeoutMs = 10'000;
  app.add_option("--host", host, "address to bind (numeric IPv4 or IPv6)");
  app.add_option("--port", port, "TCP port (0 picks a free one)");
  std::string backend = "auto";
  keel::example::addBackendOption(app, backend);
  app.add_option("--threads", threads, "I/O threads (0: all on the main loop)");
  app.add_option("--idle-seconds", idleSeconds, "close keep-alive connections idle this long (0: never)");
  app.add_option("--header-timeout-ms", headerTimeoutMs,
                 "a request head must be complete this long after its first byte, else 408 (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--body-timeout-ms", bodyTimeoutMs,
                 "a request body must be complete this long after its head, else 408 (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--reuse-port", reusePort, "with --threads: one SO_REUSEPORT listener per I/O loop");
  app.add_option("--handoff", handoffPath,
                 "Unix socket (\"@name\": abstract) to take the listeners of a running keel-http over, "
                 "and to hand them to the next one");
  app.add_option("--drain-timeout-ms", drainTimeoutMs,
                 "after a handoff, shut down connections still open this long (then exit)")
      ->check(CLI::PositiveNumber);
  keel::example::TlsFlags tlsFlags;
  keel::example::addTlsOptions(app, tlsFlags);
  keel::example::MetricsFlags metricsFlags;
  keel::example::addMetricsOptions(app, metricsFlags);
  CLI11_PARSE(app, argc, argv);
  keel::TlsContext::Ptr tls;
  if (tlsFlags.on() && !(tls = keel::example::serverTls(tlsFlags, "keel-http", {"http/1.1"}))) return 1;

  const auto loopOptions = keel::example::loopOptionsFor(backend, "keel-http");
  if (!loopOptions) return 1;
  keel::EventLoop loop(*loopOptions);

  auto addr = host.find(':') != std::string::npos ? keel::SocketAddress::ipv6(host, port)
                                                  : keel::SocketAddress::ipv4(host, port);
  if (!addr) {
    std::fprintf(stderr, "keel-http: bad address %s\n", host.c_str());
    return 2;
  }
  keel::http::Inherited inherited;
  if (!keel::http::inheritListeners(handoffPath, inherited)) return 1;
  keel::ServerOptions options;
  options.ioThreads = threads;
  options.loopOptions = *loopOptions;
  options.reusePort = reusePort;
  options.connection.pauseReadingAtHighWatermark = true;  // pipelining without reading: stop reading
  options.connection.shutdownTimeout = std::chrono::seconds(5);
  // Adopted sockets bring their own address (and family).
  keel::Server server(loop, inherited.fds.empty() ? *addr : keel::SocketAddress{}, options);
  if (!inherited.fds.empty()) {
    if (const std::error_code aec = server.adoptListeners(std::move(inherited.fds))) {
      std::fprintf(stderr, "keel-http: cannot adopt the listening sockets: %s\n", aec.message().c_str());
      return 1;
    }
  }
  // SIGINT/SIGTERM: a graceful stop, then the loop quits (exit 0); a
  // second signal aborts whatever is still open.
  if (const std::error_code ec = server.stopOnSignals({SIGINT, SIGTERM})) {
    std::fprintf(stderr, "keel-http: signals: %s\n", ec.message().c_str());
    return 1;
  }
  const keel::IdleLimits idle{.reader = std::chrono::seconds(idleSeconds)};
  const std::chrono::milliseconds headerTimeout(headerTimeoutMs), bodyTimeout(bodyTimeoutMs);
  server.setPipelineInit([idle, headerTimeout, bodyTimeout, tls](keel::Connection& c) {
    (void)c.socket().setNoDelay(true);  // a reply is complete when written: no reason to wait
    if (tls) c.pipeline().emplaceLast<keel::TlsHandler>(tls);
    // MessageDeadline before the parser, which leaves an unfinished head in
    // the input: that leftover is what starts the deadline's clock.
    if (headerTimeout.count() > 0) {
      c.pipeline().emplaceLast<keel::MessageDeadline>(headerTimeout);
      c.pipeline().emplaceLast<HeadTimeout>();
    }
    if (idle.any()) c.pipeline().emplaceLast<keel::IdleReaper>(idle, keel::IdleAction::Close);
    c.pipeline().emplaceLast<HttpHello>(bodyTimeout);
  });
  if (keel::example::startAndAnnounce(server, "keel-http", tls ? " (tls)" : "") != 0) return 1;
  std::unique_ptr<keel::example::ExampleMetrics> metrics;
  if (keel::example::startMetrics(metricsFlags, server, host, "keel-http", metrics) != 0) return 1;
  keel::http::confirmTakeover(inherited);
  const auto handoff =
      keel::http::offerHandoff(loop, server, handoffPath, std::chrono::milliseconds(drainTimeoutMs));
  loop.loop();
  return 0;
}
