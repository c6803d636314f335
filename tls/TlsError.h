// Errors of keel's TLS layer, as std::error_code (category "keel.tls").
//
// The code says what failed; the text OpenSSL gave for it (its error queue,
// or the certificate verification result) is kept beside it, by the
// TlsContext for configuration errors and by the TlsHandler for a
// connection's failure, because one enum cannot carry OpenSSL's hundreds of
// reasons.
#pragma once

#include <string>
#include <system_error>

namespace keel {

enum class TlsErrc {
  CertificateFile = 1,  // the certificate (chain) file could not be loaded
  KeyFile,              // the private key file could not be loaded
  KeyMismatch,          // the key does not belong to the certificate
  CaFile,               // the CA file could not be loaded
  Setup,                // OpenSSL refused a setting (ALPN list, versions...)
  HandshakeFailed,      // the handshake failed (alert, bad message, no shared cipher...)
  VerifyFailed,         // the peer's certificate did not verify (untrusted, expired, wrong name)
  HandshakeTimeout,     // the handshake did not finish within the deadline
  RecordError,          // a record after the handshake did not decrypt or parse
  Truncated,            // the peer's FIN came without close_notify
  PendingFull,          // too much written before the handshake finished
};

[[nodiscard]] const std::error_category& tlsCategory() noexcept;
[[nodiscard]] inline std::error_code make_error_code(TlsErrc e) noexcept {
  return {static_cast<int>(e), tlsCategory()};
}

// Empties OpenSSL's error queue of this thread into one line ("" when empty).
[[nodiscard]] std::string drainOpenSslErrors();

}  // namespace keel

template <>
struct std::is_error_code_enum<keel::TlsErrc> : std::true_type {};
