#include "keel/tls/TlsHandler.h"

#include <array>
#include <fstream>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "keel/core/Log.h"
#include "keel/net/Connection.h"
#include "keel/net/Pipeline.h"

namespace keel {
namespace {

// The largest TLS record payload: a write of several parts up to this size
// is joined into one record.
constexpr std::size_t kRecordPayload = 16 * 1024;

// Plaintext is decrypted into one scratch area per thread (each loop is a
// thread) and lent to the handlers above, as the connection lends its
// read scratch. Only onData uses it, and onData does not nest.
std::span<char> plaintextScratch() {
  thread_local std::array<char, 64 * 1024> scratch;
  return scratch;
}

// Ciphertext is staged the same way: OpenSSL writes a call's records into
// one area per thread, and flushOut hands them to the connection before the
// next SSL call, so an idle connection keeps no staging of its own (it kept
// up to 4 KiB before; docs/tls.md has the idle figures). A write larger
// than the area moves to owned storage, which is freed once flushed.
// `stagingInUse` is belt and braces: should a second handler on the thread
// ever stage while the first has not flushed, it gets owned storage.
std::span<char> ciphertextScratch() {
  thread_local std::array<char, 64 * 1024> scratch;
  return scratch;
}
thread_local bool stagingInUse = false;

// The BIO between OpenSSL and the handler: reads take ciphertext from the
// connection's input buffer, writes append to the handler's staging.
int bioWrite(BIO* bio, const char* data, int len) {
  BIO_clear_retry_flags(bio);
  return static_cast<TlsHandler*>(BIO_get_data(bio))->bioWrite(data, len);
}
int bioRead(BIO* bio, char* out, int len) {
  BIO_clear_retry_flags(bio);
  const int n = static_cast<TlsHandler*>(BIO_get_data(bio))->bioRead(out, len);
  if (n < 0) BIO_set_retry_read(bio);
  return n;
}
long bioCtrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }
int bioCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

BIO_METHOD* bioMethod() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "keel-connection");
    BIO_meth_set_write(m, bioWrite);
    BIO_meth_set_read(m, bioRead);
    BIO_meth_set_ctrl(m, bioCtrl);
    BIO_meth_set_create(m, bioCreate);
    return m;
  }();
  return method;
}

bool isIpAddress(const std::string& s) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

std::string subjectOf(X509* cert) {
  BIO* mem = BIO_new(BIO_s_mem());
  if (mem == nullptr) return {};
  X509_NAME_print_ex(mem, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long n = BIO_get_mem_data(mem, &data);
  std::string out(data, static_cast<std::size_t>(n > 0 ? n : 0));
  BIO_free(mem);
  return out;
}

}  // namespace

bool kernelTlsAvailable() {
  static const bool available = [] {
    std::ifstream f("/proc/sys/net/ipv4/tcp_available_ulp");
    std::string word;
    while (f >> word) {
      if (word == "tls") return true;
    }
    return false;
  }();
  return available;
}

TlsHandler::TlsHandler(TlsContext::Ptr context, TlsHandlerOptions options)
    : context_(std::move(context)), options_(std::move(options)) {}

TlsHandler::~TlsHandler() {
  SSL_free(ssl_);
  if (usesStaging_) stagingInUse = false;
}

int TlsHandler::bioRead(char* out, int len) noexcept {
  // Plaintext the handlers above have not taken is capped: past it the
  // ciphertext stays in the connection's input, under its input cap.
  if (in_ == nullptr || in_->empty() || plain_.readableBytes() >= ctx_->connection().options().maxInputBytes)
    return -1;
  const std::size_t n = std::min(in_->readableBytes(), static_cast<std::size_t>(len));
  std::memcpy(out, in_->peek(), n);
  in_->retrieve(n);
  return static_cast<int>(n);
}

int TlsHandler::bioWrite(const char* data, int len) {
  if (!usesStaging_ && !stagingInUse && out_.empty() && out_.capacity() == 0) {
    out_.borrow(ciphertextScratch());
    usesStaging_ = stagingInUse = true;
  }
  out_.append(data, static_cast<std::size_t>(len));
  return len;
}

void TlsHandler::handlerAdded(HandlerContext& ctx) {
  ctx_ = &ctx;
  ssl_ = SSL_new(context_->native());
  if (ssl_ == nullptr) {
    fail(ctx, TlsErrc::Setup, "SSL_new");
    return;
  }
  BIO* bio = BIO_new(bioMethod());
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // one BIO both ways; the SSL owns it
  if (context_->isServer()) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
    const std::string& name = options_.serverName;
    if (!name.empty()) {
      if (isIpAddress(name)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), name.c_str());
      } else {
        SSL_set_tlsext_host_name(ssl_, name.c_str());
        SSL_set1_host(ssl_, name.c_str());
      }
    }
  }
  // Added to a connection that is already open (STARTTLS): begin now.
  if (ctx.connection().state() == ConnectionState::Open) start(ctx);
}

