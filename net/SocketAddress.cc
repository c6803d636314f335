#include "keel/net/SocketAddress.h"

#include <algorithm>
#include <cstddef>
#include <cstring>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

namespace keel {

namespace {

constexpr std::string_view kUnixPrefix = "unix:";
constexpr std::string_view kAbstractPrefix = "unix-abstract:";

constexpr socklen_t kSunPathOffset = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path));
constexpr std::size_t kSunPathSize = sizeof(sockaddr_un::sun_path);  // 108 on Linux

// The storage is read and written through memcpy into the concrete sockaddr
// type rather than by casting its address: no aliasing questions, and the
// compiler turns these into plain moves.
template <typename T>
T load(const sockaddr_storage& storage) noexcept {
  static_assert(sizeof(T) <= sizeof(sockaddr_storage));
  T out;
  std::memcpy(&out, &storage, sizeof(T));
  return out;
}

template <typename T>
void store(sockaddr_storage& storage, const T& value) noexcept {
  static_assert(sizeof(T) <= sizeof(sockaddr_storage));
  std::memcpy(&storage, &value, sizeof(T));
}

bool hasNul(std::string_view s) noexcept { return s.find('\0') != std::string_view::npos; }

// Decimal digits only, no sign, no leading zeros (except "0" itself): the
// form toString() prints. nullopt when anything else or above `max`.
std::optional<std::uint32_t> parseDecimal(std::string_view s, std::uint32_t max) noexcept {
  if (s.empty() || s.size() > 10) return std::nullopt;
  if (s.size() > 1 && s.front() == '0') return std::nullopt;
  std::uint64_t value = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (value > max) return std::nullopt;
  return static_cast<std::uint32_t>(value);
}

// inet_pton needs a NUL-terminated string; a string_view may not be one.
// Fails (false) when the text is too long to be a literal or holds a NUL.
bool copyLiteral(std::string_view host, char (&buf)[INET6_ADDRSTRLEN]) noexcept {
  if (host.empty() || host.size() >= sizeof(buf) || hasNul(host)) return false;
  std::memcpy(buf, host.data(), host.size());
  buf[host.size()] = '\0';
  return true;
}

// Number of meaningful sun_path bytes of a Unix-domain address of length `len`.
std::size_t sunPathBytes(socklen_t len) noexcept {
  if (len <= kSunPathOffset) return 0;
  return std::min<std::size_t>(len - kSunPathOffset, kSunPathSize);
}

}  // namespace

SocketAddress::SocketAddress() noexcept { storage_.ss_family = AF_UNSPEC; }

SocketAddress::SocketAddress(const sockaddr* sa, socklen_t len) noexcept {
  storage_.ss_family = AF_UNSPEC;
  if (sa == nullptr || len == 0) return;
  len_ = std::min(len, capacity());
  std::memcpy(&storage_, sa, len_);
}

std::optional<SocketAddress> SocketAddress::ipv4(std::string_view host, std::uint16_t port) {
  char buf[INET6_ADDRSTRLEN];
  if (!copyLiteral(host, buf)) return std::nullopt;
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  if (::inet_pton(AF_INET, buf, &sin.sin_addr) != 1) return std::nullopt;
  SocketAddress addr;
  store(addr.storage_, sin);
  addr.len_ = sizeof(sin);
  return addr;
}

std::optional<SocketAddress> SocketAddress::ipv6(std::string_view host, std::uint16_t port) {
  // An optional numeric zone ("fe80::1%2"), as toString() prints it for a
  // link-local address. Interface names are not resolved here.
  std::uint32_t scope = 0;
  if (auto pct = host.find('%'); pct != std::string_view::npos) {
    auto id = parseDecimal(host.substr(pct + 1), UINT32_MAX);
    if (!id) return std::nullopt;
    scope = *id;
    host = host.substr(0, pct);
  }
  char buf[INET6_ADDRSTRLEN];
  if (!copyLiteral(host, buf)) return std::nullopt;
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(port);
  sin6.sin6_scope_id = scope;
  if (::inet_pton(AF_INET6, buf, &sin6.sin6_addr) != 1) return std::nullopt;
  SocketAddress addr;
  store(addr.storage_, sin6);
  addr.len_ = sizeof(sin6);
  return addr;
}

SocketAddress SocketAddress::loopback4(std::uint16_t port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return SocketAddress(reinterpret_cast<const sockaddr*>(&sin), sizeof(sin));
}

SocketAddress SocketAddress::loopback6(std::uint16_t port) {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(port);
  sin6.sin6_addr = in6addr_loopback;
  return SocketAddress(reinterpret_cast<const sockaddr*>(&sin6), sizeof(sin6));
}

SocketAddress SocketAddress::any4(std::uint16_t port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_ANY);
  return SocketAddress(reinterpret_cast<const sockaddr*>(&sin), sizeof(sin));
}

