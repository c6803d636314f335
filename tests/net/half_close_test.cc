// HalfClose against a real client that sends, then shutdown(SHUT_WR):
// CloseNow drops what is queued, FinishWrites delivers it, StayOpen lets the
// application answer after the FIN (and a linger bounds an application that
// never closes), and the policy switches at run time.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/HalfClose.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::BlockingClient;
using test::ServerThread;

constexpr std::size_t k8MiB = 8u << 20;

// What the application end saw. Loop thread writes, test thread reads.
struct Seen {
  std::mutex m;
  std::vector<std::string> events;
  std::atomic<int> reason{-1};
  std::atomic<std::uint64_t> bytesIn{0};
  TimePoint finAt{};
  TimePoint closedAt{};
  std::weak_ptr<Connection> conn;

  void add(std::string e) {
    std::lock_guard l(m);
    events.push_back(std::move(e));
  }
  std::vector<std::string> get() {
    std::lock_guard l(m);
    return events;
  }
  bool closed() const { return reason.load() >= 0; }
  Duration finToClose() {
    std::lock_guard l(m);
    return closedAt - finAt;
  }
};

// The application: optionally queues a large reply on connect; counts what
// arrives; records the FIN and the close; optionally answers the FIN later.
class App final : public Handler {
 public:
  App(Seen* seen, std::size_t replyOnConnect, std::chrono::milliseconds answerAfterFin = 0ms)
      : seen_(seen), replyOnConnect_(replyOnConnect), answerAfterFin_(answerAfterFin) {}
  ~App() override {
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
  Seen* seen_;
  std::size_t replyOnConnect_;
  std::chrono::milliseconds answerAfterFin_;
  EventLoop* loop_ = nullptr;
  TimerId answer_;
};

struct Fixture {
  Seen seen;
  std::unique_ptr<ServerThread> srv;

