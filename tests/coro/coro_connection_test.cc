// CoConnection on real sockets: a server on its own loop thread
// (test::ServerThread), plain blocking clients. Echo, frames, peer FIN, a
// close while the coroutine is suspended in read, write or sleep, a timeout
// racing reads, an exception in a connection coroutine, and coroutine and
// callback connections on one server.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>

#include <sys/socket.h>

#include "keel/coro/CoConnection.h"
#include "keel/coro/Sleep.h"
#include "keel/coro/Timeout.h"
#include "keel/heartbeat/IdleReaper.h"
#include "keel/net/FrameCodec.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::BlockingClient;
using test::eventually;
using test::ServerThread;

// What a connection coroutine saw, read by the test thread.
struct Seen {
  std::mutex m;
  std::optional<std::error_code> error;  // the error that ended the op under test
  std::atomic<int> phase{0};
  void set(std::error_code ec) {
    std::lock_guard lock(m);
    error = ec;
  }
  std::optional<std::error_code> get() {
    std::lock_guard lock(m);
    return error;
  }
};

Task<> echo(CoConnection& conn) {
  for (;;) {
    auto in = co_await conn.read();
    if (!in) co_return;
    if (!co_await conn.write(*in)) co_return;
  }
}

void abortive(BlockingClient& c) {
  const linger lg{1, 0};
  ::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  c.close();
}

std::string framed(std::string_view payload) {
  char h[FrameCodec::kHeaderBytes];
  FrameCodec::encodeHeader(static_cast<std::uint32_t>(payload.size()), h);
  return std::string(h, sizeof h) + std::string(payload);
}

TEST(CoConnection, EchoesBytes) {
  ServerThread srv(SocketAddress::loopback4(0), {},
                   [](Connection& c) { c.pipeline().emplaceLast<CoConnection>(echo); });
  BlockingClient client(srv.address());
  ASSERT_TRUE(client.connected());
  const std::string big = test::randomBytes(1 << 20, 7);
  EXPECT_EQ(client.echo("hello"), "hello");
  EXPECT_EQ(client.echo(big), big);
}

TEST(CoConnection, ReadFrameGivesWholeFramesThroughAFrameCodec) {
  ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<CoConnection>([](CoConnection& conn) -> Task<> {
      for (;;) {
        auto f = co_await conn.readFrame();
        if (!f) co_return;
        const std::string upper(f->begin(), f->end());
        if (!co_await conn.writeFrame(std::string("got:") + upper)) co_return;
      }
    });
  });
  BlockingClient client(srv.address());
  ASSERT_TRUE(client.connected());
  // Two frames in one segment, then one split across two sends.
  ASSERT_TRUE(client.sendAll(framed("a") + framed("bc")));
  EXPECT_EQ(client.recvExact(framed("got:a").size() + framed("got:bc").size()),
            framed("got:a") + framed("got:bc"));
  const std::string third = framed("defgh");
  ASSERT_TRUE(client.sendAll(third.substr(0, 3)));
  ASSERT_TRUE(client.sendAll(third.substr(3)));
  EXPECT_EQ(client.recvExact(framed("got:defgh").size()), framed("got:defgh"));
}

TEST(CoConnection, ReadWithoutACodecRefusesReadFrame) {
  Seen seen;
  ServerThread srv(SocketAddress::loopback4(0), {}, [&seen](Connection& c) {
    c.pipeline().emplaceLast<CoConnection>([&seen](CoConnection& conn) -> Task<> {
      auto f = co_await conn.readFrame();
      seen.set(f.error());
    });
  });
  BlockingClient client(srv.address());
  ASSERT_TRUE(eventually([&] { return seen.get().has_value(); }));
  EXPECT_EQ(*seen.get(), std::errc::operation_not_supported);
}

