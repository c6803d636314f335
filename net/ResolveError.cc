// The parts of net/Resolver.h that need no worker: the error category for
// getaddrinfo's codes and HostPort.
#include <string>

#include "keel/net/Resolver.h"

namespace keel {

// ---- errors ---------------------------------------------------------------------

namespace {

class ResolverCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "keel.resolve"; }
  std::string message(int ev) const override {
    switch (ev) {
      case EAI_NONAME:
        return "host not found";
      case EAI_AGAIN:
        return "temporary failure in name resolution (try again later)";
      case EAI_FAIL:
        return "name server failure";
      case EAI_NODATA:
        return "host has no address";
      case EAI_ADDRFAMILY:
        return "host has no address in the requested family";
      case EAI_FAMILY:
        return "address family not supported";
      case EAI_MEMORY:
        return "out of memory while resolving";
      case EAI_OVERFLOW:
        return "not a host name (empty, too long, or holding a NUL)";
      case EAI_SERVICE:
        return "service not supported for this socket type";
      case EAI_SOCKTYPE:
        return "socket type not supported";
      case EAI_BADFLAGS:
        return "invalid resolver flags";
      default:
        return std::string("resolver error: ") + ::gai_strerror(ev);
    }
  }
};

}  // namespace

const std::error_category& resolverCategory() noexcept {
  static const ResolverCategory category;
  return category;
}

std::error_code make_error_code(ResolveError e) noexcept { return {static_cast<int>(e), resolverCategory()}; }

std::error_code resolveErrorCode(int eai, int savedErrno) noexcept {
  if (eai == 0) return {};
  if (eai == EAI_SYSTEM) return {savedErrno != 0 ? savedErrno : EIO, std::system_category()};
  return {eai, resolverCategory()};
}

// ---- HostPort -------------------------------------------------------------------

std::optional<HostPort> HostPort::parse(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view host = text.substr(0, colon);
  const std::string_view port = text.substr(colon + 1);
  if (port.empty() || port.size() > 5) return std::nullopt;
  std::uint32_t value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (value > UINT16_MAX) return std::nullopt;
  if (host.starts_with('[')) {
    if (host.size() < 3 || !host.ends_with(']')) return std::nullopt;
    host = host.substr(1, host.size() - 2);
  } else if (host.find_first_of(":[]") != std::string_view::npos) {
    return std::nullopt;  // "::1:80" is ambiguous: IPv6 literals need brackets
  }
  if (host.empty() || host.find('\0') != std::string_view::npos) return std::nullopt;
  return HostPort{std::string(host), static_cast<std::uint16_t>(value)};
}

std::string HostPort::toString() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

}  // namespace keel
