// co_await client.connect(): a keel Client whose connections end in a
// CoConnection, for coroutines that talk to a server.
//
//   keel::CoClient client(loop, *keel::SocketAddress::parse("127.0.0.1:7000"));
//   auto conn = co_await client.connect();          // Result<CoConnection*>
//   if (!conn) ...conn.error() is the last attempt's error...
//   co_await (*conn)->write("ping");
//
// It wraps net/Client.h unchanged: retries, back-off, Happy Eyeballs and
// reconnect follow ClientOptions. connect() completes when a connection is
// up (at once when one already is), or fails with the attempt's error once
// the client gives up (after one attempt with Reconnect::Never). The
// CoConnection it gives has no body of its own: the awaiting coroutine
// drives it. It belongs to the connection: once an op on it has failed with
// a close error, do not use it again; connect() again for a new one.
// Abandoning a connect (withTimeout) leaves the client trying; stop() it.
//
// Thread-safety: the loop thread; destroy it on the loop thread (Client's rule).
#pragma once

#include <functional>
#include <string>

#include "keel/coro/CoConnection.h"
#include "keel/net/Client.h"

namespace keel {

class CoClient {
 public:
  // Handlers to put in front of the CoConnection (TLS, codec, heartbeat).
  using PipelineInit = std::function<void(Connection&)>;

  CoClient(EventLoop& loop, SocketAddress server, ClientOptions options = {}, PipelineInit init = {});
  CoClient(EventLoop& loop, std::string host, std::uint16_t port, ClientOptions options = {},
           PipelineInit init = {});
  ~CoClient();
  CoClient(const CoClient&) = delete;
  CoClient& operator=(const CoClient&) = delete;

  class ConnectOp final : public PendingOp {
   public:
    ConnectOp(ConnectOp&& o) noexcept : PendingOp(), c_(o.c_) {}
    ~ConnectOp() { (void)abandon(); }
    [[nodiscard]] EventLoop& loop() const noexcept { return c_->client_.loop(); }
    bool await_ready() noexcept;
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
      waiter_ = h;
      exec_ = coro_detail::executorOf(h);
      c_->waiter_ = this;
      registered_ = true;
      c_->client_.connect();
      return true;
    }
    Result<CoConnection*> await_resume() const noexcept {
      if (error_) return Result<CoConnection*>(error_);
      return Result<CoConnection*>(conn_);
    }
    bool abandon() noexcept override;

   private:
    friend class CoClient;
    explicit ConnectOp(CoClient& c) noexcept : c_(&c) {}
    CoClient* c_;
    CoConnection* conn_ = nullptr;
    bool registered_ = false;
  };

  [[nodiscard]] ConnectOp connect() noexcept { return ConnectOp(*this); }
  [[nodiscard]] Client& client() noexcept { return client_; }
  void stop() { client_.stop(); }

 private:
  void setUp(PipelineInit init);
  void finish(std::error_code ec, CoConnection* conn) noexcept;

  Client client_;
  ConnectOp* waiter_ = nullptr;
};

}  // namespace keel
