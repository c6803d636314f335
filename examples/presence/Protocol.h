// keel-presence's wire protocol: FrameCodec frames holding one text line.
//
//   client -> server   JOIN <name>            first frame; the name is 1-32 of [A-Za-z0-9_-]
//                      STATUS <text>          any time after JOIN; up to kMaxStatus bytes
//   server -> client   WELCOME <name> <n>     accepted; n others are online, each then sent as
//                      ONLINE <name> <text>   one per member already there, with its last status
//                      JOINED <name>          someone else came
//                      STATUS <name> <text>   someone else's status
//                      LEFT <name> <reason>   someone else went (a CloseReason, or "replaced")
//                      ERROR <text>           the server refuses what you sent, then closes
//
// PING/PONG travel as FrameCodec control frames beside these (the Heartbeat
// handlers), so the application never sees them.
#pragma once

#include <cstddef>
#include <string_view>
#include <utility>

namespace presence {

inline constexpr std::size_t kMaxName = 32;
inline constexpr std::size_t kMaxStatus = 256;
// Frames above this are a protocol error: the longest legal one is
// "STATUS " + a 32-byte name + " " + kMaxStatus bytes.
inline constexpr std::size_t kMaxFrame = 512;

// "VERB rest" -> {"VERB", "rest"}.
[[nodiscard]] inline std::pair<std::string_view, std::string_view> splitVerb(std::string_view line) noexcept {
  const std::size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return {line, {}};
  return {line.substr(0, sp), line.substr(sp + 1)};
}

[[nodiscard]] inline bool validName(std::string_view name) noexcept {
  if (name.empty() || name.size() > kMaxName) return false;
  for (const char c : name) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace presence
