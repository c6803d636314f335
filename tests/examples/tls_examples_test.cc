// The TLS examples driven by real, unmodified TLS clients, each a separate
// process: curl, openssl s_client and wrk against keel-http; redis-cli and
// redis-benchmark against keel-resp; s_client against keel-echo; and keel's
// own Client in keel-heartbeat. Certificates come from testPki(), made at
// test time. Each server also meets a client that trusts the wrong CA: that
// client fails, and the server goes on serving the next, trusting one.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "support/Child.h"
#include "support/TestNet.h"
#include "support/TestPki.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

// A TLS example server on a free port, with the test PKI's EC certificate.
class TlsExample : public ::testing::Test {
 protected:
  void start(const std::string& name, std::vector<std::string> prefix = {}) {
    std::string why;
    pki_ = testPki(&why);
    if (pki_ == nullptr) GTEST_SKIP() << "no test PKI: " << why;
    const std::string bin = binaryPath(name);
    ASSERT_EQ(::access(bin.c_str(), X_OK), 0) << bin << " not built";
    std::vector<std::string> argv{bin};
    argv.insert(argv.end(), prefix.begin(), prefix.end());
    for (const char* a : {"--port", "0", "--tls-cert", pki_->serverCert.c_str(), "--tls-key"}) {
      argv.push_back(a);
    }
    argv.push_back(pki_->serverKey);
    server_ = std::make_unique<Child>(argv);
    port_ = awaitListening(*server_, &line_);
    ASSERT_NE(port_, 0) << name << " did not come up: " << server_->stderrText();
  }
  void TearDown() override {
    if (!server_) return;
    EXPECT_FALSE(server_->wait(0ms).has_value())
        << "the server died during the test: " << server_->stderrText();
    EXPECT_EQ(server_->terminate(), 0) << "did not stop cleanly on SIGTERM: " << server_->stderrText();
  }
  [[nodiscard]] std::string port() const { return std::to_string(port_); }
  // A client run to completion: its stdout (stderr appended) and exit status.
  struct Ran {
    std::string out;
    std::optional<int> status;
  };
  static Ran run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 20s) {
    Child c(argv);
    c.closeStdin();
    Ran r;
    r.out = c.readAll(timeout);
    r.status = c.wait(timeout);
    r.out += c.stderrText();
    return r;
  }
  [[nodiscard]] Ran curl(const std::string& ca) const {
    return run({"curl", "-sS", "--max-time", "10", "--cacert", ca, "https://localhost:" + port() + "/"});
  }

  const TestPki* pki_ = nullptr;
  std::unique_ptr<Child> server_;
  std::uint16_t port_ = 0;
  std::string line_;
};

TEST_F(TlsExample, HttpsThroughCurl) {
  if (!haveTool("curl")) GTEST_SKIP() << "curl not installed (scripts/install-deps.sh)";
  start("keel-http");
  EXPECT_NE(line_.find("(tls)"), std::string::npos) << line_;
  const Ran r = curl(pki_->caCert);
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, "hello\n");
  // By address too: the certificate's SAN holds 127.0.0.1.
  const Ran ip = run({"curl", "-sS", "--max-time", "10", "--cacert", pki_->caCert, "-o", "/dev/null", "-w",
                      "%{http_code} %{http_version}", "https://127.0.0.1:" + port() + "/nope"});
  EXPECT_EQ(ip.status, 0) << ip.out;
  EXPECT_EQ(ip.out, "404 1.1");
}

TEST_F(TlsExample, HttpsWrongCaFailsAndTheServerKeepsServing) {
  if (!haveTool("curl")) GTEST_SKIP() << "curl not installed (scripts/install-deps.sh)";
  start("keel-http");
  const Ran bad = curl(pki_->untrustedCa);
  EXPECT_EQ(bad.status, 60) << "curl's 'peer certificate cannot be authenticated': " << bad.out;
  EXPECT_EQ(bad.out.find("hello"), std::string::npos) << bad.out;
  const Ran good = curl(pki_->caCert);
  EXPECT_EQ(good.status, 0) << good.out;
  EXPECT_EQ(good.out, "hello\n");
}

TEST_F(TlsExample, HttpsThroughOpensslSClientNegotiatesAlpn) {
  if (!haveTool("openssl")) GTEST_SKIP() << "openssl not installed (scripts/install-deps.sh)";
  start("keel-http");
  Child c({"openssl", "s_client", "-alpn", "http/1.1", "-CAfile", pki_->caCert, "-verify_return_error",
           "-servername", "localhost", "-connect", "127.0.0.1:" + port()});
  // Connection: close: the server's close_notify and FIN end s_client.
  ASSERT_TRUE(c.write("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"));
  const std::string out = c.readAll(15s);
  EXPECT_EQ(c.wait(), 0) << c.stderrText();
  EXPECT_NE(out.find("ALPN protocol: http/1.1"), std::string::npos) << out;
  EXPECT_NE(out.find("Verify return code: 0 (ok)"), std::string::npos) << out;
  EXPECT_NE(out.find("HTTP/1.1 200 OK\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\r\n\r\nhello\n"), std::string::npos) << out;
}

