// Faults injected into real peers of a keel server:
//   - a client process stopped with SIGSTOP is declared dead by the server's
//     Heartbeat within its bound; one stopped for less than the bound and
//     continued resumes without losing a frame;
//   - client processes killed with SIGKILL mid-transfer are cleaned up while
//     the others finish their transfers intact;
//   - a client black-holed in a network namespace (its veth link set down)
//     is declared dead by the heartbeat (skipped without root);
//   - Server::stop() under load: every request the server processed got its
//     whole reply, and no client saw a partial one.
//
// Peer processes are forked at the start of each test, before the test
// creates any thread (each gtest case runs in its own process under ctest,
// and earlier cases in a plain run have joined their threads). A child gets
// the server's port through a pipe, reports progress through another, and
// dies with the test (PR_SET_PDEATHSIG).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel/core/LoopThread.h"
#include "keel/heartbeat/Heartbeat.h"
#include "keel/heartbeat/HeartbeatMessage.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/FrameCodec.h"
#include "support/Netns.h"
#include "support/Process.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::eventually;
using test::ServerThread;

int openFds() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// ---- peer processes ------------------------------------------------------------------

bool readFull(int fd, char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return false;
    }
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool writeFull(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

class Peer {
 public:
  enum class Mode {
    Responder,  // frames: answers PINGs with PONGs, echoes application frames
    Streamer,   // raw: sends `bytes` of a pattern, verifies the echo, exit 0 when all came back
  };
  struct Spec {
    Mode mode = Mode::Responder;
    std::string host = "127.0.0.1";
    std::string netns;
    std::size_t bytes = 0;
    std::uint32_t seed = 1;
    bool stopAtHalf = false;  // Streamer: SIGSTOP itself half way (to be killed right there)
  };

  explicit Peer(Spec spec) : spec_(std::move(spec)) {
    if (::pipe2(portPipe_, O_CLOEXEC) != 0 || ::pipe2(progressPipe_, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) runChild();
    ::close(portPipe_[0]);
    ::close(progressPipe_[1]);
  }
  ~Peer() {
    if (!reaped_) test::killAndReap(pid_);
    ::close(portPipe_[1]);
    ::close(progressPipe_[0]);
  }
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  [[nodiscard]] bool ok() const { return pid_ > 0; }
  void go(std::uint16_t port) { [[maybe_unused]] ssize_t w = ::write(portPipe_[1], &port, sizeof port); }
  // Waits for the child's next progress mark ('c' connected, 'h' half way).
  char progress(std::chrono::milliseconds timeout = 10s) {
    pollfd p{progressPipe_[0], POLLIN, 0};
    char c = 0;
    if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1 && ::read(progressPipe_[0], &c, 1) == 1)
      return c;
    return 0;
  }
  void signal(int sig) { ::kill(pid_, sig); }
  // The exit status (WEXITSTATUS, or 128 + signal), or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    const auto status = test::waitExit(pid_, timeout);
    if (!status) return std::nullopt;
    reaped_ = true;
    return test::exitCode(*status);
  }

 private:
  [[noreturn]] void runChild() {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::close(portPipe_[1]);
    ::close(progressPipe_[0]);
    std::uint16_t port = 0;
    if (!readFull(portPipe_[0], reinterpret_cast<char*>(&port), sizeof port)) ::_exit(2);
    if (!spec_.netns.empty() && !test::enterNetns(spec_.netns)) ::_exit(3);
    const auto addr = SocketAddress::ipv4(spec_.host, port);
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (!addr || ::connect(fd, addr->data(), addr->length()) != 0) ::_exit(4);
    mark('c');
    ::_exit(spec_.mode == Mode::Responder ? respond(fd) : stream(fd));
  }

  void mark(char c) { [[maybe_unused]] ssize_t w = ::write(progressPipe_[1], &c, 1); }

  static int respond(int fd) {
    std::vector<char> body(1 << 20);
    while (true) {
      char h[4];
      if (!readFull(fd, h, 4)) return 0;
      const std::uint32_t header = static_cast<std::uint32_t>(static_cast<std::uint8_t>(h[0])) << 24 |
                                   static_cast<std::uint32_t>(static_cast<std::uint8_t>(h[1])) << 16 |
                                   static_cast<std::uint32_t>(static_cast<std::uint8_t>(h[2])) << 8 |
                                   static_cast<std::uint8_t>(h[3]);
      const std::uint32_t len = header & ~FrameCodec::kControlBit;
      if (len > body.size() || !readFull(fd, body.data(), len)) return 5;
      if ((header & FrameCodec::kControlBit) != 0) {
        const auto msg = HeartbeatMessage::decode(std::span<const char>(body.data(), len));
        if (msg && msg->type == HeartbeatType::Ping) {
          char pong[HeartbeatMessage::kFrameBytes];
          HeartbeatMessage::pongFor(*msg).encodeFrame(pong);
          if (!writeFull(fd, pong, sizeof pong)) return 0;
        }
        continue;
      }
      if (!writeFull(fd, h, 4) || !writeFull(fd, body.data(), len)) return 0;
    }
  }

  int stream(int fd) {
    const std::string data = test::randomBytes(spec_.bytes, spec_.seed);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    std::size_t sent = 0, got = 0;
    bool half = false;
    std::vector<char> buf(64 << 10);
    while (got < data.size()) {
      pollfd p{fd, static_cast<short>(POLLIN | (sent < data.size() ? POLLOUT : 0)), 0};
      if (::poll(&p, 1, 10'000) != 1) return 6;
      if (sent < data.size() && (p.revents & POLLOUT) != 0) {
        const ssize_t w =
            ::send(fd, data.data() + sent, std::min<std::size_t>(64 << 10, data.size() - sent), MSG_NOSIGNAL);
        if (w > 0) sent += static_cast<std::size_t>(w);
      }
      if ((p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
        const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
        if (r <= 0 && !(r < 0 && errno == EAGAIN)) return 7;
        if (r > 0) {
          if (std::memcmp(buf.data(), data.data() + got, static_cast<std::size_t>(r)) != 0) return 1;
          got += static_cast<std::size_t>(r);
        }
      }
      if (!half && got >= data.size() / 2) {
        half = true;
        mark('h');
        if (spec_.stopAtHalf) ::raise(SIGSTOP);
      }
    }
    ::close(fd);
    return 0;
  }

  Spec spec_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int portPipe_[2] = {-1, -1};
  int progressPipe_[2] = {-1, -1};
};

// ---- server side ----------------------------------------------------------------------

// Payload of frame `seq`: 8 bytes of sequence, then bytes derived from it.
std::string seqPayload(std::uint64_t seq) {
  std::string p(8, '\0');
  for (int i = 0; i < 8; ++i) p[static_cast<std::size_t>(i)] = static_cast<char>(seq >> (56 - 8 * i));
  return p + test::randomBytes(100 + seq * 37 % 1900, static_cast<std::uint32_t>(seq));
}

// Shared between the server's loop and the test thread.
struct Observed {
  std::mutex mu;
  Connection::Ptr conn;
  std::atomic<std::uint64_t> framesOk{0};
  std::atomic<std::uint64_t> framesBad{0};
  std::atomic<int> closeReason{-1};
  std::atomic<std::int64_t> closedAtMs{0};
  std::atomic<bool> deadEvent{false};
};

std::int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The application end: keeps the connection for the test, checks echoed
// sequence frames, and records how the connection ended.
class Recorder final : public Handler {
 public:
  explicit Recorder(Observed& o) : o_(o) {}
  void onConnected(HandlerContext& ctx) override {
    std::lock_guard lk(o_.mu);
    o_.conn = ctx.connection().shared_from_this();
  }
  void onFrame(HandlerContext&, std::span<const char> frame) override {
    const std::uint64_t want = o_.framesOk.load() + o_.framesBad.load();
    const std::string expect = seqPayload(want);
    if (std::string_view(frame.data(), frame.size()) == expect) {
      ++o_.framesOk;
    } else {
      ++o_.framesBad;
    }
  }
  void onUserEvent(HandlerContext& ctx, const UserEvent& ev) override {
    if (const auto* hb = dynamic_cast<const HeartbeatEvent*>(&ev);
        hb != nullptr && hb->kind == HeartbeatEvent::Kind::PeerDead) {
      o_.deadEvent = true;
    }
    ctx.fireUserEvent(ev);
  }
  void onClosed(HandlerContext& ctx, CloseReason r) override {
    o_.closedAtMs = nowMs();
    o_.closeReason = static_cast<int>(r);
    std::lock_guard lk(o_.mu);
    o_.conn.reset();
    ctx.fireClosed(r);
  }

 private:
  Observed& o_;
};

Server::PipelineInit heartbeatInit(Observed& o, HeartbeatOptions hb) {
  return [&o, hb](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<Heartbeat>(hb);
    c.pipeline().emplaceLast<Recorder>(o);
  };
}

// True once the server's application handler has seen the connection
// (connectionCount() counts it a moment earlier, at accept).
bool haveConn(Observed& o) {
  std::lock_guard lk(o.mu);
  return o.conn != nullptr;
}

bool sendSeq(Observed& o, std::uint64_t seq) {
  std::lock_guard lk(o.mu);
  return o.conn && o.conn->send(seqPayload(seq));  // framed by the codec
}

// ---- SIGSTOP / SIGCONT -----------------------------------------------------------------

TEST(Faults, StoppedPeerDeclaredDeadByServerHeartbeatWithinBound) {
  Peer peer({.mode = Peer::Mode::Responder,
             .host = "127.0.0.1",
             .netns = "",
             .bytes = 0,
             .seed = 1});  // forked before any thread
  ASSERT_TRUE(peer.ok());
  Observed o;
  const HeartbeatOptions hb{
      .keepaliveTime = 200ms, .probeInterval = 100ms, .probeCount = 3, .jitterPercent = 0};
  ServerThread srv(SocketAddress::loopback4(0), {}, heartbeatInit(o, hb));
  peer.go(srv.address().port());
  ASSERT_EQ(peer.progress(), 'c');
  ASSERT_TRUE(eventually([&] { return haveConn(o); }));
  // Traffic both ways first: the peer answers PINGs and echoes frames.
  for (std::uint64_t s = 0; s < 20; ++s) ASSERT_TRUE(sendSeq(o, s));
  ASSERT_TRUE(eventually([&] { return o.framesOk == 20; }));
  std::this_thread::sleep_for(400ms);  // at least one PING-PONG exchange
  ASSERT_EQ(srv.server().connectionCount(), 1u) << "a live peer was declared dead";
  peer.signal(SIGSTOP);
  const std::int64_t stoppedAt = nowMs();
  EXPECT_TRUE(eventually([&] { return srv.server().connectionCount() == 0; }, 5s));
  const std::int64_t detectedMs = o.closedAtMs.load() - stoppedAt;
  EXPECT_EQ(o.closeReason.load(), static_cast<int>(CloseReason::HeartbeatTimeout));
  EXPECT_TRUE(o.deadEvent.load());
  // The bound: deadAfter of silence, counted from the last proof of life
  // (at most the stop itself), plus scheduling slack on a loaded machine.
  EXPECT_LE(detectedMs, std::chrono::duration_cast<std::chrono::milliseconds>(hb.deadAfter()).count() + 1000);
  peer.signal(SIGCONT);
  EXPECT_TRUE(peer.wait(5s).has_value()) << "the continued peer did not see the reset";
  std::printf(
      "[measure] SIGSTOPped client: server heartbeat (dead after %lld ms) closed it %lld ms after the "
      "stop, reason %s\n",
      static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(hb.deadAfter()).count()),
      static_cast<long long>(detectedMs),
      std::string(toString(static_cast<CloseReason>(std::max(0, o.closeReason.load())))).c_str());
}

TEST(Faults, PeerStoppedLessThanTheBoundResumesWithoutLoss) {
  Peer peer({.mode = Peer::Mode::Responder,
             .host = "127.0.0.1",
             .netns = "",
             .bytes = 0,
             .seed = 1,
             .stopAtHalf = false});
  ASSERT_TRUE(peer.ok());
  Observed o;
  const HeartbeatOptions hb{
      .keepaliveTime = 500ms, .probeInterval = 300ms, .probeCount = 3, .jitterPercent = 0};
  ServerThread srv(SocketAddress::loopback4(0), {}, heartbeatInit(o, hb));  // dead after 1400 ms
  peer.go(srv.address().port());
  ASSERT_EQ(peer.progress(), 'c');
  ASSERT_TRUE(eventually([&] { return haveConn(o); }));
  std::uint64_t seq = 0;
  for (; seq < 100; ++seq) ASSERT_TRUE(sendSeq(o, seq));
  ASSERT_TRUE(eventually([&] { return o.framesOk == 100; }));
  std::this_thread::sleep_for(550ms);  // one PING-PONG exchange (at 500 ms) before the stop
  peer.signal(SIGSTOP);
  const std::int64_t stoppedAt = nowMs();
  for (; seq < 200; ++seq) ASSERT_TRUE(sendSeq(o, seq));  // they wait in the kernel buffers
  std::this_thread::sleep_for(300ms);
  peer.signal(SIGCONT);
  const std::int64_t stoppedFor = nowMs() - stoppedAt;
  for (; seq < 300; ++seq) ASSERT_TRUE(sendSeq(o, seq));
  EXPECT_TRUE(eventually([&] { return o.framesOk + o.framesBad == 300; }));
  EXPECT_EQ(o.framesOk.load(), 300u);
  EXPECT_EQ(o.framesBad.load(), 0u);
  EXPECT_EQ(srv.server().connectionCount(), 1u);
  EXPECT_EQ(o.closeReason.load(), -1);
  std::printf(
      "[measure] client stopped %lld ms (< dead after 1400 ms) and continued: %llu of 300 frames echoed "
      "in order and intact, connection kept\n",
      static_cast<long long>(stoppedFor), static_cast<unsigned long long>(o.framesOk.load()));
}

// ---- SIGKILL mid-transfer -----------------------------------------------------------------

class Echo final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    ctx.write(in.readable());
    in.retrieveAll();
  }
};

