// Hostile clients against a keel server, over real loopback sockets:
//   - a slowloris trickling bytes defeats IdleReaper's reader limit (every
//     byte is activity) and is reaped by MessageDeadline;
//   - frame headers announcing 2-4 GiB are refused without allocating them
//     (this binary counts every operator new and remembers the largest);
//   - garbage where a heartbeat is expected ends in protocol-error, while a
//     well-formed foreign control frame is handed on, not misread;
//   - a connection flood past maxConnections is refused while established
//     clients keep their echo service;
//   - 1,000 clients that never read cannot push the server's queued output
//     past N x (high watermark + one read), nor past the hard cap;
//   - resets mid-transfer, peers killed before their first byte, silent
//     half-open peers and bare SYNs leave no descriptor, timer or
//     connection behind.
// Each test prints a "[measure]" line with what it saw (docs/limits.md).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel/heartbeat/HeartbeatMessage.h"
#include "keel/heartbeat/IdleReaper.h"
#include "keel/heartbeat/MessageDeadline.h"
#include "keel/heartbeat/PongResponder.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/FrameCodec.h"
#include "support/CountingNew.h"  // this binary's one TU that replaces operator new
#include "support/TestNet.h"

#if defined(__SANITIZE_ADDRESS__)
#define KEEL_HOSTILE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEEL_HOSTILE_ASAN 1
#endif
#endif
#ifndef KEEL_HOSTILE_ASAN
#define KEEL_HOSTILE_ASAN 0
#endif

namespace keel {
namespace {

constexpr bool kAsan = KEEL_HOSTILE_ASAN != 0;

using namespace std::chrono_literals;
using test::BlockingClient;
using test::eventually;
using test::ServerThread;

// ---- helpers -------------------------------------------------------------------------
class Echo final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    ctx.write(in.readable());
    in.retrieveAll();
  }
};

class FrameEcho final : public Handler {
 public:
  void onFrame(HandlerContext& ctx, std::span<const char> frame) override { ctx.writeFrame(frame); }
};

std::string frameOf(std::string_view payload, bool control = false) {
  char h[FrameCodec::kHeaderBytes];
  FrameCodec::encodeHeader(static_cast<std::uint32_t>(payload.size()), h, control);
  return std::string(h, sizeof h) + std::string(payload);
}

int openFds() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

std::size_t rssBytes() {
  std::ifstream f("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

std::uint64_t closedBy(Server& s, CloseReason r) { return s.stats().closedBy[static_cast<std::size_t>(r)]; }

// Pending timers on every loop of the server (base loop and I/O loops).
std::size_t pendingTimers(ServerThread& srv) {
  std::size_t total = 0;
  srv.runAndWait([&] { total += srv.loop().timers().size(); });
  for (EventLoop* l : srv.server().pool().loops()) {
    if (l == &srv.loop()) continue;
    std::promise<std::size_t> p;
    l->runInLoop([&] { p.set_value(l->timers().size()); });
    total += p.get_future().get();
  }
  return total;
}

// A non-blocking connect whose handshake the kernel completes.
int rawConnect(const SocketAddress& addr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, addr.data(), addr.length()) < 0 && errno != EINPROGRESS) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void setBuf(int fd, int bytes) {
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

void resetClose(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

// True when the peer closed (EOF or reset) within `timeout`.
bool peerClosed(int fd, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT | MSG_PEEK);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return true;
    if (r > 0) std::this_thread::sleep_for(5ms);  // an echo is waiting: leave it for the caller
  }
  return false;
}

// ---- slowloris -----------------------------------------------------------------------

// A frame sent one byte at a time, `gap` apart; stops early when the server
// closes. Returns the number of bytes sent before the close (all of them if
// the server never closed).
std::size_t trickle(int fd, std::string_view bytes, std::chrono::milliseconds gap, bool* closed) {
  *closed = false;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (::send(fd, bytes.data() + i, 1, MSG_NOSIGNAL) != 1 || peerClosed(fd, gap)) {
      *closed = true;
      return i;
    }
  }
  return bytes.size();
}

