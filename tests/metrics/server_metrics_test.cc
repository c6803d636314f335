// publishServerMetrics in-process, on real sockets: refusals by cause, the
// extra labels on every series, and the loops of a server with I/O threads.
#include <gtest/gtest.h>

#include <string>

#include "keel/metrics/Registry.h"
#include "keel/metrics/ServerMetrics.h"
#include "keel/net/Buffer.h"
#include "keel/net/Pipeline.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::BlockingClient;
using test::ServerThread;

class Echo final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    (void)ctx.write(in.readable());
    in.retrieveAll();
  }
};

bool contains(const std::string& text, const std::string& line) {
  return text.find(line + "\n") != std::string::npos;
}

TEST(ServerMetrics, RefusalsAreCountedByCauseWithTheServersLabels) {
  ServerOptions opts;
  opts.maxConnections = 1;
  ServerThread srv(SocketAddress::loopback4(0), opts,
                   [](Connection& c) { c.pipeline().emplaceLast<Echo>(); });
  Registry reg;
  srv.runAndWait([&] { publishServerMetrics(reg, srv.server(), {{"server", "echo"}}); });
  BlockingClient first(srv.address());
  ASSERT_EQ(first.echo("x"), "x");  // admitted
  BlockingClient second(srv.address());
  bool eof = false;
  EXPECT_EQ(second.recvUntilEof(&eof), "");
  EXPECT_TRUE(eof) << "over maxConnections: closed at once";
  std::string text;
  ASSERT_TRUE(test::eventually([&] {
    text = reg.expose();
    return contains(text, "keel_connections_refused_total{server=\"echo\",cause=\"full\"} 1");
  })) << text;
  EXPECT_TRUE(contains(text, "keel_connections_accepted_total{server=\"echo\"} 1")) << text;
  EXPECT_TRUE(contains(text, "keel_connections_open{server=\"echo\"} 1")) << text;
  EXPECT_TRUE(contains(text, "keel_connections_refused_total{server=\"echo\",cause=\"per_peer\"} 0")) << text;
  EXPECT_NE(text.find("keel_loop_iterations_total{server=\"echo\",loop=\"0\"} "), std::string::npos) << text;
}

TEST(ServerMetrics, EveryIoLoopAndTheBaseLoopArePublished) {
  ServerOptions opts;
  opts.ioThreads = 2;
  ServerThread srv(SocketAddress::loopback4(0), opts,
                   [](Connection& c) { c.pipeline().emplaceLast<Echo>(); });
  Registry reg;
  srv.runAndWait([&] { publishServerMetrics(reg, srv.server()); });
  BlockingClient a(srv.address()), b(srv.address());
  ASSERT_EQ(a.echo("hello"), "hello");
  ASSERT_EQ(b.echo("world"), "world");
  const std::string text = reg.expose();
  for (const char* loop : {"0", "1", "base"}) {
    EXPECT_NE(text.find(std::string("keel_loop_busy_seconds_total{loop=\"") + loop + "\"} "),
              std::string::npos)
        << loop << "\n"
        << text;
  }
  EXPECT_EQ(text.find("loop=\"2\""), std::string::npos) << text;
}

}  // namespace
}  // namespace keel
