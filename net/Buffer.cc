#include "keel/net/Buffer.h"

#include <algorithm>

#include <sys/uio.h>

namespace keel {

std::string Buffer::retrieveAsString(std::size_t n) {
  n = std::min(n, readableBytes());
  std::string s(peek(), n);
  retrieve(n);
  return s;
}

void Buffer::append(const void* data, std::size_t n) {
  if (n == 0) return;
  ensureWritable(n);
  std::memcpy(beginWrite(), data, n);
  hasWritten(n);
}

void Buffer::appendU32BE(std::uint32_t v) {
  const unsigned char b[4] = {static_cast<unsigned char>(v >> 24), static_cast<unsigned char>(v >> 16),
                              static_cast<unsigned char>(v >> 8), static_cast<unsigned char>(v)};
  append(b, 4);
}

std::uint32_t Buffer::peekU32BE() const noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(peek());
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

void Buffer::ensureWritable(std::size_t n) {
  if (writableBytes() >= n) return;
  const std::size_t live = readableBytes();
  if (!borrowed() && read_ + writableBytes() >= n && read_ >= live) {
    // Enough room once consumed bytes are reclaimed, and the move is cheap
    // (no more than what was already consumed).
    std::memmove(data_, data_ + read_, live);
    read_ = 0;
    write_ = live;
    return;
  }
  reallocate(live + n);
}

void Buffer::reallocate(std::size_t needed) {
  std::size_t cap = 1024;  // powers of two: amortised O(1) appends
  while (cap < needed) cap *= 2;
  auto fresh = std::make_unique<char[]>(cap);
  const std::size_t live = readableBytes();
  if (live != 0) std::memcpy(fresh.get(), data_ + read_, live);
  owned_ = std::move(fresh);
  data_ = owned_.get();
  cap_ = ownedCap_ = cap;
  read_ = 0;
  write_ = live;
}

ssize_t Buffer::readFrom(int fd, std::span<char> scratch, std::size_t limit) {
  const std::size_t spare = std::min(writableBytes(), limit);
  iovec iov[2];
  iov[0].iov_base = beginWrite();
  iov[0].iov_len = spare;
  iov[1].iov_base = scratch.data();
  iov[1].iov_len = std::min(scratch.size(), limit - spare);
  const int count = iov[1].iov_len != 0 ? 2 : 1;
  const ssize_t n = ::readv(fd, spare != 0 ? iov : iov + 1, spare != 0 ? count : 1);
  if (n <= 0) return n;
  const auto got = static_cast<std::size_t>(n);
  if (got <= spare) {
    hasWritten(got);
  } else {
    hasWritten(spare);
    append(scratch.data(), got - spare);
  }
  return n;
}

void Buffer::borrow(std::span<char> region) noexcept {
  // Precondition: empty and not already borrowed. Owned storage stays
  // allocated (it is reused when the borrow is settled with leftovers).
  data_ = region.data();
  cap_ = region.size();
  read_ = write_ = 0;
}

void Buffer::settle(std::size_t keepCapacity) {
  if (borrowed()) {
    const std::size_t live = readableBytes();
    const char* src = data_ + read_;
    data_ = owned_.get();
    cap_ = ownedCap_;
    read_ = write_ = 0;
    if (live != 0) append(src, live);
    return;
  }
  if (empty()) {
    read_ = write_ = 0;
    if (cap_ > keepCapacity) release();
  }
}

void Buffer::release() noexcept {
  owned_.reset();
  data_ = nullptr;
  cap_ = ownedCap_ = 0;
  read_ = write_ = 0;
}

}  // namespace keel