TEST(Slowloris, TrickleDefeatsReaderIdleAlone) {
  // The weakness, shown: a reader limit of 600 ms never fires for a peer
  // that sends a byte every 100 ms (the scaled-down form of 1 byte a second
  // against a limit of seconds), though its message takes 4 limits.
  ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<IdleReaper>(IdleLimits{.reader = 600ms}, IdleAction::Close);
    c.pipeline().emplaceLast<FrameEcho>();
  });
  BlockingClient loris(srv.address());
  ASSERT_TRUE(loris.connected());
  const std::string frame = frameOf(std::string(20, 'x'));  // 24 bytes: 2.4 s at 10 B/s
  bool closed = false;
  const std::size_t sent = trickle(loris.fd(), frame, 100ms, &closed);
  EXPECT_FALSE(closed) << "reader-idle reaped a trickling peer after " << sent << " bytes";
  EXPECT_EQ(srv.server().connectionCount(), 1u);
  EXPECT_EQ(loris.recvExact(frame.size()), frame) << "the completed frame is echoed";
  std::printf("[measure] slowloris 10 B/s vs reader-idle 600 ms alone: %zu bytes over %zu ms, not reaped\n",
              sent, sent * 100);
}

TEST(Slowloris, MessageDeadlineReapsTrickleButNotSlowWholeMessages) {
  // [MessageDeadline 500 ms][FrameCodec][IdleReaper reader 2 s][echo]
  ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) {
    c.pipeline().emplaceLast<MessageDeadline>(500ms);
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<IdleReaper>(IdleLimits{.reader = 2000ms}, IdleAction::Close);
    c.pipeline().emplaceLast<FrameEcho>();
  });
  // A legitimate client: whole frames with pauses longer than the deadline
  // (the deadline runs only while a message is incomplete).
  BlockingClient good(srv.address());
  ASSERT_TRUE(good.connected());
  BlockingClient loris(srv.address());
  ASSERT_TRUE(loris.connected());
  std::atomic<bool> goodOk{true};
  std::thread goodThread([&] {
    for (int i = 0; i < 4; ++i) {
      const std::string f = frameOf(test::randomBytes(100, static_cast<std::uint32_t>(i)));
      if (!good.sendAll(f) || good.recvExact(f.size()) != f) goodOk = false;
      std::this_thread::sleep_for(700ms);
    }
  });
  const std::string frame = frameOf(std::string(60, 'x'));  // 64 bytes: 6.4 s at 10 B/s
  bool closed = false;
  const std::size_t sent = trickle(loris.fd(), frame, 100ms, &closed);
  goodThread.join();
  EXPECT_TRUE(closed) << "the slowloris was never reaped";
  EXPECT_LT(sent, frame.size());
  EXPECT_TRUE(goodOk) << "a slow but whole-message client lost its service";
  EXPECT_TRUE(eventually([&] { return srv.server().connectionCount() == 1; }));
  EXPECT_EQ(closedBy(srv.server(), CloseReason::IdleTimeout), 1u);
  std::printf(
      "[measure] slowloris 10 B/s vs MessageDeadline 500 ms: reaped after %zu of %zu bytes; "
      "a client pausing 700 ms between whole frames kept its service\n",
      sent, frame.size());
}

