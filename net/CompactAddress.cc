#include "keel/net/CompactAddress.h"

#include <cstring>

namespace keel {

CompactAddress& CompactAddress::operator=(const CompactAddress& other) {
  if (this != &other) *this = other.get();
  return *this;
}

CompactAddress& CompactAddress::operator=(const SocketAddress& addr) {
  freeHeap();
  assign(addr);
  return *this;
}

void CompactAddress::assign(const SocketAddress& addr) {
  const socklen_t len = addr.length();
  if (len <= kInlineBytes) {
    std::memset(bytes_, 0, sizeof(bytes_));
    if (len > 0) std::memcpy(bytes_, addr.data(), len);
    len_ = len;
    return;
  }
  auto* copy = new unsigned char[len];
  std::memcpy(copy, addr.data(), len);
  std::memcpy(bytes_, &copy, sizeof(copy));
  len_ = len;
}

void CompactAddress::freeHeap() noexcept {
  if (!outOfLine()) return;
  unsigned char* p = nullptr;
  std::memcpy(&p, bytes_, sizeof(p));
  delete[] p;
  len_ = 0;
}

const sockaddr* CompactAddress::heap() const noexcept {
  const unsigned char* p = nullptr;
  std::memcpy(&p, bytes_, sizeof(p));
  return reinterpret_cast<const sockaddr*>(p);
}

SocketAddress CompactAddress::get() const noexcept {
  if (len_ == 0) return {};
  if (outOfLine()) return SocketAddress(heap(), len_);
  return SocketAddress(reinterpret_cast<const sockaddr*>(bytes_), len_);
}

sa_family_t CompactAddress::family() const noexcept {
  if (len_ < sizeof(sa_family_t)) return AF_UNSPEC;
  sa_family_t f = AF_UNSPEC;
  std::memcpy(&f, outOfLine() ? reinterpret_cast<const unsigned char*>(heap()) : bytes_, sizeof(f));
  return f;
}

}  // namespace keel
