// co_await client.connect() (coro/Connect.h): a spawned coroutine on a loop
// driven by the test thread talks to a real echo server on its own thread;
// a refused connect fails with the attempt's error.
#include <gtest/gtest.h>

#include <string>

#include "coro/CoroTestUtil.h"
#include "keel/coro/Connect.h"
#include "keel/coro/Spawn.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

Task<> echo(CoConnection& conn) {
  for (;;) {
    auto in = co_await conn.read();
    if (!in || !co_await conn.write(*in)) co_return;
  }
}

TEST(CoClient, ConnectsWritesAndReadsTheEcho) {
  test::ServerThread srv(SocketAddress::loopback4(0), {},
                         [](Connection& c) { c.pipeline().emplaceLast<CoConnection>(echo); });
  EventLoop loop;
  std::string got;
  std::error_code failed;
  bool done = false;
  {
    CoClient client(loop, srv.address());
    spawn(loop, [](CoClient& cl, std::string& out, std::error_code& err, bool& d) -> Task<> {
      auto conn = co_await cl.connect();
      if (!conn) {
        err = conn.error();
        d = true;
        co_return;
      }
      CoConnection& c = **conn;
      if (auto w = co_await c.write("over the wire"); !w) err = w.error();
      while (out.size() < 13) {
        auto in = co_await c.read();
        if (!in) {
          err = in.error();
          break;
        }
        out.append(in->begin(), in->end());
      }
      auto again = co_await cl.connect();  // already connected: the same one, at once
      if (!again || *again != &c) err = std::make_error_code(std::errc::invalid_argument);
      d = true;
    }(client, got, failed, done));
    ASSERT_TRUE(test::runUntil(loop, [&] { return done; }));
  }
  EXPECT_FALSE(failed) << failed.message();
  EXPECT_EQ(got, "over the wire");
}

TEST(CoClient, ARefusedConnectFailsWithTheAttemptsError) {
  // A port that was just free: nothing listens there.
  std::uint16_t port = 0;
  {
    test::ServerThread probe(SocketAddress::loopback4(0), {}, [](Connection&) {});
    port = probe.address().port();
  }
  EventLoop loop;
  std::error_code failed;
  bool done = false;
  {
    ClientOptions options;
    options.reconnect = ClientOptions::Reconnect::Never;
    CoClient client(loop, SocketAddress::loopback4(port), options);
    spawn(loop, [](CoClient& cl, std::error_code& err, bool& d) -> Task<> {
      auto conn = co_await cl.connect();
      err = conn ? std::error_code() : conn.error();
      d = true;
    }(client, failed, done));
    ASSERT_TRUE(test::runUntil(loop, [&] { return done; }));
  }
  EXPECT_EQ(failed, std::errc::connection_refused) << failed.message();
}

}  // namespace
}  // namespace keel