TEST(Slowloris, MessageDeadlineClockRestartsWithEachMessage) {
  // Ten frames, each sent in two halves 100 ms apart: incomplete for 1 s in
  // all, longer than the 600 ms limit, but never one message for that long.
  ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) {
    c.pipeline().emplaceLast<MessageDeadline>(600ms);
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<FrameEcho>();
  });
  BlockingClient client(srv.address());
  ASSERT_TRUE(client.connected());
  for (int i = 0; i < 10; ++i) {
    const std::string f = frameOf(test::randomBytes(50, static_cast<std::uint32_t>(i)));
    ASSERT_TRUE(client.sendAll(std::string_view(f).substr(0, 20)));
    std::this_thread::sleep_for(100ms);
    ASSERT_TRUE(client.sendAll(std::string_view(f).substr(20)));
    ASSERT_EQ(client.recvExact(f.size()), f) << "message " << i;
  }
  // Whole messages only from here: the partial flag is down, and a timer
  // left from the last partial finds nothing to do.
  const std::string whole = frameOf("whole");
  ASSERT_TRUE(client.sendAll(whole));
  ASSERT_EQ(client.recvExact(whole.size()), whole);
  std::promise<bool> partial;
  srv.server().forEachConnection([&](const Connection::Ptr& c) {
    auto* d = c->pipeline().find<MessageDeadline>();
    partial.set_value(d == nullptr || d->partial());
  });
  EXPECT_FALSE(partial.get_future().get());
  std::this_thread::sleep_for(700ms);
  EXPECT_EQ(srv.server().connectionCount(), 1u);
  EXPECT_EQ(closedBy(srv.server(), CloseReason::IdleTimeout), 0u);
}

// ---- huge frame ----------------------------------------------------------------------

TEST(HugeFrame, FourGiBHeaderRefusedWithoutAllocating) {
  ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();  // max frame 1 MiB
    c.pipeline().emplaceLast<FrameEcho>();
  });
  BlockingClient bystander(srv.address());
  ASSERT_TRUE(bystander.connected());
  const std::size_t rssBefore = rssBytes();
  test::counting_new::g_largest = 0;
  // 0xFFFFFFFF: "4 GiB" (a control frame of 2^31-1 bytes once the flag bit
  // is taken); 0x7FFFFFFF: an application frame of 2 GiB; 0x00100001: 1 MiB + 1.
  int refused = 0;
  for (std::uint32_t header : {0xFFFF'FFFFu, 0x7FFF'FFFFu, 0x0010'0001u}) {
    BlockingClient evil(srv.address());
    ASSERT_TRUE(evil.connected());
    char h[4] = {static_cast<char>(header >> 24), static_cast<char>(header >> 16),
                 static_cast<char>(header >> 8), static_cast<char>(header)};
    ASSERT_TRUE(evil.sendAll(std::string(h, 4) + std::string(4096, 'A')));
    bool eof = false;
    int err = 0;
    (void)evil.recvUntilEof(&eof, &err);
    EXPECT_TRUE(eof || err == ECONNRESET) << "header " << std::hex << header << " was not refused";
    ++refused;
  }
  EXPECT_TRUE(eventually([&] { return closedBy(srv.server(), CloseReason::ProtocolError) == 3; }));
  const std::size_t largest = test::counting_new::g_largest.load();
  EXPECT_LT(largest, std::size_t{4} << 20) << "something allocated for the announced size";
  // The bystander lost nothing.
  const std::string f = frameOf(test::randomBytes(1000, 3));
  ASSERT_TRUE(bystander.sendAll(f));
  EXPECT_EQ(bystander.recvExact(f.size()), f);
  const std::size_t rssAfter = rssBytes();
  std::printf(
      "[measure] huge headers (4 GiB, 2 GiB, 1 MiB+1) refused: %d, protocol-error closes: %llu, "
      "largest allocation meanwhile %zu bytes, RSS %zu -> %zu KiB\n",
      refused, static_cast<unsigned long long>(closedBy(srv.server(), CloseReason::ProtocolError)), largest,
      rssBefore >> 10, rssAfter >> 10);
}

// ---- garbage instead of a heartbeat ---------------------------------------------------

