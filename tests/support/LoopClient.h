// A keel Client on a loop thread the test owns, built and destroyed on that
// loop's thread (also when an assertion ends the test early), with a way to
// reach its connection's handlers from the test thread.
#pragma once

#include <functional>
#include <memory>

#include "keel/core/EventLoop.h"
#include "keel/net/Client.h"
#include "keel/net/Connection.h"
#include "keel/net/Pipeline.h"
#include "keel/net/SocketAddress.h"
#include "support/TestNet.h"

namespace keel::test {

class LoopClient {
 public:
  LoopClient(EventLoop& loop, SocketAddress server, Client::PipelineInit init);
  ~LoopClient();
  LoopClient(const LoopClient&) = delete;
  LoopClient& operator=(const LoopClient&) = delete;

  // The current connection, or null. Loop thread (or inside with()).
  [[nodiscard]] Connection::Ptr connection() const { return client_->connection(); }
  // Runs f(handler) on the loop when the connection is up and has an H;
  // false when it has not (f did not run).
  template <class H>
  bool with(const std::function<void(H&)>& f) {
    bool found = false;
    runOn(loop_, [&] {
      const Connection::Ptr c = client_->connection();
      if (!c) return;
      if (H* h = c->pipeline().find<H>()) {
        found = true;
        f(*h);
      }
    });
    return found;
  }

 private:
  EventLoop& loop_;
  std::unique_ptr<Client> client_;
};

}  // namespace keel::test
