// Internal to keel (not installed): the bytes of the handoff protocol
// (net/Handoff.h), shared by its two sides.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include <sys/socket.h>
#include <sys/un.h>

namespace keel::handoff {

inline constexpr std::uint16_t kVersion = 1;
inline constexpr std::string_view kMagic = "KEEL";
inline constexpr std::string_view kAck = "ACPT";
inline constexpr std::string_view kReleased = "RLSD";

// Fixed layout, native byte order: both ends are the same program on the
// same machine, and the version field catches a changed layout.
struct Header {
  char magic[4];
  std::uint16_t version;
  std::uint16_t count;
  std::uint32_t pid;
};
static_assert(sizeof(Header) == 12);

// sockaddr_un for PATH: "@name" is the abstract namespace; nullopt when it
// does not fit.
struct UnixAddress {
  sockaddr_un addr{};
  socklen_t length = 0;
  bool abstract = false;
};

inline std::optional<UnixAddress> unixAddress(const std::string& path) {
  UnixAddress a;
  a.addr.sun_family = AF_UNIX;
  a.abstract = !path.empty() && path.front() == '@';
  const std::size_t n = path.size();
  if (n == 0 || n >= sizeof a.addr.sun_path || (a.abstract && n < 2)) return std::nullopt;
  std::memcpy(a.addr.sun_path, path.data(), n);
  if (a.abstract) a.addr.sun_path[0] = '\0';
  a.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + n + (a.abstract ? 0 : 1));
  return a;
}

}  // namespace keel::handoff
