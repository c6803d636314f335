// TlsHandler on the in-memory transport: a client and a server connection
// on one manual-clock loop, their bytes carried across by the test. The
// handshake, data both ways through a codec, close_notify as the peer FIN,
// truncation, every verification failure, the handshake deadline, mutual
// TLS, resumption and SNI, without a socket or a clock.
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "keel/core/EventLoop.h"
#include "keel/core/LoopClock.h"
#include "keel/net/EmbeddedConnection.h"
#include "keel/net/FrameCodec.h"
#include "keel/tls/TlsHandler.h"
#include "support/TestPki.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

// The application end: records what happened, outside the handler's
// lifetime (a closed connection destroys its handlers).
struct Record {
  bool connected = false;
  std::vector<std::string> frames;
  std::optional<CloseReason> closed;
  bool peerFin = false;
};
struct App final : Handler {
  explicit App(Record& r) : rec(r) {}
  void handlerAdded(HandlerContext& c) override { ctx = &c; }
  void onConnected(HandlerContext& c) override {
    rec.connected = true;
    c.fireConnected();
  }
  void onFrame(HandlerContext&, std::span<const char> f) override {
    rec.frames.emplace_back(f.data(), f.size());
  }
  void onPeerHalfClosed(HandlerContext& c, PeerFin& fin) override {
    rec.peerFin = true;
    c.firePeerHalfClosed(fin);
  }
  void onClosed(HandlerContext& c, CloseReason r) override {
    rec.closed = r;
    c.fireClosed(r);
  }
  Record& rec;
  HandlerContext* ctx = nullptr;
};

class TlsPair : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    pki_ = test::testPki(&why);
    if (pki_ == nullptr) GTEST_SKIP() << why;
  }
  TlsServerOptions serverOptions() const {
    TlsServerOptions o;
    o.certFile = pki_->serverCert;
    o.keyFile = pki_->serverKey;
    o.alpn = {"presence/1", "http/1.1"};
    return o;
  }
  TlsClientOptions clientOptions() const {
    TlsClientOptions o;
    o.caFile = pki_->caCert;
    o.alpn = {"http/1.1"};
    return o;
  }
  static TlsContext::Ptr make(const TlsServerOptions& o) {
    std::error_code ec;
    auto c = TlsContext::server(o, ec);
    EXPECT_TRUE(c) << ec.message();
    return c;
  }
  static TlsContext::Ptr make(const TlsClientOptions& o) {
    std::error_code ec;
    auto c = TlsContext::client(o, ec);
    EXPECT_TRUE(c) << ec.message();
    return c;
  }
  // Builds both ends: [TlsHandler][FrameCodec][App].
  void open(TlsContext::Ptr serverCtx, TlsContext::Ptr clientCtx, std::string serverName = "localhost") {
    server = std::make_unique<EmbeddedConnection>(loop, ConnectionOptions{}, 1);
    client = std::make_unique<EmbeddedConnection>(loop, ConnectionOptions{}, 2);
    serverTls = &server->pipeline().emplaceLast<TlsHandler>(std::move(serverCtx));
    server->pipeline().emplaceLast<FrameCodec>();
    serverApp = &server->pipeline().emplaceLast<App>(serverRec);
    TlsHandlerOptions co;
    co.serverName = std::move(serverName);
    clientTls = &client->pipeline().emplaceLast<TlsHandler>(std::move(clientCtx), co);
    client->pipeline().emplaceLast<FrameCodec>();
    clientApp = &client->pipeline().emplaceLast<App>(clientRec);
    server->start();
    client->start();
  }
  // Carries bytes (and FINs) across until neither side has more to say.
  void pump() {
    for (int i = 0; i < 100; ++i) {
      const std::string c2s = client->takeOutput();
      const std::string s2c = server->takeOutput();
      if (!c2s.empty() && !server->connection().closed()) server->feed(c2s);
      if (!s2c.empty() && !client->connection().closed()) client->feed(s2c);
      bool fin = false;
      if (client->finSent() && !clientFinCarried_ && !server->connection().closed()) {
        clientFinCarried_ = fin = true;
        server->feedFin();
      }
      if (server->finSent() && !serverFinCarried_ && !client->connection().closed()) {
        serverFinCarried_ = fin = true;
        client->feedFin();
      }
      if (c2s.empty() && s2c.empty() && !fin) return;
    }
    ADD_FAILURE() << "the two ends never went quiet";
  }

  const test::TestPki* pki_ = nullptr;
  ManualClock clock;
  EventLoop loop{LoopOptions{.clock = &clock}};
  std::unique_ptr<EmbeddedConnection> server, client;
  TlsHandler* serverTls = nullptr;
  TlsHandler* clientTls = nullptr;
  App* serverApp = nullptr;
  App* clientApp = nullptr;
  Record serverRec, clientRec;
  bool clientFinCarried_ = false, serverFinCarried_ = false;
};

