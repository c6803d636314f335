// libFuzzer target: net/FrameCodec's decode path (onData) on a real
// Connection's pipeline.
//
// Input layout: byte 0 picks the codec's maxFrame (255: the 1 MiB default,
// else byte*4, so refused lengths are reachable with short inputs), byte 1
// seeds how the stream is cut into reads, the rest is the byte stream.
//
// Each input runs twice, once delivered whole and once in pseudo-random
// pieces, and both runs must agree with a straightforward reference parse:
//   - exactly the whole frames of the stream come out, in order, with their
//     bytes, application frames as onFrame and control frames (bit 31) as
//     ControlFrame user events (so a control frame never reaches onFrame);
//   - no frame is longer than maxFrame; a header announcing more closes the
//     connection with CloseReason::ProtocolError and nothing after it is
//     delivered;
//   - an incomplete tail is left in the buffer, untouched, for the next read;
//   - the codec's counters match.
// Reads past the input are ASan's to find (the library is instrumented).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "FuzzConn.h"
#include "keel/net/Buffer.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/Pipeline.h"

namespace {

using keel::Buffer;
using keel::CloseReason;
using keel::ControlFrame;
using keel::FrameCodec;
using keel::Handler;
using keel::HandlerContext;
using keel::UserEvent;

struct Frame {
  bool control;
  std::string_view bytes;  // points into the fuzzer's input
};

struct Expected {
  std::vector<Frame> frames;
  bool refused = false;  // a header announced more than maxFrame
  std::size_t tail = 0;  // bytes of an incomplete last frame (when not refused)
};

std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

Expected reference(std::string_view s, std::size_t maxFrame) {
  Expected e;
  std::size_t pos = 0;
  while (s.size() - pos >= FrameCodec::kHeaderBytes) {
    const std::uint32_t h = be32(reinterpret_cast<const std::uint8_t*>(s.data() + pos));
    const std::uint32_t len = h & ~FrameCodec::kControlBit;
    if (len > maxFrame) {
      e.refused = true;
      return e;
    }
    if (s.size() - pos - FrameCodec::kHeaderBytes < len) break;
    e.frames.push_back({(h & FrameCodec::kControlBit) != 0, s.substr(pos + FrameCodec::kHeaderBytes, len)});
    pos += FrameCodec::kHeaderBytes + len;
  }
  e.tail = s.size() - pos;
  return e;
}

// What reached the application end, checked frame by frame as it arrives.
struct Seen {
  const Expected* expected = nullptr;
  std::size_t maxFrame = 0;
  std::size_t next = 0;
  std::optional<CloseReason> closed;

  void check(bool control, std::span<const char> body) {
    FUZZ_CHECK(body.size() <= maxFrame);
    FUZZ_CHECK(next < expected->frames.size());
    const Frame& want = expected->frames[next++];
    FUZZ_CHECK(want.control == control);
    FUZZ_CHECK(want.bytes.size() == body.size());
    FUZZ_CHECK(body.empty() || std::memcmp(want.bytes.data(), body.data(), body.size()) == 0);
  }
};

class Recorder final : public Handler {
 public:
  explicit Recorder(Seen& s) noexcept : seen_(s) {}
  void onFrame(HandlerContext&, std::span<const char> frame) override { seen_.check(false, frame); }
  void onUserEvent(HandlerContext&, const UserEvent& event) override {
    const auto* control = dynamic_cast<const ControlFrame*>(&event);
    FUZZ_CHECK(control != nullptr);
    seen_.check(true, control->body);
  }
  void onData(HandlerContext&, Buffer&) override {
    FUZZ_CHECK(false && "raw bytes passed the codec without a protocol switch");
  }
  void onClosed(HandlerContext& ctx, CloseReason reason) override {
    seen_.closed = reason;
    ctx.fireClosed(reason);
  }

 private:
  Seen& seen_;
};

void runOnce(std::string_view stream, std::size_t maxFrame, std::uint8_t seed, bool split,
             const Expected& want) {
  Seen seen;  // outlives the pair: closing the connection at the end still reports to it
  seen.expected = &want;
  seen.maxFrame = maxFrame;
  keel::fuzz::Pair pair;
  FrameCodec& codec = pair.conn->pipeline().emplaceLast<FrameCodec>(maxFrame);
  pair.conn->pipeline().emplaceLast<Recorder>(seen);
  pair.start();

  Buffer in;
  std::size_t pos = 0;
  std::uint32_t state = 0x9e37'79b9u ^ seed;
  while (pos < stream.size() && !pair.conn->closed()) {
    std::size_t n = stream.size() - pos;
    if (split) {
      state = state * 1'103'515'245u + 12'345u;  // small LCG: cuts vary with the seed byte
      n = std::min<std::size_t>(n, 1 + (state >> 16) % 13);
    }
    in.append(stream.data() + pos, n);
    pos += n;
    pair.conn->pipeline().fireData(in);
  }

  FUZZ_CHECK(seen.next == want.frames.size());
  if (want.refused) {
    FUZZ_CHECK(seen.closed == CloseReason::ProtocolError);
    FUZZ_CHECK(in.empty());
  } else {
    FUZZ_CHECK(!seen.closed.has_value());
    FUZZ_CHECK(in.readableBytes() == want.tail);
    FUZZ_CHECK(want.tail == 0 ||
               std::memcmp(in.peek(), stream.data() + stream.size() - want.tail, want.tail) == 0);
    std::uint64_t control = 0;
    for (const Frame& f : want.frames) control += f.control ? 1 : 0;
    FUZZ_CHECK(codec.controlFramesIn() == control);
    FUZZ_CHECK(codec.framesIn() == want.frames.size() - control);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t maxFrame = data[0] == 255 ? FrameCodec::kDefaultMaxFrame : std::size_t{data[0]} * 4;
  const std::uint8_t seed = data[1];
  const std::string_view stream(reinterpret_cast<const char*>(data + 2), size - 2);
  const Expected want = reference(stream, maxFrame);
  runOnce(stream, maxFrame, seed, /*split=*/false, want);
  runOnce(stream, maxFrame, seed, /*split=*/true, want);
  return 0;
}
