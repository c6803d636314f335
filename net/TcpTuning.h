// Per-connection TCP tuning, chosen as a profile and switchable at run time.
//
//   Kernel      the kernel's defaults: TCP_NODELAY off (Nagle on), TCP_CORK
//               off, keel's write coalescing off. Switching to Kernel undoes
//               the other profiles.
//   Latency     TCP_NODELAY on, write coalescing on (the writes of one loop
//               iteration leave as one sendmsg, so turning Nagle off does not
//               turn into one tiny segment per write), and TCP_QUICKACK
//               re-armed after EVERY read. Linux leaves quick-ack mode by
//               itself as soon as the connection looks interactive, so
//               setting it once, as Netty does (#8129, #13610), stops
//               working after the first exchange. Re-arming after a read
//               also sends the ACK the kernel was holding back, so a client
//               whose Nagle waits for that ACK does not stall for the
//               peer's delayed-ACK timeout (about 40 ms). The server alone
//               rescues a client it does not control. Cost: one setsockopt
//               per read, and only in this profile.
//   Throughput  Nagle on, and TCP_CORK around the writes made while a read
//               is dispatched: the cork goes on just before the first such
//               write and comes off when the dispatch returns (or at an
//               explicit flush). Everything an answer consists of leaves in
//               full segments. A read that writes nothing costs nothing;
//               one that writes costs two setsockopt calls.
//
// Latency, opt-in refinement (setQuickAckOnlyWhenSilent): skip the re-arm
// after a read whose dispatch wrote something. The answer leaves at once
// (Nagle is off) and carries the ACK for every byte read so far, so the
// client is released without the setsockopt; only reads that answer
// nothing (a partial request) pay for it. For request/response servers
// this saves one syscall per request. Off by default: a handler that
// answers only part of what it read and then waits for more still gets the
// ACK with that partial answer, but a write stuck behind a full send queue
// would not carry it.
//
// Place TcpTuning first in the pipeline (nearest the socket): corking
// watches the writes that pass through it, so it only sees writes from
// handlers after it. The QUICKACK re-arm runs in onReadComplete, the
// pipeline's after-read event, once the handlers after it have handled the
// event too (so writes they make there count as "wrote something").
// Removing the handler returns the connection to the Kernel profile.
//
// A failing setsockopt is never ignored: it is counted (optionFailures) and
// logged with Socket::errorMessage, the first one at warn level and later
// ones at debug. On Unix-domain sockets the TCP options are skipped (logged
// once per process at debug level). Write coalescing, which is keel's own,
// still follows the profile there.
//
// Thread-safety: the connection's loop thread only. From elsewhere, use
// connection.loop().runInLoop.
#pragma once

#include <cstdint>
#include <string_view>
#include <system_error>

#include "keel/net/Handler.h"

namespace keel {

class Connection;

enum class TcpProfile : std::uint8_t { Kernel, Latency, Throughput };
[[nodiscard]] std::string_view toString(TcpProfile profile) noexcept;

class TcpTuning final : public Handler {
 public:
  explicit TcpTuning(TcpProfile profile) noexcept : profile_(profile) {}
  TcpTuning(const TcpTuning&) = delete;
  TcpTuning& operator=(const TcpTuning&) = delete;

  [[nodiscard]] std::string_view name() const noexcept override { return "tcp-tuning"; }

  // Applies the profile's options at once (when already in a pipeline).
  void setProfile(TcpProfile profile);
  [[nodiscard]] TcpProfile profile() const noexcept { return profile_; }
  // False on Unix-domain connections: no TCP option is touched there.
  [[nodiscard]] bool tcp() const noexcept { return tcp_; }

  // Latency: re-arm TCP_QUICKACK only after reads that wrote nothing (see above).
  void setQuickAckOnlyWhenSilent(bool on) noexcept { quickAckOnlyWhenSilent_ = on; }

  // TCP_QUICKACK re-armed after a read (Latency).
  [[nodiscard]] std::uint64_t quickAcksArmed() const noexcept { return quickAcksArmed_; }
  // Re-arms left out because the read's answer carried the ACK (opt-in above).
  [[nodiscard]] std::uint64_t quickAcksSkipped() const noexcept { return quickAcksSkipped_; }
  // Cork/uncork pairs around a dispatch (Throughput).
  [[nodiscard]] std::uint64_t corks() const noexcept { return corks_; }
  [[nodiscard]] std::uint64_t optionFailures() const noexcept { return failures_; }

  void handlerAdded(HandlerContext& ctx) override;
  void handlerRemoved(HandlerContext& ctx) override;
  void onData(HandlerContext& ctx, Buffer& in) override;
  void onReadComplete(HandlerContext& ctx) override;
  std::error_code write(HandlerContext& ctx, const Slices& data) override;
  void flush(HandlerContext& ctx) override;

 private:
  void apply(Connection& conn);
  void rearmQuickAck(Connection& conn);
  void cork(Connection& conn);
  void uncork(Connection& conn);
  // Counts and logs a failed option; returns true when `ec` is success.
  bool check(Connection& conn, std::string_view what, std::error_code ec);

  TcpProfile profile_;
  HandlerContext* ctx_ = nullptr;  // valid between handlerAdded and handlerRemoved
  bool tcp_ = true;
  bool dispatching_ = false;  // inside onData (Throughput corks writes then)
  bool corked_ = false;
  bool quickAckOnlyWhenSilent_ = false;
  bool wroteInDispatch_ = false;  // the last read's dispatch wrote something
  std::uint64_t quickAcksArmed_ = 0;
  std::uint64_t quickAcksSkipped_ = 0;
  std::uint64_t corks_ = 0;
  std::uint64_t failures_ = 0;
};

}  // namespace keel
