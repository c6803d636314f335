// The server side of keel-presence: who is online, and their last status.
//
//   [FrameCodec][Heartbeat][PongResponder][IdleReaper][Session]
//
// - Heartbeat notices a member that hangs or vanished (a stopped process, a
//   cut cable) in keepalive + probes x interval, and its sampling mode keeps
//   measuring the RTT although STATUS traffic never leaves the line silent.
// - PongResponder answers the client's own PINGs (both sides probe).
// - IdleReaper, counting application frames only, closes a member that is
//   alive (it answers PINGs) but has stopped sending STATUS.
// - Session is the application: JOIN, STATUS, and what the others are told.
//
// Members live on several I/O loops. The Directory (names -> sessions) is
// shared between loops behind a mutex, because a JOIN on one loop must see
// the names taken on every other; the ConnectionGroup does the broadcast.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <keel/heartbeat/Heartbeat.h>
#include <keel/net/Connection.h>
#include <keel/net/ConnectionGroup.h>

namespace presence {

struct ServerConfig {
  keel::HeartbeatOptions heartbeat;           // with rttSampleInterval set: RTT although traffic never stops
  std::chrono::milliseconds silence{10'000};  // no STATUS for this long: the member is closed
  bool verbose = true;                        // one stdout line per join and leave
};

// Every loop's view of who is online. A name belongs to one connection; a
// second JOIN with the same name replaces the first (a client that
// reconnected before the server noticed its old connection was gone).
class Directory {
 public:
  struct Member {
    std::string name;
    std::string status;
  };
  // Takes `name` for `conn`. Returns the connection it was taken from (to be
  // closed by the caller), and fills `others` with everyone else.
  std::weak_ptr<keel::Connection> claim(const std::string& name, const keel::Connection::Ptr& conn,
                                        std::vector<Member>& others);
  void setStatus(const std::string& name, const keel::Connection* conn, std::string_view status);
  // Gives the name back; false when it had been taken over meanwhile.
  bool release(const std::string& name, const keel::Connection* conn);
  [[nodiscard]] std::size_t size() const;

 private:
  struct Entry {
    std::weak_ptr<keel::Connection> conn;
    const keel::Connection* owner = nullptr;
    std::string status;
  };
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Entry> entries_;
};

// The shared state a Session needs: one per server.
struct Room {
  ServerConfig config;
  Directory directory;
  keel::ConnectionGroup group;
};

// Builds a connection's pipeline (the Server's PipelineInit).
void initPipeline(keel::Connection& conn, Room& room);

}  // namespace presence
