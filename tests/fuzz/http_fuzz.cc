// libFuzzer target: keel-http's request parser (examples/http/HttpParser.h).
//
// Input layout: byte 0 picks the caps (0: the defaults, else small ones
// derived from it, so 413 and 431 are reachable with short inputs), byte 1
// seeds how the stream is cut into reads, the rest is the byte stream.
//
// The stream is parsed twice, once whole and once fed in pieces into a
// buffer that keeps what the parser did not consume (as a connection's input
// buffer does). Checked:
//   - parse() never consumes more than it is given;
//   - the same requests come out in the same order (method, target,
//     version, keep-alive, Content-Length), and the same verdict ends the
//     stream: the same error code, or need-more with the same bytes left;
//   - caps hold: a request's Content-Length is within maxBodyBytes, a head
//     waiting for more is shorter than maxHeadBytes, the errors are only
//     400/413/431/501/505, and a failed parser stays failed and consumes
//     nothing more;
//   - a reported request's strings stay valid (ASan) until the next call;
//   - requestPath() of its target lies within it, and a path has no query.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "HttpParser.h"

#define CHECK(cond)                                                                           \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

namespace {

using keel::http::HttpParser;
using keel::http::HttpRequest;
using keel::http::ParserLimits;
using keel::http::ParseStatus;

struct Seen {
  std::string method, target;
  int minor = 0;
  bool keepAlive = false;
  std::uint64_t length = 0;
  bool operator==(const Seen&) const = default;
};

struct Outcome {
  std::vector<Seen> requests;
  int error = 0;
  std::string left;  // buffered, unconsumed (no error only)
  bool inBody = false;
  bool operator==(const Outcome&) const = default;
};

Outcome run(std::string_view s, const ParserLimits& limits, const std::vector<std::size_t>& cuts) {
  HttpParser p(limits);
  Outcome o;
  std::string buf;
  std::size_t pos = 0;
  HttpRequest req;
  for (std::size_t i = 0; i <= cuts.size(); ++i) {
    const std::size_t end = i < cuts.size() ? cuts[i] : s.size();
    buf.append(s.substr(pos, end - pos));
    pos = end;
    for (;;) {
      const auto r = p.parse({buf.data(), buf.size()}, req);
      CHECK(r.consumed <= buf.size());
      if (r.status == ParseStatus::Error) {
        CHECK(r.consumed == 0);
        CHECK(r.error == 400 || r.error == 413 || r.error == 431 || r.error == 501 || r.error == 505);
        CHECK(!r.reason.empty());
        const auto again = p.parse({buf.data(), buf.size()}, req);  // stays failed
        CHECK(again.status == ParseStatus::Error && again.error == r.error && again.consumed == 0);
        o.error = r.error;
        return o;
      }
      if (r.status == ParseStatus::Request) {
        CHECK(req.contentLength <= limits.maxBodyBytes);
        CHECK(!req.target.empty() && !req.methodText.empty());
        CHECK(req.versionMinor == 0 || req.versionMinor == 1);
        // The routed path is part of the target ("/" for an absolute-form
        // target without one), and a path (not another form) has no query.
        const std::string_view path = keel::http::requestPath(req.target);
        CHECK(!path.empty() && (path[0] != '/' || path.find('?') == std::string_view::npos));
        CHECK(path == "/" || (path.data() >= req.target.data() &&
                              path.data() + path.size() <= req.target.data() + req.target.size()));
        // Read the strings before the buffer moves: ASan checks they are live.
        o.requests.push_back({std::string(req.methodText), std::string(req.target), req.versionMinor,
                              req.keepAlive, req.contentLength});
      }
      buf.erase(0, r.consumed);
      if (r.status == ParseStatus::NeedMore) {
        CHECK(p.inBody() || buf.size() < limits.maxHeadBytes);
        break;
      }
    }
  }
  o.left = buf;
  o.inBody = p.inBody();
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  ParserLimits limits;
  if (data[0] != 0) {
    limits.maxHeadBytes = 16 + std::size_t{data[0]} * 4;
    limits.maxHeaders = 1 + data[0] % 8;
    limits.maxBodyBytes = data[0] % 64;
  }
  std::uint32_t seed = data[1] * 2654435761u + 1;
  const std::string_view s(reinterpret_cast<const char*>(data) + 2, size - 2);

  std::vector<std::size_t> cuts;  // data-dependent split points
  for (std::size_t at = 0;;) {
    seed = seed * 1103515245u + 12345u;
    at += 1 + (seed >> 16) % 17;
    if (at >= s.size()) break;
    cuts.push_back(at);
  }
  const Outcome whole = run(s, limits, {});
  const Outcome split = run(s, limits, cuts);
  CHECK(whole == split);
  return 0;
}