TEST_F(TlsPair, HandshakeThenFramesBothWays) {
  open(make(serverOptions()), make(clientOptions()));
  EXPECT_FALSE(clientRec.connected) << "onConnected waits for the handshake";
  pump();
  ASSERT_TRUE(serverRec.connected);
  ASSERT_TRUE(clientRec.connected);
  EXPECT_EQ(clientTls->version(), "TLSv1.3");
  EXPECT_EQ(clientTls->alpn(), "http/1.1");
  EXPECT_EQ(serverTls->alpn(), "http/1.1");
  EXPECT_EQ(serverTls->serverName(), "localhost");
  EXPECT_TRUE(clientTls->peerVerified());
  EXPECT_EQ(clientTls->peerSubject(), "CN=localhost");
  EXPECT_FALSE(clientTls->resumed());

  ASSERT_FALSE(clientApp->ctx->writeFrame(Slices(std::string_view("hello over tls"))));
  EXPECT_TRUE(client->connection().send(std::string_view("and a send()")));
  pump();
  EXPECT_EQ(serverRec.frames, (std::vector<std::string>{"hello over tls", "and a send()"}));
  ASSERT_FALSE(serverApp->ctx->writeFrame(Slices(std::string_view("back"))));
  pump();
  EXPECT_EQ(clientRec.frames, std::vector<std::string>{"back"});
}

TEST_F(TlsPair, WhatIsWrittenDuringTheHandshakeWaitsForIt) {
  open(make(serverOptions()), make(clientOptions()));
  // From the application, before either side is established.
  EXPECT_TRUE(client->connection().send(std::string_view("early")));
  const std::string firstFlight = client->takeOutput();
  EXPECT_EQ(firstFlight.find("early"), std::string::npos) << "never in the clear";
  server->feed(firstFlight);
  pump();
  EXPECT_EQ(serverRec.frames, std::vector<std::string>{"early"});
}

TEST_F(TlsPair, CloseSendsCloseNotifyWhichThePeerSeesAsItsFin) {
  open(make(serverOptions()), make(clientOptions()));
  pump();
  client->connection().close();  // closed at once (nothing queued): its handlers are gone now
  pump();
  EXPECT_TRUE(serverRec.peerFin) << "close_notify came, and is the TLS peer FIN";
  EXPECT_EQ(serverRec.closed, CloseReason::PeerClosed);
  EXPECT_EQ(clientRec.closed, CloseReason::LocalClose);
}

TEST_F(TlsPair, AFinWithoutCloseNotifyIsTruncation) {
  open(make(serverOptions()), make(clientOptions()));
  pump();
  server->feedFin();  // the TCP FIN, no close_notify before it
  EXPECT_EQ(serverRec.closed, CloseReason::TlsTruncated);
}

TEST_F(TlsPair, AWrongHostNameFailsVerification) {
  open(make(serverOptions()), make(clientOptions()), "not-localhost.test");
  pump();
  EXPECT_FALSE(clientRec.connected);
  EXPECT_EQ(clientRec.closed, CloseReason::TlsError);
  EXPECT_EQ(serverRec.closed, CloseReason::TlsError) << "the server got the client's alert";
  EXPECT_FALSE(serverRec.connected);
}

TEST_F(TlsPair, AnUntrustedCaFailsVerification) {
  auto o = serverOptions();
  o.certFile = pki_->untrustedCert;
  o.keyFile = pki_->untrustedKey;
  open(make(o), make(clientOptions()));
  pump();
  EXPECT_EQ(clientRec.closed, CloseReason::TlsError);
  EXPECT_FALSE(clientRec.connected);
}

TEST_F(TlsPair, AnExpiredCertificateFailsVerification) {
  auto o = serverOptions();
  o.certFile = pki_->expiredCert;
  o.keyFile = pki_->expiredKey;
  open(make(o), make(clientOptions()));
  // Recorded before the connection (and its handlers) go away.
  std::string detail;
  struct Watch final : Handler {
    explicit Watch(std::string& d) : detail(d) {}
    void onClosed(HandlerContext& c, CloseReason r) override {
      if (auto* t = c.pipeline().find<TlsHandler>()) detail = t->errorDetail();
      c.fireClosed(r);
    }
    std::string& detail;
  };
  client->pipeline().emplaceLast<Watch>(detail);
  pump();
  EXPECT_EQ(clientRec.closed, CloseReason::TlsError);
  EXPECT_NE(detail.find("expired"), std::string::npos) << detail;
}

