#include "keel/heartbeat/HeartbeatMessage.h"

#include <cstring>

namespace keel {
namespace {

// Byte-by-byte so the layout is the same on any host and no alignment is assumed.
void putU16(char* p, std::uint16_t v) noexcept {
  p[0] = static_cast<char>(v >> 8);
  p[1] = static_cast<char>(v);
}

void putU64(char* p, std::uint64_t v) noexcept {
  for (int i = 7; i >= 0; --i) {
    p[i] = static_cast<char>(v & 0xFF);
    v >>= 8;
  }
}

std::uint8_t byteAt(const char* p) noexcept { return static_cast<std::uint8_t>(*p); }

std::uint16_t getU16(const char* p) noexcept {
  return static_cast<std::uint16_t>((std::uint16_t{byteAt(p)} << 8) | byteAt(p + 1));
}

std::uint64_t getU64(const char* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | byteAt(p + i);
  return v;
}

}  // namespace

std::string_view toString(HeartbeatType t) noexcept {
  switch (t) {
    case HeartbeatType::Ping:
      return "PING";
    case HeartbeatType::Pong:
      return "PONG";
    case HeartbeatType::GoAway:
      return "GOAWAY";
  }
  return "unknown";
}

void HeartbeatMessage::encode(std::span<char, kBodyBytes> out) const noexcept {
  char* p = out.data();
  std::memcpy(p, kMagic, sizeof kMagic);
  p[4] = static_cast<char>(kVersion);
  p[5] = static_cast<char>(type);
  putU16(p + 6, flags);
  putU64(p + 8, sequence);
  putU64(p + 16, timestamp);
}

void HeartbeatMessage::encodeFrame(std::span<char, kFrameBytes> out) const noexcept {
  FrameCodec::encodeHeader(static_cast<std::uint32_t>(kBodyBytes), out.data(), /*control=*/true);
  encode(out.subspan<FrameCodec::kHeaderBytes, kBodyBytes>());
}

std::optional<HeartbeatMessage> HeartbeatMessage::decode(std::span<const char> body) noexcept {
  if (body.size() != kBodyBytes) return std::nullopt;
  const char* p = body.data();
  if (std::memcmp(p, kMagic, sizeof kMagic) != 0) return std::nullopt;
  if (byteAt(p + 4) != kVersion) return std::nullopt;
  const std::uint8_t type = byteAt(p + 5);
  if (type < static_cast<std::uint8_t>(HeartbeatType::Ping) ||
      type > static_cast<std::uint8_t>(HeartbeatType::GoAway)) {
    return std::nullopt;
  }
  HeartbeatMessage m;
  m.type = static_cast<HeartbeatType>(type);
  m.flags = getU16(p + 6);
  m.sequence = getU64(p + 8);
  m.timestamp = getU64(p + 16);
  return m;
}

}  // namespace keel
