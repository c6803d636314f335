// TIME_WAIT accounting through netlink sock_diag, checked against the
// kernel's own /proc view, on real loopback connections.
#include "keel/net/TimeWaitCounter.h"

#include <gtest/gtest.h>

#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

class ReplyThenClose final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    ctx.write(in.readable());
    in.retrieveAll();
    ctx.close();  // the server closes first: TIME_WAIT lands here
  }
};

TEST(TimeWaitCounter, CountsTheServersTimeWaitEntriesLikeProcDoes) {
  test::ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) { c.pipeline().emplaceLast<ReplyThenClose>(); });
  const auto before = serverTimeWait(srv.address());
  ASSERT_TRUE(before.has_value()) << "neither sock_diag nor /proc/net/tcp readable";
  constexpr int kConnections = 20;
  for (int i = 0; i < kConnections; ++i) {
    test::BlockingClient c(srv.address());
    ASSERT_TRUE(c.sendAll("q"));
    bool eof = false;
    EXPECT_EQ(c.recvUntilEof(&eof), "q");
    EXPECT_TRUE(eof);
  }  // each client closes after the server's FIN: the server side holds TIME_WAIT
  ASSERT_TRUE(test::eventually([&] { return serverTimeWait(srv.address()).value_or(0) >= *before + kConnections; }));
  // The client side holds none: entries towards the server's port are the
  // server's own (on loopback both ends are local, so filter by direction).
  EXPECT_EQ(countTimeWait({0, srv.address().port()}).value_or(99), 0u);
  // Same figure as the kernel's text view.
  EXPECT_EQ(serverTimeWait(srv.address()).value(), static_cast<std::size_t>(test::countTimeWait(srv.address().port())) -
                                                        countTimeWait({0, srv.address().port()}).value());
}

}  // namespace
}  // namespace keel
