#include "keel/net/Server.h"

#include <algorithm>
#include <future>

#include <fcntl.h>

#include "keel/core/Log.h"
#include "keel/core/SignalWatcher.h"
#include "keel/net/TimeWaitCounter.h"
#include "keel/net/internal/Acceptor.h"
#include "keel/net/internal/ConnectionAccess.h"
#include "keel/net/internal/OutputBudget.h"

namespace keel {

Server::Server(EventLoop& loop, SocketAddress listen, ServerOptions options)
    : loop_(loop),
      listen_(listen),
      options_(std::move(options)),
      connectionOptions_(std::make_shared<const ConnectionOptions>(options_.connection)),
      pool_(loop, options_.ioThreads, "keel-io", options_.loopOptions) {
  if (options_.outputBudget > 0) {
    // Crossings are reported from any I/O loop; the decision is the base
    // loop's, on the total as it is when the task runs.
    budget_ = std::make_unique<OutputBudget>(options_.outputBudget, [this, alive = aliveWeak_] {
      loop_.queueInLoop([this, alive] {
        if (!alive.expired()) reviewBudget();
      });
    });
  }
}

Server::~Server() {
  if (!started_) return;
  loop_.assertInLoopThread();
  alive_.reset();  // tasks still queued anywhere now skip this server
  if (stopTimer_.valid()) loop_.cancel(stopTimer_);
  if (budgetTimer_.valid()) loop_.cancel(budgetTimer_);
  if (drainTimer_.valid()) loop_.cancel(drainTimer_);
  acceptors_.clear();
  runOnEachLoopAndWait([](Slot& s) {
    s.acceptors.clear();
    for (auto& conn : s.connections) conn->close(CloseReason::Shutdown, CloseMode::Now);
    s.connections.clear();
  });
  pool_.stop();
}

Server::Slot& Server::slotFor(EventLoop& loop) {
  for (auto& s : slots_) {
    if (s->loop == &loop) return *s;
  }
  return *slots_.front();
}

void Server::runOnEachLoopAndWait(const std::function<void(Slot&)>& f) {
  for (auto& s : slots_) {
    if (s->loop == &loop_) {
      f(*s);
      continue;
    }
    std::promise<void> done;
    s->loop->runInLoop([&f, &s, &done] {
      f(*s);
      done.set_value();
    });
    done.get_future().wait();
  }
}

std::error_code Server::start() {
  loop_.assertInLoopThread();
  if (started_) return std::make_error_code(std::errc::already_connected);
  pool_.start();
  for (EventLoop* l : pool_.loops()) {
    auto slot = std::make_unique<Slot>();
    slot->server = this;
    slot->loop = l;
    slots_.push_back(std::move(slot));
  }
  std::error_code result;
  if (!adopted_.empty()) {
    result = startAdopted();
  } else if (options_.reusePort && options_.ioThreads > 0) {
    // Every I/O loop gets its own listener on the same address; the first one
    // fixes the port when port 0 was asked for.
    bound_ = listen_;
    runOnEachLoopAndWait([this, &result](Slot& s) {
      if (result) return;
      s.acceptors.push_back(makeAcceptor(s, *s.loop));
      result = s.acceptors.back()->listen(bound_, true, options_.backlog);
      if (!result) bound_ = s.acceptors.back()->localAddress();
    });
  } else {
    acceptors_.push_back(makeAcceptor(*slots_.front(), loop_));
    result = acceptors_.back()->listen(listen_, false, options_.backlog);
    if (!result) bound_ = acceptors_.back()->localAddress();
  }
  if (result) {
    KEEL_ERROR("server: cannot listen on {}: {}", listen_.toString(), result.message());
    acceptors_.clear();
    runOnEachLoopAndWait([](Slot& s) { s.acceptors.clear(); });
    pool_.stop();
    slots_.clear();
    return result;
  }
  started_ = true;
  KEEL_INFO("server: listening on {} with {} I/O loop(s)", bound_.toString(), pool_.size());
  return {};
}

std::unique_ptr<Acceptor> Server::makeAcceptor(Slot& slot, EventLoop& on) {
  return std::make_unique<Acceptor>(
      on, [this, &slot](Socket sock, const SocketAddress& peer) { onAccepted(slot, std::move(sock), peer); },
      options_.acceptBatch);
}

void Server::onAccepted(Slot& acceptingSlot, Socket socket, const SocketAddress& peer) {
  if (count_.load(std::memory_order_relaxed) >= options_.maxConnections) {
    refusedFull_.fetch_add(1, std::memory_order_relaxed);
    KEEL_DEBUG("server: {} connections, refusing one more", options_.maxConnections);
    return;  // the socket closes here: the client sees a FIN before any data
  }
  if (options_.maxConnectionsPerPeer > 0 && !admitPeer(peer)) {
    refusedPerPeer_.fetch_add(1, std::memory_order_relaxed);
    KEEL_DEBUG("server: {} already has {} connections, refusing one more", peer.toString(),
               options_.maxConnectionsPerPeer);
    return;
  }
  count_.fetch_add(1, std::memory_order_relaxed);
  const std::uint64_t id = nextId_.fetch_add(1, std::memory_order_relaxed);
  Slot& target = options_.reusePort && options_.ioThreads > 0 ? acceptingSlot : slotFor(pool_.next());
  if (target.loop->isInLoopThread()) {
    startConnection(target, std::move(socket), peer, id);
    return;
  }
  // std::function needs a copyable callable, so the descriptor travels as an int.
  const int fd = socket.release().release();
  target.loop->queueInLoop([this, &target, fd, peer, id, alive = aliveWeak_] {
    Socket s{Fd(fd)};
    if (alive.expired()) return;
    startConnection(target, std::move(s), peer, id);
  });
}

void Server::startConnection(Slot& slot, Socket socket, const SocketAddress& peer, std::uint64_t id) {
  auto conn = std::make_shared<Connection>(*slot.loop, std::move(socket), id, connectionOptions_);
  // accept()'s address: getpeername fails on a connection reset in the backlog.
  if (peer.length() > 0) ConnectionAccess::setPeerAddress(*conn, peer);
  // The owner's hook is not reachable from the PipelineInit (or any user
  // code), so the table and the count cannot be bypassed.
  ConnectionAccess::setClosedHook(
      *conn,
      [](void* context, const Connection::Ptr& c) {
        auto* s = static_cast<Slot*>(context);
        s->server->onClosed(*s, c);
      },
      &slot);
  if (budget_) {
    ConnectionAccess::setOutputBudget(*conn, budget_.get());
    if (budgetPaused_.load(std::memory_order_acquire)) ConnectionAccess::setBudgetPause(*conn, true);
  }
  ConnectionAccess::setOwnerIndex(*conn, static_cast<std::uint32_t>(slot.connections.size()));
  slot.connections.push_back(conn);
  if (init_) init_(*conn);
  ConnectionAccess::start(*conn);
}

void Server::Slot::removeConnection(const Connection& c) {
  std::size_t i = ConnectionAccess::ownerIndex(c);
  if (i >= connections.size() || connections[i].get() != &c) return;  // not (or no longer) in this table
  if (i + 1 != connections.size()) {
    connections[i] = std::move(connections.back());
    ConnectionAccess::setOwnerIndex(*connections[i], static_cast<std::uint32_t>(i));
  }
  connections.pop_back();
}

void Server::onClosed(Slot& slot, const Connection::Ptr& conn) {
  const auto reason = conn->closeReason().value_or(CloseReason::Error);
  closed_.fetch_add(1, std::memory_order_relaxed);
  closedBy_[static_cast<std::size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
  bytesIn_.fetch_add(conn->stats().bytesIn, std::memory_order_relaxed);
  bytesOut_.fetch_add(conn->stats().bytesOut, std::memory_order_relaxed);
  if (options_.maxConnectionsPerPeer > 0) releasePeer(conn->peerAddress());
  // Drop the table's reference after this iteration, never inside the
  // connection's own close path.
  slot.loop->queueInLoop([this, &slot, conn, alive = aliveWeak_] {
    if (alive.expired()) return;
    slot.removeConnection(*conn);
    if (count_.fetch_sub(1, std::memory_order_relaxed) == 1 && stopping_) {
      loop_.runInLoop([this, alive] {
        if (!alive.expired()) finishStopIfDone();
      });
    }
  });
}

void Server::stop(std::function<void()> done) {
  loop_.assertInLoopThread();
  if (draining_) {  // the drain's wait is over
    if (done) stopDone_ = std::move(done);
    return beginGracefulStop();
  }
  if (!started_ || stopping_) return;
  stopping_ = true;
  stopDone_ = std::move(done);
  beginGracefulStop();
  finishStopIfDone();
}

void Server::beginGracefulStop() {
  draining_ = false;
  if (drainTimer_.valid()) loop_.cancel(drainTimer_);
  drainTimer_ = {};
  stopAccepting();
  for (auto& s : slots_) {
    s->loop->runInLoop([&slot = *s, alive = aliveWeak_] {
      if (alive.expired()) return;
      for (auto& conn : slot.connections) conn->shutdown(CloseReason::Shutdown);
    });
  }
  stopTimer_ = loop_.runAfter(options_.stopTimeout, [this] {
    stopTimer_ = {};
    if (count_.load() != 0)
      KEEL_INFO("server: {} connection(s) still open after the stop timeout; aborting", count_.load());
    abortRemaining();
  });
}

void Server::abortRemaining() {
  for (auto& s : slots_) {
    s->loop->runInLoop([&slot = *s, alive = aliveWeak_] {
      if (alive.expired()) return;
      for (auto& conn : slot.connections) conn->abort(CloseReason::Shutdown);
    });
  }
}

std::error_code Server::stopOnSignals(std::initializer_list<int> signals, std::function<void()> done) {
  KEEL_ASSERT_IN_LOOP(loop_, "Server::stopOnSignals");
  std::error_code ec;
  auto watcher = std::make_unique<SignalWatcher>(
      loop_, signals, [this, done = std::move(done)](int signo) { onStopSignal(signo, done); }, ec);
  if (ec) return ec;
  stopSignals_ = std::move(watcher);
  return {};
}

void Server::onStopSignal(int signo, const std::function<void()>& done) {
  if (draining_) {
    KEEL_INFO("server: signal {} while draining; stopping", signo);
    return beginGracefulStop();
  }
  if (stopping_) {
    KEEL_INFO("server: signal {} while stopping; aborting {} connection(s)", signo, count_.load());
    abortRemaining();
    return;
  }
  KEEL_INFO("server: signal {}; stopping", signo);
  // Queued, so that `done` never runs inside this callback: it may destroy
  // the server, and with it the watcher that is calling.
  auto finish = [&loop = loop_, done] { loop.queueInLoop(done ? done : [&loop] { loop.quit(); }); };
  if (!started_) return finish();
  stop(std::move(finish));
}

void Server::finishStopIfDone() {
  if (!stopping_ || count_.load(std::memory_order_relaxed) != 0) return;
  if (stopTimer_.valid()) loop_.cancel(stopTimer_);
  stopTimer_ = {};
  if (drainTimer_.valid()) loop_.cancel(drainTimer_);
  drainTimer_ = {};
  draining_ = false;
  if (stopDone_) {
    auto done = std::move(stopDone_);
    stopDone_ = nullptr;
    done();
  }
}

void Server::forEachConnection(std::function<void(const Connection::Ptr&)> f) {
  for (auto& s : slots_) {
    s->loop->runInLoop([&slot = *s, f, alive = aliveWeak_] {
      if (alive.expired()) return;
      for (auto& conn : slot.connections) f(conn);
    });
  }
}

namespace {

// The peer's IP without its port: the key of maxConnectionsPerPeer.
std::string peerKey(const SocketAddress& peer) {
  std::string key = peer.toString();
  if (!peer.isInet()) return key;
  const std::size_t colon = key.rfind(':');
  return colon == std::string::npos ? key : key.substr(0, colon);
}

}  // namespace

bool Server::admitPeer(const SocketAddress& peer) {
  std::lock_guard lock(peersMutex_);
  std::size_t& n = perPeer_[peerKey(peer)];
  if (n >= options_.maxConnectionsPerPeer) return false;
  ++n;
  return true;
}

void Server::releasePeer(const SocketAddress& peer) {
  std::lock_guard lock(peersMutex_);
  const auto it = perPeer_.find(peerKey(peer));
  if (it == perPeer_.end()) return;
  if (--it->second == 0) perPeer_.erase(it);
}

void Server::reviewBudget() {
  const bool over = budget_->over();
  if (over == budgetPaused_.load(std::memory_order_relaxed)) return;
  budgetPaused_.store(over, std::memory_order_release);
  if (over) {
    budgetPauses_.fetch_add(1, std::memory_order_relaxed);
    KEEL_WARN("server: {} bytes of output queued, over the {} byte budget; reading paused everywhere",
              budget_->total(), budget_->limit());
    if (!budgetTimer_.valid())
      budgetTimer_ = loop_.runAfter(options_.outputBudgetGrace, [this] { enforceBudget(); });
  } else {
    KEEL_INFO("server: queued output down to {} bytes; reading resumes", budget_->total());
    if (budgetTimer_.valid()) loop_.cancel(budgetTimer_);
    budgetTimer_ = {};
  }
  for (auto& s : slots_) {
    s->loop->runInLoop([&slot = *s, over, alive = aliveWeak_] {
      if (alive.expired()) return;
      for (auto& conn : slot.connections) ConnectionAccess::setBudgetPause(*conn, over);
    });
  }
}

void Server::enforceBudget() {
  budgetTimer_ = {};
  if (!budget_->over()) return;
  // Peers that have not drained for a whole grace period: reset the largest
  // queues until the rest fits the budget.
  std::vector<std::pair<std::size_t, Connection::Ptr>> queues;
  std::mutex m;
  runOnEachLoopAndWait([&](Slot& s) {
    std::lock_guard lock(m);
    for (auto& conn : s.connections) {
      if (conn->outputBytes() > 0) queues.emplace_back(conn->outputBytes(), conn);
    }
  });
  std::sort(queues.begin(), queues.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::int64_t excess = budget_->total() - budget_->limit();
  for (auto& [bytes, conn] : queues) {
    if (excess <= 0) break;
    KEEL_WARN("conn {} ({}): {} bytes queued past the output budget's grace; closing (overloaded)",
              conn->id(), conn->peerAddress().toString(), bytes);
    conn->abort(CloseReason::Overloaded);
    budgetCloses_.fetch_add(1, std::memory_order_relaxed);
    excess -= static_cast<std::int64_t>(bytes);
  }
  // The resets complete on their loops; if the total is still over then,
  // another grace period passes before the next round.
  budgetTimer_ = loop_.runAfter(options_.outputBudgetGrace, [this] { enforceBudget(); });
}

ServerStats Server::stats() const {
  ServerStats st;
  st.accepted = nextId_.load(std::memory_order_relaxed) - 1;
  st.refusedFull = refusedFull_.load(std::memory_order_relaxed);
  st.refusedPerPeer = refusedPerPeer_.load(std::memory_order_relaxed);
  st.budgetPauses = budgetPauses_.load(std::memory_order_relaxed);
  st.budgetCloses = budgetCloses_.load(std::memory_order_relaxed);
  if (budget_) st.queuedOutput = static_cast<std::size_t>(std::max<std::int64_t>(budget_->total(), 0));
  st.closed = closed_.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < closedBy_.size(); ++i)
    st.closedBy[i] = closedBy_[i].load(std::memory_order_relaxed);
  st.open = count_.load(std::memory_order_relaxed);
  st.bytesIn = bytesIn_.load(std::memory_order_relaxed);
  st.bytesOut = bytesOut_.load(std::memory_order_relaxed);
  if (started_ && bound_.isInet()) st.timeWait = serverTimeWait(bound_).value_or(0);
  // Acceptors live until the server is destroyed and their counters are
  // atomic, so this is safe from any thread.
  for (const auto& a : acceptors_) st.droppedNoFd += a->stats().droppedNoFd.load(std::memory_order_relaxed);
  for (const auto& s : slots_) {
    for (const auto& a : s->acceptors)
      st.droppedNoFd += a->stats().droppedNoFd.load(std::memory_order_relaxed);
  }
  return st;
}

}  // namespace keel
