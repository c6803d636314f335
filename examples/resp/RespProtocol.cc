#include "RespProtocol.h"

#include <charconv>
#include <limits>

namespace keel::resp {
namespace {

// A header line ("*<n>" or "$<len>") holds at most a sign and 19 digits;
// anything longer is refused without waiting for its end, so a peer cannot
// make the parser rescan a long header on every read.
constexpr std::size_t kMaxHeaderLine = 32;

bool isBlank(char c) noexcept { return c == ' ' || c == '\t'; }

void appendLine(std::string& out, char type, std::string_view a, std::string_view b = {}) {
  out += type;
  // Error and status texts are one line: a CR or LF would end the reply early
  // and desynchronise the client (Redis does the same replacement).
  for (std::string_view s : {a, b}) {
    for (char c : s) out += (c == '\r' || c == '\n') ? ' ' : c;
  }
  out += "\r\n";
}

void appendNumberLine(std::string& out, char type, long long v) {
  char buf[24];
  buf[0] = type;
  auto [end, ec] = std::to_chars(buf + 1, buf + sizeof buf - 2, v);
  (void)ec;  // 22 bytes always hold a long long
  *end++ = '\r';
  *end++ = '\n';
  out.append(buf, static_cast<std::size_t>(end - buf));
}

}  // namespace

bool parseInteger(std::string_view s, long long* out) noexcept {
  if (s.empty() || s.size() > 20) return false;
  std::size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  // No '+', no blanks, no leading zeros ("0" itself excepted, "-0" refused),
  // so every integer has exactly one spelling, as in Redis.
  if (s[i] == '0' && (s.size() > 1)) return false;
  long long v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size()) return false;
  *out = v;
  return true;
}

RespParser::Status RespParser::fail(std::string_view why) noexcept {
  failed_ = true;
  error_ = why;
  return Status::Error;
}

RespParser::Status RespParser::parse(std::string_view in) {
  if (failed_) return Status::Error;
  if (!started_) {
    if (in.empty()) return Status::Incomplete;
    views_.clear();
    refs_.clear();
    consumed_ = 0;
    pos_ = 0;
    expected_ = 0;
    bulkLength_ = -1;
    started_ = true;
  }
  return in[0] == '*' ? parseMultibulk(in) : parseInline(in);
}

RespParser::Status RespParser::parseInline(std::string_view in) {
  // pos_ is how far the search for the newline got on earlier calls.
  const std::size_t nl = in.find('\n', pos_);
  if (nl == std::string_view::npos) {
    // Refused as soon as the line is known to be too long, which is also
    // what the complete line would get: the answer never depends on how
    // the bytes were split into reads.
    if (in.size() > limits_.maxInlineBytes) return fail("too big inline request");
    pos_ = in.size();
    return Status::Incomplete;
  }
  if (nl > limits_.maxInlineBytes) return fail("too big inline request");
  std::size_t end = nl;
  if (end > 0 && in[end - 1] == '\r') --end;
  std::size_t i = 0;
  while (i < end) {
    while (i < end && isBlank(in[i])) ++i;
    if (i == end) break;
    const std::size_t start = i;
    while (i < end && !isBlank(in[i])) ++i;
    if (refs_.size() == limits_.maxArgs) return fail("too many arguments in inline request");
    refs_.push_back({start, i - start});
  }
  return complete(in, nl + 1);
}

RespParser::Status RespParser::readHeader(std::string_view in, char prefix, std::string_view invalid,
                                          long long* out) {
  (void)prefix;  // the caller checked in[pos_] == prefix
  const std::size_t cr = in.find('\r', pos_);
  if (cr == std::string_view::npos) {
    return in.size() - pos_ > kMaxHeaderLine ? fail(invalid) : Status::Incomplete;
  }
  if (cr - pos_ > kMaxHeaderLine) return fail(invalid);
  if (cr + 1 == in.size()) return Status::Incomplete;
  if (in[cr + 1] != '\n') return fail(invalid);
  if (!parseInteger(in.substr(pos_ + 1, cr - pos_ - 1), out)) return fail(invalid);
  pos_ = cr + 2;
  return Status::Command;
}

RespParser::Status RespParser::parseMultibulk(std::string_view in) {
  if (expected_ == 0) {
    long long n = 0;
    if (Status s = readHeader(in, '*', "invalid multibulk length", &n); s != Status::Command) return s;
    if (n <= 0) return complete(in, pos_);  // *0 and *-1: nothing to run
    if (static_cast<unsigned long long>(n) > limits_.maxArgs) return fail("invalid multibulk length");
    expected_ = n;
  }
  while (refs_.size() < static_cast<std::size_t>(expected_)) {
    if (bulkLength_ < 0) {
      if (pos_ >= in.size()) return Status::Incomplete;
      if (in[pos_] != '$') {
        // The offending byte is part of the message, as in Redis; errorText_
        // keeps it alive for error().
        errorText_ = "expected '$', got '";
        errorText_ += in[pos_];
        errorText_ += '\'';
        return fail(errorText_);
      }
      long long len = 0;
      if (Status s = readHeader(in, '$', "invalid bulk length", &len); s != Status::Command) return s;
      if (len < 0 || static_cast<unsigned long long>(len) > limits_.maxBulkBytes) {
        return fail("invalid bulk length");
      }
      if (pos_ + static_cast<std::size_t>(len) + 2 > limits_.maxCommandBytes) return fail("command too big");
      bulkLength_ = len;
    }
    const std::size_t len = static_cast<std::size_t>(bulkLength_);
    // The length is known, so waiting for a large argument costs one
    // comparison per read.
    if (in.size() < pos_ + len + 2) return Status::Incomplete;
    if (in[pos_ + len] != '\r' || in[pos_ + len + 1] != '\n') return fail("expected CRLF after bulk data");
    refs_.push_back({pos_, len});
    pos_ += len + 2;
    bulkLength_ = -1;
  }
  return complete(in, pos_);
}

RespParser::Status RespParser::complete(std::string_view in, std::size_t end) {
  for (const ArgRef& r : refs_) views_.emplace_back(in.substr(r.offset, r.length));
  consumed_ = end;
  started_ = false;
  return Status::Command;
}

// ---- replies ------------------------------------------------------------------

void appendSimple(std::string& out, std::string_view s) { appendLine(out, '+', s); }

void appendError(std::string& out, std::string_view s) { appendLine(out, '-', s); }

void appendError(std::string& out, std::string_view prefix, std::string_view detail) {
  appendLine(out, '-', prefix, detail);
}

void appendBulk(std::string& out, std::string_view s) {
  appendNumberLine(out, '$', static_cast<long long>(s.size()));
  out.append(s);
  out += "\r\n";
}

void appendNullBulk(std::string& out) { out += "$-1\r\n"; }

void appendInteger(std::string& out, long long v) { appendNumberLine(out, ':', v); }

void appendArrayHeader(std::string& out, std::size_t n) {
  appendNumberLine(out, '*', static_cast<long long>(n));
}

void appendCommand(std::string& out, std::span<const std::string_view> args) {
  appendArrayHeader(out, args.size());
  for (std::string_view a : args) appendBulk(out, a);
}

}  // namespace keel::resp
