// A TCP or Unix-stream client: connects to one server (by address, by a
// list of its addresses, or by host name), optionally retrying failed
// connects and reconnecting lost connections, and gives each new connection
// a handler pipeline built by the application.
//
//   ClientOptions options;
//   options.reconnect = ClientOptions::Reconnect::Always;
//   Client client(loop, "db.internal", 7000, options);
//   client.setPipelineInit([](Connection& c) { c.pipeline().emplaceLast<MyHandler>(); });
//   client.connect();
//
// At most one connection exists at a time. Each new connection runs the
// PipelineInit, then startInLoop() fires onConnected through its pipeline;
// from then on the handlers see everything, including the close (with its
// CloseReason). The client only keeps the reference and, when the connection
// closes, lets go of it at the end of that loop iteration (never inside the
// connection's own callbacks) and, with Reconnect::Always, starts connecting
// again after one back-off delay.
//
// One attempt: a host name is resolved first (Resolver, off the loop; at
// every attempt, so a retry sees DNS changes), then the addresses are raced
// Happy Eyeballs style (RFC 8305: IPv6 and IPv4 interleaved, the next address
// after attemptDelay or at once when one fails, first to connect wins, the
// others are closed). The attempt fails when every address has failed; a
// failed lookup fails the attempt too (with a resolverCategory() code).
//
// Retrying (ClientOptions::reconnect), one policy for both questions "retry
// a failed connect?" and "replace a lost connection?":
//   Never           one attempt per connect(); a lost connection stays lost.
//   UntilConnected  connect() retries with back-off (up to maxAttempts) until
//                   it connects; a connection lost later stays lost.
//   Always          as UntilConnected, and a lost connection is replaced: a
//                   new series starts after one back-off delay (so a server
//                   that drops everyone is not hammered). Until stop() or
//                   disconnect().
// Failed attempts are reported one by one through ConnectFailed; inside that
// callback state() is Connecting when another attempt follows and
// Disconnected when the client gave up.
//
// Thread-safety: connect(), disconnect(), stop(), connection(), state() and
// attempts() are safe from any thread (not concurrently with the destructor).
// The constructor may run on any thread; the destructor runs on the loop
// thread (checked in every build: it aborts naming Client::~Client);
// setPipelineInit/setConnectFailed are for before the first connect(), or
// the loop thread afterwards (checked where assertions are on). Work queued
// from other threads carries a liveness token, so a client destroyed
// meanwhile is never touched. Callbacks run on the loop thread, never inside
// connect(); they must not destroy the client (defer that with
// EventLoop::queueInLoop).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "keel/core/EventLoop.h"
#include "keel/core/Time.h"
#include "keel/net/Connection.h"
#include "keel/net/Resolver.h"
#include "keel/net/SocketAddress.h"

namespace keel {

class Connector;

struct ClientOptions {
  // See the header comment. Replaces the old `retry` and `reconnect` flags.
  enum class Reconnect : std::uint8_t { Never, UntilConnected, Always } reconnect = Reconnect::Never;
  Duration connectTimeout = std::chrono::seconds(5);  // per address; zero: no limit
  // Happy Eyeballs: the next address starts this long after the previous one
  // if that has not connected yet (RFC 8305's value; clamped to 10 ms .. 2 s).
  Duration attemptDelay = std::chrono::milliseconds(250);
  Duration retryInitial = std::chrono::milliseconds(100);  // back-off, doubling up to retryMax
  Duration retryMax = std::chrono::seconds(30);
  // Each delay is randomised by +/- this much, so many clients do not retry in lockstep.
  int jitterPercent = 20;
  int maxAttempts = 0;  // per series of attempts; 0 = unlimited
  // Host-name targets: family (any/v4/v6), lookup timeout (10 s), address cap (16).
  ResolveOptions resolve;
  Resolver* resolver = nullptr;  // not owned, must outlive the client; null: Resolver::defaultResolver()
  // disconnect() on a request/response connection: with PeerFirst the client
  // does not send the first FIN but waits (up to peerCloseTimeout) for the
  // server's, so TIME_WAIT and its port pair stay on the server, where it is
  // cheap, instead of eating this machine's ephemeral ports
  // (docs/time-wait.md). Long-lived connections kept healthy by the
  // heartbeat are still the better answer.
  enum class Close : std::uint8_t { LocalFirst, PeerFirst } close = Close::LocalFirst;
  Duration peerCloseTimeout = std::chrono::seconds(5);
  ConnectionOptions connection;
};

enum class ClientState : std::uint8_t {
  Disconnected,  // idle: never connected, gave up, stopped, or the connection closed
  Connecting,    // an attempt in flight or waiting for the next one
  Connected,     // a started connection exists (possibly closing after disconnect())
};
[[nodiscard]] std::string_view toString(ClientState s) noexcept;

class Client {
 public:
  // Builds the handler chain of each new connection (loop thread).
  using PipelineInit = std::function<void(Connection&)>;
  // One connect attempt failed (loop thread; called per attempt).
  using ConnectFailed = std::function<void(std::error_code)>;