std::optional<SocketAddress> SocketAddress::unixPath(std::string_view path) {
  // An empty path is not an address: with sun_path[0] == '\0' it would be
  // read as the abstract name "". A NUL inside would silently cut the path.
  // The path and its terminating NUL must fit sun_path.
  if (path.empty() || hasNul(path) || path.size() + 1 > kSunPathSize) return std::nullopt;
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path, path.data(), path.size());
  SocketAddress addr;
  store(addr.storage_, sun);
  addr.len_ = kSunPathOffset + static_cast<socklen_t>(path.size()) + 1;
  return addr;
}

std::optional<SocketAddress> SocketAddress::unixAbstract(std::string_view name) {
  // The name is every byte after the leading NUL, up to the length: it may be
  // empty and may itself hold NULs, exactly as the kernel treats it.
  if (name.size() + 1 > kSunPathSize) return std::nullopt;
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  sun.sun_path[0] = '\0';
  if (!name.empty()) std::memcpy(sun.sun_path + 1, name.data(), name.size());
  SocketAddress addr;
  store(addr.storage_, sun);
  addr.len_ = kSunPathOffset + 1 + static_cast<socklen_t>(name.size());
  return addr;
}

std::optional<SocketAddress> SocketAddress::parse(std::string_view text) {
  if (text.starts_with(kAbstractPrefix)) return unixAbstract(text.substr(kAbstractPrefix.size()));
  if (text.starts_with(kUnixPrefix)) return unixPath(text.substr(kUnixPrefix.size()));

  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;  // no port
  auto port = parseDecimal(text.substr(colon + 1), UINT16_MAX);
  if (!port) return std::nullopt;
  auto host = text.substr(0, colon);
  auto port16 = static_cast<std::uint16_t>(*port);

  if (host.starts_with('[')) {
    if (host.size() < 2 || !host.ends_with(']')) return std::nullopt;
    return ipv6(host.substr(1, host.size() - 2), port16);
  }
  // An unbracketed host with a colon in it is an IPv6 literal missing its
  // brackets ("::1:80" is ambiguous); ipv4() rejects it.
  return ipv4(host, port16);
}

std::uint16_t SocketAddress::port() const noexcept {
  switch (family()) {
    case AF_INET:
      return ntohs(load<sockaddr_in>(storage_).sin_port);
    case AF_INET6:
      return ntohs(load<sockaddr_in6>(storage_).sin6_port);
    default:
      return 0;
  }
}

std::string SocketAddress::toString() const {
  char buf[INET6_ADDRSTRLEN];
  switch (family()) {
    case AF_INET: {
      auto sin = load<sockaddr_in>(storage_);
      if (::inet_ntop(AF_INET, &sin.sin_addr, buf, sizeof(buf)) == nullptr) return "inet:?";
      std::string out(buf);
      out += ':';
      out += std::to_string(ntohs(sin.sin_port));
      return out;
    }
    case AF_INET6: {
      auto sin6 = load<sockaddr_in6>(storage_);
      if (::inet_ntop(AF_INET6, &sin6.sin6_addr, buf, sizeof(buf)) == nullptr) return "inet6:?";
      std::string out = "[";
      out += buf;
      if (sin6.sin6_scope_id != 0) {
        out += '%';
        out += std::to_string(sin6.sin6_scope_id);
      }
      out += "]:";
      out += std::to_string(ntohs(sin6.sin6_port));
      return out;
    }
    case AF_UNIX: {
      auto sun = load<sockaddr_un>(storage_);
      std::size_t n = sunPathBytes(len_);
      // n == 0: an unnamed socket (an unbound client as its peer sees it).
      // There is no address to parse back; print the bare prefix.
      if (n == 0) return std::string(kUnixPrefix);
      if (sun.sun_path[0] == '\0') {
        std::string out(kAbstractPrefix);
        out.append(sun.sun_path + 1, n - 1);
        return out;
      }
      // A path: up to its NUL, or all n bytes when the kernel returned a
      // path filling sun_path with no terminator.
      std::string out(kUnixPrefix);
      out.append(sun.sun_path, ::strnlen(sun.sun_path, n));
      return out;
    }
    case AF_UNSPEC:
      return "unspec";
    default:
      return "family:" + std::to_string(family());
  }
}

bool operator==(const SocketAddress& a, const SocketAddress& b) noexcept {
  if (a.family() != b.family() || a.len_ != b.len_) return false;
  switch (a.family()) {
    case AF_INET: {
      auto x = load<sockaddr_in>(a.storage_);
      auto y = load<sockaddr_in>(b.storage_);
      return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
    }
    case AF_INET6: {
      // The zone is part of a link-local address; flowinfo is not.
      auto x = load<sockaddr_in6>(a.storage_);
      auto y = load<sockaddr_in6>(b.storage_);
      return x.sin6_port == y.sin6_port && x.sin6_scope_id == y.sin6_scope_id &&
             std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof(x.sin6_addr)) == 0;
    }
    case AF_UNIX: {
      auto x = load<sockaddr_un>(a.storage_);
      auto y = load<sockaddr_un>(b.storage_);
      return std::memcmp(x.sun_path, y.sun_path, sunPathBytes(a.len_)) == 0;
    }
    case AF_UNSPEC:
      return true;
    default:
      return std::memcmp(&a.storage_, &b.storage_, std::min(a.len_, SocketAddress::capacity())) == 0;
  }
}

}  // namespace keel
