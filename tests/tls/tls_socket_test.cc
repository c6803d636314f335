// TlsHandler on real sockets against a real, unmodified TLS client:
// openssl s_client. Verification, ALPN and close_notify; and the hostile
// cases (plaintext to the TLS port, a handshake cut off, a TLS 1.2
// renegotiation attempt) with the server still serving everyone else.
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <mutex>
#include <string>

#include "keel/net/Buffer.h"
#include "keel/net/Server.h"
#include "keel/tls/TlsHandler.h"
#include "support/Child.h"
#include "support/TestNet.h"
#include "support/TestPki.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

struct EchoBytes final : Handler {
  void onData(HandlerContext& ctx, Buffer& in) override {
    (void)ctx.write(in.readable());
    in.retrieveAll();
  }
};

std::uint64_t closedBy(Server& s, CloseReason r) { return s.stats().closedBy[static_cast<std::size_t>(r)]; }

class TlsSockets : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    pki_ = test::testPki(&why);
    if (pki_ == nullptr) GTEST_SKIP() << why;
    if (!test::haveTool("openssl")) GTEST_SKIP() << "openssl not installed";
    TlsServerOptions o;
    o.certFile = pki_->serverCert;
    o.keyFile = pki_->serverKey;
    o.alpn = {"http/1.1"};
    std::error_code ec;
    tls_ = TlsContext::server(o, ec);
    ASSERT_TRUE(tls_) << ec.message();
    server_ = std::make_unique<test::ServerThread>(*SocketAddress::parse("127.0.0.1:0"), ServerOptions{},
                                                   [this](Connection& c) {
                                                     c.pipeline().emplaceLast<TlsHandler>(tls_);
                                                     c.pipeline().emplaceLast<Negotiated>(*this);
                                                     c.pipeline().emplaceLast<EchoBytes>();
                                                   });
    port_ = std::to_string(server_->address().port());
  }
  std::unique_ptr<test::Child> sClient(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{"openssl",
                                  "s_client",
                                  "-connect",
                                  "127.0.0.1:" + port_,
                                  "-CAfile",
                                  pki_->caCert,
                                  "-verify_return_error",
                                  "-servername",
                                  "localhost",
                                  "-brief"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<test::Child>(argv);
  }
  // A client that must be served: the echo of one line comes back.
  void expectServed() {
    auto c = sClient();
    ASSERT_TRUE(c->write("still serving\n"));
    EXPECT_EQ(c->readLine(), "still serving") << c->stderrText();
    c->closeStdin();
    EXPECT_EQ(c->wait(), 0) << c->stderrText();
  }

  // What the server's TlsHandler negotiated, read from the test's thread.
  struct Negotiated final : Handler {
    explicit Negotiated(TlsSockets& t) : test(t) {}
    void onConnected(HandlerContext& ctx) override {
      std::lock_guard lock(test.mutex_);
      test.alpn_ = ctx.pipeline().find<TlsHandler>()->alpn();
      ctx.fireConnected();
    }
    TlsSockets& test;
  };
  std::string alpn() {
    std::lock_guard lock(mutex_);
    return alpn_;
  }

  const test::TestPki* pki_ = nullptr;
  std::mutex mutex_;
  std::string alpn_;
  TlsContext::Ptr tls_;
  std::unique_ptr<test::ServerThread> server_;
  std::string port_;
};

TEST_F(TlsSockets, OpensslClientVerifiesNegotiatesAndEchoes) {
  auto c = sClient({"-alpn", "http/1.1"});
  ASSERT_TRUE(c->write("hello keel\n"));
  EXPECT_EQ(c->readLine(), "hello keel") << c->stderrText();
  c->closeStdin();  // s_client sends close_notify, then closes
  EXPECT_EQ(c->wait(), 0);
  const std::string err = c->stderrText();
  EXPECT_NE(err.find("Verification: OK"), std::string::npos) << err;
  EXPECT_NE(err.find("TLSv1.3"), std::string::npos) << err;
  EXPECT_TRUE(test::eventually([&] { return alpn() == "http/1.1"; })) << "ALPN on the server: " << alpn();
  EXPECT_TRUE(test::eventually([&] { return closedBy(server_->server(), CloseReason::PeerClosed) == 1; }))
      << "close_notify is a clean close";
}

TEST_F(TlsSockets, AClientThatDoesNotTrustTheCaGivesUp) {
  auto c = std::make_unique<test::Child>(
      std::vector<std::string>{"openssl", "s_client", "-connect", "127.0.0.1:" + port_, "-CAfile",
                               pki_->untrustedCa, "-verify_return_error", "-brief"});
  c->closeStdin();
  EXPECT_NE(c->wait(), 0);
  EXPECT_TRUE(test::eventually([&] { return closedBy(server_->server(), CloseReason::TlsError) == 1; }));
  expectServed();
}

TEST_F(TlsSockets, PlaintextToTheTlsPortIsRefused) {
  {
    // HTTP to an HTTPS port: OpenSSL recognises it; no alert (the peer
    // would not understand one), just the close.
    test::BlockingClient raw(server_->address());
    ASSERT_TRUE(raw.sendAll("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    bool eof = false;
    EXPECT_EQ(raw.recvUntilEof(&eof), "");
    EXPECT_TRUE(eof);
  }
  {
    // A handshake record with garbage in it: a TLS alert, then the close.
    test::BlockingClient raw(server_->address());
    ASSERT_TRUE(raw.sendAll(std::string("\x16\x03\x01\x00\x08\x01\x00\x00\x04garb", 13)));
    bool eof = false;
    const std::string got = raw.recvUntilEof(&eof);
    EXPECT_TRUE(eof);
    ASSERT_FALSE(got.empty()) << "an alert, not silence";
    EXPECT_EQ(static_cast<unsigned char>(got[0]), 0x15) << "a TLS alert record";
  }
  EXPECT_TRUE(test::eventually([&] { return closedBy(server_->server(), CloseReason::TlsError) == 2; }));
  expectServed();
}

TEST_F(TlsSockets, AHandshakeCutOffMidwayIsAnError) {
  std::ifstream seed(std::string(KEEL_SOURCE_DIR) + "/tests/fuzz/corpus/tls_server/client_hello_tls13",
                     std::ios::binary);
  const std::string hello((std::istreambuf_iterator<char>(seed)), std::istreambuf_iterator<char>());
  ASSERT_GT(hello.size(), 100u);
  {
    test::BlockingClient raw(server_->address());
    ASSERT_TRUE(raw.sendAll(std::string_view(hello).substr(0, 100)));
  }  // closed half-way through the ClientHello
  EXPECT_TRUE(test::eventually([&] { return closedBy(server_->server(), CloseReason::TlsError) == 1; }));
  expectServed();
}

TEST_F(TlsSockets, RenegotiationIsRefused) {
  auto c = sClient({"-tls1_2"});
  ASSERT_TRUE(c->write("before\n"));
  ASSERT_EQ(c->readLine(), "before") << c->stderrText();
  ASSERT_TRUE(c->write("R\n"));  // s_client: renegotiate
  // The server refuses with a no_renegotiation alert; s_client gives up on
  // the connection. No second handshake is done.
  EXPECT_TRUE(c->wait().has_value());
  const std::string err = c->stderrText();
  EXPECT_NE(err.find("RENEGOTIATING"), std::string::npos) << err;
  EXPECT_NE(err.find("no renegotiation"), std::string::npos) << err;
  expectServed();
}

}  // namespace
}  // namespace keel
