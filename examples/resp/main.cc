// keel-resp: an in-memory subset of Redis (PING ECHO SET GET DEL EXISTS
// INCR QUIT, and enough of COMMAND/HELLO/CONFIG for redis-cli and
// redis-benchmark) on one keel loop.
//
//   keel-resp --port 6380 [--tcp latency|kernel|throughput] [--threads N]
//             [--max-memory BYTES] [--tls-cert FILE --tls-key FILE] [--coroutine]
//             [--metrics-port P]   (Prometheus text at http://HOST:P/metrics)
//   redis-cli -p 6380 SET k v;  redis-benchmark -p 6380 -t ping,set,get -P 16
//   TLS:  redis-cli --tls --cacert ca.pem -p 6380 PING
//
// What it shows:
//   - a protocol handler that parses straight from the connection's input
//     buffer, leaves a partial command there for the next read, and runs
//     every complete command of a read (pipelining), answering with ONE write
//     per read, however many commands the read held;
//   - TcpTuning's latency profile (the default): a client that keeps Nagle
//     on and writes a command in two pieces waits ~40 ms per command on a
//     server that delays its ACKs, and not on this one;
//   - bounded everything: caps in the parser (RespProtocol.h) and the store,
//     and a client that pipelines without reading its replies is paused;
//   - a FIN that is not the end of the work: commands that came before a
//     client's FIN but still wait behind backpressure are run and answered
//     as the client reads, and only then is the connection closed;
//   - RESP over TLS with --tls-cert/--tls-key: a TlsHandler between
//     TcpTuning and the protocol, which reads plaintext as before;
//   - with --coroutine, the same request loop as one coroutine per
//     connection (CoResp.h), behind the same handlers.
#include <csignal>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include <keel/core/EventLoop.h>
#include <keel/net/Buffer.h>
#include <keel/net/Connection.h>
#include <keel/net/HalfClose.h>
#include <keel/net/Server.h>
#include <keel/net/TcpTuning.h>
#include "../common/ExampleMain.h"
#include "../common/ExampleMetrics.h"
#include "../common/ExampleTls.h"

#include "CoResp.h"
#include "RespProtocol.h"
#include "RespStore.h"

namespace {

using keel::resp::RespParser;
using keel::resp::RespStore;

class Resp final : public keel::Handler {
 public:
  explicit Resp(RespStore& store) : store_(store) {}
  std::string_view name() const noexcept override { return "resp"; }

  void onData(keel::HandlerContext& ctx, keel::Buffer& in) override { serve(ctx, in); }

  // The client sent FIN. It may still be reading, and commands it sent
  // before the FIN may still wait in the input buffer behind the high
  // watermark. Each of them is run and answered (serve() goes on from
  // onWritable as the client reads), and serve() closes once none is left.
  // The FIN's policy becomes StayOpen: the tail's default would close as
  // soon as the queued replies drain and drop those commands unrun.
  void onPeerHalfClosed(keel::HandlerContext& ctx, keel::PeerFin& fin) override {
    finSeen_ = true;
    fin.policy = keel::HalfClosePolicy::StayOpen;
    // Above the high watermark, onWritable resumes the work once the client
    // has read; below it, that event will not come, so go on (or close) now.
    keel::Connection& conn = ctx.connection();
    if (conn.outputBytes() < conn.options().highWatermark) serve(ctx, conn.input());
    ctx.firePeerHalfClosed(fin);
  }

  // Replies drained: run the commands left waiting in the input buffer (no
  // new read may ever come for them). This runs inside the connection's
  // end-of-iteration flush, so the work is queued for the next iteration.
  void onWritable(keel::HandlerContext& ctx) override {
    ctx.loop().queueInLoop([weak = ctx.connection().weak_from_this()] {
      const auto conn = weak.lock();
      keel::HandlerContext* self = conn && !conn->closed() ? conn->pipeline().findContext<Resp>() : nullptr;
      if (self == nullptr) return;
      static_cast<Resp&>(self->handler()).serve(*self, conn->input());
      conn->resumeReading();  // lifts the pause on a full input buffer, if any
    });
    ctx.fireWritable();
  }

 private:
  static constexpr std::size_t kFlushAt = 64 << 10;  // hand replies over in pieces this big

  void serve(keel::HandlerContext& ctx, keel::Buffer& in) {
    keel::Connection& conn = ctx.connection();
    bool stalled = false;  // stopped by backpressure, not by running out of commands
    while (!closing_) {
      const RespParser::Status status = parser_.parse(in.view());
      if (status == RespParser::Status::Incomplete) break;
      if (status == RespParser::Status::Error) {
        keel::resp::appendError(out_, "ERR Protocol error: ", parser_.error());
        closing_ = true;
        reason_ = keel::CloseReason::ProtocolError;
        break;
      }
      // args() are views into `in`: run the command before consuming it.
      if (!parser_.args().empty() && store_.execute(parser_.args(), out_) == RespStore::After::Close) {
        closing_ = true;
      }
      in.retrieve(parser_.consumed());
      if (out_.size() >= kFlushAt) {
        flush(ctx);
        // Backpressure: the client is not reading its replies. Stop here;
        // the rest waits in the input buffer until onWritable.
        if (conn.outputBytes() >= conn.options().highWatermark) {
          stalled = true;
          break;
        }
      }
    }
    flush(ctx);
    // After a FIN nothing more will arrive: once the loop above stopped for
    // want of a complete command, the work is done (a partial one at the
    // end can never be completed).
    if (finSeen_ && !closing_ && !stalled) {
      closing_ = true;
      reason_ = keel::CloseReason::PeerClosed;
    }
    if (closing_) {
      in.retrieveAll();
      ctx.close(reason_);  // after the replies above are flushed
    }
  }