TEST_F(TlsPair, GarbageInsteadOfAClientHelloIsRefused) {
  server = std::make_unique<EmbeddedConnection>(loop, ConnectionOptions{}, 1);
  server->pipeline().emplaceLast<TlsHandler>(make(serverOptions()));
  server->pipeline().emplaceLast<App>(serverRec);
  server->start();
  server->feed("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(serverRec.closed, CloseReason::TlsError);
  EXPECT_FALSE(serverRec.connected);
}

TEST_F(TlsPair, AHandshakeThatNeverEndsHitsTheDeadline) {
  server = std::make_unique<EmbeddedConnection>(loop, ConnectionOptions{}, 1);
  TlsHandlerOptions ho;
  ho.handshakeTimeout = 2s;
  server->pipeline().emplaceLast<TlsHandler>(make(serverOptions()), ho);
  server->pipeline().emplaceLast<App>(serverRec);
  server->start();
  server->feed(std::string("\x16\x03\x01\x00\xff", 5));  // a ClientHello header, then nothing
  advanceLoop(loop, clock, 1900ms);
  EXPECT_FALSE(serverRec.closed);
  advanceLoop(loop, clock, 200ms);
  EXPECT_EQ(serverRec.closed, CloseReason::TlsError);
}

TEST_F(TlsPair, ARecordCutInTwoArrivesWhole) {
  open(make(serverOptions()), make(clientOptions()));
  pump();
  ASSERT_FALSE(clientApp->ctx->writeFrame(Slices(std::string_view("split me"))));
  const std::string record = client->takeOutput();
  ASSERT_GT(record.size(), 10u);
  server->feed(record.substr(0, 7));
  EXPECT_TRUE(serverRec.frames.empty());
  EXPECT_FALSE(server->connection().closed()) << "a peer that stops mid-record is only waited for";
  server->feed(record.substr(7));
  EXPECT_EQ(serverRec.frames, std::vector<std::string>{"split me"});
}

TEST_F(TlsPair, MutualTlsNamesThePeer) {
  auto so = serverOptions();
  so.clientCaFile = pki_->caCert;
  so.requireClientCert = true;
  auto co = clientOptions();
  co.certFile = pki_->clientCert;
  co.keyFile = pki_->clientKey;
  open(make(so), make(co));
  pump();
  ASSERT_TRUE(serverRec.connected);
  EXPECT_EQ(serverTls->peerSubject(), "CN=alice");
  EXPECT_TRUE(serverTls->peerVerified());
}

TEST_F(TlsPair, MutualTlsRefusesAClientWithoutACertificate) {
  auto so = serverOptions();
  so.clientCaFile = pki_->caCert;
  so.requireClientCert = true;
  open(make(so), make(clientOptions()));
  pump();
  EXPECT_FALSE(serverRec.connected);
  EXPECT_EQ(serverRec.closed, CloseReason::TlsError);
}

TEST_F(TlsPair, ASecondConnectionResumesTheSession) {
  auto serverCtx = make(serverOptions());
  auto clientCtx = make(clientOptions());
  open(serverCtx, clientCtx);
  pump();
  ASSERT_TRUE(clientRec.connected);
  EXPECT_FALSE(clientTls->resumed());
  EXPECT_GE(clientCtx->cachedSessions(), 1u) << "the TLS 1.3 ticket was kept";
  client->connection().close();
  pump();
  // Same server name and peer address: the ticket is offered and taken.
  clientRec = {};
  serverRec = {};
  clientFinCarried_ = serverFinCarried_ = false;
  open(serverCtx, clientCtx);
  pump();
  ASSERT_TRUE(clientRec.connected);
  EXPECT_TRUE(clientTls->resumed());
  EXPECT_TRUE(serverTls->resumed());
}

TEST_F(TlsPair, SniChoosesTheCertificate) {
  auto serverCtx = make(serverOptions());
  auto alt = serverOptions();
  alt.certFile = pki_->altCert;
  alt.keyFile = pki_->altKey;
  ASSERT_FALSE(serverCtx->addServerName("alt.test", alt));
  open(serverCtx, make(clientOptions()), "alt.test");
  pump();
  ASSERT_TRUE(clientRec.connected) << "verified against alt.test's own certificate";
  EXPECT_EQ(clientTls->peerSubject(), "CN=alt.test");
  EXPECT_EQ(serverTls->serverName(), "alt.test");
}

TEST_F(TlsPair, NoCommonAlpnProtocolIsRefused) {
  auto co = clientOptions();
  co.alpn = {"h2"};
  open(make(serverOptions()), make(co));
  pump();
  EXPECT_FALSE(serverRec.connected);
  EXPECT_EQ(clientRec.closed, CloseReason::TlsError);
}

TEST(TlsContextErrors, BadFilesAreReportedNotThrown) {
  std::error_code ec;
  TlsServerOptions missing;
  missing.certFile = "/nonexistent.pem";
  missing.keyFile = "/nonexistent.key";
  EXPECT_FALSE(TlsContext::server(missing, ec));
  EXPECT_EQ(ec, TlsErrc::CertificateFile);
  std::string why;
  const auto* pki = test::testPki(&why);
  if (pki == nullptr) GTEST_SKIP() << why;
  TlsServerOptions mismatched;
  mismatched.certFile = pki->serverCert;
  mismatched.keyFile = pki->rsaKey;
  EXPECT_FALSE(TlsContext::server(mismatched, ec));
  EXPECT_EQ(ec, TlsErrc::KeyMismatch);
  TlsClientOptions noCa;
  noCa.caFile = "/nonexistent-ca.pem";
  EXPECT_FALSE(TlsContext::client(noCa, ec));
  EXPECT_EQ(ec, TlsErrc::CaFile);
}

}  // namespace
}  // namespace keel
