// libFuzzer target: the sockperf wire format (examples/sockperf/SockperfFrame.h)
// as keel-sockperf uses it on a TCP stream.
//
// Input layout: byte 0 picks the length cap (0: the 64 KiB default, else
// 14 + byte * 4, so refused lengths are reachable with short inputs), byte 1
// seeds how the stream is cut into reads, the rest is the byte stream.
//
// The stream is framed twice, once whole and once fed in pieces into a
// growing buffer the way a connection's input buffer fills, and both must
// agree with a straightforward reference decoding:
//   - parseFrame never consumes more than it is given, and only whole
//     messages: consumed == the length field, 14 <= length <= cap;
//   - the same messages come out in the same order with the same bytes, and
//     the same verdict ends the stream (need-more with the same tail, or the
//     same refusal);
//   - what stays buffered waiting for more is shorter than the cap;
//   - writeReply is the message with only the client flag cleared, and
//     wantsReply follows the flags.
// Reads past the input are ASan's to find.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "SockperfFrame.h"

#define CHECK(cond)                                                                           \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

namespace {

namespace sp = keel::sockperf;

struct Outcome {
  std::vector<std::string> messages;
  sp::FrameStatus last = sp::FrameStatus::NeedMore;
  std::size_t tail = 0;  // bytes left waiting (NeedMore only)
};

std::uint64_t be(const char* p, int n) {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

Outcome reference(std::string_view s, std::size_t cap) {
  Outcome o;
  while (s.size() >= sp::kHeaderSize) {
    const std::uint64_t len = be(s.data() + 10, 4);
    if (len < sp::kHeaderSize) return o.last = sp::FrameStatus::TooShort, o;
    if (len > cap) return o.last = sp::FrameStatus::TooLarge, o;
    if (s.size() < len) break;
    o.messages.emplace_back(s.substr(0, len));
    s.remove_prefix(len);
  }
  o.tail = s.size();
  return o;
}

void checkMessage(std::string_view m) {
  const sp::FrameResult r = sp::parseFrame({m.data(), m.size()});
  CHECK(r.status == sp::FrameStatus::Complete && r.consumed == m.size());
  CHECK(r.header.sequence == be(m.data(), 8));
  CHECK(r.header.flags == be(m.data() + 8, 2));
  CHECK(sp::wantsReply(r.header) == ((r.header.flags & 7) == 3));
  std::string reply(m.size(), '\0');
  sp::writeReply({m.data(), m.size()}, reply.data());
  CHECK(reply.substr(0, 9) == m.substr(0, 9));
  CHECK(static_cast<unsigned char>(reply[9]) == (static_cast<unsigned char>(m[9]) & 0xfe));
  CHECK(reply.substr(10) == m.substr(10));
  char hdr[sp::kHeaderSize];
  sp::encodeHeader(r.header, hdr);
  CHECK(std::memcmp(hdr, m.data(), sp::kHeaderSize) == 0);
}

// Feeds `pieces` (offsets into s) into a buffer, framing after each piece.
Outcome run(std::string_view s, std::size_t cap, const std::vector<std::size_t>& cuts) {
  Outcome o;
  std::string buf;
  std::size_t pos = 0;
  for (std::size_t i = 0; i <= cuts.size(); ++i) {
    const std::size_t end = i < cuts.size() ? cuts[i] : s.size();
    buf.append(s.substr(pos, end - pos));
    pos = end;
    for (;;) {
      const sp::FrameResult r = sp::parseFrame({buf.data(), buf.size()}, cap);
      CHECK(r.consumed <= buf.size());
      if (r.status == sp::FrameStatus::NeedMore) {
        CHECK(r.consumed == 0);
        CHECK(buf.size() < cap);  // never more than one partial message waits
        break;
      }
      if (r.status != sp::FrameStatus::Complete) {
        CHECK(r.consumed == 0);
        o.last = r.status;
        return o;
      }
      CHECK(r.consumed == r.header.length);
      CHECK(r.header.length >= sp::kHeaderSize && r.header.length <= cap);
      o.messages.emplace_back(buf.substr(0, r.consumed));
      buf.erase(0, r.consumed);
    }
  }
  o.tail = buf.size();
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t cap = data[0] == 0 ? sp::kMaxMessage : sp::kHeaderSize + std::size_t{data[0]} * 4;
  std::uint32_t seed = data[1] * 2654435761u + 1;
  const std::string_view s(reinterpret_cast<const char*>(data) + 2, size - 2);

  std::vector<std::size_t> cuts;  // data-dependent split points
  for (std::size_t at = 0;;) {
    seed = seed * 1103515245u + 12345u;
    at += 1 + (seed >> 16) % 23;
    if (at >= s.size()) break;
    cuts.push_back(at);
  }

  const Outcome want = reference(s, cap);
  for (const auto& c : {std::vector<std::size_t>{}, cuts}) {
    const Outcome got = run(s, cap, c);
    CHECK(got.messages == want.messages);
    CHECK(got.last == want.last);
    CHECK(got.tail == want.tail);
  }
  for (const auto& m : want.messages) checkMessage(m);
  return 0;
}
