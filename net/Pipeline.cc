#include "keel/net/Pipeline.h"

#include "keel/core/Log.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/internal/ConnectionAccess.h"

namespace keel {

std::string_view toString(CloseMode mode) noexcept {
  switch (mode) {
    case CloseMode::Flush:
      return "flush";
    case CloseMode::Now:
      return "now";
    case CloseMode::Reset:
      return "reset";
  }
  return "unknown";
}

std::string_view toString(HalfClosePolicy policy) noexcept {
  switch (policy) {
    case HalfClosePolicy::CloseNow:
      return "close-now";
    case HalfClosePolicy::FinishWrites:
      return "finish-writes";
    case HalfClosePolicy::StayOpen:
      return "stay-open";
  }
  return "unknown";
}

// ---- Handler defaults: pass everything on ---------------------------------
void Handler::onConnected(HandlerContext& ctx) { ctx.fireConnected(); }
void Handler::onData(HandlerContext& ctx, Buffer& in) { ctx.fireData(in); }
void Handler::onFrame(HandlerContext& ctx, std::span<const char> frame) { ctx.fireFrame(frame); }
void Handler::onPeerHalfClosed(HandlerContext& ctx, PeerFin& fin) { ctx.firePeerHalfClosed(fin); }
void Handler::onReadComplete(HandlerContext& ctx) { ctx.fireReadComplete(); }
void Handler::onHighWatermark(HandlerContext& ctx, std::size_t queued) { ctx.fireHighWatermark(queued); }
void Handler::onWritable(HandlerContext& ctx) { ctx.fireWritable(); }
void Handler::onUserEvent(HandlerContext& ctx, const UserEvent& event) { ctx.fireUserEvent(event); }
void Handler::onClosed(HandlerContext& ctx, CloseReason reason) { ctx.fireClosed(reason); }
std::error_code Handler::write(HandlerContext& ctx, const Slices& data) { return ctx.write(data); }
std::error_code Handler::writeFrame(HandlerContext& ctx, const Slices& payload) {
  return ctx.writeFrame(payload);
}
void Handler::flush(HandlerContext& ctx) { ctx.flush(); }
void Handler::shutdown(HandlerContext& ctx, CloseReason reason) { ctx.shutdown(reason); }
void Handler::close(HandlerContext& ctx, CloseReason reason, CloseMode mode) { ctx.close(reason, mode); }

namespace {

// The socket end: outbound operations become connection I/O.
class HeadHandler final : public Handler {
 public:
  std::string_view name() const noexcept override { return "head"; }
  std::error_code write(HandlerContext& ctx, const Slices& data) override {
    return ConnectionAccess::write(ctx.connection(), data);
  }
  // No codec turned the message into bytes: it is bytes already.
  std::error_code writeFrame(HandlerContext& ctx, const Slices& payload) override {
    return ConnectionAccess::write(ctx.connection(), payload);
  }
  void flush(HandlerContext& ctx) override { ConnectionAccess::flush(ctx.connection()); }
  void shutdown(HandlerContext& ctx, CloseReason reason) override {
    ConnectionAccess::shutdown(ctx.connection(), reason);
  }
  void close(HandlerContext& ctx, CloseReason reason, CloseMode mode) override {
    ConnectionAccess::close(ctx.connection(), reason, mode);
  }
};

// The application end: inbound events nobody consumed stop here, and the
// peer-FIN policy that arrives is carried out (PeerFin).
class TailHandler final : public Handler {
 public:
  std::string_view name() const noexcept override { return "tail"; }
  void onConnected(HandlerContext&) override {}
  void onData(HandlerContext&, Buffer&) override {}  // left in the input buffer
  void onFrame(HandlerContext& ctx, std::span<const char> frame) override {
    KEEL_DEBUG("conn {}: frame of {} bytes reached the end of the pipeline unhandled", ctx.connection().id(),
               frame.size());
  }
  void onPeerHalfClosed(HandlerContext& ctx, PeerFin& fin) override {
    switch (fin.policy) {
      case HalfClosePolicy::FinishWrites:
        ctx.close(CloseReason::PeerClosed, CloseMode::Flush);
        break;
      case HalfClosePolicy::CloseNow:
        ctx.close(CloseReason::PeerClosed, CloseMode::Now);
        break;
      case HalfClosePolicy::StayOpen:
        break;  // the application answers and closes (HalfClose bounds the wait)
    }
  }
  void onReadComplete(HandlerContext&) override {}
  void onHighWatermark(HandlerContext&, std::size_t) override {}
  void onWritable(HandlerContext&) override {}
  void onUserEvent(HandlerContext&, const UserEvent&) override {}
  void onClosed(HandlerContext&, CloseReason) override {}
};

}  // namespace

// ---- HandlerContext ---------------------------------------------------------
Connection& HandlerContext::connection() const noexcept { return pipeline_->conn_; }
EventLoop& HandlerContext::loop() const noexcept { return pipeline_->conn_.loop(); }

HandlerContext* HandlerContext::nextLive() const noexcept {
  HandlerContext* c = next_;
  while (c->removed_) c = c->next_;  // the tail is never removed
  return c;
}

HandlerContext* HandlerContext::prevLive() const noexcept {
  HandlerContext* c = prev_;
  while (c->removed_) c = c->prev_;  // the head is never removed
  return c;
}

#define KEEL_INBOUND(call)           \
  Pipeline::Guard guard(*pipeline_); \
  HandlerContext* n = nextLive();    \
  n->handler_->call;

#define KEEL_OUTBOUND(call)          \
  Pipeline::Guard guard(*pipeline_); \
  HandlerContext* n = prevLive();    \
  return n->handler_->call;

void HandlerContext::fireConnected() { KEEL_INBOUND(onConnected(*n)) }
void HandlerContext::fireData(Buffer& in) { KEEL_INBOUND(onData(*n, in)) }
void HandlerContext::fireFrame(std::span<const char> frame) { KEEL_INBOUND(onFrame(*n, frame)) }
void HandlerContext::firePeerHalfClosed(PeerFin& fin) { KEEL_INBOUND(onPeerHalfClosed(*n, fin)) }
void HandlerContext::fireReadComplete() { KEEL_INBOUND(onReadComplete(*n)) }
void HandlerContext::fireHighWatermark(std::size_t queued) { KEEL_INBOUND(onHighWatermark(*n, queued)) }
void HandlerContext::fireWritable() { KEEL_INBOUND(onWritable(*n)) }
void HandlerContext::fireUserEvent(const UserEvent& event) { KEEL_INBOUND(onUserEvent(*n, event)) }
void HandlerContext::fireClosed(CloseReason reason){
    KEEL_INBOUND(onClosed(*n, reason))} std::error_code HandlerContext::write(const Slices& data){
    KEEL_OUTBOUND(write(*n, data))} std::error_code HandlerContext::writeFrame(const Slices& payload) {
  KEEL_OUTBOUND(writeFrame(*n, payload))
}
void HandlerContext::flush() { KEEL_OUTBOUND(flush(*n)) }
void HandlerContext::shutdown(CloseReason reason) { KEEL_OUTBOUND(shutdown(*n, reason)) }
void HandlerContext::close(CloseReason reason, CloseMode mode) { KEEL_OUTBOUND(close(*n, reason, mode)) }

#undef KEEL_INBOUND
#undef KEEL_OUTBOUND

void HandlerContext::remove() { pipeline_->remove(*handler_); }

// ---- Pipeline ---------------------------------------------------------------
namespace {
// Stateless, so one of each serves every pipeline on every thread.
HeadHandler g_head;
TailHandler g_tail;
}  // namespace

HandlerContext::~HandlerContext() {
  if (owned_) delete handler_;
}

Pipeline::Pipeline(Connection& conn)
    : conn_(conn), head_(*this, &g_head, false), tail_(*this, &g_tail, false) {
  head_.next_ = &tail_;
  tail_.prev_ = &head_;
}

Pipeline::~Pipeline() {
  // Normally empty by now (removeAll at close): this covers a connection
  // destroyed while still holding handlers.
  for (HandlerContext* c = head_.next_; c != &tail_;) {
    HandlerContext* next = c->next_;
    delete c;
    c = next;
  }
  collect();
}

void Pipeline::insertBefore(HandlerContext* at, std::unique_ptr<Handler> h) {
  KEEL_ASSERT_IN_LOOP(conn_.loop(), "Pipeline::add");
  auto* c = new HandlerContext(*this, h.get(), true);
  (void)h.release();  // c owns it now
  c->prev_ = at->prev_;
  c->next_ = at;
  at->prev_->next_ = c;
  at->prev_ = c;
  ++count_;
  if (c->handler_->encodesMessages()) ++codecs_;
  Guard guard(*this);
  c->handler_->handlerAdded(*c);
}

bool Pipeline::remove(const Handler& h) {
  KEEL_ASSERT_IN_LOOP(conn_.loop(), "Pipeline::remove");
  for (HandlerContext* c = head_.next_; c != &tail_; c = c->next_) {
    if (c->handler_ != &h) continue;
    Guard guard(*this);
    unlink(c);
    c->handler_->handlerRemoved(*c);
    return true;
  }
  return false;
}

void Pipeline::unlink(HandlerContext* c) {
  // The context keeps its own prev_/next_ so an event currently inside it can
  // still find its way on; only its neighbours forget it.
  c->prev_->next_ = c->next_;
  c->next_->prev_ = c->prev_;
  c->removed_ = true;
  --count_;
  if (c->handler_->encodesMessages()) --codecs_;
  if (!graveyard_) graveyard_ = std::make_unique<std::vector<HandlerContext*>>();
  graveyard_->push_back(c);
}

void Pipeline::collect() noexcept {
  // A handler's destructor may remove another, which starts a new graveyard.
  while (graveyard_) {
    const auto dead = std::move(graveyard_);
    for (HandlerContext* c : *dead) delete c;
  }
}

void Pipeline::removeAll() {
  Guard guard(*this);
  while (head_.next_ != &tail_) {
    HandlerContext* c = head_.next_;
    unlink(c);
    c->handler_->handlerRemoved(*c);
  }
}

std::vector<std::string_view> Pipeline::names() const {
  std::vector<std::string_view> out;
  for (HandlerContext* c = head_.next_; c != &tail_; c = c->next_) out.push_back(c->handler_->name());
  return out;
}

void Pipeline::fireConnected() { head_.fireConnected(); }
void Pipeline::fireData(Buffer& in) { head_.fireData(in); }
void Pipeline::firePeerHalfClosed(PeerFin& fin) { head_.firePeerHalfClosed(fin); }
void Pipeline::fireReadComplete() { head_.fireReadComplete(); }
void Pipeline::fireHighWatermark(std::size_t queued) { head_.fireHighWatermark(queued); }
void Pipeline::fireWritable() { head_.fireWritable(); }
void Pipeline::fireUserEvent(const UserEvent& event) { head_.fireUserEvent(event); }
void Pipeline::fireClosed(CloseReason reason) { head_.fireClosed(reason); }
std::error_code Pipeline::write(const Slices& data) { return tail_.write(data); }
std::error_code Pipeline::writeFrame(const Slices& payload) { return tail_.writeFrame(payload); }
void Pipeline::flush() { tail_.flush(); }
void Pipeline::shutdown(CloseReason reason) { tail_.shutdown(reason); }
void Pipeline::close(CloseReason reason, CloseMode mode) { tail_.close(reason, mode); }

}  // namespace keel