void TlsHandler::handlerRemoved(HandlerContext&) {
  handshakeTimer_.cancel();
  in_ = nullptr;
}

void TlsHandler::onConnected(HandlerContext& ctx) {
  // Not passed on: the handlers above learn of the connection once it is
  // secure (onEstablished).
  start(ctx);
}

void TlsHandler::start(HandlerContext& ctx) {
  if (started_ || ssl_ == nullptr) return;
  started_ = true;
  handshakeTimer_.arm(ctx, options_.handshakeTimeout);
  if (!context_->isServer()) {
    sessionKey_ = options_.serverName + "|" + ctx.connection().peerAddress().toString();
    TlsContext::setSessionKey(ssl_, &sessionKey_);
    if (SSL_SESSION* s = context_->takeSession(sessionKey_)) {
      SSL_set_session(ssl_, s);
      SSL_SESSION_free(s);  // SSL_set_session took its own reference
    }
    advanceHandshake(ctx);  // the ClientHello
  }
}

void TlsHandler::onData(HandlerContext& ctx, Buffer& in) {
  if (failed_ || ssl_ == nullptr) {
    in.retrieveAll();
    return;
  }
  in_ = &in;
  if (!established_) advanceHandshake(ctx);
  if (established_ && !failed_) readPlaintext(ctx);
  in_ = nullptr;
}

void TlsHandler::advanceHandshake(HandlerContext& ctx) {
  const int r = SSL_do_handshake(ssl_);
  const int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
  if (r == 1) {
    (void)flushOut(ctx);
    onEstablished(ctx);
    return;
  }
  if (err == SSL_ERROR_WANT_READ) {
    (void)flushOut(ctx);  // our flight, sent while we wait for the peer's
    return;
  }
  const long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) {
    fail(ctx, TlsErrc::VerifyFailed, X509_verify_cert_error_string(verify));
  } else {
    fail(ctx, TlsErrc::HandshakeFailed, "handshake");
  }
}

void TlsHandler::onEstablished(HandlerContext& ctx) {
  established_ = true;
  handshakeTimer_.cancel();
  const unsigned char* proto = nullptr;
  unsigned int protoLen = 0;
  SSL_get0_alpn_selected(ssl_, &proto, &protoLen);
  alpn_.assign(reinterpret_cast<const char*>(proto), protoLen);
  version_ = SSL_get_version(ssl_);
  cipher_ = SSL_get_cipher_name(ssl_);
  if (const char* sni = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name)) sni_ = sni;
  resumed_ = SSL_session_reused(ssl_) == 1;
  if (X509* cert = SSL_get1_peer_certificate(ssl_)) {
    peerSubject_ = subjectOf(cert);
    peerVerified_ = SSL_get_verify_result(ssl_) == X509_V_OK;
    X509_free(cert);
  }
  KEEL_DEBUG("conn {}: TLS established ({}, {}, alpn '{}', {})", ctx.connection().id(), version_, cipher_,
             alpn_, resumed_ ? "resumed" : "full handshake");
  ctx.fireConnected();
  if (!pending_.empty() && !failed_ && ctx.connection().canWrite()) {
    // What was written while the handshake ran, in one go.
    const std::string_view queued = pending_.view();
    const std::error_code ec = encrypt(Slices(std::span<const char>(queued.data(), queued.size())));
    pending_.release();
    if (ec) return fail(ctx, TlsErrc::RecordError, "encrypting what was queued");
    (void)flushOut(ctx);
  }
  pending_.release();
}

void TlsHandler::readPlaintext(HandlerContext& ctx) {
  for (;;) {
    if (plain_.empty()) plain_.borrow(plaintextScratch());
    if (plain_.writableBytes() < kRecordPayload) plain_.ensureWritable(kRecordPayload);
    bool more = false;
    for (;;) {
      std::size_t n = 0;
      const int r = SSL_read_ex(ssl_, plain_.beginWrite(), plain_.writableBytes(), &n);
      if (r == 1) {
        plain_.hasWritten(n);
        if (plain_.writableBytes() == 0) {
          more = true;  // full: hand this on, then read on
          break;
        }
        continue;
      }
      const int err = SSL_get_error(ssl_, r);
      if (err == SSL_ERROR_ZERO_RETURN) {
        closeNotifyIn_ = true;
      } else if (err != SSL_ERROR_WANT_READ) {
        plain_.settle(0);
        return fail(ctx, TlsErrc::RecordError, "record");
      }
      break;
    }
    (void)flushOut(ctx);  // a read may answer (KeyUpdate, alerts)
    if (!plain_.empty()) ctx.fireData(plain_);
    if (ctx.connection().closed()) {
      plain_.settle(0);
      plain_.release();
      return;
    }
    plain_.settle(0);  // leftovers move to owned storage; an empty buffer holds nothing
    if (!more || closeNotifyIn_) break;
  }
  if (closeNotifyIn_) {
    // The TLS peer FIN. The TCP FIN that follows is not reported again.
    PeerFin fin;
    ctx.firePeerHalfClosed(fin);
  }
}

