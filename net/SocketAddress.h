// An address keel can bind, connect or send to: IPv4, IPv6, Unix-domain by
// path, or Linux abstract Unix-domain (no file, name in its own namespace).
//
// A value type (a sockaddr_storage and its length); copyable, no allocation.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <sys/socket.h>

namespace keel {

class SocketAddress {
 public:
  SocketAddress() noexcept;  // AF_UNSPEC, length 0
  SocketAddress(const sockaddr* sa, socklen_t len) noexcept;

  // Numeric hosts only ("127.0.0.1", "::1", "0.0.0.0"); no DNS in the reactor.
  // Returns nullopt when `host` is not a literal of that family.
  [[nodiscard]] static std::optional<SocketAddress> ipv4(std::string_view host, std::uint16_t port);
  [[nodiscard]] static std::optional<SocketAddress> ipv6(std::string_view host, std::uint16_t port);
  [[nodiscard]] static SocketAddress loopback4(std::uint16_t port);
  [[nodiscard]] static SocketAddress loopback6(std::uint16_t port);
  [[nodiscard]] static SocketAddress any4(std::uint16_t port);
  // nullopt when the path does not fit sun_path (107 bytes).
  [[nodiscard]] static std::optional<SocketAddress> unixPath(std::string_view path);
  [[nodiscard]] static std::optional<SocketAddress> unixAbstract(std::string_view name);
  // "1.2.3.4:80", "[::1]:80", "unix:/path", "unix-abstract:name" (the format toString() prints).
  [[nodiscard]] static std::optional<SocketAddress> parse(std::string_view text);

  [[nodiscard]] sa_family_t family() const noexcept { return storage_.ss_family; }
  [[nodiscard]] bool isInet() const noexcept { return family() == AF_INET || family() == AF_INET6; }
  [[nodiscard]] bool isUnix() const noexcept { return family() == AF_UNIX; }
  [[nodiscard]] std::uint16_t port() const noexcept;  // 0 for Unix-domain
  [[nodiscard]] std::string toString() const;

  [[nodiscard]] const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
  [[nodiscard]] sockaddr* data() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }
  [[nodiscard]] socklen_t length() const noexcept { return len_; }
  // For accept/getsockname: the capacity to pass in, then setLength() with what came back.
  [[nodiscard]] static constexpr socklen_t capacity() noexcept { return sizeof(sockaddr_storage); }
  void setLength(socklen_t len) noexcept { len_ = len; }

  friend bool operator==(const SocketAddress& a, const SocketAddress& b) noexcept;

 private:
  sockaddr_storage storage_{};
  socklen_t len_ = 0;
};

}  // namespace keel
