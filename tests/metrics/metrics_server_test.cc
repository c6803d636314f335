// MetricsServer over real sockets: the answers to a scrape, a wrong path, a
// wrong method, an oversized request and a malformed one; the connection
// cap; and the scrape seeing figures written on another thread.
#include <gtest/gtest.h>

#include <string>

#include "keel/metrics/MetricsServer.h"
#include "keel/metrics/Registry.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::BlockingClient;

std::string ask(const SocketAddress& addr, const std::string& request) {
  BlockingClient c(addr);
  EXPECT_TRUE(c.connected());
  EXPECT_TRUE(c.sendAll(request));
  return c.recvUntilEof();
}

struct Endpoint {
  Registry reg;
  MetricsServer server{reg, SocketAddress::loopback4(0)};
  Endpoint() { EXPECT_FALSE(server.start()); }
};

TEST(MetricsServer, GetMetricsAnswersThePrometheusText) {
  Endpoint e;
  e.reg.counter("demo_events", "Events.").add(12);
  const std::string r = ask(e.server.listenAddress(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << r;
  EXPECT_NE(r.find("Connection: close"), std::string::npos) << r;
  const std::string body =
      "# HELP demo_events_total Events.\n# TYPE demo_events_total counter\ndemo_events_total 12\n";
  EXPECT_NE(r.find("Content-Length: " + std::to_string(body.size()) + "\r\n"), std::string::npos) << r;
  EXPECT_EQ(r.substr(r.find("\r\n\r\n") + 4), body);
}

TEST(MetricsServer, QueryStringIsIgnoredAndHeadHasNoBody) {
  Endpoint e;
  e.reg.gauge("g", "G.").set(1);
  EXPECT_EQ(ask(e.server.listenAddress(), "GET /metrics?name[]=g HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 200", 0),
            0u);
  const std::string head = ask(e.server.listenAddress(), "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  EXPECT_EQ(head.substr(head.find("\r\n\r\n") + 4), "");
}

TEST(MetricsServer, OtherPathsMethodsAndBadRequestsAreRefused) {
  Endpoint e;
  const SocketAddress a = e.server.listenAddress();
  EXPECT_EQ(ask(a, "GET / HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404", 0), 0u);
  const std::string post = ask(a, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(post.rfind("HTTP/1.1 405", 0), 0u) << post;
  EXPECT_NE(post.find("Allow: GET, HEAD\r\n"), std::string::npos) << post;
  EXPECT_EQ(ask(a, "garbage\r\n\r\n").rfind("HTTP/1.1 400", 0), 0u);
  // Headers that never end, past the 8 KiB cap: refused without waiting for the end.
  EXPECT_EQ(ask(a, "GET /metrics HTTP/1.1\r\nX: " + std::string(9000, 'a')).rfind("HTTP/1.1 431", 0), 0u);
}

TEST(MetricsServer, ConnectionsBeyondTheCapAreClosedAtOnce) {
  Registry reg;
  MetricsServer server(reg, SocketAddress::loopback4(0), MetricsServerOptions{.maxConnections = 2});
  ASSERT_FALSE(server.start());
  BlockingClient a(server.listenAddress()), b(server.listenAddress());
  ASSERT_TRUE(a.connected() && b.connected());
  // The server has taken both (a request on each proves they are accepted).
  ASSERT_TRUE(a.sendAll("GET"));
  ASSERT_TRUE(b.sendAll("GET"));
  ASSERT_TRUE(test::eventually([&] {
    BlockingClient c(server.listenAddress(), 2000ms);
    bool eof = false;
    return c.connected() && c.recvUntilEof(&eof).empty() && eof;
  }));
}

TEST(MetricsServer, AScrapeSeesWhatAnotherThreadWrote) {
  Endpoint e;
  Counter& c = e.reg.counter("work", "W.");
  std::thread([&] { c.add(5); }).join();
  EXPECT_NE(ask(e.server.listenAddress(), "GET /metrics HTTP/1.0\r\n\r\n").find("work_total 5\n"),
            std::string::npos);
  EXPECT_EQ(e.reg.scrapes(), 1u);
}

}  // namespace
}  // namespace keel
