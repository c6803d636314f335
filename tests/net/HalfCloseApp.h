// The application end of the HalfClose tests, shared by the embedded tests
// (manual clock) and the real-socket ones: optionally queues a large reply
// on connect, counts what arrives, records the FIN and the close, and
// optionally answers the FIN later from a timer.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "keel/core/EventLoop.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/Handler.h"
#include "keel/net/Pipeline.h"
#include "support/EventLog.h"

namespace keel::test {

using namespace std::chrono_literals;

inline constexpr std::size_t k8MiB = 8u << 20;

// What the application end saw. Loop thread writes, test thread reads.
struct HalfCloseSeen : EventLog {
  std::atomic<int> reason{-1};
  std::atomic<std::uint64_t> bytesIn{0};
  TimePoint finAt{};
  TimePoint closedAt{};
  std::weak_ptr<Connection> conn;

  bool closed() const { return reason.load() >= 0; }
  Duration finToClose() {
    std::lock_guard l(m);
    return closedAt - finAt;
  }
};

class HalfCloseApp final : public Handler {
 public:
  HalfCloseApp(HalfCloseSeen* seen, std::size_t replyOnConnect,
               std::chrono::milliseconds answerAfterFin = 0ms)
      : seen_(seen), replyOnConnect_(replyOnConnect), answerAfterFin_(answerAfterFin) {}
  ~HalfCloseApp() override {
    if (loop_ != nullptr) loop_->cancel(answer_);
  }
  void onConnected(HandlerContext& ctx) override {
    loop_ = &ctx.loop();
    if (replyOnConnect_ > 0) ctx.write(std::string(replyOnConnect_, 'r'));
  }
  void onData(HandlerContext&, Buffer& in) override {
    seen_->bytesIn += in.readableBytes();
    in.retrieveAll();
  }
  void onPeerHalfClosed(HandlerContext& ctx, PeerFin& fin) override {
    {
      std::lock_guard l(seen_->m);
      seen_->finAt = ctx.loop().now();
    }
    seen_->add("fin");
    if (answerAfterFin_ > 0ms) {
      // The answer depends on everything the peer sent, so it can only be
      // computed now, and it is written well after the FIN.
      HandlerContext* c = &ctx;
      answer_ = ctx.loop().runAfter(answerAfterFin_, [this, c] {
        answer_ = {};
        (void)c->write("count=" + std::to_string(seen_->bytesIn.load()));
        c->close();
      });
    }
    ctx.firePeerHalfClosed(fin);
  }
  void onClosed(HandlerContext& ctx, CloseReason r) override {
    if (loop_ != nullptr) loop_->cancel(answer_);
    {
      std::lock_guard l(seen_->m);
      seen_->closedAt = ctx.loop().now();
    }
    seen_->add("closed:" + std::string(toString(r)));
    seen_->reason = static_cast<int>(r);
  }

 private:
  HalfCloseSeen* seen_;
  std::size_t replyOnConnect_;
  std::chrono::milliseconds answerAfterFin_;
  EventLoop* loop_ = nullptr;
  TimerId answer_;
};

}  // namespace keel::test
