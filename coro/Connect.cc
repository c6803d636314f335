#include "keel/coro/Connect.h"

#include <utility>

namespace keel {

CoClient::CoClient(EventLoop& loop, SocketAddress server, ClientOptions options, PipelineInit init)
    : client_(loop, std::move(server), options) {
  setUp(std::move(init));
}

CoClient::CoClient(EventLoop& loop, std::string host, std::uint16_t port, ClientOptions options,
                   PipelineInit init)
    : client_(loop, std::move(host), port, options) {
  setUp(std::move(init));
}

CoClient::~CoClient() {
  if (waiter_ != nullptr) waiter_->registered_ = false;
}

void CoClient::setUp(PipelineInit init) {
  client_.setPipelineInit([this, init = std::move(init)](Connection& c) {
    if (init) init(c);
    // The body only reports the connection: the awaiting coroutine drives it.
    c.pipeline().emplaceLast<CoConnection>([this](CoConnection& conn) -> Task<void> {
      finish({}, &conn);
      return {};
    });
  });
  client_.setConnectFailed([this](std::error_code ec) {
    if (client_.state() != ClientState::Connecting) finish(ec, nullptr);
  });
}

void CoClient::finish(std::error_code ec, CoConnection* conn) noexcept {
  ConnectOp* op = std::exchange(waiter_, nullptr);
  if (op == nullptr) return;
  op->registered_ = false;
  op->error_ = ec;
  op->conn_ = conn;
  resumeVia(op->exec_, op->waiter_);
}

bool CoClient::ConnectOp::await_ready() noexcept {
  if (const Connection::Ptr c = c_->client_.connection()) {
    if (auto* cc = c->pipeline().find<CoConnection>(); cc != nullptr && !cc->closeReason()) {
      conn_ = cc;
      return true;
    }
  }
  return false;
}

bool CoClient::ConnectOp::abandon() noexcept {
  if (!registered_) return false;
  registered_ = false;
  c_->waiter_ = nullptr;
  return true;
}

}  // namespace keel
