// Internal to keel (not installed): the calls on a Connection that only its
// owner (Server, Client, EmbeddedConnection) and its pipeline's head may
// make. Keeping them off Connection's public API is what stops an
// application from replacing the owner's bookkeeping (the closed hook) or
// writing past the pipeline (the raw calls).
#pragma once

#include <cstdint>
#include <system_error>
#include <utility>

#include "keel/net/Connection.h"

namespace keel {

class Transport;
class OutputBudget;

class ConnectionAccess {
 public:
  // ---- the owner --------------------------------------------------------------
  static void setClosedHook(Connection& c, Connection::ClosedHook hook) { c.closedHook_ = std::move(hook); }
  // Registers with the loop and fires onConnected (loop thread).
  static void start(Connection& c) { c.startInLoop(); }
  static void setPeerAddress(Connection& c, const SocketAddress& peer) { c.peer_ = peer; }
  static void setTransport(Connection& c, Transport* t) noexcept { c.transport_ = t; }
  // Server-wide output accounting (net/internal/OutputBudget.h).
  static void setOutputBudget(Connection& c, OutputBudget* b) noexcept { c.budget_ = b; }
  // Stops (or resumes) reading for the server's budget, on the loop thread.
  static void setBudgetPause(Connection& c, bool on) {
    c.pausedByBudget_ = on;
    c.updateInterest();
  }
  // Readiness as epoll would report it (EmbeddedConnection drives the
  // connection with these).
  static void onEvents(Connection& c, std::uint32_t events) { c.onEvents(events); }
  [[nodiscard]] static std::uint32_t interest(const Connection& c) noexcept { return c.interest_; }

  // ---- the pipeline's head ----------------------------------------------------
  static std::error_code write(Connection& c, const Slices& data) { return c.writeRaw(data); }
  static void flush(Connection& c) { c.flushRaw(); }
  static void shutdown(Connection& c, CloseReason reason) { c.shutdownRaw(reason); }
  static void close(Connection& c, CloseReason reason, CloseMode mode) { c.closeRaw(reason, mode); }
};

}  // namespace keel
