// Zero-downtime restart: a running process hands its listening sockets to
// its successor over a Unix socket (SCM_RIGHTS), then stops accepting and
// drains; no connection attempt is refused in between, because the sockets
// (and the connections queued in them) never close.
//
//   // new process, before its loop runs:
//   std::error_code ec;
//   auto takeover = keel::requestHandoff(path, ec);   // nullopt, no ec: nobody there
//   if (takeover) ec = server.adoptListeners(std::move(takeover->listeners));
//   if (!ec) ec = server.start();                     // accepting now
//   if (!ec && takeover) ec = takeover->confirm();    // the old one stops accepting
//   // then, either way, be the one the next successor asks:
//   keel::HandoffServer handoff(loop, path,
//       [&](std::error_code& e) { return server.exportListeners(e); },
//       [&] { server.drain(timeout, [&] { loop.quit(); }); });
//   ec = handoff.listen();
//
// The protocol (version 1), each step bounded by HandoffOptions::timeout:
//   new -> connects to PATH (a filesystem path, or "@name" for the abstract
//          namespace). The old process serves only a peer of its own uid
//          (or root), one at a time.
//   old -> a 12-byte header {"KEEL", version, count, pid} carrying `count`
//          (<= kMaxAdoptedListeners) descriptors in SCM_RIGHTS. They are
//          dup()s: the old process keeps accepting on its own copies.
//   new -> "ACPT" once it accepts on them (after Server::start()). Until
//          then, any failure (a bad header, an adoption error, a crash, a
//          timeout) only closes the channel: the old process keeps serving.
//   old -> closes its PATH listener (and removes the file it made), sends
//          "RLSD", and runs onHandedOff (Server::drain, typically).
//   new -> waits for "RLSD" so that it can take PATH over (an abstract name
//          is free only once the old listener is closed).
//
// Thread-safety: HandoffServer lives on one loop and is used on its thread;
// requestHandoff and Takeover block and are for main() before the loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#include <sys/types.h>

#include "keel/core/Fd.h"
#include "keel/core/TimerWheel.h"
#include "keel/net/Listeners.h"
#include "keel/net/SocketAddress.h"

namespace keel {

class EventLoop;
class Watcher;

enum class HandoffError {
  Protocol = 1,  // the other side sent something that is not this protocol
  Version,       // a protocol version this build does not speak
  Timeout,       // a step took longer than HandoffOptions::timeout
  Refused,       // the old process closed the channel (busy, wrong uid, export failed)
  BadPath,       // PATH is empty or too long for sockaddr_un
  InUse,         // another live process listens on PATH
};

[[nodiscard]] const std::error_category& handoffCategory() noexcept;
[[nodiscard]] std::error_code make_error_code(HandoffError e) noexcept;

struct HandoffOptions {
  // Each step of the exchange (connect, header, ack, release). Seconds, not
  // minutes: the successor sits between start() and serving for this long
  // at most, and the old process waits no longer for an ack.
  std::chrono::milliseconds timeout{5000};
};

// The new process's side: what requestHandoff received.
class Takeover {
 public:
  std::vector<Fd> listeners;  // checked with checkListener (any family)
  pid_t previousPid = 0;      // as the old process reported it, for logs

  // Tells the old process "accepting now" and waits (timeout) until it has
  // let go of PATH. Call once the listeners are adopted and accepting.
  [[nodiscard]] std::error_code confirm();

 private:
  friend std::optional<Takeover> requestHandoff(const std::string&, std::error_code&, HandoffOptions);
  Fd channel_;
  HandoffOptions options_;
};

// Connects to `path` and receives the old process's listeners. nullopt
// without an error when nobody listens there (no file, a stale file, an
// unused abstract name): bind normally then. nullopt with `ec` on failure.
[[nodiscard]] std::optional<Takeover> requestHandoff(const std::string& path, std::error_code& ec,
                                                     HandoffOptions options = {});

// The old process's side: waits on `path` for a successor and serves one.
class HandoffServer {
 public:
  // Called on the loop when a successor asks: the descriptors to send.
  using Export = std::function<std::vector<Fd>(std::error_code&)>;
  // Called on the loop once the successor confirmed it accepts.
  using HandedOff = std::function<void()>;

  HandoffServer(EventLoop& loop, std::string path, Export exportListeners, HandedOff onHandedOff,
                HandoffOptions options = {});
  ~HandoffServer();  // closes PATH (removes the file if it is still ours)
  HandoffServer(const HandoffServer&) = delete;
  HandoffServer& operator=(const HandoffServer&) = delete;

  // Binds and listens on PATH. A stale socket file (nobody accepting) is
  // replaced; a live one is InUse.
  [[nodiscard]] std::error_code listen();
  [[nodiscard]] bool handedOff() const noexcept { return handedOff_; }
  // Successors turned away or failed (each logged).
  [[nodiscard]] std::uint64_t failures() const noexcept { return failures_; }

 private:
  void onAcceptable();
  void onChannelReadable();
  void failExchange(const char* why);
  void dropChannel();
  void closeListener();

  EventLoop& loop_;
  std::string path_;
  Export export_;
  HandedOff onHandedOff_;
  HandoffOptions options_;
  Fd listener_;
  std::unique_ptr<Watcher> listenWatch_;
  Fd channel_;  // the successor being served
  std::unique_ptr<Watcher> channelWatch_;
  TimerId deadline_;
  std::string ack_;  // bytes of "ACPT" so far
  ino_t inode_ = 0;  // of the socket file we made, to remove only our own
  dev_t device_ = 0;
  bool handedOff_ = false;
  std::uint64_t failures_ = 0;
};

}  // namespace keel

template <>
struct std::is_error_code_enum<keel::HandoffError> : std::true_type {};
