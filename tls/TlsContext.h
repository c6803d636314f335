// A TLS configuration shared by many connections: certificates, trust,
// ALPN, versions, SNI, and the client's session cache. Wraps one OpenSSL 3
// SSL_CTX per name.
//
//   std::error_code ec;
//   auto tls = keel::TlsContext::server({.certFile = "cert.pem", .keyFile = "key.pem",
//                                        .alpn = {"http/1.1"}}, ec);
//   if (!tls) return fail(ec);              // OpenSSL's own text is in the log
//   server.setPipelineInit([tls](keel::Connection& c) {
//     c.pipeline().emplaceLast<keel::TlsHandler>(tls);
//     c.pipeline().emplaceLast<MyApp>();
//   });
//
// Safe defaults: TLS 1.2 and 1.3 only; renegotiation refused (it is a
// denial-of-service lever and TLS 1.3 has none); compression off; on the
// client, the peer's certificate and host name are verified against the
// system's trust store unless told otherwise, and turning verification off
// is logged. OpenSSL's record buffers are released while a connection is
// idle (SSL_MODE_RELEASE_BUFFERS).
//
// Thread-safety: build and configure (addServerName) before connections
// use it; after that it is shared by connections on any loop (SSL_CTX is
// thread-safe for that, and the session cache locks).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "keel/tls/TlsError.h"

using SSL_CTX = struct ssl_ctx_st;
using SSL_SESSION = struct ssl_session_st;
using SSL = struct ssl_st;

namespace keel {

enum class TlsVersion : std::uint8_t { Tls12, Tls13 };

struct TlsServerOptions {
  std::string certFile;  // PEM: the certificate, then any intermediates
  std::string keyFile;   // PEM private key (RSA or EC)
  // Protocols offered for ALPN, in the server's order of preference
  // ({"h2", "http/1.1"}); empty: no ALPN. A client offering none of them
  // is refused (no_application_protocol), as RFC 7301 asks.
  std::vector<std::string> alpn;
  // Mutual TLS: client certificates are asked for and verified against
  // this CA; with requireClientCert a client without one is refused.
  std::string clientCaFile;
  bool requireClientCert = false;
  TlsVersion minVersion = TlsVersion::Tls12;
  // Give OpenSSL's record buffers (about 34 KiB) back whenever they are
  // empty, so an idle connection holds none. Costs OpenSSL allocations per
  // message (docs/tls.md has the figures); off for a few busy connections.
  bool releaseIdleBuffers = true;
};

struct TlsClientOptions {
  std::string caFile;  // trust anchors (PEM); empty: the system's store
  // Verify the server's certificate chain and its name (TlsHandlerOptions::
  // serverName). Off only when asked, and then logged once per context.
  bool verifyPeer = true;
  std::vector<std::string> alpn;  // offered, in order; empty: no ALPN
  std::string certFile;           // a client certificate for mutual TLS (with keyFile)
  std::string keyFile;
  // Resume sessions (TLS 1.3 tickets, TLS 1.2 sessions) per server name and
  // port: a reconnect skips the certificate exchange and its signatures.
  bool resumeSessions = true;
  std::size_t maxCachedSessions = 1024;  // cap on the cache; the oldest is dropped
  TlsVersion minVersion = TlsVersion::Tls12;
  bool releaseIdleBuffers = true;  // as TlsServerOptions::releaseIdleBuffers
};

class TlsContext {
 public:
  using Ptr = std::shared_ptr<TlsContext>;

  // Null on failure, with `ec` set and OpenSSL's text in the log.
  [[nodiscard]] static Ptr server(const TlsServerOptions& options, std::error_code& ec);
  [[nodiscard]] static Ptr client(const TlsClientOptions& options, std::error_code& ec);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // Server, before use: connections whose SNI names `host` (exactly, or
  // "*.example.com" for one label) get the certificate in `options`; the
  // rest get the default one.
  [[nodiscard]] std::error_code addServerName(const std::string& host, const TlsServerOptions& options);

  [[nodiscard]] bool isServer() const noexcept { return server_; }
  [[nodiscard]] bool verifiesPeer() const noexcept { return verifyPeer_; }
  [[nodiscard]] SSL_CTX* native() const noexcept { return ctx_; }
  // OpenSSL's text for the last configuration failure.
  [[nodiscard]] const std::string& lastError() const noexcept { return lastError_; }

  // ---- internal: used by TlsHandler ---------------------------------------------
  [[nodiscard]] SSL_CTX* contextFor(std::string_view host) const noexcept;  // SNI choice
  [[nodiscard]] const std::vector<unsigned char>& alpnWire() const noexcept { return alpnWire_; }
  // Client session cache (any thread). store() takes over the caller's
  // reference; take() hands one over (the ticket is single-use).
  void storeSession(const std::string& key, SSL_SESSION* session);
  [[nodiscard]] SSL_SESSION* takeSession(const std::string& key);
  [[nodiscard]] std::size_t cachedSessions() const;
  // The cache key of a client connection (its server name and port), read by
  // the new-session callback.
  static void setSessionKey(SSL* ssl, const std::string* key) noexcept;

 private:
  TlsContext() = default;
  [[nodiscard]] std::error_code fail(TlsErrc e, const std::string& what);
  [[nodiscard]] std::error_code loadServerCert(SSL_CTX* ctx, const TlsServerOptions& options);
  [[nodiscard]] std::error_code configureServer(SSL_CTX* ctx, const TlsServerOptions& options);
  static int onNewSession(SSL* ssl, SSL_SESSION* session);

  SSL_CTX* ctx_ = nullptr;
  bool server_ = false;
  bool verifyPeer_ = true;
  bool resume_ = false;
  std::size_t maxSessions_ = 0;
  std::vector<unsigned char> alpnWire_;                  // length-prefixed protocol names
  std::vector<std::pair<std::string, SSL_CTX*>> names_;  // SNI: host -> context (owned)
  std::string lastError_;
  mutable std::mutex sessionsMutex_;
  std::unordered_map<std::string, SSL_SESSION*> sessions_;  // guarded by sessionsMutex_
  std::vector<std::string> sessionOrder_;                   // oldest first, for the cap
};

}  // namespace keel