  Fixture(HalfClosePolicy policy, std::size_t replyOnConnect, std::chrono::milliseconds answerAfterFin = 0ms,
          std::chrono::milliseconds linger = HalfClose::kDefaultLinger) {
    ServerOptions options;
    // These tests queue megabytes and then expect the server to notice the
    // client's FIN while the queue is still there: they opt out of
    // backpressure, which would stop reading (and so noticing) until the
    // client drained.
    options.connection.pauseReadingAtHighWatermark = false;
    srv = std::make_unique<ServerThread>(SocketAddress::loopback4(0), options, [=, this](Connection& c) {
      seen.conn = c.weak_from_this();
      c.pipeline().emplaceLast<HalfClose>(policy, linger);
      c.pipeline().emplaceLast<App>(&seen, replyOnConnect, answerAfterFin);
    });
  }
  // True once the server has the connection; seen.conn is written on the
  // loop thread, so it is read there too.
  bool connected() {
    bool yes = false;
    srv->runAndWait([&] { yes = !seen.conn.expired(); });
    return yes;
  }
  // Runs f(conn, halfClose) on the loop while the connection is alive.
  template <class F>
  void onLoop(F f) {
    srv->runAndWait([&] {
      if (auto c = seen.conn.lock()) f(*c, *c->pipeline().find<HalfClose>());
    });
  }
};

TEST(HalfClose, CloseNowDropsQueuedOutputButTheAppStillSeesTheFinFirst) {
  Fixture fx(HalfClosePolicy::CloseNow, k8MiB);
  BlockingClient client(fx.srv->address());
  ASSERT_EQ(client.recvExact(1).size(), 1u);  // the 8 MiB reply is under way, mostly queued
  ASSERT_TRUE(client.sendAll("request"));
  client.shutdownWrite();
  const auto start = std::chrono::steady_clock::now();
  bool eof = false;
  int err = 0;
  const std::string rest = client.recvUntilEof(&eof, &err);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(eof || err != 0) << "the connection must end, not hang";
  EXPECT_LT(rest.size() + 1, k8MiB) << "queued output was dropped";
  EXPECT_LT(took, 3s);
  ASSERT_TRUE(test::eventually([&] { return fx.seen.closed(); }));
  EXPECT_EQ(fx.seen.get(), (std::vector<std::string>{"fin", "closed:peer-closed"}));
  EXPECT_EQ(fx.seen.bytesIn.load(), 7u);
  std::printf("CloseNow: the client got %zu of %zu bytes before EOF\n", rest.size() + 1, k8MiB);
}

TEST(HalfClose, FinishWritesDeliversAllEightMiBQueuedThenEof) {
  Fixture fx(HalfClosePolicy::FinishWrites, k8MiB);
  BlockingClient client(fx.srv->address());
  ASSERT_EQ(client.recvExact(1).size(), 1u);
  ASSERT_TRUE(client.sendAll("request"));
  client.shutdownWrite();
  bool eof = false;
  const std::string rest = client.recvUntilEof(&eof);
  EXPECT_TRUE(eof);
  EXPECT_EQ(rest.size() + 1, k8MiB);
  ASSERT_TRUE(test::eventually([&] { return fx.seen.closed(); }));
  EXPECT_EQ(fx.seen.get(), (std::vector<std::string>{"fin", "closed:peer-closed"}));
}

TEST(HalfClose, StayOpenLetsTheAppAnswerAfterTheFinThenCloseItself) {
  Fixture fx(HalfClosePolicy::StayOpen, 0, 200ms);
  BlockingClient client(fx.srv->address());
  const std::string upload = test::randomBytes(300'000);
  ASSERT_TRUE(client.sendAll(upload));
  client.shutdownWrite();
  bool eof = false;
  EXPECT_EQ(client.recvUntilEof(&eof), "count=300000");
  EXPECT_TRUE(eof);
  ASSERT_TRUE(test::eventually([&] { return fx.seen.closed(); }));
  EXPECT_EQ(fx.seen.get(), (std::vector<std::string>{"fin", "closed:local-close"}));
  EXPECT_GE(fx.seen.finToClose(), 200ms) << "the answer was written after the FIN, from a timer";
}

TEST(HalfClose, StayOpenWithAnAppThatNeverClosesIsClosedAfterTheLingerAsPeerClosed) {
  Fixture fx(HalfClosePolicy::StayOpen, 0, 0ms, 300ms);
  BlockingClient client(fx.srv->address());
  ASSERT_TRUE(client.sendAll("upload"));
  client.shutdownWrite();
  bool eof = false;
  (void)client.recvUntilEof(&eof);
  EXPECT_TRUE(eof);
  ASSERT_TRUE(test::eventually([&] { return fx.seen.closed(); }));
  EXPECT_EQ(fx.seen.get(), (std::vector<std::string>{"fin", "closed:peer-closed"}));
  EXPECT_GE(fx.seen.finToClose(), 300ms);
  EXPECT_LT(fx.seen.finToClose(), 1300ms);
}

TEST(HalfClose, PolicySwitchesAtRunTime) {
  Fixture fx(HalfClosePolicy::FinishWrites, 0);
  BlockingClient client(fx.srv->address());
  ASSERT_TRUE(test::eventually([&] { return fx.connected(); }));
  fx.onLoop([&](Connection&, HalfClose& h) { h.setPolicy(HalfClosePolicy::StayOpen); });

  // The FIN no longer closes the connection...
  client.shutdownWrite();
  ASSERT_TRUE(test::eventually([&] { return fx.seen.get().size() == 1; }));
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(fx.seen.closed());
  bool lingering = false;
  fx.onLoop([&](Connection& c, HalfClose& h) {
    lingering = h.lingering();
    EXPECT_EQ(c.state(), ConnectionState::PeerHalfClosed);
    EXPECT_TRUE(c.send(std::string_view("still writable")));
  });
  EXPECT_TRUE(lingering);
  EXPECT_EQ(client.recvExact(14), "still writable");

  // ...until the policy changes: FinishWrites applies to the FIN already seen.
  fx.onLoop([&](Connection&, HalfClose& h) { h.setPolicy(HalfClosePolicy::FinishWrites); });
  bool eof = false;
  (void)client.recvUntilEof(&eof);
  EXPECT_TRUE(eof);
  ASSERT_TRUE(test::eventually([&] { return fx.seen.closed(); }));
  EXPECT_EQ(fx.seen.reason.load(), static_cast<int>(CloseReason::PeerClosed));
}

TEST(HalfClose, SwitchingToCloseNowAfterTheFinDropsTheQueueAtOnce) {
  Fixture fx(HalfClosePolicy::StayOpen, k8MiB);
  BlockingClient client(fx.srv->address());
  ASSERT_EQ(client.recvExact(1).size(), 1u);
  client.shutdownWrite();
  ASSERT_TRUE(test::eventually([&] { return fx.seen.get().size() == 1; }));
  EXPECT_FALSE(fx.seen.closed());
  fx.onLoop([&](Connection& c, HalfClose& h) {
    EXPECT_GT(c.outputBytes(), 0u);
    h.setPolicy(HalfClosePolicy::CloseNow);
  });
  EXPECT_TRUE(fx.seen.closed()) << "closed inside setPolicy";
  bool eof = false;
  int err = 0;
  const std::string rest = client.recvUntilEof(&eof, &err);
  EXPECT_TRUE(eof || err != 0);
  EXPECT_LT(rest.size() + 1, k8MiB);
  EXPECT_EQ(fx.seen.reason.load(), static_cast<int>(CloseReason::PeerClosed));
}

TEST(HalfClose, RemovingTheHandlerRestoresTheDefaultPolicy) {
  Fixture fx(HalfClosePolicy::StayOpen, 0);
  BlockingClient client(fx.srv->address());
  ASSERT_TRUE(test::eventually([&] { return fx.connected(); }));
  fx.srv->runAndWait([&] {
    auto c = fx.seen.conn.lock();
    ASSERT_TRUE(c);
    EXPECT_TRUE(c->pipeline().remove<HalfClose>());
  });
  // Without HalfClose the tail's default applies again: the FIN closes.
  client.shutdownWrite();
  bool eof = false;
  (void)client.recvUntilEof(&eof);
  EXPECT_TRUE(eof);
  ASSERT_TRUE(test::eventually([&] { return fx.seen.closed(); }));
  EXPECT_EQ(fx.seen.reason.load(), static_cast<int>(CloseReason::PeerClosed));
}

}  // namespace
}  // namespace keel