  void flush(keel::HandlerContext& ctx) {
    if (out_.empty()) return;
    ctx.write(out_);  // in the latency profile it leaves with the loop's end-of-iteration sendmsg
    out_.clear();
    if (out_.capacity() > 4 * kFlushAt) std::string().swap(out_);  // a huge reply does not stay resident
  }

  RespStore& store_;
  RespParser parser_;
  std::string out_;  // replies of the current read, written at once
  bool closing_ = false;
  bool finSeen_ = false;  // the client half-closed: close once its commands are answered
  keel::CloseReason reason_ = keel::CloseReason::LocalClose;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-resp: a small in-memory Redis-protocol server"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 6380;
  std::size_t threads = 0;
  std::string tcp = "latency";
  RespStore::Options storeOptions;
  app.add_option("--host", host, "address to bind (numeric IPv4)");
  app.add_option("--port", port, "TCP port (0 picks a free one)");
  std::string backend = "auto";
  keel::example::addBackendOption(app, backend);
  app.add_option("--threads", threads, "I/O threads (0: everything on the main loop; >0 locks the store)");
  app.add_option("--tcp", tcp, "TCP tuning profile")->check(CLI::IsMember(keel::example::kProfileNames));
  app.add_option("--max-memory", storeOptions.maxMemoryBytes, "cap on keys+values held (bytes)");
  bool coroutine = false;
  app.add_flag("--coroutine", coroutine,
               "serve each connection with a coroutine (CoResp.h) instead of a handler");
  keel::example::TlsFlags tlsFlags;
  keel::example::addTlsOptions(app, tlsFlags);
  keel::example::MetricsFlags metricsFlags;
  keel::example::addMetricsOptions(app, metricsFlags);
  CLI11_PARSE(app, argc, argv);
  keel::TlsContext::Ptr tls;
  if (tlsFlags.on() && !(tls = keel::example::serverTls(tlsFlags, "keel-resp"))) return 1;

  const keel::TcpProfile profile = keel::example::parseProfile(tcp).value_or(keel::TcpProfile::Latency);
  storeOptions.shared = threads > 0;  // one keyspace for all loops: locked per command
  RespStore store(storeOptions);

  const auto loopOptions = keel::example::loopOptionsFor(backend, "keel-resp");
  if (!loopOptions) return 1;
  keel::EventLoop loop(*loopOptions);

  auto addr = keel::SocketAddress::ipv4(host, port);
  if (!addr) {
    std::fprintf(stderr, "keel-resp: bad address %s\n", host.c_str());
    return 2;
  }
  keel::ServerOptions options;
  options.ioThreads = threads;
  options.loopOptions = *loopOptions;
  // A client that pipelines without reading its replies is paused, not buffered.
  options.connection.pauseReadingAtHighWatermark = true;
  // A protocol error is answered with -ERR and then closed, like Redis: a
  // plain close, not keel's default reset, which could destroy that reply
  // before the client reads it.
  options.connection.resetOnReasons &= ~keel::reasonBit(keel::CloseReason::ProtocolError);
  static_assert(keel::resp::RespLimits{}.maxCommandBytes < keel::ConnectionOptions{}.maxInputBytes,
                "a partial command must fit in the connection's input buffer");

  keel::Server server(loop, *addr, options);
  // SIGINT/SIGTERM: a graceful stop, then the loop quits (exit 0); a
  // second signal aborts whatever is still open.
  if (const std::error_code ec = server.stopOnSignals({SIGINT, SIGTERM})) {
    std::fprintf(stderr, "keel-resp: signals: %s\n", ec.message().c_str());
    return 1;
  }
  server.setPipelineInit([&store, profile, tls, coroutine](keel::Connection& conn) {
    // First, nearest the socket. A read that gets an answer has its ACK
    // carried by that answer: QUICKACK is re-armed only after partial commands.
    conn.pipeline().emplaceLast<keel::TcpTuning>(profile).setQuickAckOnlyWhenSilent(true);
    if (tls) conn.pipeline().emplaceLast<keel::TlsHandler>(tls);
    if (coroutine) {
      // The coroutine closes after answering what came before a FIN.
      conn.pipeline().emplaceLast<keel::HalfClose>(keel::HalfClosePolicy::StayOpen);
      conn.pipeline().emplaceLast<keel::CoConnection>(
          [&store](keel::CoConnection& c) { return keel::resp::serveCoroutine(c, store); });
    } else {
      conn.pipeline().emplaceLast<Resp>(store);
    }
  });
  if (keel::example::startAndAnnounce(server, "keel-resp", tls ? " (tls)" : "") != 0) return 1;
  std::unique_ptr<keel::example::ExampleMetrics> metrics;
  if (keel::example::startMetrics(metricsFlags, server, host, "keel-resp", metrics) != 0) return 1;
  loop.loop();
  return 0;
}
