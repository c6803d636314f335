#include "HttpParser.h"

#include <algorithm>
#include <optional>

namespace keel::http {

namespace {

constexpr std::string_view kCrlf = "\r\n";

// RFC 9110 token characters (method and header names).
bool isTokenChar(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool isToken(std::string_view s) noexcept {
  return !s.empty() && std::all_of(s.begin(), s.end(), isTokenChar);
}

// A header value may hold visible characters, spaces and tabs (and obs-text);
// any other control character (a bare CR or LF, NUL) is refused.
bool isFieldValue(std::string_view s) noexcept {
  return std::none_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
  });
}

std::string_view trimOws(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// Calls f(token) for each comma-separated element of a list header.
template <class F>
void forEachListItem(std::string_view v, F f) {
  while (!v.empty()) {
    const std::size_t comma = v.find(',');
    f(trimOws(v.substr(0, comma)));
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
}

// Digits only, at most 18 of them (no overflow, far above any cap).
bool parseLength(std::string_view v, std::uint64_t& out) noexcept {
  if (v.empty() || v.size() > 18) return false;
  std::uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  out = n;
  return true;
}

// "HTTP/1.1" -> 1, "HTTP/1.0" -> 0; -1: well-formed but another version
// (505); -2: not a version at all (400).
int parseVersion(std::string_view v) noexcept {
  if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || v[6] != '.') return -2;
  if (v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9') return -2;
  if (v[5] != '1' || (v[7] != '0' && v[7] != '1')) return -1;
  return v[7] - '0';
}

// For an absolute-form target ("http://host/path", scheme in any case):
// what follows "://"; nullopt for any other form.
std::optional<std::string_view> afterScheme(std::string_view target) noexcept {
  for (std::string_view scheme : {"http://", "https://"}) {
    if (target.size() >= scheme.size() && equalsIgnoreCase(target.substr(0, scheme.size()), scheme))
      return target.substr(scheme.size());
  }
  return std::nullopt;
}

// Request line checks shared by the early (partial head) and full parse.
// Returns 0 when valid, else the status code.
int checkRequestLine(std::string_view line, std::string_view& method, std::string_view& target, int& minor,
                     std::string_view& why) noexcept {
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) {
    why = "request line is not METHOD TARGET VERSION";
    return 400;
  }
  method = line.substr(0, sp1);
  target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!isToken(method)) {
    why = "bad method";
    return 400;
  }
  if (target.empty() || !std::all_of(target.begin(), target.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u > 0x20 && u != 0x7f;
      })) {
    why = "bad request target";
    return 400;
  }
  if (const auto rest = afterScheme(target);
      rest && (rest->empty() || rest->front() == '/' || rest->front() == '?')) {
    why = "absolute-form request target without a host";
    return 400;
  }
  minor = parseVersion(version);
  if (minor == -1) {
    why = "HTTP version not supported";
    return 505;
  }
  if (minor < 0) {
    why = "bad HTTP version";
    return 400;
  }
  return 0;
}

}  // namespace

std::string_view requestPath(std::string_view target) noexcept {
  if (const auto rest = afterScheme(target)) {
    const std::size_t slash = rest->find_first_of("/?");
    if (slash == std::string_view::npos || (*rest)[slash] == '?') return "/";  // "http://h", "http://h?q"
    target = rest->substr(slash);
  } else if (!target.starts_with('/')) {
    return target;  // "*", "host:port", or garbage: routed nowhere
  }
  return target.substr(0, target.find('?'));
}

std::string_view statusLine(int code) noexcept {
  switch (code) {
    case 413:
      return "413 Content Too Large";
    case 431:
      return "431 Request Header Fields Too Large";
    case 501:
      return "501 Not Implemented";
    case 505:
      return "505 HTTP Version Not Supported";
    default:
      return "400 Bad Request";
  }
}

void HttpParser::reset() noexcept {
  bodyLeft_ = 0;
  scanned_ = 0;
  failed_ = false;
  failure_ = {};
}

ParseResult HttpParser::fail(int code, std::string_view why) noexcept {
  failed_ = true;
  failure_ = {ParseStatus::Error, 0, code, why};
  return failure_;
}