  Client(EventLoop& loop, SocketAddress server, ClientOptions options = {});
  // Several addresses of one server, raced in this order (families interleaved).
  Client(EventLoop& loop, std::vector<SocketAddress> servers, ClientOptions options = {});
  // A host name or numeric address ("localhost", "::1"), resolved at each attempt.
  Client(EventLoop& loop, HostPort server, ClientOptions options = {});
  Client(EventLoop& loop, std::string host, std::uint16_t port, ClientOptions options = {});
  // Loop thread: aborts a live connection (its handlers see onClosed(Abort)),
  // cancels the timers and a lookup in progress; a pending disconnect()
  // completion is dropped. Queued work from other threads then finds it gone.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Before the first connect() (any thread), or on the loop thread.
  void setPipelineInit(PipelineInit f);
  void setConnectFailed(ConnectFailed f);

  // Any thread. Starts connecting (the first attempt runs on a later turn of
  // the loop). Does nothing while connected or while an attempt is in flight;
  // while a previous connection is still closing, connects once it has closed.
  void connect();
  // Any thread. Stops retrying and reconnecting and closes the connection
  // gracefully (queued output is flushed first), or with Close::PeerFirst
  // waits for the server to close first. `done` runs on the loop thread once
  // the connection has fully closed (its handlers have seen onClosed), or on
  // a later turn of the loop when there is none; never inside disconnect().
  void disconnect(std::function<void()> done = {});
  // Any thread. Stops retrying and reconnecting; a connection is left as it is
  // (and not replaced when it closes).
  void stop();

  // Any thread: a copy of the current connection, or null. Set once the
  // connection has started (after its handlers saw onConnected), so it can
  // always be sent on; cleared when it has closed.
  [[nodiscard]] Connection::Ptr connection() const;
  [[nodiscard]] ClientState state() const noexcept { return state_.load(std::memory_order_acquire); }
  // Any thread. Attempts in the current series (since connect(), or since the
  // reconnect began), the successful one included.
  [[nodiscard]] int attempts() const noexcept;
  [[nodiscard]] EventLoop& loop() const noexcept { return loop_; }
  // The configured addresses (empty for a host-name client), and the host name.
  [[nodiscard]] const std::vector<SocketAddress>& servers() const noexcept;
  [[nodiscard]] const std::optional<HostPort>& host() const noexcept;
  [[nodiscard]] const ClientOptions& options() const noexcept { return options_; }

 private:
  // Runs task now on the loop thread, else queues it guarded by alive_.
  void runInLoopIfAlive(EventLoop::Task task);
  void connectInLoop();
  void stopInLoop();
  void disconnectInLoop(std::function<void()> done);
  void init();
  void onConnected(Socket socket);
  void onConnectFailed(std::error_code ec);
  void onConnectionClosed(const Connection::Ptr& conn);
  void settleAfterClose(const Connection& conn);
  void setState(ClientState s) noexcept { state_.store(s, std::memory_order_release); }

  EventLoop& loop_;
  const ClientOptions options_;
  std::unique_ptr<Connector> connector_;  // internal type (net/internal/Connector.h)
  PipelineInit pipelineInit_;
  ConnectFailed connectFailed_;
  // Loop thread: false once the destructor has begun. Tasks queued from other
  // threads and connection hooks hold a copy and check it first.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::atomic<ClientState> state_{ClientState::Disconnected};
  std::atomic<bool> started_{false};  // connect() was called once: the setters are loop-only from then on
  std::vector<std::function<void()>> disconnectDone_;  // loop thread: run when current_ has closed
  bool wanted_ = false;             // loop thread: connect() and no stop() since; gates reconnect
  bool connectAfterClose_ = false;  // loop thread: connect() came while the old connection was closing
  Connection::Ptr current_;         // loop thread: the connection from its creation until it closes
  mutable std::mutex mutex_;
  // What connection() returns: current_ once it has started (guarded by mutex_).
  Connection::Ptr connection_;
};

}  // namespace keel
