// libFuzzer target: heartbeat/HeartbeatMessage::decode, and the answering
// side that trusts it (FrameCodec + PongResponder on a real Connection).
//
// The whole input is one message body. Invariants:
//   - decode accepts exactly the 24-byte bodies with magic "KLHB", version 1
//     and type 1..3 (checked against an independent reading of the format);
//   - what it accepts re-encodes to the same 24 bytes, and encodeFrame puts a
//     control header announcing 24 bytes in front of them;
//   - sent as a control frame through [FrameCodec][PongResponder][Sink]: a
//     PING is answered with one 28-byte PONG frame echoing flags, sequence
//     and timestamp (read back from the socket's other end); a GOAWAY becomes
//     a HeartbeatEvent carrying the flags as its code; anything else (a PONG,
//     a malformed body) is passed on unchanged as the same ControlFrame; and
//     nothing is ever written except that PONG.
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>

#include <sys/socket.h>

#include "FuzzConn.h"
#include "keel/heartbeat/HeartbeatMessage.h"
#include "keel/heartbeat/PongResponder.h"
#include "keel/net/Buffer.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/Pipeline.h"

namespace {

using keel::ControlFrame;
using keel::FrameCodec;
using keel::HandlerContext;
using keel::HeartbeatEvent;
using keel::HeartbeatMessage;
using keel::HeartbeatType;
using keel::UserEvent;

// The format as docs/heartbeat.md states it, read without the library.
bool wellFormed(const std::uint8_t* p, std::size_t n) {
  return n == 24 && std::memcmp(p, "KLHB", 4) == 0 && p[4] == 1 && p[5] >= 1 && p[5] <= 3;
}

struct Sink final : keel::Handler {
  int controlFrames = 0;
  int goAways = 0;
  std::uint16_t goAwayCode = 0;
  std::span<const char> lastBody;
  void onUserEvent(HandlerContext&, const UserEvent& event) override {
    if (const auto* c = dynamic_cast<const ControlFrame*>(&event)) {
      ++controlFrames;
      lastBody = c->body;
    } else if (const auto* h = dynamic_cast<const HeartbeatEvent*>(&event)) {
      FUZZ_CHECK(h->kind == HeartbeatEvent::Kind::GoAway);
      ++goAways;
      goAwayCode = h->code;
    } else {
      FUZZ_CHECK(false && "unexpected user event");
    }
  }
  void onFrame(HandlerContext&, std::span<const char>) override {
    FUZZ_CHECK(false && "a control frame reached onFrame");
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const char> body(reinterpret_cast<const char*>(data), size);
  const std::optional<HeartbeatMessage> msg = HeartbeatMessage::decode(body);
  FUZZ_CHECK(msg.has_value() == wellFormed(data, size));
  if (msg) {
    char again[HeartbeatMessage::kBodyBytes];
    msg->encode(again);
    FUZZ_CHECK(std::memcmp(again, data, sizeof again) == 0);
    char frame[HeartbeatMessage::kFrameBytes];
    msg->encodeFrame(frame);
    const std::uint8_t* f = reinterpret_cast<const std::uint8_t*>(frame);
    FUZZ_CHECK(f[0] == 0x80 && f[1] == 0 && f[2] == 0 && f[3] == 24);
    FUZZ_CHECK(std::memcmp(frame + 4, data, 24) == 0);
    FUZZ_CHECK(HeartbeatMessage::decode(std::span<const char>(frame + 4, 24)) == msg);
    FUZZ_CHECK(keel::toString(msg->type) != "unknown");
  }

  // The same body as a control frame on a connection.
  if (size > FrameCodec::kDefaultMaxFrame) return 0;
  keel::fuzz::Pair pair;
  pair.conn->pipeline().emplaceLast<FrameCodec>();
  auto& responder = pair.conn->pipeline().emplaceLast<keel::PongResponder>();
  auto& sink = pair.conn->pipeline().emplaceLast<Sink>();
  pair.start();
  keel::Buffer in;
  char header[FrameCodec::kHeaderBytes];
  FrameCodec::encodeHeader(static_cast<std::uint32_t>(size), header, /*control=*/true);
  in.append(header, sizeof header);
  in.append(body);
  pair.conn->pipeline().fireData(in);
  FUZZ_CHECK(!pair.conn->closed());
  FUZZ_CHECK(in.empty());

  const std::string written = pair.ec.takeOutput();
  const char* out = written.data();
  if (msg && msg->type == HeartbeatType::Ping) {
    FUZZ_CHECK(responder.pingsAnswered() == 1);
    FUZZ_CHECK(written.size() == HeartbeatMessage::kFrameBytes);
    FUZZ_CHECK(static_cast<std::uint8_t>(out[0]) == 0x80 && out[3] == 24);
    const auto pong = HeartbeatMessage::decode(std::span<const char>(out + 4, 24));
    FUZZ_CHECK(pong.has_value());
    FUZZ_CHECK(pong->type == HeartbeatType::Pong);
    FUZZ_CHECK(pong->flags == msg->flags && pong->sequence == msg->sequence &&
               pong->timestamp == msg->timestamp);
    FUZZ_CHECK(sink.controlFrames == 0 && sink.goAways == 0);
  } else {
    FUZZ_CHECK(written.empty());
    FUZZ_CHECK(responder.pingsAnswered() == 0);
    if (msg && msg->type == HeartbeatType::GoAway) {
      FUZZ_CHECK(sink.goAways == 1 && sink.goAwayCode == msg->flags && sink.controlFrames == 0);
      FUZZ_CHECK(responder.goAwaysReceived() == 1);
    } else {
      FUZZ_CHECK(sink.controlFrames == 1 && sink.goAways == 0);
      FUZZ_CHECK(sink.lastBody.size() == size);
    }
  }
  return 0;
}
