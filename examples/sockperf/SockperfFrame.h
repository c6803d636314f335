// sockperf's wire format (TCP and UDP), as spoken by Debian 12's sockperf 3.7.
//
// Every message starts with a 14-byte header in network byte order:
//
//   offset 0   u64  sequence number
//   offset 8   u16  flags: 1 = sent by the client, 2 = pong requested, 4 = warm-up
//   offset 10  u32  length of the WHOLE message, header included
//
// followed by length - 14 bytes of payload. A server answers a message that
// carries the client and pong-request flags by sending the same bytes back
// with the client flag cleared; everything else (under-load traffic without
// a pong request, warm-up messages, replies) gets no answer. Captured on
// loopback through a relay: `sockperf ping-pong -m 64` sends
// `seq | 0x0003 | 0x00000040` (so the length counts the header) and
// `sockperf server` answers `seq | 0x0002 | 0x00000040`; `under-load` sends
// flags 0x0001 with one message in about a hundred at 0x0003, and only those
// are answered. No message with the warm-up flag crossed the relay in those
// captures (3.7's "warmup stage" is a pause); the flag is still honoured.
//
// On TCP the messages form a stream (split or coalesced at any byte), so a
// reader frames by the length field; on UDP each datagram is one message.
//
// Pure functions over byte spans: no state, no allocation, thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace keel::sockperf {

inline constexpr std::size_t kHeaderSize = 14;
// Largest message accepted: sockperf's own ceiling is 65507 (the largest
// IPv4 UDP payload), so 64 KiB leaves room and still bounds what a TCP peer
// can make us buffer.
inline constexpr std::size_t kMaxMessage = 64 * 1024;

inline constexpr std::uint16_t kFlagClient = 1;
inline constexpr std::uint16_t kFlagPongRequest = 2;
inline constexpr std::uint16_t kFlagWarmup = 4;

struct Header {
  std::uint64_t sequence = 0;
  std::uint16_t flags = 0;
  std::uint32_t length = 0;  // whole message, header included
};

enum class FrameStatus : std::uint8_t {
  Complete,  // one whole message at the front of the input
  NeedMore,  // a prefix of a valid message: wait for more bytes
  TooShort,  // length field below the header size: not sockperf
  TooLarge,  // length field above the cap: refused before buffering it
};
[[nodiscard]] std::string_view toString(FrameStatus s) noexcept;

struct FrameResult {
  FrameStatus status = FrameStatus::NeedMore;
  Header header;             // valid once 14 bytes were seen (also for the errors)
  std::size_t consumed = 0;  // bytes of the message when Complete, else 0
};

// Looks at the front of `in` only; never reads past in.size().
[[nodiscard]] FrameResult parseFrame(std::span<const char> in, std::size_t maxLength = kMaxMessage) noexcept;

// The server's rule: client + pong request, and not a warm-up message.
[[nodiscard]] constexpr bool wantsReply(const Header& h) noexcept {
  return (h.flags & kFlagClient) != 0 && (h.flags & kFlagPongRequest) != 0 && (h.flags & kFlagWarmup) == 0;
}

// Writes the 14 header bytes to out[0..13].
void encodeHeader(const Header& h, char* out) noexcept;

// Copies `message` (a Complete frame) to `out` (at least message.size()
// bytes) with the client flag cleared: the reply sockperf expects.
void writeReply(std::span<const char> message, char* out) noexcept;

}  // namespace keel::sockperf