TEST(GarbageHeartbeat, GarbageBytesCloseWithProtocolErrorForeignControlFrameHandedOn) {
  ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<PongResponder>();
    c.pipeline().emplaceLast<FrameEcho>();
  });
  BlockingClient client(srv.address());
  ASSERT_TRUE(client.connected());
  char ping[HeartbeatMessage::kFrameBytes];
  HeartbeatMessage::ping(1, Clock::now()).encodeFrame(ping);
  ASSERT_TRUE(client.sendAll(std::string_view(ping, sizeof ping)));
  const std::string pong = client.recvExact(HeartbeatMessage::kFrameBytes);
  ASSERT_EQ(pong.size(), HeartbeatMessage::kFrameBytes);
  auto msg = HeartbeatMessage::decode(std::span<const char>(pong).subspan(4));
  ASSERT_TRUE(msg && msg->type == HeartbeatType::Pong && msg->sequence == 1);

  // A well-formed control frame that is not a heartbeat (bad magic) is
  // someone else's: handed on, not answered, the connection stays.
  std::string foreign(ping, sizeof ping);
  foreign[4] = 'X';
  ASSERT_TRUE(client.sendAll(foreign));
  HeartbeatMessage::ping(2, Clock::now()).encodeFrame(ping);
  ASSERT_TRUE(client.sendAll(std::string_view(ping, sizeof ping)));
  const std::string pong2 = client.recvExact(HeartbeatMessage::kFrameBytes);
  msg =
      HeartbeatMessage::decode(std::span<const char>(pong2).subspan(std::min<std::size_t>(4, pong2.size())));
  ASSERT_TRUE(msg && msg->sequence == 2) << "the PING after a foreign control frame went unanswered";

  // Garbage where the next heartbeat should be: the "length" it spells is
  // absurd, the codec refuses it, the connection is reset.
  ASSERT_TRUE(client.sendAll("GARBAGE, NOT A HEARTBEAT\r\n"));
  bool eof = false;
  int err = 0;
  (void)client.recvUntilEof(&eof, &err);
  EXPECT_TRUE(eof || err == ECONNRESET);
  EXPECT_TRUE(eventually([&] { return closedBy(srv.server(), CloseReason::ProtocolError) == 1; }));
  EXPECT_TRUE(eventually([&] { return srv.server().connectionCount() == 0; }));
}

// ---- flood past maxConnections ---------------------------------------------------------

TEST(Flood, PastMaxConnectionsRefusedWhileEstablishedClientsKeepService) {
  constexpr std::size_t kMax = 64;
  constexpr int kEstablished = 8;
  constexpr int kFlood = 1000;
  ServerOptions opts;
  opts.ioThreads = 2;
  opts.maxConnections = kMax;
  ServerThread srv(SocketAddress::loopback4(0), opts,
                   [](Connection& c) { c.pipeline().emplaceLast<Echo>(); });
  std::vector<std::unique_ptr<BlockingClient>> clients;
  for (int i = 0; i < kEstablished; ++i) {
    clients.push_back(std::make_unique<BlockingClient>(srv.address()));
    ASSERT_TRUE(clients.back()->connected());
  }
  ASSERT_TRUE(eventually([&] { return srv.server().connectionCount() == kEstablished; }));
  std::atomic<bool> flooding{true};
  std::atomic<std::uint64_t> roundTrips{0}, bad{0};
  std::atomic<std::size_t> peak{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < kEstablished; ++i) {
    workers.emplace_back([&, i] {
      std::uint32_t seed = static_cast<std::uint32_t>(i) * 1000;
      // Keep going during the flood and for a while after it.
      for (int after = 0; flooding || after < 50; after += flooding ? 0 : 1) {
        const std::string m = test::randomBytes(64 + seed % 1000, seed);
        ++seed;
        if (clients[static_cast<std::size_t>(i)]->echo(m) != m) ++bad;
        ++roundTrips;
      }
    });
  }
  std::vector<int> flood;
  for (int i = 0; i < kFlood; ++i) {
    const int fd = rawConnect(srv.address());
    if (fd >= 0) flood.push_back(fd);
    const std::size_t n = srv.server().connectionCount();
    std::size_t p = peak.load();
    while (n > p && !peak.compare_exchange_weak(p, n)) {
    }
  }
  // Every flood socket gets its answer: held (below the cap) or closed.
  EXPECT_TRUE(eventually(
      [&] {
        const ServerStats s = srv.server().stats();
        return s.accepted + s.refusedFull >= kEstablished + flood.size();
      },
      10s));
  const ServerStats during = srv.server().stats();
  for (int fd : flood) ::close(fd);
  flooding = false;
  for (auto& t : workers) t.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(during.refusedFull, 0u);
  EXPECT_LE(peak.load(), kMax);
  EXPECT_TRUE(eventually([&] { return srv.server().connectionCount() == kEstablished; }));
  // After the flood a new client is served.
  BlockingClient late(srv.address());
  ASSERT_TRUE(late.connected());
  EXPECT_EQ(late.echo("after the flood"), "after the flood");
  std::printf(
      "[measure] flood: %d connects at maxConnections=%zu with %d clients echoing: refused %llu, "
      "peak held %zu, %llu echo round trips intact, 0 bad\n",
      kFlood, kMax, kEstablished, static_cast<unsigned long long>(during.refusedFull), peak.load(),
      static_cast<unsigned long long>(roundTrips.load()));
}

