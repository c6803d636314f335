#include "SockperfFrame.h"

#include <cstring>

namespace keel::sockperf {

namespace {

std::uint64_t loadBE(const char* p, std::size_t n) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void storeBE(char* p, std::uint64_t v, std::size_t n) noexcept {
  for (std::size_t i = n; i-- > 0;) {
    p[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

}  // namespace

std::string_view toString(FrameStatus s) noexcept {
  switch (s) {
    case FrameStatus::Complete:
      return "complete";
    case FrameStatus::NeedMore:
      return "need-more";
    case FrameStatus::TooShort:
      return "length below the 14-byte header";
    case FrameStatus::TooLarge:
      return "length above the cap";
  }
  return "unknown";
}

FrameResult parseFrame(std::span<const char> in, std::size_t maxLength) noexcept {
  FrameResult r;
  if (in.size() < kHeaderSize) return r;
  r.header.sequence = loadBE(in.data(), 8);
  r.header.flags = static_cast<std::uint16_t>(loadBE(in.data() + 8, 2));
  r.header.length = static_cast<std::uint32_t>(loadBE(in.data() + 10, 4));
  // Judged from the header alone, so a bad length is refused before a
  // single payload byte is buffered.
  if (r.header.length < kHeaderSize) {
    r.status = FrameStatus::TooShort;
  } else if (r.header.length > maxLength) {
    r.status = FrameStatus::TooLarge;
  } else if (in.size() >= r.header.length) {
    r.status = FrameStatus::Complete;
    r.consumed = r.header.length;
  }
  return r;
}

void encodeHeader(const Header& h, char* out) noexcept {
  storeBE(out, h.sequence, 8);
  storeBE(out + 8, h.flags, 2);
  storeBE(out + 10, h.length, 4);
}

void writeReply(std::span<const char> message, char* out) noexcept {
  std::memcpy(out, message.data(), message.size());
  // Flags are bytes 8-9, big-endian: the client bit lives in byte 9.
  if (message.size() >= kHeaderSize) out[9] = static_cast<char>(out[9] & ~kFlagClient);
}

}  // namespace keel::sockperf
