// Certificates for the TLS tests, made at test time with the openssl
// command (no private key is ever committed): a test CA, server
// certificates signed by it (EC P-256 and RSA-2048, for "localhost" and
// 127.0.0.1), one for another name (SNI), an expired one, one from a CA
// nobody trusts, and a client certificate (CN=alice) for mutual TLS.
//
// Made once per test process in a fresh temporary directory, removed at exit.
#pragma once

#include <string>

namespace keel::test {

struct TestPki {
  std::string dir;
  std::string caCert;                 // the trusted test CA
  std::string serverCert, serverKey;  // EC P-256: CN=localhost, SAN localhost, 127.0.0.1
  std::string rsaCert, rsaKey;        // RSA-2048, same names
  std::string altCert, altKey;        // CN=alt.test, SAN alt.test (for SNI)
  std::string expiredCert, expiredKey;
  std::string untrustedCa;                  // a CA no test trusts
  std::string untrustedCert, untrustedKey;  // signed by it, for localhost
  std::string clientCert, clientKey;        // CN=alice, signed by the test CA
};

// The PKI, or nullptr when it cannot be made (no openssl command); `why`
// then says what failed.
[[nodiscard]] const TestPki* testPki(std::string* why = nullptr);

}  // namespace keel::test
