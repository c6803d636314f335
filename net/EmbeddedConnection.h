// A Connection with an in-memory transport, for testing handlers and codecs
// without sockets (Netty's EmbeddedChannel is the model).
//
//   keel::ManualClock clock;
//   keel::EventLoop loop({.clock = &clock});
//   keel::EmbeddedConnection ec(loop);
//   ec.pipeline().emplaceLast<keel::FrameCodec>();
//   ec.pipeline().emplaceLast<MyHandler>();
//   ec.start();                       // onConnected
//   ec.feed(bytes);                   // as if read from the socket
//   EXPECT_EQ(ec.takeOutput(), ...);  // what the connection wrote
//   keel::advanceLoop(loop, clock, 30s);  // timers fire, no waiting
//
// It is the real Connection and the real Pipeline: state machine, close
// path, watermarks, caps and coalescing all behave as on a socket. Only the
// syscalls are replaced: reads come from what the test fed, writes go to a
// string (up to a send capacity the test sets, to stand for a full send
// buffer), shutdown and close are recorded. End-to-end behaviour (TCP,
// timing, the kernel's buffers) still needs real-socket tests.
//
// Thread-safety: the loop's thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "keel/net/Connection.h"

namespace keel {

class EmbeddedConnection {
 public:
  explicit EmbeddedConnection(EventLoop& loop, ConnectionOptions options = {}, std::uint64_t id = 1);
  // Closes a connection still open (CloseMode::Now, through the pipeline).
  ~EmbeddedConnection();
  EmbeddedConnection(const EmbeddedConnection&) = delete;
  EmbeddedConnection& operator=(const EmbeddedConnection&) = delete;

  [[nodiscard]] Connection& connection() noexcept { return *conn_; }
  [[nodiscard]] const Connection::Ptr& ptr() const noexcept { return conn_; }
  [[nodiscard]] Pipeline& pipeline() noexcept { return conn_->pipeline(); }

  // Opens the connection: onConnected travels the pipeline built so far.
  void start();

  // ---- the peer's side ------------------------------------------------------------
  // Bytes from the peer. They are read as a socket's would be: one read per
  // readiness, at most maxReadPerEvent each, while the connection reads.
  // Then the loop's pending work runs (runPending).
  void feed(std::string_view bytes);
  // The peer's FIN, after whatever was fed.
  void feedFin();
  // The peer resets the connection.
  void feedReset();
  // How many more bytes the transport takes before it reports EAGAIN, as a
  // full send buffer would (unlimited by default). Raising it delivers the
  // writable readiness the connection waits for, unless `announce` is false
  // (the room is then found by the next write or flush).
  void setSendCapacity(std::size_t bytes, bool announce = true);

  // ---- what the connection did ----------------------------------------------------
  // Everything written so far, and forgets it.
  [[nodiscard]] std::string takeOutput();
  [[nodiscard]] std::size_t outputSize() const noexcept;
  [[nodiscard]] bool finSent() const noexcept;  // shutdown(SHUT_WR)
  [[nodiscard]] bool transportClosed() const noexcept;
  [[nodiscard]] bool wasReset() const noexcept;            // closed with a reset
  [[nodiscard]] std::size_t unreadInput() const noexcept;  // fed, not yet read by the connection
  [[nodiscard]] std::optional<CloseReason> closedWith() const noexcept { return conn_->closeReason(); }

  // Runs the loop's queued tasks and end-of-iteration work (coalesced
  // flushes, watermark events) and the timers due at the loop's clock,
  // without waiting.
  void runPending();

 private:
  class Memory;
  void deliverReads();

  EventLoop& loop_;
  std::unique_ptr<Memory> memory_;
  Connection::Ptr conn_;
};

}  // namespace keel
