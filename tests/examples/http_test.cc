// keel-http as a real process, driven by the real clients (curl for
// keep-alive reuse, wrk for load) and by raw sockets for what those never
// send: 20 pipelined requests in one write, bodies split across writes,
// garbage, oversized heads and bodies, chunked bodies, HTTP/1.0. Every test
// ends with SIGTERM and expects exit status 0.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "support/Child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

struct Response {
  int status = 0;
  std::string head;  // status line and headers
  std::string body;
};

// The status code of a head that starts "HTTP/1.0 NNN " or "HTTP/1.1 NNN ";
// 0 for anything else.
int statusOf(std::string_view head) {
  if (head.size() < 13 || (head.substr(0, 9) != "HTTP/1.1 " && head.substr(0, 9) != "HTTP/1.0 ") ||
      head[12] != ' ')
    return 0;
  int code = 0;
  for (const char c : head.substr(9, 3)) {
    if (c < '0' || c > '9') return 0;
    code = code * 10 + (c - '0');
  }
  return code;
}

// The value of a "Content-Length: N" header line (name in any case) inside
// a head that includes the CRLF ending its last header line; 0 without one.
std::size_t contentLengthOf(std::string_view head) {
  std::string lower(head);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  static constexpr std::string_view kName = "\r\ncontent-length: ";
  const std::size_t at = lower.find(kName);
  if (at == std::string::npos) return 0;
  std::size_t end = at + kName.size();
  std::size_t len = 0;
  while (end < lower.size() && lower[end] >= '0' && lower[end] <= '9')
    len = len * 10 + std::size_t(lower[end++] - '0');
  return lower.compare(end, 2, "\r\n") == 0 ? len : 0;
}

// Splits a byte stream into responses (Content-Length framing; HEAD replies
// have none). Returns false when the stream ends inside a response.
bool splitResponses(std::string_view s, std::vector<Response>& out, const std::vector<bool>& isHead = {}) {
  while (!s.empty()) {
    const std::size_t end = s.find("\r\n\r\n");
    if (end == std::string_view::npos) return false;
    Response r;
    r.head = std::string(s.substr(0, end + 2));
    r.status = statusOf(r.head);
    if (r.status == 0) return false;
    std::size_t len = contentLengthOf(r.head);
    if (out.size() < isHead.size() && isHead[out.size()]) len = 0;
    s.remove_prefix(end + 4);
    if (s.size() < len) return false;
    r.body = std::string(s.substr(0, len));
    s.remove_prefix(len);
    out.push_back(std::move(r));
  }
  return true;
}

// Reads exactly one response from a keep-alive connection.
Response readResponse(BlockingClient& c, bool head = false) {
  std::string h;
  while (h.size() < 4 || h.compare(h.size() - 4, 4, "\r\n\r\n") != 0) {
    std::string b = c.recvExact(1);
    if (b.empty()) return {};
    h += b;
  }
  std::vector<Response> rs;
  const std::size_t len = head ? 0 : contentLengthOf(h);
  const std::string body = c.recvExact(len);
  if (!splitResponses(h + body, rs, {head}) || rs.size() != 1) return {};
  return rs[0];
}

std::string get(std::string_view path, std::string_view extra = "") {
  return "GET " + std::string(path) + " HTTP/1.1\r\nHost: t\r\n" + std::string(extra) + "\r\n";
}

class HttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string bin = binaryPath("keel-http");
    ASSERT_EQ(::access(bin.c_str(), X_OK), 0) << bin << " not built";
    server_ = std::make_unique<Child>(std::vector<std::string>{bin, "--port", "0"});
    port_ = awaitListening(*server_);
    ASSERT_NE(port_, 0) << "keel-http did not come up: " << server_->stderrText();
    addr_ = *SocketAddress::ipv4("127.0.0.1", port_);
    url_ = "http://127.0.0.1:" + std::to_string(port_);
  }
  void TearDown() override {
    if (!server_) return;
    EXPECT_FALSE(server_->wait(std::chrono::milliseconds(0)).has_value()) << "keel-http died during the test";
    EXPECT_EQ(server_->terminate(), 0) << server_->stderrText();
  }

  // stdout and stderr of a shell command, and its exit status.
  static std::string run(const std::string& cmd, int* status) {
    Child c({"sh", "-c", cmd + " 2>&1"});
    c.closeStdin();
    std::string out = c.readAll(std::chrono::seconds(30));
    *status = c.wait(std::chrono::seconds(10)).value_or(-1);
    return out;
  }

  // Sends `request`, expects one response with `status`, then the server's
  // FIN (or a reset after it) and nothing else.
  void expectErrorThenClose(const std::string& request, int status) {
    BlockingClient c(addr_);
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.sendAll(request));
    bool eof = false;
    const std::string got = c.recvUntilEof(&eof);
    EXPECT_TRUE(eof) << "the server must close after a " << status;
    std::vector<Response> rs;
    ASSERT_TRUE(splitResponses(got, rs)) << got;
    ASSERT_EQ(rs.size(), 1u) << got;
    EXPECT_EQ(rs[0].status, status) << got;
    EXPECT_NE(rs[0].head.find("\r\nConnection: close\r\n"), std::string::npos) << got;
  }

  // A new connection still gets "hello": the server survived what came before.
  void expectServing() {
    BlockingClient c(addr_);
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.sendAll(get("/")));
    const Response r = readResponse(c);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "hello\n");
  }

  std::unique_ptr<Child> server_;
  std::uint16_t port_ = 0;
  SocketAddress addr_;
  std::string url_;
};

TEST_F(HttpTest, CurlReusesTheConnectionForTwoUrls) {
  if (!haveTool("curl")) GTEST_SKIP() << "curl not installed (scripts/install-deps.sh)";
  int status = 0;
  const std::string out = run("curl -sv " + url_ + "/ " + url_ + "/missing", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("Re-using existing connection"), std::string::npos) << out;
  EXPECT_NE(out.find("< HTTP/1.1 200 OK"), std::string::npos) << out;
  EXPECT_NE(out.find("< HTTP/1.1 404 Not Found"), std::string::npos) << out;
  EXPECT_NE(out.find("hello\n"), std::string::npos) << out;
  EXPECT_NE(out.find("not found\n"), std::string::npos) << out;
}

TEST_F(HttpTest, CurlHeadHasLengthButNoBody) {
  if (!haveTool("curl")) GTEST_SKIP() << "curl not installed (scripts/install-deps.sh)";
  int status = 0;
  // -w prints what curl downloaded: a HEAD reply has no body.
  const std::string out = run("curl -sI -w 'downloaded=%{size_download}\\n' " + url_ + "/", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("HTTP/1.1 200 OK"), std::string::npos) << out;
  EXPECT_NE(out.find("Content-Length: 6"), std::string::npos) << out;
  EXPECT_NE(out.find("downloaded=0"), std::string::npos) << out;
}

TEST_F(HttpTest, WrkCompletesWithoutErrors) {
  if (!haveTool("wrk")) GTEST_SKIP() << "wrk not installed (scripts/install-deps.sh)";
  int status = 0;
  const std::string out = run("wrk -t1 -c10 -d1s " + url_ + "/", &status);
  EXPECT_EQ(status, 0) << out;
  // wrk's summary: "<N> requests in <T>s, <B>MB read".
  const std::size_t at = out.find(" requests in ");
  ASSERT_NE(at, std::string::npos) << out;
  std::size_t from = at;
  while (from > 0 && out[from - 1] >= '0' && out[from - 1] <= '9') --from;
  ASSERT_LT(from, at) << out;
  EXPECT_GT(std::stol(out.substr(from, at - from)), 0) << out;
  EXPECT_EQ(out.find("Socket errors"), std::string::npos) << out;
  EXPECT_EQ(out.find("Non-2xx"), std::string::npos) << out;
}

