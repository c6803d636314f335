// What the Client tests share: bounded loop runs, a temporary Unix-socket
// path, a handler that records what the connection saw, an echo handler, a
// small test server (keel Connections behind a hand-written accept loop, so
// these tests do not depend on keel's Server), and retry options that make
// back-off fast.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keel/core/EventLoop.h"
#include "keel/core/LoopThread.h"
#include "keel/core/Watcher.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/Handler.h"
#include "keel/net/Pipeline.h"
#include "keel/net/Socket.h"
#include "keel/net/SocketAddress.h"
#include "keel/net/internal/ConnectionAccess.h"
#include "keel/net/internal/Connector.h"
#include "support/TestNet.h"

#include "keel/net/Client.h"

namespace keel::test {

using namespace std::chrono_literals;

inline constexpr Duration kWait = 5s;  // upper bound on every wait for something that should happen

// Runs the loop until `done` holds or `timeout` passes; returns done().
// A periodic timer checks the condition and a one-shot timer bounds the run,
// both quitting the loop, so no test can hang here.
inline bool runUntil(EventLoop& loop, const std::function<bool()>& done, Duration timeout = kWait) {
  if (done()) return true;
  // Timers count from the loop's cached now(), which is stale after the test
  // spent time outside the loop (building a large payload, say).
  loop.updateTime();
  const TimerId poll = loop.runEvery(1ms, [&] {
    if (done()) loop.quit();
  });
  const TimerId limit = loop.runAfter(timeout, [&] { loop.quit(); });
  loop.loop();
  loop.cancel(poll);
  loop.cancel(limit);
  return done();
}

inline void runFor(EventLoop& loop, Duration d) {
  runUntil(
      loop, [] { return false; }, d);
}

// What a client connection's pipeline saw, in order.
struct Seen {
  std::vector<std::string> events;  // "connected", "closed:<reason>"
  std::string data;
  int connected = 0;
  int closed = 0;
};

// The application end of a client connection: records events and bytes, and
// optionally greets the server when connected.
class RecordingHandler final : public Handler {
 public:
  RecordingHandler(Seen& seen, std::string greeting) : seen_(seen), greeting_(std::move(greeting)) {}
  std::string_view name() const noexcept override { return "recording"; }
  void onConnected(HandlerContext& ctx) override {
    seen_.events.emplace_back("connected");
    ++seen_.connected;
    if (!greeting_.empty()) ctx.write(Slices(greeting_));
    ctx.fireConnected();
  }
  void onData(HandlerContext&, Buffer& in) override {
    seen_.data += in.view();
    in.retrieveAll();
  }
  void onClosed(HandlerContext& ctx, CloseReason reason) override {
    seen_.events.push_back("closed:" + std::string(toString(reason)));
    ++seen_.closed;
    ctx.fireClosed(reason);
  }

 private:
  Seen& seen_;
  std::string greeting_;
};

class EchoHandler final : public Handler {
 public:
  std::string_view name() const noexcept override { return "echo"; }
  void onData(HandlerContext& ctx, Buffer& in) override {
    const std::string copy(in.view());
    in.retrieveAll();
    ctx.write(Slices(copy));
  }
};

// A small server on the test's loop: a listening keel Socket, an accept loop
// on a Watcher, and a keel Connection with an echo handler per accepted
// socket. `closeFirst` connections are closed by the server right after
// accepting them.
class TestServer {
 public:
  explicit TestServer(EventLoop& loop) : loop_(loop) {}
  ~TestServer() {
    watcher_.reset();
    for (auto& c : conns_) c->abort();
  }
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  // Bound but not listening yet: a TCP connect to it is refused (RST), and the
  // port stays reserved for the test until listen().
  [[nodiscard]] bool bind(const SocketAddress& addr) {
    socket_ = keel::test::openStream(addr.family());
    if (addr.isInet() && socket_.setReuseAddr(true)) return false;
    if (socket_.bind(addr)) return false;
    address_ = socket_.localAddress();
    return true;
  }
  [[nodiscard]] bool listen() {
    if (socket_.listen()) return false;
    watcher_ = std::make_unique<Watcher>(loop_, socket_.fd(), [this](std::uint32_t) { onReadable(); });
    if (watcher_->setInterest(Watcher::kRead)) return false;
    return true;
  }
  [[nodiscard]] bool start(const SocketAddress& addr) { return bind(addr) && listen(); }

  [[nodiscard]] const SocketAddress& address() const noexcept { return address_; }
  [[nodiscard]] int accepted() const noexcept { return static_cast<int>(conns_.size()); }
  [[nodiscard]] const std::vector<CloseReason>& closeReasons() const noexcept { return reasons_; }
  [[nodiscard]] Connection& connectionAt(std::size_t i) { return *conns_.at(i); }
  int closeFirst = 0;  // close this many accepted connections at once

 private:
  void onReadable() {
    for (;;) {
      std::error_code ec;
      Socket s = socket_.accept(nullptr, ec);
      if (!s.valid()) return;
      // Kept until the server goes (never released inside their own callbacks).
      auto conn = std::make_shared<Connection>(loop_, std::move(s), 1000 + conns_.size());
      conn->pipeline().emplaceLast<EchoHandler>();
      // This test server is an owner, as Server is: it uses the owner's access.
      ConnectionAccess::setClosedHook(
          *conn, [this](const Connection::Ptr& c) { reasons_.push_back(*c->closeReason()); });
      conns_.push_back(conn);
      ConnectionAccess::start(*conn);
      if (accepted() <= closeFirst) conn->close();
    }
  }

  EventLoop& loop_;
  Socket socket_;
  SocketAddress address_;
  std::unique_ptr<Watcher> watcher_;
  std::vector<Connection::Ptr> conns_;
  std::vector<CloseReason> reasons_;
};

inline Client::PipelineInit recordInto(Seen& seen, const std::string& greeting = {}) {
  return [&seen, greeting](Connection& c) {
    c.pipeline().addLast(std::make_unique<RecordingHandler>(seen, greeting));
  };
}

inline ClientOptions fastRetry() {
  ClientOptions o;
  o.reconnect = ClientOptions::Reconnect::UntilConnected;
  o.retryInitial = 20ms;
  o.retryMax = 1s;
  return o;
}

}  // namespace keel::test