// ---- clients that never read ---------------------------------------------------------

struct QueueSample {
  std::size_t total = 0;
  std::size_t largest = 0;
  std::size_t peak = 0;
  std::size_t conns = 0;
};

QueueSample sampleQueues(ServerThread& srv) {
  QueueSample s;
  std::mutex mu;
  std::atomic<std::size_t> pendingLoops{0};
  std::vector<EventLoop*> loops = srv.server().pool().loops();
  // forEachConnection posts to each loop; a barrier task queued after it on
  // every loop tells us when all of them have run.
  srv.server().forEachConnection([&](const Connection::Ptr& c) {
    std::lock_guard lk(mu);
    s.total += c->outputBytes();
    s.largest = std::max(s.largest, c->outputBytes());
    s.peak = std::max(s.peak, c->stats().peakOutput);
    ++s.conns;
  });
  for (EventLoop* l : loops) {
    std::promise<void> p;
    l->queueInLoop([&] { p.set_value(); });
    p.get_future().wait();
  }
  srv.runAndWait([] {});
  (void)pendingLoops;
  return s;
}

TEST(NeverRead, ThousandClientsCannotPushQueuesPastTheCaps) {
  constexpr int kClients = 1000;
  constexpr std::size_t kHigh = 32 << 10;
  constexpr std::size_t kRead = 16 << 10;
  ServerOptions opts;
  opts.ioThreads = 2;
  opts.connection.highWatermark = kHigh;
  opts.connection.lowWatermark = 8 << 10;
  opts.connection.maxReadPerEvent = kRead;
  opts.connection.pauseReadingAtHighWatermark = true;
  ServerThread srv(SocketAddress::loopback4(0), opts, [](Connection& c) {
    setBuf(c.socket().fd(), 16 << 10);  // keep kernel memory small; keel's queues are under test
    c.pipeline().emplaceLast<Echo>();
  });
  const std::size_t rssStart = rssBytes();
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    setBuf(fd, 16 << 10);
    ASSERT_TRUE(::connect(fd, srv.address().data(), srv.address().length()) == 0 || errno == EINPROGRESS);
    fds.push_back(fd);
  }
  ASSERT_TRUE(eventually([&] { return srv.server().connectionCount() == kClients; }, 20s));
  // Every client writes as much as it can and never reads; stop once no
  // client made progress for a while (all are blocked by backpressure).
  const std::string chunk(16 << 10, 'z');
  std::uint64_t sent = 0;
  int quietRounds = 0;
  while (quietRounds < 20) {
    std::uint64_t round = 0;
    for (int fd : fds) {
      const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) round += static_cast<std::uint64_t>(n);
    }
    sent += round;
    quietRounds = round == 0 ? quietRounds + 1 : 0;
    if (round == 0) std::this_thread::sleep_for(20ms);
  }
  const QueueSample q = sampleQueues(srv);
  const std::size_t rssEnd = rssBytes();
  const std::size_t cap = kHigh + kRead;  // crossing the watermark takes at most one more read
  EXPECT_EQ(q.conns, static_cast<std::size_t>(kClients));
  EXPECT_LE(q.peak, cap);
  EXPECT_LE(q.total, kClients * cap);
  EXPECT_GT(q.total, 0u) << "the clients never filled a queue: the test proves nothing";
  EXPECT_EQ(srv.server().connectionCount(), static_cast<std::size_t>(kClients)) << "nobody is dropped";
  const long long rssGrowth = static_cast<long long>(rssEnd) - static_cast<long long>(rssStart);
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer's shadow and per-allocation metadata multiply RSS, so the
  // RSS bound says nothing there; the queue bounds above are still checked.
  std::printf("[note] RSS bound not checked under ThreadSanitizer (shadow memory): grew %lld bytes\n",
              rssGrowth);