// 20 requests in one write (the last asks to close): 20 responses, in order.
TEST_F(HttpTest, TwentyPipelinedRequestsAnsweredInOrder) {
  std::string burst;
  std::vector<int> want;
  std::vector<bool> isHead;
  for (int i = 0; i < 20; ++i) {
    const std::string extra = i == 19 ? "Connection: close\r\n" : "";
    if (i % 3 == 0) {
      burst += get("/nothing-" + std::to_string(i), extra), want.push_back(404), isHead.push_back(false);
    } else if (i % 5 == 0) {
      burst += "HEAD / HTTP/1.1\r\nHost: t\r\n" + extra + "\r\n", want.push_back(200), isHead.push_back(true);
    } else {
      burst += get("/?i=" + std::to_string(i), extra), want.push_back(200), isHead.push_back(false);
    }
  }
  BlockingClient c(addr_);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.sendAll(burst));
  bool eof = false;
  const std::string got = c.recvUntilEof(&eof);
  EXPECT_TRUE(eof);
  std::vector<Response> rs;
  ASSERT_TRUE(splitResponses(got, rs, isHead)) << got;
  ASSERT_EQ(rs.size(), 20u) << got;
  for (std::size_t i = 0; i < rs.size(); ++i) {
    EXPECT_EQ(rs[i].status, want[i]) << "response " << i;
    if (want[i] == 200) {
      EXPECT_EQ(rs[i].body, isHead[i] ? "" : "hello\n") << "response " << i;
    }
  }
  EXPECT_NE(rs.back().head.find("Connection: close"), std::string::npos);
}

// A client that pipelines far more than it reads (keel-http stops reading
// such a client at the output high watermark rather than queueing without
// bound): others are served meanwhile, and once the client reads, every
// response arrives, in order, nothing dropped.
TEST_F(HttpTest, LongPipelineNotReadIsAnsweredInOrderAndOthersServed) {
  constexpr int kRequests = 30000;  // ~4 MB of responses, well past the 1 MiB watermark
  std::string burst;
  for (int i = 0; i < kRequests; ++i) {
    burst += get(i % 2 == 0 ? "/" : "/x", i == kRequests - 1 ? "Connection: close\r\n" : "");
  }
  BlockingClient a(addr_, std::chrono::milliseconds(20000));
  ASSERT_TRUE(a.connected());
  bool sent = false;
  std::thread writer([&] { sent = a.sendAll(burst); });
  expectServing();  // while `a` is stuck, others are answered
  bool eof = false;
  const std::string got = a.recvUntilEof(&eof);
  writer.join();
  EXPECT_TRUE(sent);
  EXPECT_TRUE(eof);
  std::vector<Response> rs;
  ASSERT_TRUE(splitResponses(got, rs));
  ASSERT_EQ(rs.size(), static_cast<std::size_t>(kRequests));
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_EQ(rs[static_cast<std::size_t>(i)].status, i % 2 == 0 ? 200 : 404) << "response " << i;
  }
}

TEST_F(HttpTest, RequestsSplitAtEveryByteAreAnswered) {
  BlockingClient c(addr_);
  ASSERT_TRUE(c.connected());
  c.setNoDelay(true);
  const std::string req = get("/", "User-Agent: byte-by-byte\r\n");
  for (char ch : req) ASSERT_TRUE(c.sendAll(std::string_view(&ch, 1)));
  const Response r = readResponse(c);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello\n");
}

// A body is read and dropped, wherever the writes cut it; the request
// behind it is still parsed as a request.
TEST_F(HttpTest, BodyIsDiscardedAndThePipelinedRequestBehindItAnswered) {
  BlockingClient c(addr_);
  ASSERT_TRUE(c.connected());
  c.setNoDelay(true);
  const std::string body(3000, 'B');
  ASSERT_TRUE(c.sendAll("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3000\r\n\r\n" + body.substr(0, 1000)));
  ASSERT_TRUE(c.sendAll(body.substr(1000, 1500)));
  ASSERT_TRUE(c.sendAll(body.substr(2500) + get("/")));
  const Response post = readResponse(c);
  EXPECT_EQ(post.status, 405);
  EXPECT_NE(post.head.find("Allow: GET, HEAD"), std::string::npos);
  const Response after = readResponse(c);
  EXPECT_EQ(after.status, 200);
  EXPECT_EQ(after.body, "hello\n");
}

