#include "LineSplitter.h"

namespace keel::chat {

LineResult nextLine(std::string_view data, std::size_t maxLength) noexcept {
  // Never search further than a legal line could reach: maxLength bytes of
  // content, an optional '\r' and the '\n'.
  const std::string_view window = data.substr(0, maxLength + 2);
  const std::size_t nl = window.find('\n');
  if (nl == std::string_view::npos) {
    // maxLength + 1 bytes may still be content + '\r' awaiting its '\n'.
    const bool pendingCr = window.size() == maxLength + 1 && window.back() == '\r';
    if (window.size() > maxLength && !pendingCr) return {LineStatus::TooLong, {}, 0};
    return {LineStatus::Incomplete, {}, 0};
  }
  std::string_view line = data.substr(0, nl);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() > maxLength) return {LineStatus::TooLong, {}, 0};
  return {LineStatus::Line, line, nl + 1};
}

}  // namespace keel::chat
