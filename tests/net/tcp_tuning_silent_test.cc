// TcpTuning's opt-in setQuickAckOnlyWhenSilent (Latency profile): the
// TCP_QUICKACK re-arm is left out after a read whose dispatch wrote an
// answer (that answer carries the ACK), and still made after a read that
// answered nothing. Checked through the counters on a real connection, and
// by a Nagle-on client writing each request in two pieces, which must get
// every answer intact.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/TcpTuning.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::BlockingClient;
using test::ServerThread;

// Answers each complete 8-byte request with the request itself; a partial
// request is left in the buffer and answered nothing.
class EightByteEcho final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    const std::size_t whole = in.readableBytes() / 8 * 8;
    if (whole == 0) return;
    ctx.write(in.view().substr(0, whole));
    in.retrieve(whole);
  }
};

struct Counters {
  std::uint64_t reads = 0, armed = 0, skipped = 0;
};

class SilentQuickAck : public ::testing::Test {
 protected:
  void SetUp() override {
    srv_ =
        std::make_unique<ServerThread>(SocketAddress::loopback4(0), ServerOptions{}, [this](Connection& c) {
          conn_ = c.weak_from_this();
          c.pipeline().emplaceLast<TcpTuning>(TcpProfile::Latency).setQuickAckOnlyWhenSilent(true);
          c.pipeline().emplaceLast<EightByteEcho>();
        });
  }
  Counters counters() {
    Counters out;
    EXPECT_TRUE(test::eventually([&] {
      bool yes = false;
      srv_->runAndWait([&] { yes = !conn_.expired(); });
      return yes;
    }));
    srv_->runAndWait([&] {
      if (auto c = conn_.lock()) {
        const TcpTuning* t = c->pipeline().find<TcpTuning>();
        out = {c->stats().reads, t->quickAcksArmed(), t->quickAcksSkipped()};
      }
    });
    return out;
  }

  std::unique_ptr<ServerThread> srv_;
  std::weak_ptr<Connection> conn_;  // written and read on the loop thread
};

TEST_F(SilentQuickAck, AnsweredReadsSkipTheRearmSilentOnesKeepIt) {
  BlockingClient client(srv_->address());
  ASSERT_TRUE(client.connected());
  client.setNoDelay(true);
  for (int i = 0; i < 10; ++i) {
    const std::string req = "req-" + std::to_string(1000 + i);
    ASSERT_TRUE(client.sendAll(req));
    ASSERT_EQ(client.recvExact(8), req);
  }
  Counters c = counters();
  EXPECT_GE(c.reads, 10u);
  EXPECT_EQ(c.skipped, c.reads) << "every read was answered";
  EXPECT_EQ(c.armed, 0u);

  // Half a request: nothing to answer, so the re-arm (which also releases
  // the ACK the kernel holds back) happens.
  const Counters before = c;
  ASSERT_TRUE(client.sendAll("half"));
  ASSERT_TRUE(test::eventually([&] { return counters().reads > before.reads; }));
  c = counters();
  EXPECT_EQ(c.armed, c.reads - before.reads);
  EXPECT_EQ(c.skipped, before.skipped);
  ASSERT_TRUE(client.sendAll("-end"));
  EXPECT_EQ(client.recvExact(8), "half-end");
}

TEST_F(SilentQuickAck, NagleClientWritingTwoPiecesGetsEveryAnswer) {
  BlockingClient client(srv_->address());  // Nagle on: the kernel default
  ASSERT_TRUE(client.connected());
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(client.sendAll("abcd"));
    ASSERT_TRUE(client.sendAll(std::to_string(1000 + i)));
    ASSERT_EQ(client.recvExact(8), "abcd" + std::to_string(1000 + i)) << "round " << i;
  }
  const Counters c = counters();
  EXPECT_GE(c.armed, 1u) << "reads holding only a first piece re-arm QUICKACK";
  EXPECT_EQ(c.armed + c.skipped, c.reads);
}

}  // namespace
}  // namespace keel