ParseResult HttpParser::parse(std::span<const char> input, HttpRequest& out) {
  if (failed_) return failure_;
  std::string_view in(input.data(), input.size());

  if (bodyLeft_ > 0) {  // skipping the body of pending_: consume, never buffer
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(bodyLeft_, in.size()));
    bodyLeft_ -= take;
    if (bodyLeft_ > 0) return {ParseStatus::NeedMore, take, 0, {}};
    out = pending_;
    out.methodText = savedMethod_;
    out.target = savedTarget_;
    return {ParseStatus::Request, take, 0, {}};
  }

  // Empty lines before a request line are tolerated (RFC 9112 2.2).
  std::size_t skip = 0;
  while (in.substr(skip, 2) == kCrlf) skip += 2;
  if (skip > 0) {
    scanned_ = 0;
    in.remove_prefix(skip);
  }

  const std::size_t window = std::min(in.size(), limits_.maxHeadBytes);
  const std::size_t from = scanned_ > 3 ? scanned_ - 3 : 0;
  const std::size_t end = in.substr(0, window).find("\r\n\r\n", from);
  if (end == std::string_view::npos) {
    // Refuse garbage as soon as its first line is in, not at the cap (and
    // before the cap check, so the verdict does not depend on how the
    // bytes were split into reads).
    const std::string_view seen = in.substr(0, window);
    const std::size_t eol = seen.find(kCrlf);
    std::string_view m, t, why;
    int minor = 0;
    if (eol != std::string_view::npos) {
      if (int code = checkRequestLine(seen.substr(0, eol), m, t, minor, why)) return fail(code, why);
    } else if (seen.find('\n') != std::string_view::npos) {
      return fail(400, "line not ended by CRLF");
    } else {
      // Binary garbage (a TLS hello, say) is refused without waiting for a
      // line. A last '\r' may be the start of a CRLF: judged next time.
      std::string_view method = seen.substr(0, seen.find(' '));
      if (!method.empty() && method.back() == '\r' && method.size() == seen.size()) method.remove_suffix(1);
      if (!std::all_of(method.begin(), method.end(), isTokenChar)) return fail(400, "bad method");
    }
    if (in.size() >= limits_.maxHeadBytes) return fail(431, "request head too large");
    scanned_ = window;
    return {ParseStatus::NeedMore, skip, 0, {}};
  }
  scanned_ = 0;

  const std::size_t headLen = end + 4;
  ParseResult r = parseHead(in.substr(0, headLen - 2), out);  // keep the last header's CRLF
  if (r.status == ParseStatus::Error) return r;
  std::size_t consumed = skip + headLen;
  if (out.contentLength == 0) return {ParseStatus::Request, consumed, 0, {}};

  const std::size_t avail = in.size() - headLen;
  if (avail >= out.contentLength) {
    return {ParseStatus::Request, consumed + static_cast<std::size_t>(out.contentLength), 0, {}};
  }
  // The body spans reads: keep the request (its target outlives the bytes
  // the caller is about to drop) and skip the body as it comes.
  pending_ = out;
  savedMethod_.assign(out.methodText);
  savedTarget_.assign(out.target);
  bodyLeft_ = out.contentLength - avail;
  return {ParseStatus::NeedMore, consumed + avail, 0, {}};
}

ParseResult HttpParser::parseHead(std::string_view head, HttpRequest& out) {
  const std::size_t eol = head.find(kCrlf);
  std::string_view why;
  int minor = 0;
  out = HttpRequest{};
  if (int code = checkRequestLine(head.substr(0, eol), out.methodText, out.target, minor, why)) {
    return fail(code, why);
  }
  out.versionMinor = minor;
  out.method = out.methodText == "GET"    ? Method::Get
               : out.methodText == "HEAD" ? Method::Head
                                          : Method::Other;

  bool sawClose = false, sawKeepAlive = false, sawHost = false, sawLength = false;
  std::size_t headers = 0;
  std::string_view rest = head.substr(eol + 2);
  while (!rest.empty()) {
    const std::size_t lineEnd = rest.find(kCrlf);
    const std::string_view line = rest.substr(0, lineEnd);
    rest.remove_prefix(lineEnd + 2);
    if (++headers > limits_.maxHeaders) return fail(431, "too many header fields");
    if (line.empty() || line.front() == ' ' || line.front() == '\t')
      return fail(400, "folded or empty header line");
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) return fail(400, "header line without a colon");
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = trimOws(line.substr(colon + 1));
    if (!isToken(name)) return fail(400, "bad header name");
    if (!isFieldValue(value)) return fail(400, "control character in a header value");
    if (equalsIgnoreCase(name, "connection")) {
      forEachListItem(value, [&](std::string_view tok) {
        if (equalsIgnoreCase(tok, "close")) sawClose = true;
        if (equalsIgnoreCase(tok, "keep-alive")) sawKeepAlive = true;
      });
    } else if (equalsIgnoreCase(name, "content-length")) {
      std::uint64_t n = 0;
      if (!parseLength(value, n)) return fail(400, "bad Content-Length");
      // Two different lengths is how request smuggling starts: refuse.
      if (sawLength && n != out.contentLength) return fail(400, "conflicting Content-Length headers");
      sawLength = true;
      out.contentLength = n;
    } else if (equalsIgnoreCase(name, "transfer-encoding")) {
      return fail(501, "Transfer-Encoding (chunked bodies) not supported");
    } else if (equalsIgnoreCase(name, "host")) {
      sawHost = true;
    }
  }
  if (minor == 1 && !sawHost) return fail(400, "HTTP/1.1 request without Host");
  if (out.contentLength > limits_.maxBodyBytes) return fail(413, "request body too large");
  out.keepAlive = !sawClose && (minor == 1 || sawKeepAlive);
  return {ParseStatus::Request, 0, 0, {}};
}

}  // namespace keel::http
