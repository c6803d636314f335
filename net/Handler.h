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
// Outbound writes return a std::error_code: empty when the bytes were
// accepted (sent, or queued for sending), else why they were not (the
// connection cannot write any more, a frame over the codec's limit, the
// output cap). Nothing accepted is ever dropped silently; nothing refused is
// half-written.
//
// Closing has one path: close(reason, mode) travels from the application end
// to the socket, through every handler, whatever asked for it (the
// application, a handler, the owner, the connection's own deadlines and
// caps). Only a transport that failed (peer reset, I/O error) ends a
// connection without it, because nothing can be sent any more; every
// handler still sees onClosed. docs/net.md has the close path.
//
// Thread-safety: every method runs on the connection's loop thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <system_error>

#include "keel/net/CloseReason.h"
#include "keel/net/Slices.h"

namespace keel {

class Buffer;
class HandlerContext;

// How a close treats output still queued.
enum class CloseMode : std::uint8_t {
  Flush,  // deliver what is queued, then FIN (bounded by closeTimeout, then Reset)
  Now,    // FIN at once; queued output is dropped
  Reset,  // RST at once (SO_LINGER {1,0}): dropped, and no TIME_WAIT on either side
};
[[nodiscard]] std::string_view toString(CloseMode mode) noexcept;

// What a peer's FIN leads to; see PeerFin.
enum class HalfClosePolicy : std::uint8_t { CloseNow, FinishWrites, StayOpen };
[[nodiscard]] std::string_view toString(HalfClosePolicy policy) noexcept;

// The peer-FIN event. It travels towards the application carrying the
// policy decided so far; the pipeline's tail carries out what arrives:
// FinishWrites (the default) closes with PeerClosed once the queue is
// delivered, CloseNow closes dropping unsent output, StayOpen leaves the
// connection open for the application to answer and close. The HalfClose
// handler is how a pipeline chooses; any handler may decide.
struct PeerFin {
  HalfClosePolicy policy = HalfClosePolicy::FinishWrites;
};

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
  // True for a codec: a handler that turns writeFrame messages into bytes
  // (FrameCodec). While a pipeline holds one, Connection::send() writes
  // messages through writeFrame, so a send from any thread is framed exactly
  // like a handler's ctx.writeFrame. Read once, when the handler is added.
  [[nodiscard]] virtual bool encodesMessages() const noexcept { return false; }

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
  // `fin.policy` says what will happen (see PeerFin); pass it on.
  virtual void onPeerHalfClosed(HandlerContext& ctx, PeerFin& fin);
  // After the inbound dispatch of one read (onData and whatever it caused),
  // before output is flushed: the place for per-read work that must not
  // run per message (TcpTuning re-arms TCP_QUICKACK here).
  virtual void onReadComplete(HandlerContext& ctx);
  // The output queue crossed the high watermark (`queued` bytes pending).
  // Delivered at the end of the loop iteration, never from inside a write.
  virtual void onHighWatermark(HandlerContext& ctx, std::size_t queued);
  // The output queue drained to the low watermark after a high watermark.
  // Delivered at the end of the loop iteration, never from inside a flush.
  virtual void onWritable(HandlerContext& ctx);
  virtual void onUserEvent(HandlerContext& ctx, const UserEvent& event);
  virtual void onClosed(HandlerContext& ctx, CloseReason reason);

  // ---- outbound ------------------------------------------------------------
  virtual std::error_code write(HandlerContext& ctx, const Slices& data);
  // A whole message; a codec turns it into bytes. With no codec it is written as is.
  virtual std::error_code writeFrame(HandlerContext& ctx, const Slices& payload);
  virtual void flush(HandlerContext& ctx);
  // Flush, FIN, keep reading until the peer's FIN; the close that follows
  // carries `reason`.
  virtual void shutdown(HandlerContext& ctx, CloseReason reason);
  virtual void close(HandlerContext& ctx, CloseReason reason, CloseMode mode);
};

}  // namespace keel
