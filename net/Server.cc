#include "keel/net/Server.h"

#include <future>

#include "keel/core/Log.h"
#include "keel/net/TimeWaitCounter.h"
#include "keel/net/internal/Acceptor.h"
#include "keel/net/internal/ConnectionAccess.h"

namespace keel {

Server::Server(EventLoop& loop, SocketAddress listen, ServerOptions options)
    : loop_(loop),
      listen_(listen),
      options_(std::move(options)),
      pool_(loop, options_.ioThreads, "keel-io", options_.loopOptions) {}

Server::~Server() {
  if (!started_) return;
  loop_.assertInLoopThread();
  alive_.reset();  // tasks still queued anywhere now skip this server
  if (stopTimer_.valid()) loop_.cancel(stopTimer_);
  acceptor_.reset();
  runOnEachLoopAndWait([](Slot& s) {
    s.acceptor.reset();
    for (auto& [id, conn] : s.connections) conn->close(CloseReason::Shutdown, CloseMode::Now);
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
    slot->loop = l;
    slots_.push_back(std::move(slot));
  }
  std::error_code result;
  if (options_.reusePort && options_.ioThreads > 0) {
    // Every I/O loop gets its own listener on the same address; the first one
    // fixes the port when port 0 was asked for.
    bound_ = listen_;
    runOnEachLoopAndWait([this, &result](Slot& s) {
      if (result) return;
      s.acceptor = std::make_unique<Acceptor>(
          *s.loop,
          [this, &s](Socket sock, const SocketAddress& peer) { onAccepted(s, std::move(sock), peer); },
          options_.acceptBatch);
      result = s.acceptor->listen(bound_, true, options_.backlog);
      if (!result) bound_ = s.acceptor->localAddress();
    });
  } else {
    acceptor_ = std::make_unique<Acceptor>(
        loop_,
        [this](Socket sock, const SocketAddress& peer) {
          onAccepted(*slots_.front(), std::move(sock), peer);
        },
        options_.acceptBatch);
    result = acceptor_->listen(listen_, false, options_.backlog);
    if (!result) bound_ = acceptor_->localAddress();
  }
  if (result) {
    KEEL_ERROR("server: cannot listen on {}: {}", listen_.toString(), result.message());
    acceptor_.reset();
    runOnEachLoopAndWait([](Slot& s) { s.acceptor.reset(); });
    pool_.stop();
    slots_.clear();
    return result;
  }
  started_ = true;
  KEEL_INFO("server: listening on {} with {} I/O loop(s)", bound_.toString(), pool_.size());
  return {};
}

void Server::onAccepted(Slot& acceptingSlot, Socket socket, const SocketAddress& peer) {
  if (count_.load(std::memory_order_relaxed) >= options_.maxConnections) {
    refusedFull_.fetch_add(1, std::memory_order_relaxed);
    KEEL_DEBUG("server: {} connections, refusing one more", options_.maxConnections);
    return;  // the socket closes here: the client sees a FIN before any data
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
  auto conn = std::make_shared<Connection>(*slot.loop, std::move(socket), id, options_.connection);
  // accept()'s address: getpeername fails on a connection reset in the backlog.
  if (peer.length() > 0) ConnectionAccess::setPeerAddress(*conn, peer);
  // The owner's hook is not reachable from the PipelineInit (or any user
  // code), so the table and the count cannot be bypassed.
  ConnectionAccess::setClosedHook(*conn, [this, &slot](const Connection::Ptr& c) { onClosed(slot, c); });
  slot.connections.emplace(id, conn);
  if (init_) init_(*conn);
  ConnectionAccess::start(*conn);
}

void Server::onClosed(Slot& slot, const Connection::Ptr& conn) {
  const auto reason = conn->closeReason().value_or(CloseReason::Error);
  closed_.fetch_add(1, std::memory_order_relaxed);
  closedBy_[static_cast<std::size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
  // Drop the table's reference after this iteration, never inside the
  // connection's own close path.
  slot.loop->queueInLoop([this, &slot, conn, alive = aliveWeak_] {
    if (alive.expired()) return;
    slot.connections.erase(conn->id());
    if (count_.fetch_sub(1, std::memory_order_relaxed) == 1 && stopping_) {
      loop_.runInLoop([this, alive] {
        if (!alive.expired()) finishStopIfDone();
      });
    }
  });
}

void Server::stop(std::function<void()> done) {
  loop_.assertInLoopThread();
  if (!started_ || stopping_) return;
  stopping_ = true;
  stopDone_ = std::move(done);
  if (acceptor_) acceptor_->close();  // closed, not destroyed: stats() still reads it
  for (auto& s : slots_) {
    s->loop->runInLoop([&slot = *s, alive = aliveWeak_] {
      if (alive.expired()) return;
      if (slot.acceptor) slot.acceptor->close();
      for (auto& [id, conn] : slot.connections) conn->shutdown(CloseReason::Shutdown);
    });
  }
  stopTimer_ = loop_.runAfter(options_.stopTimeout, [this] {
    stopTimer_ = {};
    if (count_.load() != 0)
      KEEL_INFO("server: {} connection(s) still open after the stop timeout; aborting", count_.load());
    for (auto& s : slots_) {
      s->loop->runInLoop([&slot = *s, alive = aliveWeak_] {
        if (alive.expired()) return;
        for (auto& [id, conn] : slot.connections) conn->abort(CloseReason::Shutdown);
      });
    }
  });
  finishStopIfDone();
}

void Server::finishStopIfDone() {
  if (!stopping_ || count_.load(std::memory_order_relaxed) != 0) return;
  if (stopTimer_.valid()) loop_.cancel(stopTimer_);
  stopTimer_ = {};
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
      for (auto& [id, conn] : slot.connections) f(conn);
    });
  }
}

ServerStats Server::stats() const {
  ServerStats st;
  st.accepted = nextId_.load(std::memory_order_relaxed) - 1;
  st.refusedFull = refusedFull_.load(std::memory_order_relaxed);
  st.closed = closed_.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < closedBy_.size(); ++i)
    st.closedBy[i] = closedBy_[i].load(std::memory_order_relaxed);
  st.open = count_.load(std::memory_order_relaxed);
  if (started_ && bound_.isInet()) st.timeWait = serverTimeWait(bound_).value_or(0);
  // Acceptors live until the server is destroyed and their counters are
  // atomic, so this is safe from any thread.
  if (acceptor_) st.droppedNoFd += acceptor_->stats().droppedNoFd.load(std::memory_order_relaxed);
  for (const auto& s : slots_) {
    if (s->acceptor) st.droppedNoFd += s->acceptor->stats().droppedNoFd.load(std::memory_order_relaxed);
  }
  return st;
}

}  // namespace keel
