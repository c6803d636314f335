// The ordered chain of handlers of one connection, and the per-handler
// contexts that move events along it.
//
// Handlers may be added and removed at any time, including from inside an
// event that is passing through them: a removed handler's context stays alive
// (and keeps its links) until the outermost event returns, so an event in
// flight finishes its walk safely.
//
// Thread-safety: loop thread of the owning connection only.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <system_error>
#include <vector>

#include "keel/net/Handler.h"

namespace keel {

class Connection;
class EventLoop;
class Pipeline;

class HandlerContext {
 public:
  [[nodiscard]] Connection& connection() const noexcept;
  [[nodiscard]] EventLoop& loop() const noexcept;
  [[nodiscard]] Pipeline& pipeline() const noexcept { return *pipeline_; }
  [[nodiscard]] Handler& handler() const noexcept { return *handler_; }
  [[nodiscard]] bool removed() const noexcept { return removed_; }

  // Inbound: hand the event to the next handler towards the application.
  void fireConnected();
  void fireData(Buffer& in);
  void fireFrame(std::span<const char> frame);
  void firePeerHalfClosed(PeerFin& fin);
  void fireReadComplete();
  void fireHighWatermark(std::size_t queued);
  void fireWritable();
  void fireUserEvent(const UserEvent& event);
  void fireClosed(CloseReason reason);

  // Outbound: hand the operation to the previous handler towards the socket.
  std::error_code write(const Slices& data);
  std::error_code writeFrame(const Slices& payload);
  void flush();
  void shutdown(CloseReason reason = CloseReason::Shutdown);
  void close(CloseReason reason = CloseReason::LocalClose, CloseMode mode = CloseMode::Flush);

  // Removes this context's handler from the pipeline.
  void remove();

 private:
  friend class Pipeline;
  // The head's and tail's handlers are shared, stateless objects: only the
  // handlers added to a pipeline are owned (and deleted) by their context.
  HandlerContext(Pipeline& p, Handler* h, bool owned) noexcept : pipeline_(&p), handler_(h), owned_(owned) {}
  ~HandlerContext();
  HandlerContext(const HandlerContext&) = delete;
  HandlerContext& operator=(const HandlerContext&) = delete;
  HandlerContext* nextLive() const noexcept;
  HandlerContext* prevLive() const noexcept;

  Pipeline* pipeline_;
  Handler* handler_;
  HandlerContext* prev_ = nullptr;
  HandlerContext* next_ = nullptr;
  bool removed_ = false;
  bool owned_;
};

class Pipeline {
 public:
  explicit Pipeline(Connection& conn);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Returns the added handler, typed, for convenience.
  template <class H>
  H& addLast(std::unique_ptr<H> h) {
    H& ref = *h;
    insertBefore(&tail_, std::move(h));
    return ref;
  }
  template <class H>
  H& addFirst(std::unique_ptr<H> h) {
    H& ref = *h;
    insertBefore(head_.next_, std::move(h));
    return ref;
  }
  template <class H, class... Args>
  H& emplaceLast(Args&&... args) {
    return addLast(std::make_unique<H>(std::forward<Args>(args)...));
  }
  // Inserts before the first handler of type Before (or last when absent).
  template <class Before, class H>
  H& addBefore(std::unique_ptr<H> h) {
    H& ref = *h;
    HandlerContext* at = findContext<Before>();
    insertBefore(at != nullptr ? at : &tail_, std::move(h));
    return ref;
  }

  // Returns false when the handler is not (or no longer) in the pipeline.
  bool remove(const Handler& h);
  template <class H>
  bool remove() {
    H* h = find<H>();
    return h != nullptr && remove(*h);
  }

  template <class H>
  [[nodiscard]] H* find() const noexcept {
    HandlerContext* c = findContext<H>();
    return c != nullptr ? static_cast<H*>(&c->handler()) : nullptr;
  }
  template <class H>
  [[nodiscard]] HandlerContext* findContext() const noexcept {
    for (HandlerContext* c = head_.next_; c != &tail_; c = c->next_) {
      if (dynamic_cast<H*>(c->handler_) != nullptr) return c;
    }
    return nullptr;
  }
  // The first handler of type H for which pred(h) holds.
  template <class H, class Pred>
  [[nodiscard]] H* findIf(Pred pred) const {
    for (HandlerContext* c = head_.next_; c != &tail_; c = c->next_) {
      if (auto* h = dynamic_cast<H*>(c->handler_); h != nullptr && pred(*h)) return h;
    }
    return nullptr;
  }
  [[nodiscard]] std::vector<std::string_view> names() const;
  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  // Whether a handler that encodes messages (Handler::encodesMessages) is in
  // the chain.
  [[nodiscard]] bool hasCodec() const noexcept { return codecs_ > 0; }
  [[nodiscard]] Connection& connection() const noexcept { return conn_; }

  // Entry points: inbound events start at the head (the connection raises
  // them), outbound operations at the tail (the application's end).
  void fireConnected();
  void fireData(Buffer& in);
  void firePeerHalfClosed(PeerFin& fin);
  void fireReadComplete();
  void fireHighWatermark(std::size_t queued);
  void fireWritable();
  void fireUserEvent(const UserEvent& event);
  void fireClosed(CloseReason reason);
  std::error_code write(const Slices& data);
  std::error_code writeFrame(const Slices& payload);
  // One application message from the application end: writeFrame when the
  // chain has a codec, write (bytes as they are) when it has none. What
  // Connection::send() uses, so a send is never unframed on a framed
  // connection, and never skips a byte-level handler on an unframed one.
  std::error_code send(const Slices& message) { return hasCodec() ? writeFrame(message) : write(message); }
  void flush();
  void shutdown(CloseReason reason = CloseReason::Shutdown);
  void close(CloseReason reason = CloseReason::LocalClose, CloseMode mode = CloseMode::Flush);

  // True while an event or operation is passing through the pipeline (or a
  // HandlerTimer callback runs): a handler closed now is destroyed only
  // once the outermost one returns.
  [[nodiscard]] bool dispatching() const noexcept { return depth_ > 0; }

  // Called by the connection once it is closed: every handler is told
  // handlerRemoved, then the chain is emptied.
  void removeAll();

 private:
  friend class HandlerContext;
  friend class HandlerTimer;
  // Counts nested dispatch; frees removed contexts at depth 0.
  class Guard {
   public:
    explicit Guard(Pipeline& p) noexcept : p_(p) { ++p_.depth_; }
    ~Guard() {
      if (--p_.depth_ == 0 && p_.graveyard_) p_.collect();
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    Pipeline& p_;
  };
  void insertBefore(HandlerContext* at, std::unique_ptr<Handler> h);
  void unlink(HandlerContext* c);
  void collect() noexcept;

  // The chain from head_ to tail_ owns the contexts between them; no
  // container per connection, so an idle connection's pipeline holds one
  // heap block per handler it was given, and nothing else.
  Connection& conn_;
  HandlerContext head_;
  HandlerContext tail_;
  // Removed contexts, freed at depth 0; allocated only while there are some.
  std::unique_ptr<std::vector<HandlerContext*>> graveyard_;
  std::uint32_t count_ = 0;
  std::uint32_t codecs_ = 0;  // handlers in the chain that encode messages
  int depth_ = 0;
};

}  // namespace keel
