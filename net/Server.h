// A TCP (or Unix-stream) server: acceptors, N I/O loops, a connection table
// per loop, a connection limit, and a graceful stop.
//
//   keel::EventLoop loop;
//   keel::Server server(loop, *keel::SocketAddress::parse("127.0.0.1:7000"));
//   server.setPipelineInit([](keel::Connection& c) { c.pipeline().emplaceLast<Echo>(); });
//   if (auto ec = server.start()) { ...report ec... }
//   loop.loop();
//
// Accepting happens on the base loop (one listening socket), or with
// reusePort on every I/O loop (one SO_REUSEPORT socket each, the kernel
// spreads connections). Each connection lives on exactly one loop.
//
// Listening sockets can also come from outside: adoptListeners() before
// start() (systemd socket activation, net/Listeners.h; a predecessor's
// handoff, net/Handoff.h), and leave with exportListeners(). stopAccepting()
// and drain() are the old process's half of a handoff.
//
// Thread-safety: construct, start, stop, stopOnSignals and destroy on the
// base loop's thread. connectionCount() and stats() are safe from any
// thread, and so is forEachConnection() between start() and destruction.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "keel/core/Fd.h"
#include "keel/core/LoopThreadPool.h"
#include "keel/net/Connection.h"
#include "keel/net/Listeners.h"

namespace keel {

class Acceptor;
class OutputBudget;
class SignalWatcher;

struct ServerOptions {
  std::size_t ioThreads = 0;           // 0: connections live on the base loop
  bool reusePort = false;              // one SO_REUSEPORT listener per I/O loop
  std::size_t maxConnections = 10000;  // beyond it new connections are closed at once
  // Connections from one peer address (the IP, any port); 0 = no cap. At
  // the cap further connections from that address are closed at once
  // (refusedPerPeer), so one address cannot take every slot. Off by
  // default: many clients can share one address behind a NAT or a proxy.
  std::size_t maxConnectionsPerPeer = 0;
  // Output queued across all connections. At the budget, reading pauses on
  // every connection (no new requests, so no new answers) until the total
  // drains to 3/4 of it. If it has not drained within outputBudgetGrace,
  // the connections with the largest queues are reset as Overloaded, the
  // largest first, until the total is under the budget. 0 = no budget.
  std::size_t outputBudget = std::size_t{256} << 20;
  Duration outputBudgetGrace = std::chrono::seconds(5);
  int backlog = SOMAXCONN;
  int acceptBatch = 64;  // accepts per readiness
  ConnectionOptions connection;
  Duration stopTimeout = std::chrono::seconds(5);  // graceful stop: then abort what is left
  LoopOptions loopOptions;
};

struct ServerStats {
  std::uint64_t accepted = 0;
  std::uint64_t refusedFull = 0;     // over maxConnections
  std::uint64_t droppedNoFd = 0;     // EMFILE/ENFILE
  std::uint64_t refusedPerPeer = 0;  // over maxConnectionsPerPeer
  std::uint64_t budgetPauses = 0;    // times reading paused everywhere for the output budget
  std::uint64_t budgetCloses = 0;    // connections reset to bring the output back under budget
  std::size_t queuedOutput = 0;      // output bytes queued across all connections now
  std::uint64_t closed = 0;
  std::array<std::uint64_t, kCloseReasonCount> closedBy{};  // indexed by CloseReason
  std::size_t open = 0;                                     // live connections
  // Bytes read from and written to the kernel by connections that have
  // closed (added at close, so the hot path pays nothing for them).
  std::uint64_t bytesIn = 0;
  std::uint64_t bytesOut = 0;
  std::size_t timeWait = 0;  // sockets in TIME_WAIT on the listening port (netlink sock_diag)
};

class Server {
 public:
  using PipelineInit = std::function<void(Connection&)>;

