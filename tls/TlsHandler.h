// TLS as one handler of the pipeline, nearest the socket:
//
//   [TlsHandler][FrameCodec][Heartbeat][IdleReaper][App]
//
// Below it are ciphertext bytes, above it plaintext, so framing, heartbeat,
// idle reaping, half-close and the application work over TLS unchanged.
//
// - **Established means onConnected.** The handlers above see onConnected
//   only once the handshake has finished (and the peer's certificate
//   verified, where that is asked for); what they write before that (from
//   another thread) waits, up to maxPendingBytes. ALPN, SNI, the version,
//   resumption and the peer's identity are then on this handler.
// - **Closing.** close() and shutdown() send close_notify, then the FIN
//   (CloseMode::Reset sends nothing: a reset is not a goodbye). A peer's
//   close_notify is the TLS form of a peer FIN: onPeerHalfClosed goes up
//   with the usual policy (TLS 1.3 allows writing on), and the TCP FIN that
//   follows is not reported twice. A TCP FIN without close_notify closes
//   with CloseReason::TlsTruncated: the peer, or someone between, cut the
//   stream where a truncation attack would.
// - **Failures** (handshake, verification, a bad record, the handshake
//   deadline) close with CloseReason::TlsError after the alert OpenSSL
//   wrote is flushed; error() and errorDetail() say why.
// - **Cost.** Ciphertext is read straight from the connection's input (no
//   copy into a BIO), decrypted into the loop's plaintext scratch, and lent
//   to the handlers above as a connection's input is. Writes of several
//   parts (a frame's header and payload) are joined into one record. Idle,
//   a connection holds no record buffers (SSL_MODE_RELEASE_BUFFERS) and no
//   plaintext buffer.
//
// Thread-safety: the connection's loop thread only, like every handler.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <system_error>

#include "keel/core/Time.h"
#include "keel/net/Buffer.h"
#include "keel/net/Handler.h"
#include "keel/net/HandlerTimer.h"
#include "keel/tls/TlsContext.h"

using BIO = struct bio_st;

namespace keel {

struct TlsHandlerOptions {
  // Client: the server's name, sent as SNI and checked against its
  // certificate (an IP address is checked as one). Empty: no SNI and no
  // name check (the chain is still verified).
  std::string serverName;
  Duration handshakeTimeout = std::chrono::seconds(10);  // then close with TlsError
  std::size_t maxPendingBytes = 1 << 20;                 // plaintext queued before the handshake ends
};

// Whether this kernel offers the TLS upper-layer protocol (kTLS). Read once.
[[nodiscard]] bool kernelTlsAvailable();

class TlsHandler final : public Handler {
 public:
  explicit TlsHandler(TlsContext::Ptr context, TlsHandlerOptions options = {});
  ~TlsHandler() override;
  TlsHandler(const TlsHandler&) = delete;
  TlsHandler& operator=(const TlsHandler&) = delete;

  [[nodiscard]] std::string_view name() const noexcept override { return "tls"; }
  void handlerAdded(HandlerContext& ctx) override;
  void handlerRemoved(HandlerContext& ctx) override;
  void onConnected(HandlerContext& ctx) override;
  void onData(HandlerContext& ctx, Buffer& in) override;
  void onPeerHalfClosed(HandlerContext& ctx, PeerFin& fin) override;
  void onClosed(HandlerContext& ctx, CloseReason reason) override;
  std::error_code write(HandlerContext& ctx, const Slices& data) override;
  std::error_code writeFrame(HandlerContext& ctx, const Slices& payload) override {
    return write(ctx, payload);
  }
  void shutdown(HandlerContext& ctx, CloseReason reason) override;
  void close(HandlerContext& ctx, CloseReason reason, CloseMode mode) override;

  // ---- after the handshake --------------------------------------------------------
  [[nodiscard]] bool established() const noexcept { return established_; }
  [[nodiscard]] const std::string& alpn() const noexcept { return alpn_; }        // "" when none
  [[nodiscard]] const std::string& version() const noexcept { return version_; }  // "TLSv1.3"
  [[nodiscard]] const std::string& cipher() const noexcept { return cipher_; }
  [[nodiscard]] const std::string& serverName() const noexcept { return sni_; }  // the SNI asked for
  [[nodiscard]] bool resumed() const noexcept { return resumed_; }
  // The peer's certificate subject (RFC 2253, "CN=alice,O=Example"), "" when
  // it sent none; peerVerified() when it also verified.
  [[nodiscard]] const std::string& peerSubject() const noexcept { return peerSubject_; }
  [[nodiscard]] bool peerVerified() const noexcept { return peerVerified_; }
  [[nodiscard]] bool closeNotifyReceived() const noexcept { return closeNotifyIn_; }
  [[nodiscard]] bool closeNotifySent() const noexcept { return closeNotifyOut_; }
  // Why the connection failed (empty when it did not), and OpenSSL's text.
  [[nodiscard]] std::error_code error() const noexcept { return error_; }
  [[nodiscard]] const std::string& errorDetail() const noexcept { return errorDetail_; }

  // ---- internal: the BIO's ends ----------------------------------------------------
  int bioRead(char* out, int len) noexcept;
  int bioWrite(const char* data, int len);

 private:
  void start(HandlerContext& ctx);
  void advanceHandshake(HandlerContext& ctx);
  void onEstablished(HandlerContext& ctx);
  void readPlaintext(HandlerContext& ctx);
  [[nodiscard]] std::error_code encrypt(const Slices& data);
  std::error_code flushOut(HandlerContext& ctx);
  void sendCloseNotify(HandlerContext& ctx);
  void fail(HandlerContext& ctx, TlsErrc e, std::string_view what);
  void onHandshakeTimeout();

  TlsContext::Ptr context_;
  TlsHandlerOptions options_;
  SSL* ssl_ = nullptr;
  HandlerContext* ctx_ = nullptr;
  Buffer* in_ = nullptr;  // the ciphertext the BIO reads, during onData
  Buffer out_;            // ciphertext written by OpenSSL, flushed after each call
  Buffer plain_;          // plaintext for the handlers above (borrowed or leftovers)
  Buffer pending_;        // plaintext written before the handshake finished
  HandlerTimer handshakeTimer_{[this] { onHandshakeTimeout(); }};
  std::string sessionKey_;    // client: server name and port, for resumption
  bool usesStaging_ = false;  // out_ borrows the thread's ciphertext staging
  bool started_ = false;
  bool established_ = false;
  bool failed_ = false;
  bool closeNotifyIn_ = false;
  bool closeNotifyOut_ = false;
  bool resumed_ = false;
  bool peerVerified_ = false;
  std::string alpn_;
  std::string version_;
  std::string cipher_;
  std::string sni_;
  std::string peerSubject_;
  std::error_code error_;
  std::string errorDetail_;
};

}  // namespace keel