TEST(Faults, PeersKilledMidTransferAreCleanedUpOthersFinishIntact) {
  constexpr int kPeers = 6;
  constexpr int kKilled = 2;
  std::vector<std::unique_ptr<Peer>> peers;
  for (int i = 0; i < kPeers; ++i) {
    peers.push_back(std::make_unique<Peer>(Peer::Spec{.mode = Peer::Mode::Streamer,
                                                      .host = "127.0.0.1",
                                                      .netns = "",
                                                      .bytes = 16u << 20,
                                                      .seed = static_cast<std::uint32_t>(i + 1),
                                                      .stopAtHalf = i < kKilled}));
    ASSERT_TRUE(peers.back()->ok());
  }
  ServerOptions opts;
  opts.ioThreads = 2;
  ServerThread srv(SocketAddress::loopback4(0), opts,
                   [](Connection& c) { c.pipeline().emplaceLast<Echo>(); });
  const int fdsBefore = openFds();
  for (auto& p : peers) p->go(srv.address().port());
  for (auto& p : peers) ASSERT_EQ(p->progress(), 'c');
  // The first ones stop themselves half way through their transfer; kill them there.
  for (int i = 0; i < kKilled; ++i) {
    ASSERT_EQ(peers[static_cast<std::size_t>(i)]->progress(), 'h');
    peers[static_cast<std::size_t>(i)]->signal(SIGKILL);
  }
  for (int i = 0; i < kPeers; ++i) {
    const auto status = peers[static_cast<std::size_t>(i)]->wait(60s);
    ASSERT_TRUE(status.has_value()) << "peer " << i << " hung";
    if (i < kKilled) {
      EXPECT_EQ(*status, 128 + SIGKILL);
    } else {
      EXPECT_EQ(*status, 0) << "peer " << i << " lost or corrupted bytes (exit " << *status << ")";
    }
  }
  EXPECT_TRUE(eventually([&] { return srv.server().connectionCount() == 0; }));
  EXPECT_TRUE(eventually([&] { return openFds() == fdsBefore; }));
  const ServerStats s = srv.server().stats();
  EXPECT_EQ(s.closed, static_cast<std::uint64_t>(kPeers));
  std::printf(
      "[measure] %d of %d streaming peers SIGKILLed half way through 16 MiB: %d finished intact, "
      "server closed %llu (peer-reset %llu, peer-closed %llu), connections 0, fds back to %d\n",
      kKilled, kPeers, kPeers - kKilled, static_cast<unsigned long long>(s.closed),
      static_cast<unsigned long long>(s.closedBy[static_cast<std::size_t>(CloseReason::PeerReset)]),
      static_cast<unsigned long long>(s.closedBy[static_cast<std::size_t>(CloseReason::PeerClosed)]),
      openFds());
}

