// The client side of keel-presence: JOIN, then a STATUS every interval,
// printing what the others do; reconnects when the server goes away.
//
//   [FrameCodec][Heartbeat][PongResponder][Member]
//
// The Client reconnects with back-off whenever the connection is lost (the
// server restarted, or its Heartbeat declared the server dead); each new
// connection JOINs again under the same name.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <keel/heartbeat/Heartbeat.h>
#include <keel/net/Connection.h>

namespace presence {

struct ClientConfig {
  std::string name;
  std::chrono::milliseconds interval{200};  // between STATUS frames
  std::uint64_t count = 0;                  // STATUS frames to send in all, then leave; 0 = forever
  keel::HeartbeatOptions heartbeat;
};

// Shared by the connections of one client process, across reconnects.
struct ClientState {
  ClientConfig config;
  std::uint64_t sent = 0;  // STATUS frames so far
  bool done = false;       // count reached: the program is leaving
};

// Builds a connection's pipeline (the Client's PipelineInit). `onDone` runs
// (on the loop) once `count` STATUS frames went out.
void initClientPipeline(keel::Connection& conn, ClientState& state, std::function<void()> onDone);

}  // namespace presence
