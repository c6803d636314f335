// libFuzzer target: keel-resp's request parser (examples/resp/RespProtocol)
// and the commands it feeds (RespStore).
//
// Input layout: byte 0 picks the limits (odd: tiny caps, so every refusal
// is reachable with short inputs; even: the defaults) and seeds where each
// command is cut in two; the rest is the byte stream a client sent.
//
// The stream is walked command by command with two parsers: one sees each
// command whole, the other first a prefix cut at a data-dependent point and
// then the whole (a partial read followed by the rest). Checked:
//   - both give the same outcome: the same arguments and consumed count, or
//     the same error (the answer never depends on how bytes were split, and
//     resuming after Incomplete loses nothing);
//   - consumed() is never 0 and never more than was given; every argument
//     lies inside the given bytes; a command has at most maxArgs arguments,
//     each at most maxBulkBytes (an inline one at most maxInlineBytes);
//   - a command re-serialised as multibulk parses back to the same arguments
//     and consumes exactly the serialised bytes;
//   - running it on a small store gives one well-formed reply line ending in
//     CRLF (and no crash, which ASan/UBSan watch).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "RespProtocol.h"
#include "RespStore.h"

namespace {

using keel::resp::RespLimits;
using keel::resp::RespParser;
using keel::resp::RespStore;
using Status = RespParser::Status;

void check(bool ok) {
  if (!ok) std::abort();
}

bool sameArgs(std::span<const std::string_view> a, std::span<const std::string_view> b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t config = data[0];
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  RespLimits limits;
  if ((config & 1) != 0)
    limits = {.maxBulkBytes = 16, .maxArgs = 4, .maxInlineBytes = 32, .maxCommandBytes = 64};

  RespParser whole(limits);
  RespParser split(limits);
  RespStore store(RespStore::Options{.maxMemoryBytes = 4096, .shared = false});
  std::string reply;
  std::string serialised;
  std::vector<std::string> kept;  // owned copies of the arguments
  std::vector<std::string_view> keptViews;

  std::string_view rest = stream;
  for (int step = 0; !rest.empty() && step < 4096; ++step) {
    const Status a = whole.parse(rest);
    // The second parser sees a prefix first: cut somewhere in [0, size].
    const std::size_t cut =
        (static_cast<std::size_t>(config >> 1) * 131 + static_cast<std::size_t>(step) * 17) %
        (rest.size() + 1);
    Status b = split.parse(rest.substr(0, cut));
    if (b == Status::Incomplete) b = split.parse(rest);
    check(a == b);
    if (a == Status::Incomplete) break;
    if (a == Status::Error) {
      check(whole.error() == split.error());
      check(!whole.error().empty());
      break;
    }
    const std::size_t used = whole.consumed();
    check(used > 0 && used <= rest.size());
    check(split.consumed() == used);
    check(sameArgs(whole.args(), split.args()));
    check(whole.args().size() <= limits.maxArgs);
    for (std::string_view arg : whole.args()) {
      check(arg.size() <= std::max(limits.maxBulkBytes, limits.maxInlineBytes));  // inline: the line's cap
      check(arg.data() >= rest.data() && arg.data() + arg.size() <= rest.data() + used);
    }

    if (!whole.args().empty()) {
      // Own the arguments: the round trip below must not alias the input.
      kept.assign(whole.args().begin(), whole.args().end());
      keptViews.assign(kept.begin(), kept.end());
      serialised.clear();
      keel::resp::appendCommand(serialised, keptViews);
      RespParser again(RespLimits{});  // default caps: inline-sized commands always fit
      check(again.parse(serialised) == Status::Command);
      check(again.consumed() == serialised.size());
      check(sameArgs(again.args(), keptViews));

      reply.clear();
      (void)store.execute(keptViews, reply);
      // The cap holds whatever the sequence, and the running count is what
      // the entries really hold (capacity, not size).
      check(store.usedBytes() <= 4096 && store.usedBytes() == store.heldBytes());
      check(reply.size() >= 3 && reply.compare(reply.size() - 2, 2, "\r\n") == 0);
      check(reply[0] == '+' || reply[0] == '-' || reply[0] == ':' || reply[0] == '$' || reply[0] == '*');
    }
    rest.remove_prefix(used);
  }
  return 0;
}