#else
  // The queue sum above is the proof; RSS is the cross-check. Under ASan the
  // quarantine of freed blocks and the shadow memory inflate RSS, so only the
  // queue figures are asserted there.
  if (!kAsan) {
    EXPECT_LT(rssGrowth, static_cast<long long>(kClients * cap + (64u << 20)));
  }
#endif
  std::printf(
      "[measure] %d clients never reading, %llu bytes sent: server queues %zu bytes in all "
      "(cap N x %zu = %zu), largest %zu, peak %zu; RSS %zu -> %zu MiB\n",
      kClients, static_cast<unsigned long long>(sent), q.total, cap, kClients * cap, q.largest, q.peak,
      rssStart >> 20, rssEnd >> 20);
  for (int fd : fds) resetClose(fd);
  EXPECT_TRUE(eventually([&] { return srv.server().connectionCount() == 0; }, 10s));
}

// A server that ignores backpressure (it pushes a stream whatever the
// queue): the hard cap resets the connection instead of growing for ever.
class Firehose final : public Handler {
 public:
  void onConnected(HandlerContext& ctx) override {
    conn_ = &ctx.connection();
    ctx_ = &ctx;
    tick();
    ctx.fireConnected();
  }
  void onClosed(HandlerContext& ctx, CloseReason r) override {
    if (timer_.valid()) ctx.loop().cancel(timer_);
    timer_ = {};
    ctx_ = nullptr;
    ctx.fireClosed(r);
  }
  ~Firehose() override {
    if (timer_.valid() && conn_ != nullptr) conn_->loop().cancel(timer_);
  }

 private:
  void tick() {
    timer_ = {};
    if (ctx_ == nullptr) return;
    static const std::string block(64 << 10, 'F');
    for (int i = 0; i < 4 && ctx_ != nullptr && !conn_->closed(); ++i) ctx_->write(block);
    if (ctx_ != nullptr && !conn_->closed()) timer_ = conn_->loop().runAfter(2ms, [this] { tick(); });
  }
  Connection* conn_ = nullptr;
  HandlerContext* ctx_ = nullptr;
  TimerId timer_;
};

TEST(NeverRead, HardOutputCapResetsAServerThatIgnoresBackpressure) {
  constexpr int kClients = 50;
  ServerOptions opts;
  opts.ioThreads = 2;
  opts.connection.maxOutputBytes = 1 << 20;
  ServerThread srv(SocketAddress::loopback4(0), opts,
                   [](Connection& c) { c.pipeline().emplaceLast<Firehose>(); });
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setBuf(fd, 16 << 10);
    ASSERT_EQ(::connect(fd, srv.address().data(), srv.address().length()), 0);
    fds.push_back(fd);
  }
  EXPECT_TRUE(eventually([&] { return closedBy(srv.server(), CloseReason::Overloaded) == kClients; }, 20s));
  EXPECT_TRUE(eventually([&] { return srv.server().connectionCount() == 0; }));
  std::printf(
      "[measure] %d never-reading clients of a firehose server: %llu closed as overloaded at "
      "maxOutputBytes = 1 MiB\n",
      kClients, static_cast<unsigned long long>(closedBy(srv.server(), CloseReason::Overloaded)));
  for (int fd : fds) ::close(fd);
}

// ---- nothing left behind -------------------------------------------------------------

Server::PipelineInit guardedEcho() {
  return [](Connection& c) {
    c.pipeline().emplaceLast<MessageDeadline>(2000ms);
    c.pipeline().emplaceLast<IdleReaper>(IdleLimits{.reader = 400ms}, IdleAction::Close);
    c.pipeline().emplaceLast<Echo>();
  };
}

