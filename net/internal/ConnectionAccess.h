// Internal to keel (not installed): the calls on a Connection that only its
// owner (Server, Client, EmbeddedConnection) and its pipeline's head may
// make. Keeping them off Connection's public API is what stops an
// application from replacing the owner's bookkeeping (the closed hook) or
// writing past the pipeline (the raw calls).
#pragma once

#include <cstdint>
#include <functional>
#include <system_error>
#include <utility>

#include "keel/net/Connection.h"

namespace keel {

class Transport;
class OutputBudget;

class ConnectionAccess {
 public:
  // ---- the owner --------------------------------------------------------------
  // The owner's hook without an allocation (Server: its per-loop slot).
  static void setClosedHook(Connection& c, void (*fn)(void*, const Connection::Ptr&),
                            void* context) noexcept {
    c.dropHookContext();
    c.closedHook_ = {fn, context};
  }
  // Any callable, for owners with few connections (Client, tests): kept in
  // one heap block the connection frees.
  static void setClosedHook(Connection& c, std::function<void(const Connection::Ptr&)> hook) {
    c.dropHookContext();
    if (!hook) return;
    using F = std::function<void(const Connection::Ptr&)>;
    c.closedHook_ = {[](void* f, const Connection::Ptr& conn) { (*static_cast<F*>(f))(conn); },
                     new F(std::move(hook))};
    c.ownsHookContext_ = true;
  }
  // Where the owner keeps the connection in its table (Server: the index in
  // its per-loop vector), so that removal needs no search and no map node.
  [[nodiscard]] static std::uint32_t ownerIndex(const Connection& c) noexcept { return c.ownerIndex_; }
  static void setOwnerIndex(Connection& c, std::uint32_t i) noexcept { c.ownerIndex_ = i; }
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
