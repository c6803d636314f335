// The form in which a Connection keeps its two addresses: 32 bytes instead
// of SocketAddress's 136 (a sockaddr_storage), which is most of what an
// idle connection costs (docs/decisions.md, issue 16).
//
// Every IPv4 or IPv6 address (sockaddr_in6 is 28 bytes), an unnamed Unix
// socket (an unbound client as its server sees it) and a Unix path or
// abstract name of up to 25 bytes are kept inline. A longer Unix-domain
// address is copied out of line, once, when stored: rare, and never on a
// hot path. Reading gives back a SocketAddress equal to the one stored.
//
// Thread-safety: a value; none of its own.
#pragma once

#include <cstdint>
#include <string>

#include <sys/socket.h>

#include "keel/net/SocketAddress.h"

namespace keel {

class CompactAddress {
 public:
  static constexpr socklen_t kInlineBytes = 28;  // sizeof(sockaddr_in6)

  CompactAddress() noexcept = default;  // AF_UNSPEC, as SocketAddress()
  explicit CompactAddress(const SocketAddress& addr) { assign(addr); }
  CompactAddress(const CompactAddress& other) { assign(other.get()); }
  CompactAddress& operator=(const CompactAddress& other);
  CompactAddress& operator=(const SocketAddress& addr);
  ~CompactAddress() { freeHeap(); }

  [[nodiscard]] SocketAddress get() const noexcept;
  [[nodiscard]] sa_family_t family() const noexcept;
  [[nodiscard]] socklen_t length() const noexcept { return len_; }
  // Whether the address did not fit inline (a long Unix-domain address).
  [[nodiscard]] bool outOfLine() const noexcept { return len_ > kInlineBytes; }
  [[nodiscard]] std::string toString() const { return get().toString(); }

 private:
  void assign(const SocketAddress& addr);
  void freeHeap() noexcept;
  [[nodiscard]] const sockaddr* heap() const noexcept;

  // The sockaddr bytes when they fit, else a pointer to a heap copy.
  alignas(8) unsigned char bytes_[kInlineBytes] = {};
  socklen_t len_ = 0;
};

static_assert(sizeof(CompactAddress) == 32, "the Connection size budget counts on 32 bytes per address");

}  // namespace keel