TEST_F(TlsExample, HttpsThroughWrk) {
  if (!haveTool("wrk")) GTEST_SKIP() << "wrk not installed (scripts/install-deps.sh)";
  start("keel-http");
  const Ran r = run({"wrk", "-t1", "-c4", "-d1s", "https://127.0.0.1:" + port() + "/"});
  ASSERT_EQ(r.status, 0) << r.out;
  // "N requests in 1.00s": the count comes before the phrase.
  const std::size_t at = r.out.find(" requests in ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::size_t from = r.out.rfind(' ', at - 1) + 1;
  EXPECT_GT(std::stol(r.out.substr(from, at - from)), 100) << r.out;
  // wrk prints these lines only when something went wrong.
  EXPECT_EQ(r.out.find("Socket errors"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("Non-2xx"), std::string::npos) << r.out;
}

TEST_F(TlsExample, RespThroughRedisCli) {
  if (!haveTool("redis-cli")) GTEST_SKIP() << "redis-cli not installed (scripts/install-deps.sh)";
  start("keel-resp");
  auto cli = [&](const std::string& ca, std::vector<std::string> args) {
    std::vector<std::string> argv{"redis-cli", "--tls", "--cacert", ca, "-h", "localhost", "-p", port()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  };
  const Ran set = cli(pki_->caCert, {"SET", "greeting", "over tls"});
  EXPECT_EQ(set.status, 0) << set.out;
  EXPECT_EQ(set.out, "OK\n");
  const Ran bad = cli(pki_->untrustedCa, {"GET", "greeting"});
  EXPECT_NE(bad.status, 0) << bad.out;
  EXPECT_NE(bad.out.find("certificate verify failed"), std::string::npos) << bad.out;
  const Ran get = cli(pki_->caCert, {"GET", "greeting"});
  EXPECT_EQ(get.status, 0) << get.out;
  EXPECT_EQ(get.out, "over tls\n");
}

TEST_F(TlsExample, RespThroughRedisBenchmark) {
  if (!haveTool("redis-benchmark") || !haveTool("redis-cli")) {
    GTEST_SKIP() << "redis-benchmark/redis-cli not installed (scripts/install-deps.sh)";
  }
  start("keel-resp");
  const Ran b = run({"redis-benchmark", "--tls", "--cacert", pki_->caCert, "-p", port(), "-t", "set,get",
                     "-n", "2000", "-c", "10", "-q"},
                    60s);
  EXPECT_EQ(b.status, 0) << b.out;
  EXPECT_NE(b.out.find("SET: "), std::string::npos) << b.out;
  EXPECT_NE(b.out.find("GET: "), std::string::npos) << b.out;
  // Its SETs really arrived: the fixed key it writes holds its (random) 3-byte value.
  const Ran get =
      run({"redis-cli", "--tls", "--cacert", pki_->caCert, "-p", port(), "GET", "key:__rand_int__"});
  EXPECT_EQ(get.status, 0) << get.out;
  EXPECT_EQ(get.out.size(), 4u) << get.out;
}

TEST_F(TlsExample, EchoThroughOpensslSClient) {
  if (!haveTool("openssl")) GTEST_SKIP() << "openssl not installed (scripts/install-deps.sh)";
  start("keel-echo");
  auto sClient = [&](const std::string& ca) {
    return std::make_unique<Child>(std::vector<std::string>{"openssl", "s_client", "-quiet", "-no_ign_eof",
                                                            "-verify_return_error", "-CAfile", ca, "-connect",
                                                            "localhost:" + port()});
  };
  auto bad = sClient(pki_->untrustedCa);
  bad->closeStdin();
  EXPECT_EQ(bad->readAll(10s), "");
  EXPECT_NE(bad->wait(), 0);
  EXPECT_NE(bad->stderrText().find("verify error"), std::string::npos) << bad->stderrText();

  auto good = sClient(pki_->caCert);
  ASSERT_TRUE(good->write("hello over tls\n"));
  EXPECT_EQ(good->readLine(), "hello over tls") << good->stderrText();
  ASSERT_TRUE(good->write("second line\n"));
  EXPECT_EQ(good->readLine(), "second line");
  good->closeStdin();  // -no_ign_eof: s_client sends close_notify, the server closes
  good->readAll(10s);
  EXPECT_EQ(good->wait(), 0) << good->stderrText();
}

TEST_F(TlsExample, HeartbeatClientOverTls) {
  start("keel-heartbeat", {"server"});
  const std::string bin = binaryPath("keel-heartbeat");
  auto client = [&](const std::string& ca) {
    return std::make_unique<Child>(std::vector<std::string>{bin, "client", "--port", port(), "--tls-ca", ca,
                                                            "--keepalive-ms", "50", "--interval-ms", "50"});
  };
  auto bad = client(pki_->untrustedCa);
  EXPECT_EQ(bad->readAll(10s), "");  // never "connected": verification failed first
  EXPECT_EQ(bad->wait(), 1);
  EXPECT_NE(bad->stderrText().find("keel-heartbeat: TLS: "), std::string::npos) << bad->stderrText();

  auto good = client(pki_->caCert);
  EXPECT_EQ(good->readLine(), "connected to 127.0.0.1:" + port()) << good->stderrText();
  const auto rtt = good->readLine();  // a PING went out and its PONG came back, through TLS
  ASSERT_TRUE(rtt.has_value()) << good->stderrText();
  EXPECT_EQ(rtt->rfind("rtt ", 0), 0u) << *rtt;
  EXPECT_EQ(good->terminate(), 0) << good->stderrText();
}

}  // namespace
}  // namespace keel::test
