// A per-connection handler: one link in the connection's Pipeline.
//
// Inbound events travel from the socket towards the application (head to
// tail); outbound operations travel from the application towards the socket
// (tail to head). Every method's default passes the event on unchanged, so a
// handler overrides only what it cares about. The application's own logic is
// just the last handler.
//
// One handler object serves one connection, so its members are that
// connection's typed state (no `any` slot); Pipeline::find<T>() reaches it.
//
// Thread-safety: every method runs on the connection's loop thread.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include "keel/net/CloseReason.h"
#include "keel/net/Slices.h"

namespace keel {

class Buffer;
class HandlerContext;

// Base for events a handler raises for the handlers after it (idle
// notifications, heartbeat results...). Raised on the stack; receivers test
// the type with dynamic_cast or a kind field of their own.
struct UserEvent {
  virtual ~UserEvent() = default;
};

class Handler {
 public:
  virtual ~Handler() = default;

  [[nodiscard]] virtual std::string_view name() const noexcept { return "handler"; }

  // Lifecycle: added to a pipeline; removed from it (explicitly, or when the
  // connection closes, after onClosed). Release loop resources (timers) here.
  virtual void handlerAdded(HandlerContext&) {}
  virtual void handlerRemoved(HandlerContext&) {}

  // ---- inbound -------------------------------------------------------------
  virtual void onConnected(HandlerContext& ctx);
  // Stream bytes. Consume what you use (in.retrieve); what is left stays for
  // the next read.
  virtual void onData(HandlerContext& ctx, Buffer& in);
  // One whole message from a codec; valid only during the call.
  virtual void onFrame(HandlerContext& ctx, std::span<const char> frame);
  // The peer sent FIN: it will send nothing more, but it may still read.
  virtual void onPeerHalfClosed(HandlerContext& ctx);
  // The output queue crossed the high watermark (`queued` bytes pending).
  virtual void onHighWatermark(HandlerContext& ctx, std::size_t queued);
  // The output queue drained to the low watermark after a high watermark.
  virtual void onWritable(HandlerContext& ctx);
  virtual void onUserEvent(HandlerContext& ctx, const UserEvent& event);
  virtual void onClosed(HandlerContext& ctx, CloseReason reason);

  // ---- outbound ------------------------------------------------------------
  virtual void write(HandlerContext& ctx, const Slices& data);
  // A whole message; a codec turns it into bytes. With no codec it is written as is.
  virtual void writeFrame(HandlerContext& ctx, const Slices& payload);
  virtual void flush(HandlerContext& ctx);
  virtual void shutdown(HandlerContext& ctx);
  virtual void close(HandlerContext& ctx, CloseReason reason);
};

}  // namespace keel
