#include "keel/tls/TlsError.h"

#include <openssl/err.h>

namespace keel {
namespace {

class TlsCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "keel.tls"; }
  std::string message(int ev) const override {
    switch (static_cast<TlsErrc>(ev)) {
      case TlsErrc::CertificateFile:
        return "cannot load the certificate file";
      case TlsErrc::KeyFile:
        return "cannot load the private key file";
      case TlsErrc::KeyMismatch:
        return "the private key does not match the certificate";
      case TlsErrc::CaFile:
        return "cannot load the CA file";
      case TlsErrc::Setup:
        return "TLS setting refused";
      case TlsErrc::HandshakeFailed:
        return "TLS handshake failed";
      case TlsErrc::VerifyFailed:
        return "peer certificate verification failed";
      case TlsErrc::HandshakeTimeout:
        return "TLS handshake timed out";
      case TlsErrc::RecordError:
        return "bad TLS record";
      case TlsErrc::Truncated:
        return "connection closed without close_notify (truncated)";
      case TlsErrc::PendingFull:
        return "too much data written before the TLS handshake finished";
    }
    return "unknown TLS error";
  }
};

}  // namespace

const std::error_category& tlsCategory() noexcept {
  static const TlsCategory category;
  return category;
}

std::string drainOpenSslErrors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

}  // namespace keel
