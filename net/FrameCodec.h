// Length-prefixed framing: a 4-byte big-endian payload length, then the
// payload. Inbound it turns bytes into onFrame events (a frame is handed on
// in place, without a copy, when it is whole in the input buffer); outbound
// it turns writeFrame into header + payload in one gather write.
//
// A length above maxFrame is refused before anything is allocated for it:
// the connection closes with CloseReason::ProtocolError.
#pragma once

#include <cstddef>
#include <cstdint>

#include "keel/net/Handler.h"

namespace keel {

class FrameCodec : public Handler {
 public:
  static constexpr std::size_t kHeaderBytes = 4;
  static constexpr std::size_t kDefaultMaxFrame = 1 << 20;  // 1 MiB

  explicit FrameCodec(std::size_t maxFrame = kDefaultMaxFrame) noexcept : maxFrame_(maxFrame) {}

  [[nodiscard]] std::string_view name() const noexcept override { return "frame-codec"; }
  void onData(HandlerContext& ctx, Buffer& in) override;
  void writeFrame(HandlerContext& ctx, const Slices& payload) override;

  [[nodiscard]] std::size_t maxFrame() const noexcept { return maxFrame_; }
  [[nodiscard]] std::uint64_t framesIn() const noexcept { return framesIn_; }
  [[nodiscard]] std::uint64_t framesOut() const noexcept { return framesOut_; }

  // The 4 header bytes for a payload of n bytes.
  static void encodeHeader(std::uint32_t n, char out[kHeaderBytes]) noexcept;

 private:
  std::size_t maxFrame_;
  std::uint64_t framesIn_ = 0;
  std::uint64_t framesOut_ = 0;
};

}  // namespace keel
