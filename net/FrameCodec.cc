#include "keel/net/FrameCodec.h"

#include "keel/core/Log.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/Pipeline.h"

namespace keel {

void FrameCodec::encodeHeader(std::uint32_t n, char out[kHeaderBytes], bool control) noexcept {
  if (control) n |= kControlBit;
  out[0] = static_cast<char>(n >> 24);
  out[1] = static_cast<char>(n >> 16);
  out[2] = static_cast<char>(n >> 8);
  out[3] = static_cast<char>(n);
}

void FrameCodec::onData(HandlerContext& ctx, Buffer& in) {
  while (in.readableBytes() >= kHeaderBytes) {
    const std::uint32_t header = in.peekU32BE();
    const bool control = (header & kControlBit) != 0;
    const std::uint32_t len = header & ~kControlBit;
    if (len > maxFrame_) {
      KEEL_WARN("conn {}: frame of {} bytes announced, limit is {}; closing", ctx.connection().id(), len,
                maxFrame_);
      in.retrieveAll();
      ctx.close(CloseReason::ProtocolError);
      return;
    }
    if (in.readableBytes() < kHeaderBytes + len) break;  // wait for the rest
    const std::span<const char> frame(in.peek() + kHeaderBytes, len);
    if (control) {
      ++controlIn_;
      ctx.fireUserEvent(ControlFrame(frame));
    } else {
      ++framesIn_;
      ctx.fireFrame(frame);
    }
    in.retrieve(kHeaderBytes + len);
    if (ctx.connection().closed()) {
      in.retrieveAll();
      return;
    }
    if (ctx.removed()) {
      // Replaced mid-stream (a protocol switch): what follows is no longer
      // ours to frame.
      if (!in.empty()) ctx.fireData(in);
      return;
    }
  }
}

std::error_code FrameCodec::writeFrame(HandlerContext& ctx, const Slices& payload) {
  if (payload.totalBytes() > maxFrame_) {
    ++framesRefused_;
    KEEL_DEBUG("conn {}: refusing to send a {} byte frame (limit {})", ctx.connection().id(),
               payload.totalBytes(), maxFrame_);
    return std::make_error_code(std::errc::message_size);
  }
  if (payload.full()) {
    // The header needs one of the four parts.
    ++framesRefused_;
    return std::make_error_code(std::errc::argument_list_too_long);
  }
  char header[kHeaderBytes];
  encodeHeader(static_cast<std::uint32_t>(payload.totalBytes()), header);
  Slices out(std::span<const char>(header, kHeaderBytes));
  for (const auto& part : payload) (void)out.add(part);  // fits: checked above
  const std::error_code ec = ctx.write(out);
  if (!ec) ++framesOut_;
  return ec;
}

}  // namespace keel