  Server(EventLoop& loop, SocketAddress listen, ServerOptions options = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Builds each new connection's handler chain; runs on that connection's loop.
  void setPipelineInit(PipelineInit init) { init_ = std::move(init); }

  // Binds, listens and starts the I/O loops.
  [[nodiscard]] std::error_code start();

  // Before start(): accept on these listening sockets instead of binding
  // the constructor's address. Each must pass checkListener() with that
  // address's family (a default SocketAddress: any inet or unix family);
  // the first failure is returned (ListenerError) and nothing is kept. At
  // most kMaxAdoptedListeners. Without reusePort (or without I/O threads)
  // every socket is watched on the base loop. With reusePort, socket i goes
  // to I/O loop i % loops; loops left without one get a dup() of socket
  // i % count (the same accept queue, watched from two loops), so every
  // loop accepts whatever the counts. listenAddress() is the first
  // socket's. Base loop thread; EISCONN after start().
  [[nodiscard]] std::error_code adoptListeners(std::vector<Fd> listeners);
  // Close-on-exec dup()s of every listening socket (base loop's first, then
  // each I/O loop's), for a successor process; the sockets keep accepting
  // here until stopAccepting(). Empty with `ec` set when not started,
  // already stopped accepting, or out of descriptors. Base loop thread;
  // waits for each I/O loop to answer.
  [[nodiscard]] std::vector<Fd> exportListeners(std::error_code& ec);
  // Closes this process's listening sockets; connections stay as they are.
  // A socket also held by another process (exported) keeps its queue, and
  // that process accepts what is in it. Base loop thread; returns once no
  // loop accepts (it waits for each I/O loop).
  void stopAccepting();
  // The old process's half of a handoff: stopAccepting(), then wait for
  // every connection to close on its own (the application closes them when
  // their last response has gone out). `done` runs on the base loop when the
  // last one is gone. After `timeout`, what is left gets stop()'s treatment
  // (graceful shutdown, aborted after stopTimeout). A stop signal
  // (stopOnSignals) during a drain starts that at once; a second aborts.
  void drain(Duration timeout, std::function<void()> done = {});
  // Graceful stop: stop accepting, shutdown() every connection, and after
  // stopTimeout abort whatever is left. `done` runs on the base loop once
  // every connection is gone. During a drain() it ends the wait at once
  // (a non-empty `done` replaces the drain's).
  void stop(std::function<void()> done = {});

  // The operator's way out. The first of `signals` starts a graceful stop();
  // when it completes, `done` runs on the base loop (default: quit the base
  // loop). A second signal while stopping (whoever started the stop) aborts
  // every connection still open at once (RST, queued output dropped): the
  // operator who presses Ctrl-C twice does not want to wait for
  // stopTimeout. `done` then runs as soon as they are gone. `done` runs
  // from a task of its own, never inside the signal's callback, so it may
  // destroy the server. A signal before start() (or after a failed one)
  // runs `done` at once.
  //
  // Base loop thread, before or after start(); a later call replaces the
  // signals and `done`. Works with I/O threads, wherever the base loop runs
  // (core/SignalWatcher.h). Fails as SignalWatcher does (EINVAL for a
  // signal that cannot be caught); the server is unchanged then.
  [[nodiscard]] std::error_code stopOnSignals(std::initializer_list<int> signals,
                                              std::function<void()> done = {});

  // The bound address (useful with port 0).
  [[nodiscard]] SocketAddress listenAddress() const { return bound_; }
  [[nodiscard]] std::size_t connectionCount() const noexcept {
    return count_.load(std::memory_order_relaxed);
  }
  // Counters plus the TIME_WAIT count, which costs a netlink dump: call it
  // for metrics, not per message.
  [[nodiscard]] ServerStats stats() const;
  [[nodiscard]] EventLoop& loop() const noexcept { return loop_; }
  [[nodiscard]] LoopThreadPool& pool() noexcept { return pool_; }
  // Calls f(conn) for each live connection, on that connection's loop.
  //  - Threads: callable from any thread once start() has returned and
  //    until the destructor begins (it only posts to each I/O loop). f runs
  //    on each connection's own loop thread, so it may use the connection
  //    like any handler does: write, shutdown, close.
  //  - When: f runs now, before this returns, for connections of the
  //    calling thread's own loop (the base loop with ioThreads == 0, or the
  //    I/O loop it is called from); for every other loop it is queued, runs
  //    after this returns, and nothing reports its completion (queue a task
  //    on each loop after it to wait: tasks run in order).
  //  - Which: the connections in that loop's table when f runs there; one
  //    accepted meanwhile may be missed, and one closed by an earlier f is
  //    still visited (its close completes on a later turn of the loop).
  //  - f is copied once per loop and must not destroy the server or call
  //    stop(); it may call forEachConnection again. A server destroyed
  //    before a queued f runs skips it.
  void forEachConnection(std::function<void(const Connection::Ptr&)> f);

 private:
  struct Slot {                // one per I/O loop; touched only on that loop
    Server* server = nullptr;  // for the connections' closed hook, whose context is the slot
    EventLoop* loop = nullptr;
    // Unordered; a connection knows its index (ConnectionAccess::ownerIndex),
    // so removal is a swap with the last: 16 bytes a connection, no node.
    std::vector<Connection::Ptr> connections;
    void removeConnection(const Connection& c);
    std::vector<std::unique_ptr<Acceptor>> acceptors;  // with reusePort: one, or adopted ones
  };

  void onAccepted(Slot& slot, Socket socket, const SocketAddress& peer);
  void startConnection(Slot& slot, Socket socket, const SocketAddress& peer, std::uint64_t id);
  void onClosed(Slot& slot, const Connection::Ptr& conn);
  Slot& slotFor(EventLoop& loop);
  void finishStopIfDone();
  void beginGracefulStop();  // stopping_ is set: shut every connection down, abort after stopTimeout
  [[nodiscard]] std::unique_ptr<Acceptor> makeAcceptor(Slot& slot, EventLoop& on);
  [[nodiscard]] std::error_code startAdopted();
  void abortRemaining();  // every connection, on its own loop
  void onStopSignal(int signo, const std::function<void()>& done);
  // Base loop: pause or resume reading everywhere for the output budget.
  void reviewBudget();
  void enforceBudget();  // the grace ran out: reset the largest queues
  [[nodiscard]] bool admitPeer(const SocketAddress& peer);
  void releasePeer(const SocketAddress& peer);
  void runOnEachLoopAndWait(const std::function<void(Slot&)>& f);

  EventLoop& loop_;
  SocketAddress listen_;
  SocketAddress bound_;
  ServerOptions options_;
  // options_.connection, once for every connection (Connection's shared form).
  std::shared_ptr<const ConnectionOptions> connectionOptions_;
  PipelineInit init_;
  LoopThreadPool pool_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<std::unique_ptr<Acceptor>> acceptors_;  // without reusePort: one, or adopted ones
  std::vector<Fd> adopted_;                           // adoptListeners() until start()
  std::atomic<std::size_t> count_{0};
  std::atomic<std::uint64_t> nextId_{1};
  std::atomic<std::uint64_t> refusedFull_{0};
  std::atomic<std::uint64_t> refusedPerPeer_{0};
  std::unique_ptr<OutputBudget> budget_;
  std::atomic<bool> budgetPaused_{false};  // written on the base loop, read by I/O loops
  TimerId budgetTimer_;
  std::atomic<std::uint64_t> budgetPauses_{0};
  std::atomic<std::uint64_t> budgetCloses_{0};
  std::mutex peersMutex_;                                 // accept and close run on different loops
  std::unordered_map<std::string, std::size_t> perPeer_;  // guarded by peersMutex_
  std::atomic<std::uint64_t> closed_{0};
  std::array<std::atomic<std::uint64_t>, kCloseReasonCount> closedBy_{};
  std::atomic<std::uint64_t> bytesIn_{0};
  std::atomic<std::uint64_t> bytesOut_{0};
  bool started_ = false;
  std::atomic<bool> stopping_{false};  // read by I/O loops
  bool draining_ = false;              // stopping_ by drain(), connections not yet shut down
  TimerId drainTimer_;
  std::function<void()> stopDone_;
  TimerId stopTimer_;
  std::unique_ptr<SignalWatcher> stopSignals_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  // What tasks capture. I/O loops copy it while the destructor resets alive_
  // on the owner's loop; copying this never-modified weak_ptr (instead of
  // reading the shared_ptr object being reset) is what keeps that race-free.
  const std::weak_ptr<bool> aliveWeak_{alive_};
};

}  // namespace keel
