// An incremental HTTP/1.x request parser for keel-http: request line and
// headers with caps, Content-Length bodies read and discarded, nothing else.
//
// Feed it the bytes buffered so far; it takes at most one request per call:
//
//   HttpParser p;
//   HttpRequest req;
//   for (;;) {
//     ParseResult r = p.parse(buffer.readable(), req);
//     buffer.retrieve(r.consumed);            // never more than was given
//     if (r.status == ParseStatus::NeedMore) break;
//     if (r.status == ParseStatus::Error) { reply r.error, close; break; }
//     ... answer req ...
//   }
//
// A request is reported only once its body has been skipped, so a
// pipelined request behind a body is never mistaken for part of it, and
// replies stay in request order. The head must arrive whole within
// maxHeadBytes; until then nothing is consumed (the caller's buffer holds
// it). Body bytes are consumed as they arrive and never buffered. Chunked
// request bodies (any Transfer-Encoding) are refused with 501: keel-http has
// no use for request bodies, and the chunked grammar is a classic smuggling
// surface not worth carrying in an example.
//
// Request targets: origin form ("/path?query") and absolute form
// ("http://host/path"; an http or https target without a host is a 400);
// requestPath() gives the path of either.
//
// Errors carry the status code to send before closing: 400 (malformed),
// 413 (body over the cap), 431 (head over the cap), 501 (Transfer-Encoding),
// 505 (not HTTP/1.0 or 1.1). After an error the parser stays failed.
//
// Thread-safety: none; one parser per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace keel::http {

struct ParserLimits {
  std::size_t maxHeadBytes = 8 * 1024;   // request line + headers + blank line
  std::size_t maxHeaders = 64;           // header lines
  std::uint64_t maxBodyBytes = 1 << 20;  // Content-Length above it: 413
};

enum class Method : std::uint8_t { Get, Head, Other };

struct HttpRequest {
  Method method = Method::Other;
  std::string_view methodText;
  std::string_view target;  // valid until the next parse() or reset()
  int versionMinor = 1;     // HTTP/1.<minor>
  bool keepAlive = true;    // after Connection: and the version's default
  std::uint64_t contentLength = 0;
};

enum class ParseStatus : std::uint8_t { NeedMore, Request, Error };

struct ParseResult {
  ParseStatus status = ParseStatus::NeedMore;
  std::size_t consumed = 0;  // drop this many bytes from the front of the input
  int error = 0;             // HTTP status code for Error
  std::string_view reason;   // why, for the log and the error body
};

// The path of a request target, without its query: "/a" for "/a?q" (the
// origin form) and for "http://host/a?q" (the absolute form, RFC 9112
// 3.2.2, which a server must accept; a proxy-aware client sends it), "/"
// for "http://host". Any other form ("*", "host:port") comes back whole.
[[nodiscard]] std::string_view requestPath(std::string_view target) noexcept;

// "431 Request Header Fields Too Large" for the codes parse() reports.
[[nodiscard]] std::string_view statusLine(int code) noexcept;

class HttpParser {
 public:
  explicit HttpParser(ParserLimits limits = {}) : limits_(limits) {}

  [[nodiscard]] ParseResult parse(std::span<const char> in, HttpRequest& out);
  void reset() noexcept;
  [[nodiscard]] const ParserLimits& limits() const noexcept { return limits_; }
  [[nodiscard]] bool inBody() const noexcept { return bodyLeft_ > 0; }

 private:
  ParseResult fail(int code, std::string_view why) noexcept;
  ParseResult parseHead(std::string_view head, HttpRequest& out);

  ParserLimits limits_;
  std::uint64_t bodyLeft_ = 0;  // body bytes still to skip for `pending_`
  HttpRequest pending_;         // the request whose body is being skipped
  std::string savedMethod_;     // pending_'s strings, kept while its body arrives
  std::string savedTarget_;
  std::size_t scanned_ = 0;  // head bytes already searched for the blank line
  bool failed_ = false;
  ParseResult failure_;
};

}  // namespace keel::http
