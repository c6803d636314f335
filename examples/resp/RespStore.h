// The data side of keel-resp: an in-memory string store and the commands
// that act on it, each writing its RESP2 reply.
//
//   PING [msg]  ECHO msg  SET key value  GET key  DEL key...  EXISTS key...
//   INCR key  QUIT
//   COMMAND ...  -> empty array (redis-cli asks for COMMAND DOCS for its hints)
//   HELLO [2]   -> the server's description as a flat array (RESP2 only;
//                  HELLO 3 gets -NOPROTO, so clients fall back to RESP2)
//   CONFIG GET save|appendonly -> what redis-benchmark asks for at start
//                  (no persistence: "" and "no"); any other parameter: empty
//
// Errors follow Redis's wording: "-ERR unknown command ...", "-ERR wrong
// number of arguments for 'get' command", "-ERR value is not an integer or
// out of range". SET's options (EX, NX, ...) are not supported: -ERR syntax
// error.
//
//   INFO [memory] -> used_memory, used_memory_dataset, maxmemory, keys
//
// Cap: maxMemoryBytes (default 256 MiB) bounds the keys and values held,
// counted as the heap bytes their strings really hold (capacity, not size)
// plus a fixed overhead per entry. A write that would grow past it gets
// Redis's -OOM reply; reads and deletes still work. An overwrite with a
// much shorter value gives the old storage back rather than keeping it:
// counting only sizes, with std::string::assign keeping the capacity, let
// "SET k <1 MB>; SET k x" repeated over new keys hold many times the cap.
//
// Thread-safety: with Options::shared the store takes a mutex around each
// command, so connections on several I/O loops see one keyspace; without it
// the store belongs to one thread. keel-resp runs one loop by default, where
// the lock would only cost.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

namespace keel::resp {

class RespStore {
 public:
  struct Options {
    std::size_t maxMemoryBytes = 256 << 20;
    bool shared = false;
  };
  enum class After : std::uint8_t { Continue, Close };  // Close: the reply is the last (QUIT)

  RespStore() : RespStore(Options{}) {}
  explicit RespStore(Options options) : options_(options) {}
  RespStore(const RespStore&) = delete;
  RespStore& operator=(const RespStore&) = delete;

  // Runs one command (args non-empty) and appends its reply to `out`.
  [[nodiscard]] After execute(std::span<const std::string_view> args, std::string& out);

  [[nodiscard]] std::size_t keys() const noexcept { return map_.size(); }
  [[nodiscard]] std::size_t usedBytes() const noexcept { return used_; }
  // The same figure recomputed by walking every entry: O(keys), for INFO and
  // the tests, so the running count is checked against what is held.
  [[nodiscard]] std::size_t heldBytes() const noexcept;

 private:
  // Transparent hashing: lookups by string_view build no temporary string.
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  using Map = std::unordered_map<std::string, std::string, Hash, std::equal_to<>>;

  After run(std::span<const std::string_view> args, std::string& out);
  // Stores key = value unless that would pass the cap; false: -OOM.
  bool put(std::string_view key, std::string_view value);
  void incr(std::string_view key, std::string& out);
  void info(std::span<const std::string_view> args, std::string& out);

  // Heap bytes a string holds beyond its own header: none while the text
  // fits the inline (small-string) buffer, else its capacity and the NUL.
  static std::size_t held(const std::string& s) noexcept {
    return s.capacity() > kInline ? s.capacity() + 1 : 0;
  }
  // What a fresh copy of `n` bytes will hold (a copy allocates exactly).
  static std::size_t heldFor(std::size_t n) noexcept { return n > kInline ? n + 1 : 0; }
  static std::size_t cost(const std::string& key, const std::string& value) noexcept {
    return held(key) + held(value) + kEntryOverhead;
  }

  static const std::size_t kInline;                  // std::string's inline capacity
  static constexpr std::size_t kEntryOverhead = 64;  // node, hash slot, two string headers (roughly)
  Options options_;
  Map map_;
  std::size_t used_ = 0;
  std::mutex mutex_;  // taken only when options_.shared
};

}  // namespace keel::resp
