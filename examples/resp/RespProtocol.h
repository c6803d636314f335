// The wire side of keel-resp: an incremental parser for Redis protocol
// requests (RESP2) and the writers for its replies.
//
// Requests come in two shapes, both accepted:
//   multibulk  *<n>\r\n then n times $<len>\r\n<len bytes>\r\n
//              (every real client: redis-cli, redis-benchmark, libraries)
//   inline     one line of words separated by spaces or tabs, ended by \n
//              or \r\n (telnet/nc users, redis-benchmark's PING_INLINE).
//              Unlike Redis, quotes are not interpreted: a word is
//              whatever lies between blanks.
// An empty command (a blank line, *0 or *-1) is skipped, as Redis does.
//
// Caps (RespLimits), each refused with "-ERR Protocol error: ..." after
// which the server closes, like Redis:
//   maxBulkBytes    1 MiB per argument   (Redis: 512 MiB proto-max-bulk-len)
//   maxArgs         1024 per command     (Redis: 1024*1024)
//   maxInlineBytes  64 KiB per inline line or header line (Redis: the same)
//   maxCommandBytes 2 MiB per command, framing included. It must stay below
//                   the connection's maxInputBytes (4 MiB): a partial command
//                   waits in the input buffer, and a command larger than that
//                   buffer could never complete.
// The caps are far below Redis's because keel-resp is an example of a
// bounded server, not a cache for large objects.
//
// The parser never copies a request: arguments are string_views into the
// caller's bytes. It is resumable: when a command is incomplete it remembers
// how far it got (as offsets, since the caller's buffer may move between
// reads), so a large command arriving in many small reads is scanned once,
// not once per read. After the first commands its vectors keep their
// capacity: no allocation per command in steady state.
//
// Thread-safety: none; one parser per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel::resp {

struct RespLimits {
  std::size_t maxBulkBytes = 1 << 20;
  std::size_t maxArgs = 1024;
  std::size_t maxInlineBytes = 64 << 10;
  std::size_t maxCommandBytes = 2 << 20;
};

class RespParser {
 public:
  enum class Status : std::uint8_t {
    Incomplete,  // need more bytes; nothing to consume yet
    Command,     // args() holds one command (possibly empty: skip it); consume consumed() bytes
    Error,       // error() says why; the stream cannot be resynchronised
  };

  explicit RespParser(RespLimits limits = {}) noexcept : limits_(limits) {}

  // Parses the command at the start of `in`. Call again with the same bytes
  // plus more after Incomplete; after Command the caller drops consumed()
  // bytes and calls again with what follows. After Error the parser stays
  // in error.
  [[nodiscard]] Status parse(std::string_view in);

  // Valid after Command until the next parse() (views into `in`).
  [[nodiscard]] std::span<const std::string_view> args() const noexcept { return views_; }
  [[nodiscard]] std::size_t consumed() const noexcept { return consumed_; }
  // After Error: the text after "Protocol error: ".
  [[nodiscard]] std::string_view error() const noexcept { return error_; }
  [[nodiscard]] const RespLimits& limits() const noexcept { return limits_; }

 private:
  struct ArgRef {
    std::size_t offset;
    std::size_t length;
  };
  Status parseInline(std::string_view in);
  Status parseMultibulk(std::string_view in);
  // Reads "<prefix><integer>\r\n" at pos_: Incomplete, or Command (meaning
  // "got it", value in *out), or Error.
  Status readHeader(std::string_view in, char prefix, std::string_view invalid, long long* out);
  Status fail(std::string_view why) noexcept;
  Status complete(std::string_view in, std::size_t end);

  RespLimits limits_;
  // Progress through the current (incomplete) command.
  bool started_ = false;
  bool failed_ = false;
  std::size_t pos_ = 0;        // next byte to parse, from the command's start
  long long expected_ = 0;     // multibulk: arguments announced
  long long bulkLength_ = -1;  // multibulk: length of the argument being read (-1: header next)
  std::vector<ArgRef> refs_;
  std::vector<std::string_view> views_;
  std::size_t consumed_ = 0;
  std::string_view error_;
  std::string errorText_;  // for an error() that quotes the input
};

// ---- replies ------------------------------------------------------------------
// Each appends one RESP2 value to `out`. Error and simple-string texts must
// not contain CR or LF; appendError replaces them with spaces.
void appendSimple(std::string& out, std::string_view s);
void appendError(std::string& out, std::string_view s);
void appendError(std::string& out, std::string_view prefix, std::string_view detail);
void appendBulk(std::string& out, std::string_view s);
void appendNullBulk(std::string& out);
void appendInteger(std::string& out, long long v);
void appendArrayHeader(std::string& out, std::size_t n);

// Serialises args as a multibulk request (clients, tests, the fuzz target).
void appendCommand(std::string& out, std::span<const std::string_view> args);

// Strict base-10 integer as Redis reads one (optional '-', digits only, no
// leading zeros except "0", within long long). False when s is not one.
[[nodiscard]] bool parseInteger(std::string_view s, long long* out) noexcept;

}  // namespace keel::resp