TEST(CoConnection, PeerClosedResumesOnFinAndTheAnswerStillArrives) {
  ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) {
    c.pipeline().emplaceLast<CoConnection>([](CoConnection& conn) -> Task<> {
      if (!co_await conn.peerClosed()) co_return;
      auto r = co_await conn.read();  // nothing more will come
      (void)co_await conn.write(r.error() == CoroErrc::EndOfStream ? "eof" : "??");
    });
  });
  BlockingClient client(srv.address());
  client.shutdownWrite();
  bool eof = false;
  EXPECT_EQ(client.recvUntilEof(&eof), "eof");
  EXPECT_TRUE(eof);
}

TEST(CoConnection, ACloseWhileSuspendedInReadResumesWithTheReason) {
  // An IdleReaper in front closes the connection while the coroutine waits
  // for bytes that never come.
  Seen seen;
  ServerThread srv(SocketAddress::loopback4(0), {}, [&seen](Connection& c) {
    IdleLimits idle;
    idle.all = 50ms;
    c.pipeline().emplaceLast<IdleReaper>(idle, IdleAction::Close);
    c.pipeline().emplaceLast<CoConnection>([&seen](CoConnection& conn) -> Task<> {
      auto r = co_await conn.read();
      seen.set(r.error());
    });
  });
  BlockingClient client(srv.address());
  ASSERT_TRUE(eventually([&] { return seen.get().has_value(); }));
  EXPECT_EQ(closeReasonOf(*seen.get()), CloseReason::IdleTimeout) << seen.get()->message();
}

TEST(CoConnection, ACloseWhileSuspendedInWriteResumesWithTheReason) {
  Seen seen;
  ServerOptions options;
  options.connection.highWatermark = 64 << 10;
  options.connection.lowWatermark = 16 << 10;
  ServerThread srv(SocketAddress::loopback4(0), options, [&seen](Connection& c) {
    c.pipeline().emplaceLast<CoConnection>([&seen](CoConnection& conn) -> Task<> {
      const std::string chunk(32 << 10, 'x');
      for (;;) {
        auto r = co_await conn.write(chunk);
        if (!r) {
          seen.set(r.error());
          co_return;
        }
      }
    });
  });
  BlockingClient client(srv.address());  // never reads
  ASSERT_TRUE(eventually([&] { return srv.server().stats().queuedOutput > (64u << 10); }))
      << "the output never went above the high watermark";
  EXPECT_FALSE(seen.get().has_value()) << "the write completed above the high watermark";
  abortive(client);
  ASSERT_TRUE(eventually([&] { return seen.get().has_value(); }));
  EXPECT_EQ(closeReasonOf(*seen.get()), CloseReason::PeerReset) << seen.get()->message();
}

TEST(CoConnection, ACloseWhileSuspendedInSleepResumesWithTheReason) {
  Seen seen;
  ServerThread srv(SocketAddress::loopback4(0), {}, [&seen](Connection& c) {
    c.pipeline().emplaceLast<CoConnection>([&seen](CoConnection& conn) -> Task<> {
      seen.phase = 1;
      auto r = co_await sleep(conn.loop(), 1h);
      seen.set(r.error());
      auto again = co_await sleep(conn.loop(), 1h);  // after the close: refused at once
      seen.phase = again ? 3 : 2;
    });
  });
  BlockingClient client(srv.address());
  ASSERT_TRUE(eventually([&] { return seen.phase.load() == 1; }));
  abortive(client);
  ASSERT_TRUE(eventually([&] { return seen.phase.load() >= 2; }));
  EXPECT_EQ(closeReasonOf(*seen.get()), CloseReason::PeerReset) << seen.get()->message();
  EXPECT_EQ(seen.phase.load(), 2) << "a sleep after the close suspended";
}

