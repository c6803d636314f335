// libFuzzer target: the server side of tls/TlsHandler, fed the bytes a
// client would send ([TlsHandler][FrameCodec][Sink] on a real Connection
// over the in-memory transport).
//
// Input layout: byte 0 bit 0 set: a genuine ClientHello (made once, by a
// keel client context at start-up) goes first, so mutations reach the
// records after it; bits 1-7 seed how the rest is cut into reads. The rest
// is the stream.
//
// Invariants, besides what ASan and UBSan check: the handler either waits
// for more, or closes with a TLS reason (or a protocol error from the codec
// above it); no plaintext reaches the application before the handshake is
// established; and whatever it writes is TLS records (content types 20-24),
// never plaintext.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "FuzzConn.h"
#include "keel/net/Buffer.h"
#include "keel/net/FrameCodec.h"
#include "keel/tls/TlsHandler.h"

namespace {

using keel::CloseReason;

// A throwaway self-signed EC certificate, written where TlsContext can load it.
bool makeCertificate(const std::string& certPath, const std::string& keyPath) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  if (key == nullptr || cert == nullptr) return false;
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 86400L * 30);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("localhost"),
                             -1, -1, 0);
  X509_set_issuer_name(cert, name);
  if (X509_sign(cert, key, EVP_sha256()) == 0) return false;
  FILE* c = std::fopen(certPath.c_str(), "w");
  FILE* k = std::fopen(keyPath.c_str(), "w");
  const bool ok = c != nullptr && k != nullptr && PEM_write_X509(c, cert) == 1 &&
                  PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  if (c != nullptr) std::fclose(c);
  if (k != nullptr) std::fclose(k);
  X509_free(cert);
  EVP_PKEY_free(key);
  return ok;
}

struct Setup {
  keel::TlsContext::Ptr server;
  std::string clientHello;
};

const Setup& setup() {
  static const Setup s = [] {
    Setup out;
    char dir[] = "/tmp/keel-tls-fuzz-XXXXXX";
    FUZZ_CHECK(::mkdtemp(dir) != nullptr);
    const std::string cert = std::string(dir) + "/cert.pem", key = std::string(dir) + "/key.pem";
    FUZZ_CHECK(makeCertificate(cert, key));
    std::error_code ec;
    keel::TlsServerOptions so;
    so.certFile = cert;
    so.keyFile = key;
    so.alpn = {"http/1.1"};
    out.server = keel::TlsContext::server(so, ec);
    FUZZ_CHECK(out.server != nullptr);
    keel::TlsClientOptions co;
    co.verifyPeer = false;
    co.alpn = {"http/1.1"};
    auto client = keel::TlsContext::client(co, ec);
    FUZZ_CHECK(client != nullptr);
    keel::fuzz::Pair pair;
    pair.conn->pipeline().emplaceLast<keel::TlsHandler>(client);
    pair.start();
    out.clientHello = pair.ec.takeOutput();
    FUZZ_CHECK(!out.clientHello.empty());
    std::remove(cert.c_str());
    std::remove(key.c_str());
    ::rmdir(dir);
    return out;
  }();
  return s;
}

struct Sink final : keel::Handler {
  bool connected = false;
  bool dataBeforeConnected = false;
  void onConnected(keel::HandlerContext& ctx) override {
    connected = true;
    ctx.fireConnected();
  }
  void onFrame(keel::HandlerContext&, std::span<const char>) override {
    if (!connected) dataBeforeConnected = true;
  }
  void onData(keel::HandlerContext&, keel::Buffer& in) override {
    if (!connected) dataBeforeConnected = true;
    in.retrieveAll();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const Setup& s = setup();
  keel::fuzz::Pair pair;
  pair.conn->pipeline().emplaceLast<keel::TlsHandler>(s.server);
  pair.conn->pipeline().emplaceLast<keel::FrameCodec>();
  auto& sink = pair.conn->pipeline().emplaceLast<Sink>();
  bool sinkAlive = true;
  pair.start();
  std::string stream = (data[0] & 1) != 0 ? s.clientHello : std::string();
  stream.append(reinterpret_cast<const char*>(data) + 1, size - 1);
  unsigned cut = data[0] >> 1;
  std::size_t at = 0;
  while (at < stream.size() && !pair.conn->closed()) {
    // Pieces of 1-64 bytes, or the rest at once.
    const std::size_t n =
        cut == 0 ? stream.size() - at : std::min<std::size_t>(1 + (cut * 7 + at) % 64, stream.size() - at);
    pair.ec.feed(std::string_view(stream).substr(at, n));
    at += n;
    if (pair.conn->closed()) sinkAlive = false;  // the handlers are gone with the connection
    if (sinkAlive) FUZZ_CHECK(!sink.dataBeforeConnected);
  }
  const std::string out = pair.ec.takeOutput();
  // Every byte written is inside a TLS record of a known content type.
  for (std::size_t i = 0; i + 5 <= out.size();) {
    const auto type = static_cast<std::uint8_t>(out[i]);
    FUZZ_CHECK(type >= 20 && type <= 24);
    i += 5 + ((static_cast<std::size_t>(static_cast<std::uint8_t>(out[i + 3])) << 8) |
              static_cast<std::uint8_t>(out[i + 4]));
  }
  if (pair.conn->closed()) {
    const auto r = pair.conn->closeReason();
    FUZZ_CHECK(r == CloseReason::TlsError || r == CloseReason::TlsTruncated ||
               r == CloseReason::ProtocolError || r == CloseReason::PeerClosed);
  }
  return 0;
}