std::error_code TlsHandler::encrypt(const Slices& data) {
  auto writeAll = [this](const char* p, std::size_t n) {
    std::size_t written = 0;
    return n == 0 || (SSL_write_ex(ssl_, p, n, &written) == 1 && written == n);
  };
  if (data.count() > 1 && data.totalBytes() <= kRecordPayload) {
    // One record for a header and its payload, not one each.
    std::array<char, kRecordPayload> joined;
    std::size_t at = 0;
    for (const auto& part : data) {
      std::memcpy(joined.data() + at, part.data(), part.size());
      at += part.size();
    }
    if (!writeAll(joined.data(), at)) return make_error_code(TlsErrc::RecordError);
    return {};
  }
  for (const auto& part : data) {
    if (!writeAll(part.data(), part.size())) return make_error_code(TlsErrc::RecordError);
  }
  return {};
}

std::error_code TlsHandler::write(HandlerContext& ctx, const Slices& data) {
  if (failed_) return std::make_error_code(std::errc::not_connected);
  if (closeNotifyOut_) return std::make_error_code(std::errc::broken_pipe);
  if (!established_) {
    if (pending_.readableBytes() + data.totalBytes() > options_.maxPendingBytes)
      return make_error_code(TlsErrc::PendingFull);
    for (const auto& part : data) pending_.append(part);
    return {};
  }
  if (const std::error_code ec = encrypt(data)) {
    fail(ctx, TlsErrc::RecordError, "encrypt");
    return ec;
  }
  return flushOut(ctx);
}

std::error_code TlsHandler::flushOut(HandlerContext& ctx) {
  if (out_.empty()) return {};
  const std::error_code ec = ctx.write(Slices(out_.readable()));
  out_.retrieveAll();
  out_.settle(0);  // ends the borrow, or frees a bulk write's owned staging
  if (usesStaging_) usesStaging_ = stagingInUse = false;
  return ec;
}

void TlsHandler::sendCloseNotify(HandlerContext& ctx) {
  if (!established_ || failed_ || closeNotifyOut_ || ssl_ == nullptr) return;
  closeNotifyOut_ = true;
  (void)SSL_shutdown(ssl_);  // writes close_notify; the peer's may come later
  (void)flushOut(ctx);
}

void TlsHandler::shutdown(HandlerContext& ctx, CloseReason reason) {
  sendCloseNotify(ctx);
  ctx.shutdown(reason);
}

void TlsHandler::close(HandlerContext& ctx, CloseReason reason, CloseMode mode) {
  if (mode != CloseMode::Reset) sendCloseNotify(ctx);
  ctx.close(reason, mode);
}

void TlsHandler::onPeerHalfClosed(HandlerContext& ctx, PeerFin& fin) {
  if (closeNotifyIn_) return;  // reported when the close_notify came
  if (failed_) return;
  if (!established_) return fail(ctx, TlsErrc::HandshakeFailed, "the peer closed during the handshake");
  error_ = make_error_code(TlsErrc::Truncated);
  errorDetail_ = "TCP FIN without close_notify";
  KEEL_INFO("conn {}: {}; closing", ctx.connection().id(), error_.message());
  (void)fin;
  ctx.close(CloseReason::TlsTruncated, CloseMode::Flush);
}

void TlsHandler::onClosed(HandlerContext& ctx, CloseReason reason) {
  handshakeTimer_.cancel();
  ctx.fireClosed(reason);
}

void TlsHandler::onHandshakeTimeout() {
  if (established_ || failed_ || ctx_ == nullptr) return;
  fail(*ctx_, TlsErrc::HandshakeTimeout, "no handshake within the deadline");
}

void TlsHandler::fail(HandlerContext& ctx, TlsErrc e, std::string_view what) {
  if (failed_) return;
  failed_ = true;
  handshakeTimer_.cancel();
  error_ = make_error_code(e);
  errorDetail_.assign(what);
  const std::string ssl = drainOpenSslErrors();
  if (!ssl.empty()) errorDetail_ += ": " + ssl;
  KEEL_INFO("conn {} ({}): {}: {}", ctx.connection().id(), ctx.connection().peerAddress().toString(),
            error_.message(), errorDetail_);
  (void)flushOut(ctx);  // the alert OpenSSL wrote, if any
  pending_.release();
  ctx.close(CloseReason::TlsError, CloseMode::Flush);
}

}  // namespace keel