TEST(CoConnection, ReadTimeoutsRacingArrivingBytesLoseAndRepeatNothing) {
  // A 1 ms timeout on every read while the client trickles bytes: each byte
  // must come out of exactly one read, whichever side of a timeout it lands.
  std::atomic<std::size_t> timeouts{0};
  ServerThread srv(SocketAddress::loopback4(0), {}, [&timeouts](Connection& c) {
    c.pipeline().emplaceLast<CoConnection>([&timeouts](CoConnection& conn) -> Task<> {
      for (;;) {
        auto in = co_await withTimeout(1ms, conn.read());
        if (in.error() == std::errc::timed_out) {
          ++timeouts;
          continue;
        }
        if (!in || !co_await conn.write(*in)) co_return;
      }
    });
  });
  BlockingClient client(srv.address());
  client.setNoDelay(true);
  std::string sent;
  std::string got;
  for (int i = 0; i < 300; ++i) {
    const std::string piece = std::to_string(i) + ",";
    ASSERT_TRUE(client.sendAll(piece));
    sent += piece;
    got += client.recvExact(piece.size());
    if (i % 50 == 0) {
      // Let reads time out with nothing there before going on.
      const std::size_t before = timeouts.load();
      ASSERT_TRUE(eventually([&] { return timeouts.load() > before; }));
    }
  }
  EXPECT_EQ(got, sent);
  EXPECT_GT(timeouts.load(), 0u) << "no read ever timed out: the race was not exercised";
}

TEST(CoConnection, AnExceptionReachesTheHandlerAndClosesTheConnection) {
  std::atomic<bool> handled{false};
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    c.pipeline().emplaceLast<CoConnection>(
        [](CoConnection& conn) -> Task<> {
          (void)co_await conn.read();
          throw std::runtime_error("bad request");
        },
        [&handled](std::exception_ptr e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::runtime_error&) {
            handled = true;
          }
        });
  });
  BlockingClient client(srv.address());
  ASSERT_TRUE(client.sendAll("x"));
  bool eof = false;
  (void)client.recvUntilEof(&eof);
  EXPECT_TRUE(eof);
  EXPECT_TRUE(handled.load());
  EXPECT_TRUE(
      eventually([&] { return srv.server().stats().closedBy[static_cast<int>(CloseReason::Error)] == 1; }));
}

class CallbackEcho final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    ctx.write(Slices{std::string_view("cb:"), in.readable()});
    in.retrieveAll();
  }
};

TEST(CoConnection, CoroutineAndCallbackConnectionsShareAServer) {
  ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) {
    if (c.id() % 2 == 0) {
      c.pipeline().emplaceLast<CoConnection>([](CoConnection& conn) -> Task<> {
        for (;;) {
          auto in = co_await conn.read();
          if (!in || !co_await conn.write(Slices{std::string_view("co:"), *in})) co_return;
        }
      });
    } else {
      c.pipeline().emplaceLast<CallbackEcho>();
    }
  });
  int co = 0;
  int cb = 0;
  for (int i = 0; i < 8; ++i) {
    BlockingClient client(srv.address());
    ASSERT_TRUE(client.sendAll("hi"));
    const std::string back = client.recvExact(5);
    if (back == "co:hi") ++co;
    if (back == "cb:hi") ++cb;
  }
  EXPECT_EQ(co + cb, 8);
  EXPECT_GT(co, 0);
  EXPECT_GT(cb, 0);
}

TEST(CoConnection, AServerDestroyedWithCoroutinesSuspendedFreesTheirFrames) {
  auto srv = std::make_unique<ServerThread>(SocketAddress::loopback4(0), ServerOptions{}, [](Connection& c) {
    c.pipeline().emplaceLast<CoConnection>(echo);
  });
  std::vector<std::unique_ptr<BlockingClient>> clients;
  for (int i = 0; i < 20; ++i) clients.push_back(std::make_unique<BlockingClient>(srv->address()));
  ASSERT_TRUE(eventually([&] { return srv->server().connectionCount() == 20; }));
  srv.reset();  // ASan reports any frame left behind
  for (auto& c : clients) {
    bool eof = false;
    (void)c->recvUntilEof(&eof);
    EXPECT_TRUE(eof);
  }
}

}  // namespace
}  // namespace keel
