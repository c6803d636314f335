// Connection-layer defects that only a kernel shows: accept's address for a
// connection reset in the backlog, an epoll_ctl that fails, and the
// server's count with user code in every pipeline.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keel/core/EventLoop.h"
#include "keel/net/Connection.h"
#include "keel/net/Server.h"
#include "keel/net/internal/ConnectionAccess.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

class ReasonWatch final : public Handler {
 public:
  explicit ReasonWatch(std::optional<CloseReason>* out) : out_(out) {}
  void onClosed(HandlerContext& ctx, CloseReason r) override {
    *out_ = r;
    ctx.fireClosed(r);
  }

 private:
  std::optional<CloseReason>* out_;
};

TEST(ConnectionSocket, ASocketTheLoopCannotWatchClosesAloneWithError) {
  // /dev/null cannot be polled: epoll_ctl(ADD) fails with EPERM, as it
  // fails with ENOMEM or ENOSPC under memory or watch-limit pressure.
  // epoll only, in both passes: io_uring polls any file (one without poll
  // support is reported always ready), so this failure has no io_uring form.
  EventLoop loop(LoopOptions{.backend = LoopBackend::Epoll});
  const int fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto conn = std::make_shared<Connection>(loop, Socket(Fd(fd)), 7);
  std::optional<CloseReason> reason;
  conn->pipeline().emplaceLast<ReasonWatch>(&reason);
  ConnectionAccess::start(*conn);  // threw std::system_error out of the loop before
  EXPECT_TRUE(conn->closed());
  EXPECT_EQ(reason, CloseReason::Error);
  EXPECT_EQ(loop.watchErrors(), 1u);
  // The loop goes on serving everything else.
  bool ran = false;
  (void)loop.runAfter(1ms, [&] { ran = true; });
  while (!ran) loop.runOnce(1s);
  EXPECT_TRUE(ran);
}

TEST(ConnectionSocket, APeerResetInTheBacklogKeepsTheAddressAcceptGave) {
  EventLoop loop;
  Server server(loop, SocketAddress::loopback4(0));
  SocketAddress seen;
  bool inited = false;
  server.setPipelineInit([&](Connection& c) {
    seen = c.peerAddress();
    inited = true;
  });
  ASSERT_FALSE(server.start());
  std::uint16_t clientPort = 0;
  {
    // Connect (the handshake completes in the kernel's backlog), then reset
    // before the server's loop has run its accept.
    test::BlockingClient client(server.listenAddress());
    ASSERT_TRUE(client.connected());
    SocketAddress local;
    socklen_t len = SocketAddress::capacity();
    ASSERT_EQ(::getsockname(client.fd(), local.data(), &len), 0);
    local.setLength(len);
    clientPort = local.port();
    const linger lg{1, 0};
    ASSERT_EQ(::setsockopt(client.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  }  // closed with RST
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!inited && std::chrono::steady_clock::now() < deadline) loop.runOnce(100ms);
  ASSERT_TRUE(inited);
  EXPECT_EQ(seen.port(), clientPort) << "accept() returned the address; getpeername can no longer";
  EXPECT_TRUE(seen.isInet());
}

class UserCloseObserver final : public Handler {
 public:
  explicit UserCloseObserver(std::atomic<int>* closes) : closes_(closes) {}
  void onClosed(HandlerContext& ctx, CloseReason r) override {
    closes_->fetch_add(1);
    ctx.fireClosed(r);
  }

 private:
  std::atomic<int>* closes_;
};

TEST(ConnectionSocket, UserCodeInEveryPipelineCannotBreakTheServersCount) {
  std::atomic<int> userCloses{0};
  test::ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    // The way a user observes closes is a handler; the owner's hook is
    // out of reach (see ConnectionBoundary.OwnerAndHeadCallsAreNotPublic).
    c.pipeline().emplaceLast<UserCloseObserver>(&userCloses);
  });
  for (int i = 0; i < 5; ++i) {
    test::BlockingClient client(srv.address());
    ASSERT_TRUE(client.connected());
    client.shutdownWrite();
    bool eof = false;
    (void)client.recvUntilEof(&eof);
    EXPECT_TRUE(eof);
  }
  ASSERT_TRUE(test::eventually([&] { return userCloses.load() == 5; }));
  EXPECT_TRUE(test::eventually([&] { return srv.server().connectionCount() == 0; }))
      << "still " << srv.server().connectionCount() << " after 5 opened and closed";
}

}  // namespace
}  // namespace keel
