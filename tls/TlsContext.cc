#include "keel/tls/TlsContext.h"

#include <algorithm>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "keel/core/Log.h"

namespace keel {
namespace {

// Where a client SSL keeps the key its session is cached under.
int sessionKeyIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

void configureCommon(SSL_CTX* ctx, TlsVersion minVersion, bool releaseBuffers) {
  SSL_CTX_set_min_proto_version(ctx, minVersion == TlsVersion::Tls13 ? TLS1_3_VERSION : TLS1_2_VERSION);
  // Renegotiation is refused: TLS 1.3 removed it, and in TLS 1.2 a
  // client-initiated one costs the server a full handshake on demand.
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // RELEASE_BUFFERS: an idle connection gives its record buffers back
  // (about 34 KiB per connection otherwise). MOVING_WRITE_BUFFER: a retried
  // write may come from another address (keel's BIO never asks for a retry,
  // but nothing then depends on it).
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (releaseBuffers) SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}

std::vector<unsigned char> encodeAlpn(const std::vector<std::string>& protocols, bool& ok) {
  std::vector<unsigned char> wire;
  ok = true;
  for (const auto& p : protocols) {
    if (p.empty() || p.size() > 255) {
      ok = false;
      continue;
    }
    wire.push_back(static_cast<unsigned char>(p.size()));
    wire.insert(wire.end(), p.begin(), p.end());
  }
  return wire;
}

int selectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void* arg) {
  const auto* self = static_cast<const TlsContext*>(arg);
  const auto& mine = self->alpnWire();
  unsigned char* chosen = nullptr;
  // The server's preference order, as RFC 7301 leaves to the server.
  if (SSL_select_next_proto(&chosen, outlen, mine.data(), static_cast<unsigned int>(mine.size()), in,
                            inlen) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_ALERT_FATAL;  // no_application_protocol
  }
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

int selectServerName(SSL* ssl, int*, void* arg) {
  const auto* self = static_cast<const TlsContext*>(arg);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) return SSL_TLSEXT_ERR_OK;  // no SNI: the default certificate
  SSL_CTX* chosen = self->contextFor(name);
  if (chosen != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, chosen);
  return SSL_TLSEXT_ERR_OK;
}

bool matchHost(std::string_view pattern, std::string_view host) {
  auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
  auto equal = [&](std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [&](char x, char y) { return lower(x) == lower(y); });
  };
  if (pattern.starts_with("*.")) {
    const std::size_t dot = host.find('.');
    return dot != std::string_view::npos && dot > 0 && equal(pattern.substr(1), host.substr(dot));
  }
  return equal(pattern, host);
}

}  // namespace

std::error_code TlsContext::fail(TlsErrc e, const std::string& what) {
  lastError_ = what;
  const std::string ssl = drainOpenSslErrors();
  if (!ssl.empty()) lastError_ += ": " + ssl;
  KEEL_WARN("tls: {}: {}", make_error_code(e).message(), lastError_);
  return make_error_code(e);
}

std::error_code TlsContext::loadServerCert(SSL_CTX* ctx, const TlsServerOptions& o) {
  if (SSL_CTX_use_certificate_chain_file(ctx, o.certFile.c_str()) != 1)
    return fail(TlsErrc::CertificateFile, o.certFile);
  if (SSL_CTX_use_PrivateKey_file(ctx, o.keyFile.c_str(), SSL_FILETYPE_PEM) != 1)
    return fail(TlsErrc::KeyFile, o.keyFile);
  if (SSL_CTX_check_private_key(ctx) != 1) return fail(TlsErrc::KeyMismatch, o.keyFile);
  return {};
}

std::error_code TlsContext::configureServer(SSL_CTX* ctx, const TlsServerOptions& o) {
  configureCommon(ctx, o.minVersion, o.releaseIdleBuffers);
  if (auto ec = loadServerCert(ctx, o)) return ec;
  if (!alpnWire_.empty()) SSL_CTX_set_alpn_select_cb(ctx, selectAlpn, this);
  SSL_CTX_set_tlsext_servername_callback(ctx, selectServerName);
  SSL_CTX_set_tlsext_servername_arg(ctx, this);
  if (!o.clientCaFile.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, o.clientCaFile.c_str(), nullptr) != 1)
      return fail(TlsErrc::CaFile, o.clientCaFile);
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(o.clientCaFile.c_str())) {
      SSL_CTX_set_client_CA_list(ctx, names);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (o.requireClientCert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                       nullptr);
  } else if (o.requireClientCert) {
    return fail(TlsErrc::Setup, "requireClientCert needs clientCaFile");
  }
  return {};
}

TlsContext::Ptr TlsContext::server(const TlsServerOptions& options, std::error_code& ec) {
  Ptr self(new TlsContext);
  self->server_ = true;
  bool ok = true;
  self->alpnWire_ = encodeAlpn(options.alpn, ok);
  if (!ok) {
    ec = self->fail(TlsErrc::Setup, "ALPN names must be 1-255 bytes");
    return nullptr;
  }
  self->ctx_ = SSL_CTX_new(TLS_server_method());
  if (self->ctx_ == nullptr) {
    ec = self->fail(TlsErrc::Setup, "SSL_CTX_new");
    return nullptr;
  }
  if ((ec = self->configureServer(self->ctx_, options))) return nullptr;
  return self;
}

