// Server's listening sockets coming from and going to outside the process:
// adoption (socket activation, handoff), export, and the drain that ends a
// handed-over server. Split from Server.cc to keep each file readable.
#include <cerrno>
#include <future>
#include <mutex>

#include <fcntl.h>

#include "keel/core/Log.h"
#include "keel/net/Server.h"
#include "keel/net/internal/Acceptor.h"

namespace keel {

std::error_code Server::adoptListeners(std::vector<Fd> listeners) {
  KEEL_ASSERT_IN_LOOP(loop_, "Server::adoptListeners");
  if (started_) return std::make_error_code(std::errc::already_connected);
  if (listeners.empty()) return std::make_error_code(std::errc::invalid_argument);
  if (listeners.size() > kMaxAdoptedListeners) return ListenerError::TooMany;
  for (const Fd& fd : listeners) {
    if (auto ec = checkListener(fd.get(), listen_.family())) return ec;
  }
  adopted_ = std::move(listeners);
  return {};
}

std::error_code Server::startAdopted() {
  std::vector<Fd> fds = std::move(adopted_);
  adopted_.clear();
  {
    Socket first(std::move(fds.front()));
    bound_ = first.localAddress();
    fds.front() = first.release();
  }
  if (!(options_.reusePort && options_.ioThreads > 0)) {
    for (Fd& fd : fds) {
      acceptors_.push_back(makeAcceptor(*slots_.front(), loop_));
      if (auto ec = acceptors_.back()->adopt(Socket(std::move(fd)))) return ec;
    }
    return {};
  }
  // Loops beyond the sockets share a socket through a dup: two epoll
  // instances watching one queue is correct (accept is non-blocking and the
  // loser sees EAGAIN), just less even than the kernel's reuseport spread.
  const std::size_t count = fds.size();
  for (std::size_t i = count; i < slots_.size(); ++i) {
    const int dup = ::fcntl(fds[i % count].get(), F_DUPFD_CLOEXEC, 3);
    if (dup < 0) return {errno, std::generic_category()};
    fds.emplace_back(dup);
  }
  std::error_code result;
  for (std::size_t i = 0; i < fds.size(); ++i) {
    Slot& s = *slots_[i % slots_.size()];
    std::promise<void> done;
    Fd fd = std::move(fds[i]);
    s.loop->runInLoop([this, &s, &fd, &result, &done] {
      s.acceptors.push_back(makeAcceptor(s, *s.loop));
      if (auto ec = s.acceptors.back()->adopt(Socket(std::move(fd)))) result = ec;
      done.set_value();
    });
    done.get_future().wait();
    if (result) return result;
  }
  return {};
}

std::vector<Fd> Server::exportListeners(std::error_code& ec) {
  KEEL_ASSERT_IN_LOOP(loop_, "Server::exportListeners");
  std::vector<Fd> out;
  ec = started_ && !stopping_ ? std::error_code{} : std::make_error_code(std::errc::not_connected);
  if (ec) return out;
  auto take = [&out, &ec](const std::vector<std::unique_ptr<Acceptor>>& acceptors) {
    for (const auto& a : acceptors) {
      if (ec || !a->listening()) continue;
      Fd fd = a->duplicate(ec);
      if (!ec) out.push_back(std::move(fd));
    }
  };
  take(acceptors_);
  std::mutex m;
  runOnEachLoopAndWait([&](Slot& s) {
    std::lock_guard lock(m);
    take(s.acceptors);
  });
  if (!ec && out.empty()) ec = std::make_error_code(std::errc::not_connected);
  if (ec) out.clear();
  return out;
}

void Server::stopAccepting() {
  KEEL_ASSERT_IN_LOOP(loop_, "Server::stopAccepting");
  // Closed, not destroyed: stats() still reads their counters. Waited for,
  // so that when this returns no loop accepts: a successor that was told
  // "all yours" gets every connection from then on.
  for (auto& a : acceptors_) a->close();
  runOnEachLoopAndWait([](Slot& s) {
    for (auto& a : s.acceptors) a->close();
  });
}

void Server::drain(Duration timeout, std::function<void()> done) {
  loop_.assertInLoopThread();
  if (!started_ || stopping_) return;
  stopping_ = true;  // from here on the last close reports to finishStopIfDone
  draining_ = true;
  stopDone_ = std::move(done);
  stopAccepting();
  KEEL_INFO("server: draining {} connection(s), at most {} ms", count_.load(),
            std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count());
  drainTimer_ = loop_.runAfter(timeout, [this] {
    drainTimer_ = {};
    KEEL_INFO("server: {} connection(s) still open after the drain timeout; stopping them", count_.load());
    beginGracefulStop();
  });
  finishStopIfDone();
}

}  // namespace keel