TEST(Vanishing, ResetsMidTransferLeaveNothingBehind) {
  ServerOptions opts;
  opts.ioThreads = 2;
  ServerThread srv(SocketAddress::loopback4(0), opts, guardedEcho());
  const std::size_t timersIdle = pendingTimers(srv);
  const int fdsBefore = openFds();
  constexpr int kPeers = 50;
  const std::string payload = test::randomBytes(4 << 20, 9);
  for (int i = 0; i < kPeers; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(::connect(fd, srv.address().data(), srv.address().length()), 0);
    // Push part of a large message without reading the echo: the server
    // has output queued and input pending when the reset lands.
    std::size_t off = 0;
    while (off < payload.size()) {
      const ssize_t n = ::send(fd, payload.data() + off, payload.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    resetClose(fd);
  }
  EXPECT_TRUE(eventually([&] { return srv.server().connectionCount() == 0; }));
  EXPECT_TRUE(eventually([&] { return openFds() == fdsBefore; }));
  EXPECT_TRUE(eventually([&] { return pendingTimers(srv) == timersIdle; }));
  const ServerStats s = srv.server().stats();
  EXPECT_EQ(s.accepted, static_cast<std::uint64_t>(kPeers));
  EXPECT_EQ(s.closed, static_cast<std::uint64_t>(kPeers));
  std::printf(
      "[measure] %d resets mid-transfer: %llu closed (peer-reset %llu), fds %d -> %d, timers %zu, "
      "connections %zu\n",
      kPeers, static_cast<unsigned long long>(s.closed),
      static_cast<unsigned long long>(s.closedBy[static_cast<std::size_t>(CloseReason::PeerReset)]),
      fdsBefore, openFds(), pendingTimers(srv), srv.server().connectionCount());
}

TEST(Vanishing, KilledBeforeFirstByteAndSilentHalfOpenLeaveNothingBehind) {
  // Fork the children before any thread exists; each waits for the port.
  constexpr int kChildren = 20;
  int portPipe[2];
  ASSERT_EQ(::pipe(portPipe), 0);
  int readyPipe[2];
  ASSERT_EQ(::pipe(readyPipe), 0);
  std::vector<pid_t> kids;
  for (int i = 0; i < kChildren; ++i) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      std::uint16_t port = 0;
      if (::read(portPipe[0], &port, sizeof port) != sizeof port) ::_exit(2);
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      const SocketAddress a = SocketAddress::loopback4(port);
      if (::connect(fd, a.data(), a.length()) != 0) ::_exit(3);
      const char ok = 1;
      [[maybe_unused]] ssize_t w = ::write(readyPipe[1], &ok, 1);
      ::pause();  // never sends a byte; killed with SIGKILL
      ::_exit(0);
    }
    kids.push_back(pid);
  }
  ServerOptions opts;
  opts.ioThreads = 2;
  ServerThread srv(SocketAddress::loopback4(0), opts, guardedEcho());
  const std::size_t timersIdle = pendingTimers(srv);
  const int fdsBefore = openFds();
  const std::uint16_t port = srv.address().port();
  for (int i = 0; i < kChildren; ++i) ASSERT_EQ(::write(portPipe[1], &port, sizeof port), 2);
  for (int i = 0; i < kChildren; ++i) {
    char c = 0;
    ASSERT_EQ(::read(readyPipe[0], &c, 1), 1);
  }
  ASSERT_TRUE(eventually([&] { return srv.server().connectionCount() == kChildren; }));
  for (pid_t pid : kids) ::kill(pid, SIGKILL);
  for (pid_t pid : kids) ::waitpid(pid, nullptr, 0);
  // Half-open in process: connected, never a byte, never a FIN. Only the
  // reader limit can end these.
  std::vector<int> silent;
  for (int i = 0; i < 20; ++i) silent.push_back(rawConnect(srv.address()));
  ASSERT_TRUE(eventually([&] { return srv.server().connectionCount() == 20; }));
  EXPECT_TRUE(eventually([&] { return srv.server().connectionCount() == 0; }));
  for (int fd : silent) ::close(fd);
  ::close(portPipe[0]);
  ::close(portPipe[1]);
  ::close(readyPipe[0]);
  ::close(readyPipe[1]);
  EXPECT_TRUE(eventually([&] { return openFds() == fdsBefore - 4; }));
  EXPECT_TRUE(eventually([&] { return pendingTimers(srv) == timersIdle; }));
  const ServerStats s = srv.server().stats();
  EXPECT_EQ(s.closedBy[static_cast<std::size_t>(CloseReason::IdleTimeout)], 20u);
  std::printf(
      "[measure] %d peers SIGKILLed before their first byte + 20 silent half-open: closed %llu "
      "(idle-timeout %llu), connections %zu, timers back to %zu, fds back to %d\n",
      kChildren, static_cast<unsigned long long>(s.closed),
      static_cast<unsigned long long>(s.closedBy[static_cast<std::size_t>(CloseReason::IdleTimeout)]),
      srv.server().connectionCount(), pendingTimers(srv), openFds());
}

