// Length-prefixed framing: a 4-byte big-endian header, then the payload.
//
//   bit 31     control flag: 0 = application frame, 1 = control frame
//   bits 0-30  payload length in bytes
//
// Application frames become onFrame events (handed on in place, without a
// copy, when the frame is whole in the input buffer); writeFrame turns a
// payload into header + payload in one gather write. Control frames (the
// heartbeat's PING/PONG/GOAWAY, see docs/heartbeat.md) become ControlFrame
// user events, so they share the connection with application messages and
// never reach an application handler that only implements onFrame.
//
// An inbound length above maxFrame is refused before anything is allocated
// for it: the connection closes with CloseReason::ProtocolError. An
// outbound payload above maxFrame is refused to the caller
// (std::errc::message_size from writeFrame, false from Connection::send) and
// counted; the connection stays open, and nothing of it is sent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "keel/net/Handler.h"

namespace keel {

// Raised (on the stack) for each inbound control frame.
struct ControlFrame final : UserEvent {
  explicit ControlFrame(std::span<const char> b) noexcept : body(b) {}
  std::span<const char> body;
};

class FrameCodec : public Handler {
 public:
  static constexpr std::size_t kHeaderBytes = 4;
  static constexpr std::uint32_t kControlBit = 0x8000'0000u;
  static constexpr std::size_t kDefaultMaxFrame = 1 << 20;  // 1 MiB

  explicit FrameCodec(std::size_t maxFrame = kDefaultMaxFrame) noexcept : maxFrame_(maxFrame) {}

  [[nodiscard]] std::string_view name() const noexcept override { return "frame-codec"; }
  [[nodiscard]] bool encodesMessages() const noexcept override { return true; }
  void onData(HandlerContext& ctx, Buffer& in) override;
  std::error_code writeFrame(HandlerContext& ctx, const Slices& payload) override;

  [[nodiscard]] std::size_t maxFrame() const noexcept { return maxFrame_; }
  [[nodiscard]] std::uint64_t framesIn() const noexcept { return framesIn_; }
  [[nodiscard]] std::uint64_t framesOut() const noexcept { return framesOut_; }
  [[nodiscard]] std::uint64_t controlFramesIn() const noexcept { return controlIn_; }
  // Outbound frames refused (over maxFrame, or too many parts).
  [[nodiscard]] std::uint64_t framesRefused() const noexcept { return framesRefused_; }

  // The 4 header bytes for a payload of n bytes (n < 2^31).
  static void encodeHeader(std::uint32_t n, char out[kHeaderBytes], bool control = false) noexcept;

 private:
  std::size_t maxFrame_;
  std::uint64_t framesIn_ = 0;
  std::uint64_t framesOut_ = 0;
  std::uint64_t controlIn_ = 0;
  std::uint64_t framesRefused_ = 0;
};

}  // namespace keel
