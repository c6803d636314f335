// The TLS flags the example servers share: --tls-cert FILE --tls-key FILE
// turn the plain listener into a TLS one (TLS 1.2/1.3, the ALPN protocol the
// example speaks), with keel's TlsHandler nearest the socket.
//
// Header-only glue, like ExampleMain.h.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include <keel/net/Connection.h>
#include <keel/tls/TlsHandler.h>

namespace keel::example {

struct TlsFlags {
  std::string certFile;
  std::string keyFile;
  [[nodiscard]] bool on() const noexcept { return !certFile.empty(); }
};

inline void addTlsOptions(CLI::App& app, TlsFlags& flags) {
  auto* cert =
      app.add_option("--tls-cert", flags.certFile, "serve TLS with this certificate (PEM, chain allowed)")
          ->check(CLI::ExistingFile);
  auto* key = app.add_option("--tls-key", flags.keyFile, "the certificate's private key (PEM)")
                  ->check(CLI::ExistingFile);
  cert->needs(key);
  key->needs(cert);
}

// The server context for `flags`, or null (after printing why) when the
// files do not load. `alpn`: the protocols the example speaks.
[[nodiscard]] inline TlsContext::Ptr serverTls(const TlsFlags& flags, std::string_view program,
                                               std::vector<std::string> alpn = {}) {
  TlsServerOptions o;
  o.certFile = flags.certFile;
  o.keyFile = flags.keyFile;
  o.alpn = std::move(alpn);
  std::error_code ec;
  auto ctx = TlsContext::server(o, ec);
  if (!ctx) {
    std::fprintf(stderr, "%.*s: TLS: %s\n", static_cast<int>(program.size()), program.data(),
                 ec.message().c_str());
  }
  return ctx;
}

}  // namespace keel::example