// ---- SYN then nothing ------------------------------------------------------------------

std::uint16_t checksum(const void* data, std::size_t len, std::uint32_t sum = 0) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  for (std::size_t i = 0; i + 1 < len; i += 2) sum += static_cast<std::uint32_t>(p[i] << 8 | p[i + 1]);
  if (len % 2 != 0) sum += static_cast<std::uint32_t>(p[len - 1] << 8);
  while ((sum >> 16) != 0) sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum & 0xFFFF);
}

TEST(Vanishing, BareSynsNeverBecomeConnections) {
  // A raw SYN from a port nobody listens on: the server's kernel answers
  // with a SYN-ACK, our kernel resets it, and the handshake never
  // completes. keel must never see these; nothing may be left.
  const int raw = ::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_TCP);
  if (raw < 0) GTEST_SKIP() << "raw sockets need CAP_NET_RAW: " << std::strerror(errno);
  ServerOptions opts;
  opts.ioThreads = 2;
  ServerThread srv(SocketAddress::loopback4(0), opts, guardedEcho());
  const int fdsBefore = openFds();
  constexpr int kSyns = 200;
  for (int i = 0; i < kSyns; ++i) {
    tcphdr th{};
    th.source = htons(static_cast<std::uint16_t>(40000 + i));
    th.dest = htons(srv.address().port());
    th.seq = htonl(static_cast<std::uint32_t>(1000 + i));
    th.doff = 5;
    th.syn = 1;
    th.window = htons(65535);
    struct {
      std::uint32_t src, dst;
      std::uint8_t zero, proto;
      std::uint16_t len;
    } pseudo{htonl(INADDR_LOOPBACK), htonl(INADDR_LOOPBACK), 0, IPPROTO_TCP, htons(sizeof th)};
    std::uint8_t buf[sizeof pseudo + sizeof th];
    std::memcpy(buf, &pseudo, sizeof pseudo);
    std::memcpy(buf + sizeof pseudo, &th, sizeof th);
    th.check = htons(checksum(buf, sizeof buf));
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::sendto(raw, &th, sizeof th, 0, reinterpret_cast<sockaddr*>(&to), sizeof to),
              static_cast<ssize_t>(sizeof th));
  }
  ::close(raw);
  std::this_thread::sleep_for(300ms);  // give any (wrong) accept the chance to happen
  const ServerStats s = srv.server().stats();
  EXPECT_EQ(s.accepted, 0u);
  const std::size_t held = srv.server().connectionCount();
  EXPECT_EQ(held, 0u);
  EXPECT_EQ(openFds(), fdsBefore - 1);
  // The listener still serves.
  BlockingClient c(srv.address());
  ASSERT_TRUE(c.connected());
  EXPECT_EQ(c.echo("still here"), "still here");
  std::printf("[measure] %d bare SYNs: accepted %llu, connections %zu\n", kSyns,
              static_cast<unsigned long long>(s.accepted), held);
}

}  // namespace
}  // namespace keel
