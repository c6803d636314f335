// What the IdleReaper tests watch: the application end of a pipeline that
// records idle events and the close, per connection id. Shared by the
// embedded tests (manual clock) and the real-socket ones, so both assert the
// same things. Guarded by a mutex because the real-socket tests write on the
// server's loop thread and read on the test thread.
#pragma once

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "keel/core/EventLoop.h"
#include "keel/heartbeat/IdleReaper.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/Handler.h"

namespace keel::test {

struct IdleSeen {
  std::mutex m;
  std::map<std::uint64_t, std::vector<IdleEvent>> events;
  std::map<std::uint64_t, CloseReason> reasons;
  std::map<std::uint64_t, Duration> lifetimes;  // created -> closed, loop time
  // Per writer-idle event: had the peer's kernel acknowledged everything?
  std::map<std::uint64_t, std::vector<bool>> deliveredAtWriterIdle;

  int count(std::uint64_t id, IdleKind kind) {
    std::lock_guard l(m);
    auto it = events.find(id);
    if (it == events.end()) return 0;
    return static_cast<int>(std::count_if(it->second.begin(), it->second.end(),
                                          [kind](const IdleEvent& e) { return e.kind == kind; }));
  }
  std::vector<IdleEvent> eventsOf(std::uint64_t id) {
    std::lock_guard l(m);
    return events[id];
  }
  bool closed(std::uint64_t id) {
    std::lock_guard l(m);
    return reasons.count(id) != 0;
  }
  std::size_t closedCount() {
    std::lock_guard l(m);
    return reasons.size();
  }
  CloseReason reason(std::uint64_t id) {
    std::lock_guard l(m);
    return reasons.at(id);
  }
  Duration lifetime(std::uint64_t id) {
    std::lock_guard l(m);
    return lifetimes.at(id);
  }
};

// The application: records idle events and the close, consumes input,
// optionally answers an idle event with a last word.
class IdleObserver final : public Handler {
 public:
  explicit IdleObserver(IdleSeen* seen, std::string goodbye = {})
      : seen_(seen), goodbye_(std::move(goodbye)) {}
  void onData(HandlerContext&, Buffer& in) override { in.retrieveAll(); }
  void onUserEvent(HandlerContext& ctx, const UserEvent& ev) override {
    if (const auto* idle = dynamic_cast<const IdleEvent*>(&ev)) {
      {
        std::lock_guard l(seen_->m);
        seen_->events[ctx.connection().id()].push_back(*idle);
        if (idle->kind == IdleKind::Writer) {
          const Connection& c = ctx.connection();
          const auto info = c.tcpInfo();
          const bool delivered = c.outputBytes() == 0 && (!info || info->bytesAcked >= c.stats().bytesOut);
          seen_->deliveredAtWriterIdle[c.id()].push_back(delivered);
        }
      }
      if (!goodbye_.empty()) ctx.write(goodbye_);
    }
    ctx.fireUserEvent(ev);
  }
  void onClosed(HandlerContext& ctx, CloseReason r) override {
    std::lock_guard l(seen_->m);
    seen_->reasons[ctx.connection().id()] = r;
    seen_->lifetimes[ctx.connection().id()] = ctx.loop().now() - ctx.connection().stats().created;
  }

 private:
  IdleSeen* seen_;
  std::string goodbye_;
};

// Writes `bytes` once, on connect.
class BigWriter final : public Handler {
 public:
  explicit BigWriter(std::size_t bytes) : bytes_(bytes) {}
  void onConnected(HandlerContext& ctx) override {
    const std::string blob(bytes_, 'w');
    ctx.write(blob);
    ctx.fireConnected();
  }

 private:
  std::size_t bytes_;
};

inline IdleLimits readerOnly(std::chrono::milliseconds ms) {
  IdleLimits l;
  l.reader = ms;
  return l;
}

}  // namespace keel::test
