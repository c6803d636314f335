#include "keel/core/Watcher.h"

#include "keel/core/EventLoop.h"

namespace keel {

Watcher::Watcher(EventLoop& loop, int fd, Callback cb) : loop_(loop), fd_(fd), cb_(std::move(cb)) {}

Watcher::~Watcher() { detach(); }

std::error_code Watcher::setInterest(std::uint32_t events) noexcept {
  if (events == interest_) return {};  // no epoll_ctl when nothing changed
  return loop_.updateWatcher(*this, events);
}

void Watcher::detach() {
  if (registered_ || interest_ != 0) loop_.removeWatcher(*this);
}

}  // namespace keel