TlsContext::Ptr TlsContext::client(const TlsClientOptions& options, std::error_code& ec) {
  Ptr self(new TlsContext);
  bool ok = true;
  self->alpnWire_ = encodeAlpn(options.alpn, ok);
  if (!ok) {
    ec = self->fail(TlsErrc::Setup, "ALPN names must be 1-255 bytes");
    return nullptr;
  }
  SSL_CTX* ctx = self->ctx_ = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    ec = self->fail(TlsErrc::Setup, "SSL_CTX_new");
    return nullptr;
  }
  configureCommon(ctx, options.minVersion, options.releaseIdleBuffers);
  self->verifyPeer_ = options.verifyPeer;
  if (options.verifyPeer) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    const bool loaded = options.caFile.empty()
                            ? SSL_CTX_set_default_verify_paths(ctx) == 1
                            : SSL_CTX_load_verify_locations(ctx, options.caFile.c_str(), nullptr) == 1;
    if (!loaded) {
      ec = self->fail(TlsErrc::CaFile, options.caFile.empty() ? "system trust store" : options.caFile);
      return nullptr;
    }
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    KEEL_WARN("tls: a client context with peer verification OFF: anyone can impersonate the server");
  }
  if (!options.certFile.empty()) {
    TlsServerOptions cert;
    cert.certFile = options.certFile;
    cert.keyFile = options.keyFile;
    if ((ec = self->loadServerCert(ctx, cert))) return nullptr;
  }
  if (!self->alpnWire_.empty() &&
      SSL_CTX_set_alpn_protos(ctx, self->alpnWire_.data(),
                              static_cast<unsigned int>(self->alpnWire_.size())) != 0) {
    ec = self->fail(TlsErrc::Setup, "ALPN list");
    return nullptr;
  }
  self->resume_ = options.resumeSessions;
  self->maxSessions_ = options.maxCachedSessions;
  if (self->resume_) {
    // keel keeps the sessions itself, per server name and port: OpenSSL's
    // internal client cache is keyed by session id, useless for tickets.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, &TlsContext::onNewSession);
    SSL_CTX_set_app_data(ctx, self.get());
  }
  return self;
}

TlsContext::~TlsContext() {
  for (auto& [name, ctx] : names_) SSL_CTX_free(ctx);
  for (auto& [key, s] : sessions_) SSL_SESSION_free(s);
  SSL_CTX_free(ctx_);
}

std::error_code TlsContext::addServerName(const std::string& host, const TlsServerOptions& options) {
  if (!server_) return fail(TlsErrc::Setup, "addServerName on a client context");
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return fail(TlsErrc::Setup, "SSL_CTX_new");
  if (auto ec = configureServer(ctx, options)) {
    SSL_CTX_free(ctx);
    return ec;
  }
  names_.emplace_back(host, ctx);
  return {};
}

SSL_CTX* TlsContext::contextFor(std::string_view host) const noexcept {
  for (const auto& [pattern, ctx] : names_) {
    if (matchHost(pattern, host)) return ctx;
  }
  return ctx_;
}

void TlsContext::setSessionKey(SSL* ssl, const std::string* key) noexcept {
  SSL_set_ex_data(ssl, sessionKeyIndex(), const_cast<std::string*>(key));
}

int TlsContext::onNewSession(SSL* ssl, SSL_SESSION* session) {
  auto* self = static_cast<TlsContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  const auto* key = static_cast<const std::string*>(SSL_get_ex_data(ssl, sessionKeyIndex()));
  if (self == nullptr || key == nullptr || key->empty()) return 0;
  self->storeSession(*key, session);
  return 1;  // the cache keeps the reference OpenSSL handed over
}

void TlsContext::storeSession(const std::string& key, SSL_SESSION* session) {
  std::lock_guard lock(sessionsMutex_);
  auto [it, inserted] = sessions_.try_emplace(key, session);
  if (!inserted) {
    SSL_SESSION_free(it->second);
    it->second = session;
    return;
  }
  sessionOrder_.push_back(key);
  while (sessions_.size() > maxSessions_ && !sessionOrder_.empty()) {
    auto old = sessions_.find(sessionOrder_.front());
    if (old != sessions_.end()) {
      SSL_SESSION_free(old->second);
      sessions_.erase(old);
    }
    sessionOrder_.erase(sessionOrder_.begin());
  }
}

SSL_SESSION* TlsContext::takeSession(const std::string& key) {
  std::lock_guard lock(sessionsMutex_);
  auto it = sessions_.find(key);
  if (it == sessions_.end()) return nullptr;
  SSL_SESSION* s = it->second;
  sessions_.erase(it);
  std::erase(sessionOrder_, key);
  return s;
}

std::size_t TlsContext::cachedSessions() const {
  std::lock_guard lock(sessionsMutex_);
  return sessions_.size();
}

}  // namespace keel