// ---- black hole ---------------------------------------------------------------------------

TEST(Faults, BlackHoledPeerDeclaredDeadAndCleanedUp) {
  test::NetnsPair ns("kft");
  if (!ns.ok()) GTEST_SKIP() << "black-hole test skipped: " << ns.error();
  Peer peer({.mode = Peer::Mode::Responder,
             .host = "198.18.0.1",
             .netns = ns.b(),
             .bytes = 0,
             .seed = 1});  // before any thread
  ASSERT_TRUE(peer.ok());
  // The server's loop thread enters namespace A before it creates the
  // listening socket (sockets belong to the namespace they were made in).
  std::atomic<bool> inA{false};
  LoopThread thread("faults-srv", [&](EventLoop&) { inA = test::enterNetns(ns.a()); });
  EventLoop& loop = thread.start();
  ASSERT_TRUE(inA.load());
  Observed o;
  const HeartbeatOptions hb{
      .keepaliveTime = 300ms, .probeInterval = 100ms, .probeCount = 3, .jitterPercent = 0};
  std::unique_ptr<Server> server;
  auto onLoop = [&](const std::function<void()>& f) {
    std::promise<void> done;
    loop.runInLoop([&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  };
  std::error_code ec;
  onLoop([&] {
    server = std::make_unique<Server>(loop, *SocketAddress::ipv4("198.18.0.1", 0));
    server->setPipelineInit(heartbeatInit(o, hb));
    ec = server->start();
  });
  ASSERT_FALSE(ec) << ec.message();
  peer.go(server->listenAddress().port());
  ASSERT_EQ(peer.progress(), 'c');
  ASSERT_TRUE(eventually([&] { return haveConn(o); }));
  for (std::uint64_t s = 0; s < 10; ++s) ASSERT_TRUE(sendSeq(o, s));
  ASSERT_TRUE(eventually([&] { return o.framesOk == 10; }));
  std::this_thread::sleep_for(400ms);
  ASSERT_EQ(server->connectionCount(), 1u);
  const std::string cut = ns.cutB();
  ASSERT_TRUE(cut.empty()) << cut;
  const std::int64_t cutAt = nowMs();
  EXPECT_TRUE(eventually([&] { return server->connectionCount() == 0; }, 5s));
  const std::int64_t detectedMs = o.closedAtMs.load() - cutAt;
  EXPECT_EQ(o.closeReason.load(), static_cast<int>(CloseReason::HeartbeatTimeout));
  EXPECT_LE(detectedMs, std::chrono::duration_cast<std::chrono::milliseconds>(hb.deadAfter()).count() + 1500);
  std::size_t timers = 1;
  onLoop([&] { timers = loop.timers().size(); });
  EXPECT_EQ(timers, 0u) << "a timer outlived the dead connection";
  std::printf(
      "[measure] black-holed client (veth down): server heartbeat (dead after %lld ms) closed it %lld ms "
      "after the cut; connections 0, timers %zu\n",
      static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(hb.deadAfter()).count()),
      static_cast<long long>(detectedMs), timers);
  onLoop([&] { server.reset(); });
  thread.stop();
}

// ---- graceful stop under load -------------------------------------------------------------

// Request: [u32 client][u64 seq][u32 reply size]. Reply: [u32 client][u64 seq]
// [reply size bytes derived from (client, seq)]. A request counts as
// processed only when the connection can still deliver its reply
// (Connection::canWrite()): once Server::stop() has called shutdown(), keel
// still reads (waiting for the peer's FIN), but nothing more can be written,
// and while the FIN waits for queued output the state still says Open.
struct StopCounters {
  std::atomic<std::uint64_t> processed{0};
  std::atomic<std::uint64_t> refused{0};
};

char replyByte(std::uint32_t client, std::uint64_t seq, std::size_t i) {
  return static_cast<char>((client * 131u + seq * 7u + i * 13u) & 0xFF);
}

class Processor final : public Handler {
 public:
  explicit Processor(StopCounters& c) : c_(c) {}
  void onFrame(HandlerContext& ctx, std::span<const char> req) override {
    // state() alone is not enough: while Server::stop()'s FIN waits for the
    // queue to drain the state is still Open, but writes are dropped.
    if (req.size() != 16 || !ctx.connection().canWrite()) {
      ++c_.refused;
      return;
    }
    std::uint32_t client = 0, size = 0;
    std::uint64_t seq = 0;
    std::memcpy(&client, req.data(), 4);
    std::memcpy(&seq, req.data() + 4, 8);
    std::memcpy(&size, req.data() + 12, 4);
    reply_.resize(12 + size);
    std::memcpy(reply_.data(), &client, 4);
    std::memcpy(reply_.data() + 4, &seq, 8);
    for (std::size_t i = 0; i < size; ++i) reply_[12 + i] = replyByte(client, seq, i);
    ++c_.processed;
    ctx.writeFrame(reply_);
  }

 private:
  StopCounters& c_;
  std::string reply_;
};

TEST(Faults, GracefulStopUnderLoadEveryProcessedRequestGetsItsWholeReply) {
  constexpr int kClients = 64;
  constexpr int kWindow = 8;
  StopCounters counters;
  ServerOptions opts;
  opts.ioThreads = 2;
  ServerThread srv(SocketAddress::loopback4(0), opts, [&](Connection& c) {
    // A small send buffer keeps replies queued in keel, so the stop finds
    // output still draining (the window in which a FIN is pending).
    const int small = 8 << 10;
    ::setsockopt(c.socket().fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<Processor>(counters);
  });
  struct Client {
    Fd fd;
    std::uint64_t sent = 0, replies = 0;
    std::string in;
    bool eof = false;
  };
  std::vector<Client> clients(kClients);
  const Fd ep(::epoll_create1(EPOLL_CLOEXEC));
  for (int i = 0; i < kClients; ++i) {
    Client& c = clients[static_cast<std::size_t>(i)];
    c.fd = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::connect(c.fd.get(), srv.address().data(), srv.address().length()), 0);
    ::fcntl(c.fd.get(), F_SETFL, O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<std::uint32_t>(i);
    ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, c.fd.get(), &ev);
  }
  std::atomic<bool> stopSending{false};
  std::uint64_t corrupt = 0, partial = 0, sendFailures = 0;
  auto sendRequests = [&](std::uint32_t id, Client& c) {
    while (!c.eof && c.sent - c.replies < kWindow && !stopSending.load(std::memory_order_relaxed)) {
      char req[20];
      FrameCodec::encodeHeader(16, req);
      const std::uint32_t size = static_cast<std::uint32_t>((c.sent * 2654435761u + id) % (64u << 10));
      std::memcpy(req + 4, &id, 4);
      std::memcpy(req + 8, &c.sent, 8);
      std::memcpy(req + 16, &size, 4);
      // 20 bytes into an empty-ish socket buffer: all or nothing in practice.
      if (::send(c.fd.get(), req, sizeof req, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof req)) {
        ++sendFailures;  // the server is gone or going: an unsent request is not a lost one
        return;
      }
      ++c.sent;
    }
  };
  std::thread driver([&] {
    for (std::uint32_t i = 0; i < kClients; ++i) sendRequests(i, clients[i]);
    int open = kClients;
    std::vector<epoll_event> evs(kClients);
    char buf[65536];
    while (open > 0) {
      const int n = ::epoll_wait(ep.get(), evs.data(), kClients, 10'000);
      if (n <= 0) break;  // nothing for 10 s: the server hung; the counts will show it
      for (int k = 0; k < n; ++k) {
        const std::uint32_t id = evs[static_cast<std::size_t>(k)].data.u32;
        Client& c = clients[id];
        const ssize_t r = ::recv(c.fd.get(), buf, sizeof buf, 0);
        if (r > 0) {
          c.in.append(buf, static_cast<std::size_t>(r));
          std::size_t off = 0;
          while (c.in.size() - off >= 4) {
            const std::uint32_t len =
                static_cast<std::uint32_t>(static_cast<std::uint8_t>(c.in[off])) << 24 |
                static_cast<std::uint32_t>(static_cast<std::uint8_t>(c.in[off + 1])) << 16 |
                static_cast<std::uint32_t>(static_cast<std::uint8_t>(c.in[off + 2])) << 8 |
                static_cast<std::uint8_t>(c.in[off + 3]);
            if (c.in.size() - off < 4 + len) break;
            const char* m = c.in.data() + off + 4;
            std::uint32_t rid = 0;
            std::uint64_t rseq = 0;
            std::memcpy(&rid, m, 4);
            std::memcpy(&rseq, m + 4, 8);
            bool good = len >= 12 && rid == id && rseq == c.replies;
            for (std::size_t i = 0; good && i + 12 < len; ++i) good = m[12 + i] == replyByte(id, rseq, i);
            if (!good) ++corrupt;
            ++c.replies;
            off += 4 + len;
          }
          c.in.erase(0, off);
          sendRequests(id, c);
        } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
          c.eof = true;
          if (!c.in.empty()) ++partial;
          ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
          c.fd.reset();  // our FIN answers the server's: its shutdown() completes
          --open;
        }
      }
    }
  });
  // Load established (an EXPECT, not an ASSERT: the driver thread must be
  // joined, and the stop below ends it either way).
  EXPECT_TRUE(eventually([&] { return counters.processed.load() > 1'000; }, 20s));
  std::atomic<bool> stopped{false};
  const std::uint64_t processedAtStop = counters.processed.load();
  srv.runAndWait([&] { srv.server().stop([&] { stopped = true; }); });
  driver.join();
  EXPECT_TRUE(eventually([&] { return stopped.load(); }, 10s));
  std::uint64_t replies = 0, sent = 0;
  for (const Client& c : clients) {
    replies += c.replies;
    sent += c.sent;
    EXPECT_TRUE(c.eof);
  }
  EXPECT_EQ(corrupt, 0u);
  EXPECT_EQ(partial, 0u) << "a client saw a partial reply";
  EXPECT_EQ(replies, counters.processed.load()) << "processed requests whose replies were lost";
  const ServerStats s = srv.server().stats();
  std::printf(
      "[measure] Server::stop() under load (%d clients, %d requests in flight each, replies up to 64 KiB, 8 "
      "KiB send buffers): "
      "requests sent %llu, processed %llu (%llu at the stop call), refused after our FIN %llu, "
      "whole replies received %llu, partial %llu, corrupt %llu; closes: shutdown %llu, peer-closed %llu\n",
      kClients, kWindow, static_cast<unsigned long long>(sent),
      static_cast<unsigned long long>(counters.processed.load()),
      static_cast<unsigned long long>(processedAtStop),
      static_cast<unsigned long long>(counters.refused.load()), static_cast<unsigned long long>(replies),
      static_cast<unsigned long long>(partial), static_cast<unsigned long long>(corrupt),
      static_cast<unsigned long long>(s.closedBy[static_cast<std::size_t>(CloseReason::Shutdown)]),
      static_cast<unsigned long long>(s.closedBy[static_cast<std::size_t>(CloseReason::PeerClosed)]));
}

}  // namespace
}  // namespace keel
