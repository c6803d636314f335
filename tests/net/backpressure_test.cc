// Bounded memory against peers that do not read: watermarks, automatic read
// pausing, the output hard cap, and the unread-input cap.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include <poll.h>
#include <sys/socket.h>

#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::BlockingClient;
using test::ServerThread;

struct Counters {
  std::atomic<int> high{0};
  std::atomic<int> writable{0};
  std::atomic<std::size_t> peakOutput{0};
  std::atomic<int> closedReason{-1};
};

class WatchedEcho final : public Handler {
 public:
  explicit WatchedEcho(Counters* c) : c_(c) {}
  void onData(HandlerContext& ctx, Buffer& in) override {
    ctx.write(in.readable());
    in.retrieveAll();
    std::size_t out = ctx.connection().outputBytes();
    std::size_t prev = c_->peakOutput.load();
    while (out > prev && !c_->peakOutput.compare_exchange_weak(prev, out)) {
    }
  }
  void onHighWatermark(HandlerContext&, std::size_t) override { ++c_->high; }
  void onWritable(HandlerContext&) override { ++c_->writable; }
  void onClosed(HandlerContext&, CloseReason r) override { c_->closedReason = static_cast<int>(r); }

 private:
  Counters* c_;
};

// Writes as much as the kernel takes within `budget`, never reading.
std::size_t floodWithoutReading(int fd, std::size_t max, std::chrono::milliseconds budget) {
  const std::string chunk(64 * 1024, 'f');
  std::size_t sent = 0;
  const auto deadline = std::chrono::steady_clock::now() + budget;
  while (sent < max && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 200) != 1) continue;
    const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) sent += static_cast<std::size_t>(n);
    if (n < 0 && errno != EAGAIN) break;
  }
  return sent;
}

TEST(Backpressure, NonReadingPeerIsPausedAtTheHighWatermarkAndOthersAreServed) {
  Counters counters;
  ServerOptions options;
  options.connection.highWatermark = 256 << 10;
  options.connection.lowWatermark = 64 << 10;
  options.connection.pauseReadingAtHighWatermark = true;
  ServerThread srv(SocketAddress::loopback4(0), options,
                   [&](Connection& c) { c.pipeline().emplaceLast<WatchedEcho>(&counters); });
  BlockingClient hog(srv.address());
  const std::size_t sent = floodWithoutReading(hog.fd(), 64u << 20, 1500ms);
  EXPECT_LT(sent, 64u << 20) << "the server should have stopped reading, stalling the sender";
  EXPECT_EQ(counters.high.load(), 1);
  // Bounded: the high watermark plus at most one read's worth.
  EXPECT_LE(counters.peakOutput.load(),
            options.connection.highWatermark + options.connection.maxReadPerEvent);

  BlockingClient polite(srv.address());
  EXPECT_EQ(polite.echo("served while the hog is stuck"), "served while the hog is stuck");

  // Once the hog reads, the output drains, onWritable fires and reading resumes.
  std::thread sender([&] { (void)floodWithoutReading(hog.fd(), 1 << 20, 500ms); });
  std::size_t drained = 0;
  char buf[65536];
  while (drained < sent) {
    pollfd p{hog.fd(), POLLIN, 0};
    if (::poll(&p, 1, 2000) != 1) break;
    const ssize_t n = ::recv(hog.fd(), buf, sizeof buf, 0);
    if (n <= 0) break;
    drained += static_cast<std::size_t>(n);
  }
  sender.join();
  EXPECT_GE(drained, sent);
  EXPECT_GE(counters.writable.load(), 1);
}

TEST(Backpressure, OutputHardCapClosesWithOverloaded) {
  Counters counters;
  ServerOptions options;
  options.connection.highWatermark = 128 << 10;
  options.connection.maxOutputBytes = 1 << 20;
  options.connection.pauseReadingAtHighWatermark = false;  // opted out: the cap must catch it
  ServerThread srv(SocketAddress::loopback4(0), options,
                   [&](Connection& c) { c.pipeline().emplaceLast<WatchedEcho>(&counters); });
  BlockingClient hog(srv.address());
  (void)floodWithoutReading(hog.fd(), 64u << 20, 3000ms);
  EXPECT_TRUE(test::eventually(
      [&] { return counters.closedReason.load() == static_cast<int>(CloseReason::Overloaded); }));
  EXPECT_LE(counters.peakOutput.load(),
            options.connection.maxOutputBytes + options.connection.maxReadPerEvent);
  EXPECT_EQ(srv.server().stats().closedBy[static_cast<std::size_t>(CloseReason::Overloaded)], 1u);
}

// Consumes nothing: input accumulates until the cap pauses reading.
class Hoarder final : public Handler {
 public:
  explicit Hoarder(std::atomic<std::size_t>* seen) : seen_(seen) {}
  void onData(HandlerContext&, Buffer& in) override { *seen_ = in.readableBytes(); }

 private:
  std::atomic<std::size_t>* seen_;
};

TEST(Backpressure, UnconsumedInputIsCappedByPausingReads) {
  std::atomic<std::size_t> seen{0};
  ServerOptions options;
  options.connection.maxInputBytes = 512 << 10;
  Connection::Ptr conn;
  ServerThread srv(SocketAddress::loopback4(0), options, [&](Connection& c) {
    conn = c.shared_from_this();
    c.pipeline().emplaceLast<Hoarder>(&seen);
  });
  BlockingClient client(srv.address());
  const std::size_t sent = floodWithoutReading(client.fd(), 32u << 20, 1500ms);
  EXPECT_LT(sent, 32u << 20);
  EXPECT_LE(seen.load(), options.connection.maxInputBytes);
  bool paused = false;
  srv.runAndWait([&] { paused = conn->readingPaused(); });
  EXPECT_TRUE(paused);
  // The application catches up and resumes: reading continues. `seen` is
  // cleared first, so only a read after the resume can set it again (the
  // client's kernel buffers still hold what the pause kept back).
  srv.runAndWait([&] {
    seen = 0;
    conn->input().retrieveAll();
    conn->resumeReading();
    paused = conn->readingPaused();
  });
  EXPECT_FALSE(paused);
  EXPECT_TRUE(test::eventually([&] { return seen.load() > 0; }));
  srv.runAndWait([&] { conn.reset(); });
}

}  // namespace
}  // namespace keel
