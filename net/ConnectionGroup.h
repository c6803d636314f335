// A set of connections to broadcast to, across loops (Netty's ChannelGroup).
//
//   ConnectionGroup room;
//   server.setPipelineInit([&](Connection& c) {
//     c.pipeline().emplaceLast<FrameCodec>();
//     c.pipeline().emplaceLast<Presence>(room);
//     room.join(c);                       // leaves by itself when c closes
//   });
//   ...
//   room.broadcast(status, &ctx.connection());   // everyone else, any thread
//
// Membership is a small handler the group adds at the application end of
// the connection's pipeline; the connection leaves when that handler is
// removed, which happens when it closes (or on leave()). The application
// never holds a pointer to a member, and a closed connection can never be
// sent to.
//
// A broadcast is one message per member, through Connection::send, so a
// codec frames it as it frames everything else. Members on the calling
// loop get it before broadcast() returns, without a copy; for each other
// loop with members the message is copied once (shared by that loop's
// members) into one task for that loop. A member that cannot write any more
// (shutting down, closing, not started) is skipped.
//
// Backpressure: a member whose output queue already holds maxQueued bytes
// (default: its own high watermark) is full, and the message is not queued
// for it. Overflow::Drop (default) skips it and counts the drop, as a chat
// or presence service wants: the next update supersedes the lost one.
// Overflow::Close resets it as Overloaded: for a stream where a gap is
// worse than a reconnect. Either way one slow reader costs a bounded queue,
// never the whole server's memory.
//
// Lifetime: the group may be destroyed while it has members; they stay
// open, and leave it when they close. Broadcasts already queued to other
// loops still run.
//
// Thread-safety: broadcast(), closeAll(), size() and stats() are safe from
// any thread. join() and leave() run on the connection's loop thread (in a
// PipelineInit or a handler).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>

#include "keel/net/CloseReason.h"
#include "keel/net/Handler.h"

namespace keel {

class Connection;

struct GroupOptions {
  enum class Overflow : std::uint8_t { Drop, Close };
  Overflow overflow = Overflow::Drop;
  // Output queued at which a member counts as full; 0 = the member's own
  // ConnectionOptions::highWatermark.
  std::size_t maxQueued = 0;
};

struct GroupStats {
  std::uint64_t delivered = 0;  // messages queued or sent to a member
  std::uint64_t dropped = 0;    // not queued: the member was full (Overflow::Drop)
  std::uint64_t closed = 0;     // members reset because they were full (Overflow::Close)
  std::uint64_t refused = 0;    // the member's pipeline refused the message (over a frame limit...)
  std::size_t members = 0;
};

class ConnectionGroup {
 public:
  using Overflow = GroupOptions::Overflow;

  ConnectionGroup() : ConnectionGroup(GroupOptions{}) {}
  explicit ConnectionGroup(GroupOptions options);
  ~ConnectionGroup();
  ConnectionGroup(const ConnectionGroup&) = delete;
  ConnectionGroup& operator=(const ConnectionGroup&) = delete;

  // Loop thread of `conn`. False when it is already a member or already
  // closed.
  bool join(Connection& conn);
  // Loop thread of `conn`. False when it was not a member.
  bool leave(Connection& conn);

  // Any thread. Sends `message` to every member except `except` (compared,
  // never dereferenced; null: no exception).
  void broadcast(std::string_view message, const Connection* except = nullptr);
  // Any thread. Closes every member with `reason` and `mode`.
  void closeAll(CloseReason reason = CloseReason::Shutdown, CloseMode mode = CloseMode::Flush);

  [[nodiscard]] std::size_t size() const noexcept;
  [[nodiscard]] GroupStats stats() const noexcept;
  [[nodiscard]] const GroupOptions& options() const noexcept { return options_; }

  struct State;  // shared with the member handlers and queued broadcasts

 private:
  const GroupOptions options_;
  std::shared_ptr<State> state_;
};

}  // namespace keel