TEST_F(HttpTest, ConnectionCloseIsHonoured) {
  expectErrorThenClose(get("/", "Connection: close\r\n") + get("/never-answered"), 200);
}

TEST_F(HttpTest, Http10WithoutKeepAliveCloses) { expectErrorThenClose("GET / HTTP/1.0\r\n\r\n", 200); }

TEST_F(HttpTest, Http10WithKeepAliveStaysOpen) {
  BlockingClient c(addr_);
  ASSERT_TRUE(c.connected());
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(c.sendAll("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    const Response r = readResponse(c);
    EXPECT_EQ(r.status, 200) << "request " << i;
    EXPECT_NE(r.head.find("Connection: keep-alive"), std::string::npos);
    EXPECT_EQ(r.body, "hello\n");
  }
}

TEST_F(HttpTest, GarbageLineGets400AndCloseOthersStillServed) {
  BlockingClient other(addr_);  // a keep-alive neighbour, open across the bad request
  ASSERT_TRUE(other.connected());
  expectErrorThenClose("THIS IS NOT HTTP\r\n\r\n", 400);
  const char tls[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";  // a TLS ClientHello's start, no newline
  expectErrorThenClose(std::string(tls, sizeof tls - 1), 400);
  ASSERT_TRUE(other.sendAll(get("/")));
  EXPECT_EQ(readResponse(other).status, 200);
  expectServing();
}

TEST_F(HttpTest, OversizedHeaderGets431AndClose) {
  expectErrorThenClose(get("/", "X-Big: " + std::string(9000, 'a') + "\r\n"), 431);
  // Even when the head never ends: the cap is on what is buffered.
  expectErrorThenClose("GET / HTTP/1.1\r\nX-Endless: " + std::string(20000, 'a'), 431);
  expectServing();
}

TEST_F(HttpTest, OversizedBodyGets413AndClose) {
  expectErrorThenClose("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000000\r\n\r\nabc", 413);
  expectServing();
}

TEST_F(HttpTest, ChunkedBodyIsRefusedWith501) {
  expectErrorThenClose(
      "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501);
  expectServing();
}

TEST_F(HttpTest, MalformedHeadsGet400Or505) {
  expectErrorThenClose("GET / HTTP/1.1\r\n\r\n", 400);                                   // no Host
  expectErrorThenClose("GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505);                        // other version
  expectErrorThenClose("GET / HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n", 400);             // not a header
  expectErrorThenClose("GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n", 400);  // bad length
  expectErrorThenClose("GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400);
  expectErrorThenClose("GET / HTTP/1.1\nHost: t\n\n", 400);  // bare LF
  expectServing();
}

// RFC 9112 3.2.2: a server must accept the absolute form, which clients
// configured for a proxy send. Its path is routed like the origin form's.
TEST_F(HttpTest, AbsoluteFormTargetsAreRoutedByTheirPath) {
  BlockingClient c(addr_);
  ASSERT_TRUE(c.connected());
  const std::pair<std::string_view, int> cases[] = {
      {"http://t/", 200},  {"HTTP://t:8080/?q=1", 200}, {"http://t", 200},
      {"https://t/", 200}, {"http://t/missing", 404},   {"http://t?q", 200},
  };
  for (const auto& [target, status] : cases) {
    ASSERT_TRUE(c.sendAll(get(target)));
    const Response r = readResponse(c);
    EXPECT_EQ(r.status, status) << target;
  }
  expectErrorThenClose(get("http:///"), 400);  // an http target must name a host
  expectServing();
}

}  // namespace
}  // namespace keel::test
