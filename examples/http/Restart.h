// keel-http's restart plumbing (docs/operations.md): where the
// listening sockets come from (systemd socket activation, then a running
// keel-http on --handoff PATH, else none: bind), and the hand-over to the
// next one, which turns this process into a draining one.
//
// Header-only, like ../common/ExampleMain.h: glue for one program.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <keel/core/EventLoop.h>
#include <keel/net/Handoff.h>
#include <keel/net/Listeners.h>
#include <keel/net/Server.h>

namespace keel::http {

// Set once this process has handed its listeners to a successor: from then
// on every response says `Connection: close` and its connection closes
// after it. Read by every I/O loop, written once by the base loop.
inline std::atomic<bool> gDraining{false};

// Told to every connection when the drain begins (Server::forEachConnection).
struct DrainNow final : keel::UserEvent {};

// During a drain, a keep-alive connection that has not sent a byte for this
// long is closed as it is. Closing one that never sends again is the only
// way to finish; the cost is the race every keep-alive close has (a request
// sent just as the FIN leaves fails and the client retries it, as RFC 9112
// 9.3.1 expects). A second is long past any client that is mid-exchange
// (wrk sends its next request at once), so under load every connection
// ends with a response marked close instead.
inline constexpr std::chrono::milliseconds kDrainIdle{1000};

struct Inherited {
  std::vector<Fd> fds;               // empty: bind --host/--port
  std::optional<Takeover> takeover;  // set when they came from a running keel-http
};

// Fills `out`; false (after saying why) when keel-http must exit 1. A
// failed handoff is such a case: the running process keeps serving, and
// starting a second one beside it on a fresh bind would fail anyway.
[[nodiscard]] inline bool inheritListeners(const std::string& handoffPath, Inherited& out) {
  std::error_code ec;
  for (auto& l : takeSystemdListeners(ec)) out.fds.push_back(std::move(l.fd));
  if (ec) {
    std::fprintf(stderr, "keel-http: socket activation: %s\n", ec.message().c_str());
    return false;
  }
  if (!out.fds.empty()) {
    std::fprintf(stderr, "keel-http: %zu socket(s) from systemd\n", out.fds.size());
    return true;
  }
  if (handoffPath.empty()) return true;
  out.takeover = requestHandoff(handoffPath, ec);
  if (ec) {
    std::fprintf(stderr, "keel-http: handoff from %s failed: %s\n", handoffPath.c_str(),
                 ec.message().c_str());
    return false;
  }
  if (out.takeover) out.fds = std::move(out.takeover->listeners);
  return true;
}

// After Server::start(): tells the old process it may stop. A failure here
// leaves both accepting on the same sockets, which loses nothing.
inline void confirmTakeover(Inherited& in) {
  if (!in.takeover) return;
  if (const std::error_code ec = in.takeover->confirm())
    std::fprintf(stderr, "keel-http: handoff confirm: %s\n", ec.message().c_str());
  else
    std::fprintf(stderr, "keel-http: took over from pid %d\n", static_cast<int>(in.takeover->previousPid));
}

// Waits on PATH for a successor; once it accepts, drains (every response
// says Connection: close, idle connections close after kDrainIdle) and
// quits the loop when the last connection is gone or `drainTimeout` ran out.
[[nodiscard]] inline std::unique_ptr<HandoffServer> offerHandoff(EventLoop& loop, Server& server,
                                                                 const std::string& path,
                                                                 std::chrono::milliseconds drainTimeout) {
  if (path.empty()) return nullptr;
  auto handoff = std::make_unique<HandoffServer>(
      loop, path, [&server](std::error_code& e) { return server.exportListeners(e); },
      [&server, &loop, drainTimeout] {
        std::fprintf(stderr, "keel-http: handed over; draining %zu connection(s)\n",
                     server.connectionCount());
        gDraining.store(true, std::memory_order_relaxed);
        server.forEachConnection([](const Connection::Ptr& c) { c->pipeline().fireUserEvent(DrainNow{}); });
        server.drain(drainTimeout, [&loop] { loop.quit(); });
      });
  if (const std::error_code ec = handoff->listen())  // serving goes on; only the next restart is off
    std::fprintf(stderr, "keel-http: cannot listen on %s for a successor: %s\n", path.c_str(),
                 ec.message().c_str());
  return handoff;
}

}  // namespace keel::http
