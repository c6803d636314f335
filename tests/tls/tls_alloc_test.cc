// Allocations per message over TLS, on the server's loop thread: keel's own
// (operator new, counted by support/CountingNew.h) must be zero in steady
// state; OpenSSL's (its malloc, counted through CRYPTO_set_mem_functions)
// are measured and reported, with and without SSL_MODE_RELEASE_BUFFERS'
// effect visible in the figure.
//
// The client is a blocking OpenSSL connection on the test's own thread, so
// nothing it allocates is counted on the loop.
#include <gtest/gtest.h>

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keel/net/FrameCodec.h"
#include "keel/net/Server.h"
#include "keel/tls/TlsHandler.h"
#include "support/CountingNew.h"
#include "support/TestNet.h"
#include "support/TestPki.h"

namespace keel {
namespace {

// OpenSSL's allocations on the calling thread. Installed before OpenSSL
// allocates anything (a static initializer of this binary).
thread_local std::uint64_t t_sslAllocs = 0;
void* sslMalloc(std::size_t n, const char*, int) {
  ++t_sslAllocs;
  return std::malloc(n);
}
void* sslRealloc(void* p, std::size_t n, const char*, int) {
  if (p == nullptr) ++t_sslAllocs;
  return std::realloc(p, n);
}
void sslFree(void* p, const char*, int) { std::free(p); }
const bool g_sslCounting = CRYPTO_set_mem_functions(sslMalloc, sslRealloc, sslFree) == 1;

struct EchoFrames final : Handler {
  void onFrame(HandlerContext& ctx, std::span<const char> f) override { (void)ctx.writeFrame(Slices(f)); }
};

// A blocking TLS 1.3 client over a plain socket.
class BlockingTlsClient {
 public:
  BlockingTlsClient(const SocketAddress& addr, const std::string& caFile) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx_, caFile.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(fd_, addr.data(), addr.length()) != 0) return;
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    SSL_set_tlsext_host_name(ssl_, "localhost");
    SSL_set1_host(ssl_, "localhost");
    ok_ = SSL_connect(ssl_) == 1;
  }
  ~BlockingTlsClient() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
    SSL_CTX_free(ctx_);
  }
  [[nodiscard]] bool ok() const { return ok_; }
  bool roundTrip(const std::string& frame) {
    std::size_t n = 0;
    if (SSL_write_ex(ssl_, frame.data(), frame.size(), &n) != 1) return false;
    std::size_t got = 0;
    while (got < frame.size()) {
      if (SSL_read_ex(ssl_, buf_ + got, sizeof buf_ - got, &n) != 1) return false;
      got += n;
    }
    return std::string_view(buf_, got) == frame;
  }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool ok_ = false;
  char buf_[4096];
};

struct Counts {
  std::uint64_t keel = 0;
  std::uint64_t openssl = 0;
};

Counts loopCounts(test::ServerThread& srv) {
  Counts c;
  srv.runAndWait([&c] {
    c.keel = test::counting_new::t_allocs;
    c.openssl = t_sslAllocs;
  });
  return c;
}

void measure(bool releaseBuffers) {
  ASSERT_TRUE(g_sslCounting) << "OpenSSL allocated before the counters were installed";
  std::string why;
  const auto* pki = test::testPki(&why);
  if (pki == nullptr) GTEST_SKIP() << why;
  TlsServerOptions so;
  so.certFile = pki->serverCert;
  so.keyFile = pki->serverKey;
  so.releaseIdleBuffers = releaseBuffers;
  std::error_code ec;
  auto tls = TlsContext::server(so, ec);
  ASSERT_TRUE(tls) << ec.message();
  test::ServerThread srv(SocketAddress::loopback4(0), {}, [tls](Connection& c) {
    c.pipeline().emplaceLast<TlsHandler>(tls);
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<EchoFrames>();
  });
  BlockingTlsClient client(srv.address(), pki->caCert);
  ASSERT_TRUE(client.ok());
  std::string frame(4, '\0');
  FrameCodec::encodeHeader(64, frame.data());
  frame += std::string(64, 'x');
  constexpr int kWarmup = 500, kMeasured = 5000;
  for (int i = 0; i < kWarmup; ++i) ASSERT_TRUE(client.roundTrip(frame)) << i;
  const Counts r0 = loopCounts(srv);
  const Counts r1 = loopCounts(srv);
  const Counts before = loopCounts(srv);
  for (int i = 0; i < kMeasured; ++i) ASSERT_TRUE(client.roundTrip(frame)) << i;
  const Counts after = loopCounts(srv);
  const std::uint64_t keel = after.keel - before.keel - (r1.keel - r0.keel);
  const std::uint64_t openssl = after.openssl - before.openssl - (r1.openssl - r0.openssl);
  std::printf(
      "[ figures  ] TLS 1.3, 64-byte frames echoed, idle buffers %s: %llu keel allocation(s) and %llu "
      "OpenSSL "
      "allocation(s) on the loop thread in %d round trips (%.2f OpenSSL allocations per message)\n",
      releaseBuffers ? "released" : "kept", static_cast<unsigned long long>(keel),
      static_cast<unsigned long long>(openssl), kMeasured, static_cast<double>(openssl) / kMeasured);
  ::testing::Test::RecordProperty("openssl_allocs_per_message",
                                  std::to_string(static_cast<double>(openssl) / kMeasured));
  EXPECT_EQ(keel, 0u) << "keel allocated on the loop thread per message over TLS";
}

TEST(TlsAllocations, NoneOfKeelsPerMessageWithIdleBuffersReleased) { measure(true); }
TEST(TlsAllocations, NoneOfKeelsPerMessageWithBuffersKept) { measure(false); }

}  // namespace
}  // namespace keel
