#include "support/TestPki.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>

#include <unistd.h>

namespace keel::test {
namespace {

bool run(const std::string& cmd, std::string& why) {
  if (std::system((cmd + " >/dev/null 2>&1").c_str()) == 0) return true;
  why = "failed: " + cmd;
  return false;
}

struct Made {
  TestPki pki;
  bool ok = false;
  std::string why;
  pid_t owner = ::getpid();  // a forked child that exits must not remove the files
  ~Made() {
    if (!pki.dir.empty() && ::getpid() == owner) {
      std::error_code ec;
      std::filesystem::remove_all(pki.dir, ec);
    }
  }
};

// A key and a certificate for `cn` with `san`, signed by ca (its key next to it).
bool issue(const std::string& dir, const std::string& name, const std::string& keyAlg, const std::string& cn,
           const std::string& san, const std::string& ca, const std::string& caKey, int days,
           std::string& why) {
  const std::string key = dir + "/" + name + ".key", csr = dir + "/" + name + ".csr";
  const std::string ext = dir + "/" + name + ".ext", cert = dir + "/" + name + ".pem";
  std::ofstream(ext) << (san.empty() ? "" : "subjectAltName=" + san + "\n") << "basicConstraints=CA:FALSE\n";
  return run("openssl req -newkey " + keyAlg + " -nodes -keyout " + key + " -out " + csr +
                 " -subj '/CN=" + cn + "'",
             why) &&
         run("openssl x509 -req -in " + csr + " -CA " + ca + " -CAkey " + caKey + " -CAcreateserial -out " +
                 cert + " -days " + std::to_string(days) + " -extfile " + ext,
             why);
}

bool makeCa(const std::string& dir, const std::string& name, std::string& why) {
  return run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " + dir + "/" +
                 name + ".key -out " + dir + "/" + name + ".pem -days 30 -subj '/CN=keel " + name + "'",
             why);
}

void make(Made& m) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) {
    m.why = "the openssl command is not installed (scripts/install-deps.sh)";
    return;
  }
  char tmpl[] = "/tmp/keel-pki-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    m.why = "mkdtemp failed";
    return;
  }
  TestPki& p = m.pki;
  p.dir = tmpl;
  const std::string d = p.dir;
  const std::string ec = "ec -pkeyopt ec_paramgen_curve:P-256";
  const std::string local = "DNS:localhost,IP:127.0.0.1";
  const std::string ca = d + "/ca.pem", caKey = d + "/ca.key";
  const std::string other = d + "/other-ca.pem", otherKey = d + "/other-ca.key";
  m.ok = makeCa(d, "ca", m.why) && makeCa(d, "other-ca", m.why) &&
         issue(d, "server", ec, "localhost", local, ca, caKey, 30, m.why) &&
         issue(d, "rsa", "rsa:2048", "localhost", local, ca, caKey, 30, m.why) &&
         issue(d, "alt", ec, "alt.test", "DNS:alt.test", ca, caKey, 30, m.why) &&
         issue(d, "expired", ec, "localhost", local, ca, caKey, -1, m.why) &&
         issue(d, "untrusted", ec, "localhost", local, other, otherKey, 30, m.why) &&
         issue(d, "client", ec, "alice", "", ca, caKey, 30, m.why);
  p.caCert = ca;
  p.untrustedCa = other;
  auto pair = [&d](const std::string& n, std::string& cert, std::string& key) {
    cert = d + "/" + n + ".pem";
    key = d + "/" + n + ".key";
  };
  pair("server", p.serverCert, p.serverKey);
  pair("rsa", p.rsaCert, p.rsaKey);
  pair("alt", p.altCert, p.altKey);
  pair("expired", p.expiredCert, p.expiredKey);
  pair("untrusted", p.untrustedCert, p.untrustedKey);
  pair("client", p.clientCert, p.clientKey);
}

}  // namespace

const TestPki* testPki(std::string* why) {
  static Made made;
  static std::once_flag once;
  std::call_once(once, [] { make(made); });
  if (!made.ok) {
    if (why != nullptr) *why = made.why;
    return nullptr;
  }
  return &made.pki;
}

}  // namespace keel::test
