// Splits a byte stream into text lines with a length cap: the parsing half
// of keel-chat's protocol, kept apart from any socket so it can be fuzzed.
//
// A line ends with '\n'; a '\r' just before it is dropped (telnet/nc -C
// send CRLF). A line whose content is longer than maxLength bytes is an
// error, and so is a buffer that holds more than maxLength + 1 bytes without
// a '\n' (the caller must not keep buffering a line it will refuse anyway).
//
// Thread-safety: a pure function.
#pragma once

#include <cstddef>
#include <string_view>

namespace keel::chat {

enum class LineStatus { Line, Incomplete, TooLong };

struct LineResult {
  LineStatus status = LineStatus::Incomplete;
  std::string_view line;     // Line: the content, without "\n" or "\r\n" (points into the input)
  std::size_t consumed = 0;  // Line: bytes to drop from the input, terminator included
};

// Looks for the first line at the start of `data`.
[[nodiscard]] LineResult nextLine(std::string_view data, std::size_t maxLength) noexcept;

}  // namespace keel::chat
