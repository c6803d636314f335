// The application heartbeat (heartbeat/): the wire format, the probing
// schedule, Heartbeat and PongResponder on real connections, kernel
// keepalive and TCP_USER_TIMEOUT for comparison, and the UDP prober.
//
// Peers that must be stopped (SIGSTOP) or cut off (a network namespace whose
// veth link goes down) are separate processes: the test forks BEFORE it
// creates any thread (ctest runs every TEST in a process of its own) and the
// child runs a small keel responder (EventLoop + Server + FrameCodec +
// PongResponder). The probing side is a keel Client in this process.
//
// Timing assertions use generous bounds; the tests marked [measure] also
// print the detection times that docs/heartbeat.md reports.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel/core/EventLoop.h"
#include "keel/core/LoopThread.h"
#include "keel/heartbeat/Heartbeat.h"
#include "keel/heartbeat/HeartbeatMessage.h"
#include "keel/heartbeat/KeepAlive.h"
#include "keel/heartbeat/PongResponder.h"
#include "keel/heartbeat/UdpHeartbeat.h"
#include "keel/net/Buffer.h"
#include "keel/net/Client.h"
#include "keel/net/Connection.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/Pipeline.h"
#include "keel/net/Server.h"
#include "keel/net/UdpEndpoint.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::BlockingClient;
using test::ServerThread;

// ---- helpers ------------------------------------------------------------------

// Runs f on the loop's thread and waits for it.
void runOn(EventLoop& loop, const std::function<void()>& f) {
  std::promise<void> done;
  loop.runInLoop([&] {
    f();
    done.set_value();
  });
  done.get_future().wait();
}

std::int64_t nowNs() { return Clock::now().time_since_epoch().count(); }
milliseconds msBetween(std::int64_t fromNs, std::int64_t toNs) {
  return std::chrono::duration_cast<milliseconds>(nanoseconds(toNs - fromNs));
}

std::string frameOf(std::string_view payload, bool control = false) {
  char h[FrameCodec::kHeaderBytes];
  FrameCodec::encodeHeader(static_cast<std::uint32_t>(payload.size()), h, control);
  return std::string(h, sizeof h) + std::string(payload);
}

std::string heartbeatFrame(const HeartbeatMessage& m) {
  char f[HeartbeatMessage::kFrameBytes];
  m.encodeFrame(f);
  return std::string(f, sizeof f);
}

// What a connection's tail saw. Written on the loop thread, read by the test.
struct Outcome {
  std::atomic<bool> connected{false};
  std::atomic<bool> dead{false};
  std::atomic<bool> deadBeforeClose{false};
  std::atomic<int> reason{-1};
  std::atomic<std::int64_t> deadAtNs{0};
  std::atomic<std::int64_t> closedAtNs{0};
  std::atomic<std::int64_t> deadSilenceNs{0};
  std::atomic<std::uint64_t> deadUnanswered{0};
  std::atomic<int> goAways{0};
  std::atomic<int> goAwayCode{-1};
  std::atomic<int> foreignControl{0};
  std::atomic<int> frames{0};

  [[nodiscard]] bool closed() const { return reason.load() >= 0; }
  [[nodiscard]] bool closedWith(CloseReason r) const { return reason.load() == static_cast<int>(r); }
  [[nodiscard]] std::string reasonText() const {
    const int r = reason.load();
    return r < 0 ? "open" : std::string(toString(static_cast<CloseReason>(r)));
  }
};

// The application end: consumes frames, records heartbeat events and the close.
class Watch final : public Handler {
 public:
  explicit Watch(Outcome* o) noexcept : o_(o) {}
  void onConnected(HandlerContext& ctx) override {
    o_->connected = true;
    ctx.fireConnected();
  }
  void onFrame(HandlerContext&, std::span<const char>) override { ++o_->frames; }
  void onUserEvent(HandlerContext& ctx, const UserEvent& ev) override {
    if (const auto* hb = dynamic_cast<const HeartbeatEvent*>(&ev)) {
      if (hb->kind == HeartbeatEvent::Kind::PeerDead) {
        o_->deadSilenceNs = hb->silence.count();
        o_->deadUnanswered = hb->pingsUnanswered;
        o_->deadAtNs = nowNs();
        o_->dead = true;
      } else {
        o_->goAwayCode = hb->code;
        ++o_->goAways;
      }
      return;
    }
    if (dynamic_cast<const ControlFrame*>(&ev) != nullptr) {
      ++o_->foreignControl;
      return;
    }
    ctx.fireUserEvent(ev);
  }
  void onClosed(HandlerContext& ctx, CloseReason r) override {
    o_->deadBeforeClose = o_->dead.load();
    o_->closedAtNs = nowNs();
    o_->reason = static_cast<int>(r);
    ctx.fireClosed(r);
  }

 private:
  Outcome* o_;
};

// A keel Client on `loop`, built and destroyed on that loop's thread (also
// when an assertion ends the test early).
class LoopClient {
 public:
  LoopClient(EventLoop& loop, SocketAddress server, Client::PipelineInit init) : loop_(loop) {
    runOn(loop_, [&] {
      client_ = std::make_unique<Client>(loop_, server);
      client_->setPipelineInit(std::move(init));
      client_->connect();
    });
  }
  ~LoopClient() {
    runOn(loop_, [&] { client_.reset(); });
  }
  LoopClient(const LoopClient&) = delete;
  LoopClient& operator=(const LoopClient&) = delete;

  [[nodiscard]] Connection::Ptr connection() const { return client_->connection(); }
  // Runs f(handler) on the loop when the connection is up and has an H.
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
  std::uint64_t pongs() {
    std::uint64_t n = 0;
    with<Heartbeat>([&](Heartbeat& hb) { n = hb.pongsReceived(); });
    return n;
  }

 private:
  EventLoop& loop_;
  std::unique_ptr<Client> client_;
};

// Sets this thread's network namespace (sockets it creates afterwards live there).
bool enterNetns(const std::string& name) {
  const int fd = ::open(("/var/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::setns(fd, CLONE_NEWNET) == 0;
  ::close(fd);
  return ok;
}

// The peer closes the process with 10 + its connection's CloseReason.
class ExitOnClose final : public Handler {
 public:
  void onClosed(HandlerContext&, CloseReason r) override { ::_exit(10 + static_cast<int>(r)); }
};

// A keel responder in a child process: EventLoop + Server + FrameCodec +
// PongResponder. Fork it before this process has any thread.
class ResponderProcess {
 public:
  struct Config {
    std::string netns;  // enter this namespace first (empty: stay)
    std::string host = "127.0.0.1";
    bool exitOnClose = false;  // exit with 10 + CloseReason when a connection closes
  };

  explicit ResponderProcess(const Config& cfg) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(fds[0]);
      runChild(fds[1], cfg);
    }
    ::close(fds[1]);
    if (pid_ < 0) {
      ::close(fds[0]);
      return;
    }
    pollfd p{fds[0], POLLIN, 0};
    std::uint16_t port = 0;
    if (::poll(&p, 1, 10'000) == 1 &&
        ::read(fds[0], &port, sizeof port) == static_cast<ssize_t>(sizeof port)) {
      port_ = port;
    }
    ::close(fds[0]);
    address_ = SocketAddress::ipv4(cfg.host, port_).value_or(SocketAddress());
  }
  ~ResponderProcess() {
    if (pid_ <= 0 || reaped_) return;
    ::kill(pid_, SIGKILL);  // also ends a stopped process
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  ResponderProcess(const ResponderProcess&) = delete;
  ResponderProcess& operator=(const ResponderProcess&) = delete;

  [[nodiscard]] bool ok() const { return pid_ > 0 && port_ != 0; }
  [[nodiscard]] const SocketAddress& address() const { return address_; }
  void stop() { ::kill(pid_, SIGSTOP); }
  void resume() { ::kill(pid_, SIGCONT); }
  // The raw wait status once the child has exited, or nullopt after `timeout`.
  std::optional<int> waitExit(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        return status;
      }
      std::this_thread::sleep_for(5ms);
    }
    return std::nullopt;
  }

 private:
  [[noreturn]] static void runChild(int readyFd, const Config& cfg) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
    if (!cfg.netns.empty() && !enterNetns(cfg.netns)) ::_exit(2);
    {
      EventLoop loop;
      const auto listen = SocketAddress::ipv4(cfg.host, 0);
      if (!listen) ::_exit(3);
      Server server(loop, *listen);
      const bool exitOnClose = cfg.exitOnClose;
      server.setPipelineInit([exitOnClose](Connection& c) {
        c.pipeline().emplaceLast<FrameCodec>();
        c.pipeline().emplaceLast<PongResponder>();
        if (exitOnClose) c.pipeline().emplaceLast<ExitOnClose>();
      });
      if (server.start()) ::_exit(4);
      const std::uint16_t port = server.listenAddress().port();
      if (::write(readyFd, &port, sizeof port) != static_cast<ssize_t>(sizeof port)) ::_exit(5);
      ::close(readyFd);
      loop.loop();
    }
    ::_exit(0);
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  std::uint16_t port_ = 0;
  SocketAddress address_;
};

// Runs a shell command; returns its exit status and what it printed.
std::pair<int, std::string> shell(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, "popen failed"};
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Two network namespaces joined by a veth pair: A 198.18.0.1/24, B
// 198.18.0.2/24. Names carry the pid and a counter, so parallel test
// processes never collide; the destructor deletes both namespaces (which
// destroys the veth pair) however the test ends.
class NetnsPair {
 public:
  NetnsPair() {
    static std::atomic<int> counter{0};
    const std::string tag = "khb" + std::to_string(::getpid()) + "x" + std::to_string(counter++);
    a_ = tag + "a";
    b_ = tag + "b";  // also the veth names: at most 3 + 7 + 1 + 2 + 1 = 14 characters
    if (::geteuid() != 0) {
      error_ = "needs root (CAP_SYS_ADMIN) to create network namespaces; running as uid " +
               std::to_string(::geteuid());
      return;
    }
    const std::vector<std::string> steps = {
        "ip netns add " + a_,
        "ip netns add " + b_,
        "ip link add " + a_ + " netns " + a_ + " type veth peer name " + b_ + " netns " + b_,
        "ip -n " + a_ + " addr add 198.18.0.1/24 dev " + a_,
        "ip -n " + b_ + " addr add 198.18.0.2/24 dev " + b_,
        "ip -n " + a_ + " link set lo up",
        "ip -n " + b_ + " link set lo up",
        "ip -n " + a_ + " link set " + a_ + " up",
        "ip -n " + b_ + " link set " + b_ + " up",
    };
    for (const auto& step : steps) {
      auto [rc, out] = shell(step);
      if (rc != 0 && step.rfind("ip netns add", 0) == 0) {
        // Two processes creating the first namespace at once can race on
        // the /var/run/netns mount; once more settles it.
        std::tie(rc, out) = shell(step);
      }
      if (rc != 0) {
        error_ = "`" + step + "` failed (exit " + std::to_string(rc) + "): " + out;
        return;
      }
      if (step.rfind("ip netns add " + a_, 0) == 0) createdA_ = true;
      if (step.rfind("ip netns add " + b_, 0) == 0) createdB_ = true;
    }
  }
  ~NetnsPair() {
    if (createdA_) (void)shell("ip netns del " + a_);
    if (createdB_) (void)shell("ip netns del " + b_);
  }
  NetnsPair(const NetnsPair&) = delete;
  NetnsPair& operator=(const NetnsPair&) = delete;

  [[nodiscard]] bool ok() const { return error_.empty(); }
  [[nodiscard]] const std::string& error() const { return error_; }
  [[nodiscard]] const std::string& a() const { return a_; }
  [[nodiscard]] const std::string& b() const { return b_; }
  // Black-holes B: its end of the veth goes down, so nothing passes either way.
  std::string cutB() {
    auto [rc, out] = shell("ip -n " + b_ + " link set " + b_ + " down");
    return rc == 0 ? std::string() : out;
  }

 private:
  std::string a_, b_, error_;
  bool createdA_ = false, createdB_ = false;
};

// ---- 1. wire format -----------------------------------------------------------------

TEST(HeartbeatMessage, EncodesTheDocumentedBigEndianLayout) {
  const HeartbeatMessage m{HeartbeatType::Pong, 0xA1B2, 0x0102030405060708ull, 0x1112131415161718ull};
  char body[HeartbeatMessage::kBodyBytes];
  m.encode(body);
  const unsigned char expect[24] = {'K', 'L', 'H', 'B', 1,    2,    0xA1, 0xB2, 1,    2,    3,    4,
                                    5,   6,   7,   8,   0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18};
  EXPECT_EQ(std::memcmp(body, expect, sizeof expect), 0);

  char frame[HeartbeatMessage::kFrameBytes];
  m.encodeFrame(frame);
  const unsigned char header[4] = {0x80, 0, 0, 24};  // control bit + length 24
  EXPECT_EQ(std::memcmp(frame, header, 4), 0);
  EXPECT_EQ(std::memcmp(frame + 4, expect, sizeof expect), 0);
}

TEST(HeartbeatMessage, RoundTripsEveryTypeAndPongEchoesPing) {
  const TimePoint t = Clock::now();
  for (const HeartbeatMessage& m :
       {HeartbeatMessage::ping(42, t), HeartbeatMessage::pongFor(HeartbeatMessage::ping(7, t)),
        HeartbeatMessage::goAway(0xBEEF), HeartbeatMessage{HeartbeatType::Ping, 0xFFFF, ~0ull, ~0ull}}) {
    char body[HeartbeatMessage::kBodyBytes];
    m.encode(body);
    const auto back = HeartbeatMessage::decode(std::span<const char>(body, sizeof body));
    ASSERT_TRUE(back.has_value()) << toString(m.type);
    EXPECT_EQ(*back, m);
  }
  const HeartbeatMessage ping = HeartbeatMessage::ping(9, t);
  const HeartbeatMessage pong = HeartbeatMessage::pongFor(ping);
  EXPECT_EQ(pong.type, HeartbeatType::Pong);
  EXPECT_EQ(pong.sequence, 9u);
  EXPECT_EQ(pong.timestamp, ping.timestamp);
  EXPECT_EQ(HeartbeatMessage::unstamp(ping.timestamp), t);
}

TEST(HeartbeatMessage, RejectsWrongSizeMagicVersionTypeAndGarbage) {
  char good[HeartbeatMessage::kBodyBytes];
  HeartbeatMessage::ping(1, Clock::now()).encode(good);
  const std::string valid(good, sizeof good);
  ASSERT_TRUE(HeartbeatMessage::decode(valid).has_value());

  auto decodes = [](std::string s) { return HeartbeatMessage::decode(std::span<const char>(s)).has_value(); };
  EXPECT_FALSE(decodes(""));
  EXPECT_FALSE(decodes(valid.substr(0, 23)));
  EXPECT_FALSE(decodes(valid + "x"));
  EXPECT_FALSE(decodes(frameOf(valid, true)));  // the frame, not the body
  for (int i = 0; i < 4; ++i) {
    std::string s = valid;
    auto& c = s[static_cast<std::size_t>(i)];
    c = static_cast<char>(c ^ 0x20);  // "kLHB", "KlHB"...
    EXPECT_FALSE(decodes(s)) << "magic byte " << i;
  }
  for (int version : {0, 2, 255}) {
    std::string s = valid;
    s[4] = static_cast<char>(version);
    EXPECT_FALSE(decodes(s)) << "version " << version;
  }
  for (int type : {0, 4, 128, 255}) {
    std::string s = valid;
    s[5] = static_cast<char>(type);
    EXPECT_FALSE(decodes(s)) << "type " << type;
  }
  int accepted = 0;
  for (std::uint32_t seed = 1; seed <= 2000; ++seed) accepted += decodes(test::randomBytes(24, seed)) ? 1 : 0;
  EXPECT_EQ(accepted, 0) << "random 24-byte garbage passed for a heartbeat";
}

// ---- the schedule, on synthetic time ------------------------------------------------

// Fires the schedule's timer the way a loop would (exactly on time) until it
// says Dead or `limit` passes; returns the fire times (offsets from t0) and actions.
struct Fired {
  milliseconds at;
  HeartbeatSchedule::Action action;
};
std::vector<Fired> drive(HeartbeatSchedule& s, TimePoint t0,
                         const std::function<TimePoint(TimePoint)>& lastHeard, milliseconds limit = 60s) {
  std::vector<Fired> out;
  TimePoint t = t0 + s.firstDelay();
  while (t - t0 <= limit) {
    const auto step = s.onTimer(t, lastHeard(t));
    out.push_back({std::chrono::duration_cast<milliseconds>(t - t0), step.action});
    if (step.action == HeartbeatSchedule::Action::Dead) break;
    t += step.next;
  }
  return out;
}

using A = HeartbeatSchedule::Action;

TEST(HeartbeatSchedule, PingsAtKeepaliveThenEveryIntervalThenDeadAtKeepalivePlusCountIntervals) {
  HeartbeatSchedule s({.keepaliveTime = 1000ms, .probeInterval = 200ms, .probeCount = 3, .jitterPercent = 0});
  const TimePoint t0{};
  s.start(t0, 0ms);
  const auto fired = drive(s, t0, [&](TimePoint) { return t0; });
  ASSERT_EQ(fired.size(), 4u);
  EXPECT_EQ(fired[0].at, 1000ms);
  EXPECT_EQ(fired[1].at, 1200ms);
  EXPECT_EQ(fired[2].at, 1400ms);
  EXPECT_EQ(fired[3].at, 1600ms);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(fired[static_cast<std::size_t>(i)].action, A::Ping);
  EXPECT_EQ(fired[3].action, A::Dead);
  const HeartbeatOptions o{
      .keepaliveTime = 1000ms, .probeInterval = 200ms, .probeCount = 3, .jitterPercent = 0};
  EXPECT_EQ(s.silence(t0 + 1600ms), o.deadAfter());
}

TEST(HeartbeatSchedule, ActivityOnlyMovesTheNextExpiryNeverTheTimer) {
  HeartbeatSchedule s({.keepaliveTime = 1000ms, .probeInterval = 200ms, .probeCount = 3, .jitterPercent = 0});
  const TimePoint t0{};
  s.start(t0, 0ms);
  // Traffic every 10 ms for 5 s: the timer fires once per keepalive, never pings.
  const auto fired = drive(
      s, t0, [&](TimePoint t) { return t0 + (t - t0) / 10ms * 10ms; }, 5000ms);
  ASSERT_FALSE(fired.empty());
  EXPECT_LE(fired.size(), 6u);
  for (const auto& f : fired) EXPECT_EQ(f.action, A::Wait);

  // Heard at 400 ms: the first expiry re-arms for the 400 ms remainder.
  s.start(t0, 0ms);
  const auto step = s.onTimer(t0 + 1000ms, t0 + 400ms);
  EXPECT_EQ(step.action, A::Wait);
  EXPECT_EQ(step.next, 400ms);
}

TEST(HeartbeatSchedule, AnAnswerStartsANewSilentSpell) {
  HeartbeatSchedule s({.keepaliveTime = 1000ms, .probeInterval = 200ms, .probeCount = 3, .jitterPercent = 0});
  const TimePoint t0{};
  s.start(t0, 0ms);
  EXPECT_EQ(s.onTimer(t0 + 1000ms, t0).action, A::Ping);
  EXPECT_EQ(s.onTimer(t0 + 1200ms, t0).action, A::Ping);
  EXPECT_EQ(s.probesOut(), 2);
  // The PONG came at 1250 ms: no probe is out any more, next PING 1 s later.
  const auto step = s.onTimer(t0 + 1400ms, t0 + 1250ms);
  EXPECT_EQ(step.action, A::Wait);
  EXPECT_EQ(step.next, 850ms);
  EXPECT_EQ(s.probesOut(), 0);
}

TEST(HeartbeatSchedule, AStalledLoopSendsOnePingAndGivesItAFullInterval) {
  HeartbeatSchedule s({.keepaliveTime = 1000ms, .probeInterval = 200ms, .probeCount = 3, .jitterPercent = 0});
  const TimePoint t0{};
  s.start(t0, 0ms);
  // The loop was blocked until 1900 ms, past the dead time: one PING, not death.
  const auto late = s.onTimer(t0 + 1900ms, t0);
  EXPECT_EQ(late.action, A::Ping);
  EXPECT_EQ(s.probesOut(), 3);
  EXPECT_EQ(late.next, 200ms);
  EXPECT_EQ(s.onTimer(t0 + 2100ms, t0).action, A::Dead);
}

TEST(HeartbeatSchedule, JitterOnlyBringsTheFirstPingForwardWithinItsShare) {
  HeartbeatOptions o{.keepaliveTime = 1000ms, .probeInterval = 200ms, .probeCount = 3, .jitterPercent = 10};
  HeartbeatSchedule s(o);
  std::set<Duration::rep> seen;
  for (int i = 0; i < 1000; ++i) {
    const Duration j = s.drawJitter();
    ASSERT_GE(j, 0ms);
    ASSERT_LE(j, 100ms);
    seen.insert(std::chrono::duration_cast<milliseconds>(j).count());
  }
  EXPECT_GT(seen.size(), 50u) << "jitter draws are not spread";
  const TimePoint t0{};
  s.start(t0, 5s);  // clamped to 10 % of 1 s
  EXPECT_EQ(s.jitter(), 100ms);
  EXPECT_EQ(s.firstDelay(), 900ms);
  const auto fired = drive(s, t0, [&](TimePoint) { return t0; });
  ASSERT_EQ(fired.size(), 4u);
  EXPECT_EQ(fired[0].at, 900ms);
  EXPECT_EQ(fired[3].at, 1600ms) << "the dead time does not move with the jitter";
}

// ---- 2. PING-PONG over loopback ---------------------------------------------------

TEST(Heartbeat, PongsGiveRttSamplesOverLoopback) {
  ServerThread srv(SocketAddress::loopback4(0), {}, [](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<PongResponder>();
  });
  LoopThread thread("prober");
  EventLoop& loop = thread.start();
  Outcome out;
  LoopClient client(loop, srv.address(), [&](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<Heartbeat>(HeartbeatOptions{.keepaliveTime = 30ms, .probeInterval = 30ms});
    c.pipeline().emplaceLast<Watch>(&out);
  });
  ASSERT_TRUE(test::eventually([&] { return client.pongs() >= 5; }, 10s));
  Duration last{}, smoothed{};
  std::uint64_t pings = 0, pongs = 0, ignored = 1;
  ASSERT_TRUE(client.with<Heartbeat>([&](Heartbeat& hb) {
    last = hb.lastRtt();
    smoothed = hb.smoothedRtt();
    pings = hb.pingsSent();
    pongs = hb.pongsReceived();
    ignored = hb.pongsIgnored();
  }));
  EXPECT_GT(last, 0ns);
  EXPECT_GT(smoothed, 0ns);
  EXPECT_LT(last, 1s);
  EXPECT_GE(pings, pongs);
  EXPECT_EQ(ignored, 0u);
  EXPECT_FALSE(out.dead.load());
  EXPECT_FALSE(out.closed());
  EXPECT_EQ(out.foreignControl.load(), 0) << "PONGs must not reach the application";
  std::printf("[measure] loopback heartbeat RTT: last %lld us, smoothed %lld us over %llu PONGs\n",
              static_cast<long long>(std::chrono::duration_cast<microseconds>(last).count()),
              static_cast<long long>(std::chrono::duration_cast<microseconds>(smoothed).count()),
              static_cast<unsigned long long>(pongs));
}

class FrameEcho final : public Handler {
 public:
  void onFrame(HandlerContext& ctx, std::span<const char> frame) override { ctx.writeFrame(frame); }
};

class SendGoAwayOnConnect final : public Handler {
 public:
  void onConnected(HandlerContext& ctx) override {
    char f[HeartbeatMessage::kFrameBytes];
    HeartbeatMessage::goAway(7).encodeFrame(f);
    ctx.write(std::span<const char>(f, sizeof f));
    ctx.fireConnected();
  }
};

TEST(Heartbeat, GoAwayBecomesAUserEventOnBothSidesAndOtherFramesPassThrough) {
  Outcome serverOut;
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<PongResponder>();
    c.pipeline().emplaceLast<SendGoAwayOnConnect>();
    c.pipeline().emplaceLast<FrameEcho>();
    c.pipeline().emplaceLast<Watch>(&serverOut);
  });
  // The server's GOAWAY reaches a keel Heartbeat as an event.
  {
    LoopThread thread("prober");
    EventLoop& loop = thread.start();
    Outcome out;
    LoopClient client(loop, srv.address(), [&](Connection& c) {
      c.pipeline().emplaceLast<FrameCodec>();
      c.pipeline().emplaceLast<Heartbeat>();
      c.pipeline().emplaceLast<Watch>(&out);
    });
    ASSERT_TRUE(test::eventually([&] { return out.goAways.load() == 1; }));
    EXPECT_EQ(out.goAwayCode.load(), 7);
    EXPECT_FALSE(out.closed()) << "GOAWAY is advice; closing is the application's call";
  }
  // A plain peer: application frames are echoed untouched through the
  // PongResponder; a PING is answered; a foreign control frame and a GOAWAY
  // reach the server's application as events.
  BlockingClient peer(srv.address());
  ASSERT_TRUE(peer.connected());
  EXPECT_EQ(peer.recvExact(HeartbeatMessage::kFrameBytes), heartbeatFrame(HeartbeatMessage::goAway(7)));
  const std::string app = frameOf(test::randomBytes(1000, 3));
  EXPECT_EQ(peer.echo(app), app);
  const HeartbeatMessage ping = HeartbeatMessage::ping(77, Clock::now());
  EXPECT_EQ(peer.echo(heartbeatFrame(ping)), heartbeatFrame(HeartbeatMessage::pongFor(ping)));
  const int goAwaysBefore = serverOut.goAways.load();
  ASSERT_TRUE(peer.sendAll(frameOf("not a heartbeat", true) + heartbeatFrame(HeartbeatMessage::goAway(3))));
  EXPECT_TRUE(test::eventually([&] { return serverOut.foreignControl.load() == 1; }));
  EXPECT_TRUE(test::eventually([&] { return serverOut.goAways.load() == goAwaysBefore + 1; }));
  EXPECT_EQ(serverOut.goAwayCode.load(), 3);
}

TEST(Heartbeat, RemovedAndAddedBackAtRunTime) {
  Connection::Ptr serverConn;
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    serverConn = c.shared_from_this();
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<PongResponder>();
  });
  auto answered = [&] {
    std::uint64_t n = 0;
    srv.runAndWait([&] {
      if (serverConn) n = serverConn->pipeline().find<PongResponder>()->pingsAnswered();
    });
    return n;
  };
  LoopThread thread("prober");
  EventLoop& loop = thread.start();
  Outcome out;
  const HeartbeatOptions fast{.keepaliveTime = 20ms, .probeInterval = 20ms, .probeCount = 3};
  LoopClient client(loop, srv.address(), [&](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<Heartbeat>(fast);
    c.pipeline().emplaceLast<Watch>(&out);
  });
  ASSERT_TRUE(test::eventually([&] { return client.pongs() >= 3; }));

  std::size_t timersWith = 0, timersWithout = 0;
  runOn(loop, [&] {
    timersWith = loop.timers().size();
    EXPECT_TRUE(client.connection()->pipeline().remove<Heartbeat>());
    timersWithout = loop.timers().size();
  });
  EXPECT_EQ(timersWithout + 1, timersWith) << "removing the handler cancels its one timer";
  std::this_thread::sleep_for(50ms);  // a PING in flight may still be answered
  const std::uint64_t before = answered();
  std::this_thread::sleep_for(300ms);  // 15 keepalive periods, 3 dead times
  EXPECT_EQ(answered(), before) << "no PINGs once the handler is gone";
  EXPECT_FALSE(out.closed()) << "and nobody declared the silent peer dead";

  runOn(loop, [&] { client.connection()->pipeline().addBefore<Watch>(std::make_unique<Heartbeat>(fast)); });
  EXPECT_TRUE(test::eventually([&] { return client.pongs() >= 3; }));
  EXPECT_GT(answered(), before);
  EXPECT_FALSE(out.closed());
  srv.runAndWait([&] { serverConn.reset(); });
}

// ---- 3. a stopped peer -------------------------------------------------------------

TEST(Heartbeat, StoppedPeerIsDeclaredDeadAndReset) {
  ResponderProcess peer(
      {.netns = "", .host = "127.0.0.1", .exitOnClose = true});  // forked before any thread exists
  ASSERT_TRUE(peer.ok());
  const HeartbeatOptions opts{.keepaliveTime = 200ms, .probeInterval = 100ms, .probeCount = 3};
  LoopThread thread("prober");
  EventLoop& loop = thread.start();
  Outcome out;
  LoopClient client(loop, peer.address(), [&](Connection& c) {
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<Heartbeat>(opts);
    c.pipeline().emplaceLast<Watch>(&out);
  });
  ASSERT_TRUE(test::eventually([&] { return client.pongs() >= 2; }, 10s)) << "the responder process answers";

  peer.stop();
  const std::int64_t stoppedAt = nowNs();
  ASSERT_TRUE(test::eventually([&] { return out.closed(); }, 10s));
  const milliseconds detected = msBetween(stoppedAt, out.closedAtNs.load());
  EXPECT_TRUE(out.closedWith(CloseReason::HeartbeatTimeout)) << out.reasonText();
  EXPECT_TRUE(out.deadBeforeClose.load()) << "PeerDead reaches the application before the close";
  EXPECT_GE(nanoseconds(out.deadSilenceNs.load()), opts.deadAfter());
  EXPECT_EQ(out.deadUnanswered.load(), 3u);
  EXPECT_LE(detected, opts.deadAfter() + 1500ms);
  std::printf(
      "[measure] SIGSTOP, heartbeat 200ms/100ms/3: detected %lld ms after the stop (silence %lld ms)\n",
      static_cast<long long>(detected.count()),
      static_cast<long long>(
          std::chrono::duration_cast<milliseconds>(nanoseconds(out.deadSilenceNs.load())).count()));

  // The close was a reset: once it runs again the peer reads ECONNRESET.
  peer.resume();
  const auto status = peer.waitExit(10s);
  ASSERT_TRUE(status.has_value()) << "the peer did not notice its connection had ended";
  ASSERT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 10 + static_cast<int>(CloseReason::PeerReset));
}

// ---- 4. a peer that streams to us and never answers -------------------------------

TEST(Heartbeat, NoFalseAlarmWhileThePeerStreamsToUsWithoutAnswering) {
  Outcome out;
  Connection::Ptr conn;
  const HeartbeatOptions opts{.keepaliveTime = 100ms, .probeInterval = 100ms, .probeCount = 5};
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    conn = c.shared_from_this();
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<Heartbeat>(opts);
    c.pipeline().emplaceLast<Watch>(&out);
  });
  BlockingClient peer(srv.address());
  ASSERT_TRUE(peer.connected());
  // 64 KiB frames every 150 ms for 3x the dead time: longer gaps than the
  // keepalive time, so PINGs go out, but never a whole dead time of silence.
  const std::string chunk = frameOf(test::randomBytes(64 << 10, 5));
  const auto until = Clock::now() + 3 * opts.deadAfter();
  int sent = 0;
  while (Clock::now() < until) {
    ASSERT_TRUE(peer.sendAll(chunk));
    ++sent;
    std::this_thread::sleep_for(150ms);
  }
  std::uint64_t pings = 0, pongs = 1;
  srv.runAndWait([&] {
    if (auto* hb = conn->pipeline().find<Heartbeat>()) {
      pings = hb->pingsSent();
      pongs = hb->pongsReceived();
    }
  });
  EXPECT_FALSE(out.dead.load());
  EXPECT_FALSE(out.closed()) << out.reasonText();
  EXPECT_TRUE(test::eventually([&] { return out.frames.load() == sent; }));
  EXPECT_GE(pings, 3u) << "PINGs went out in the gaps";
  EXPECT_EQ(pongs, 0u);

  // When the stream stops, the same silence is detected.
  const std::int64_t quietFrom = nowNs();
  ASSERT_TRUE(test::eventually([&] { return out.closed(); }, 5s));
  EXPECT_TRUE(out.closedWith(CloseReason::HeartbeatTimeout)) << out.reasonText();
  EXPECT_LE(msBetween(quietFrom, out.closedAtNs.load()), opts.deadAfter() + 1500ms);
  srv.runAndWait([&] { conn.reset(); });
}

// ---- 5. we stream to a slow reader ------------------------------------------------

// Queues `frames` frames of `bytes` on connect, behind a small send buffer.
class Streamer final : public Handler {
 public:
  Streamer(int frames, std::size_t bytes) : frames_(frames), payload_(bytes, 'x') {}
  void onConnected(HandlerContext& ctx) override {
    (void)ctx.connection().socket().setSendBuffer(64 << 10);
    for (int i = 0; i < frames_; ++i) ctx.writeFrame(payload_);
    ctx.fireConnected();
  }

 private:
  int frames_;
  std::string payload_;
};

TEST(Heartbeat, NoFalseAlarmWhileWeStreamToASlowButReadingPeer) {
  Outcome out;
  Connection::Ptr conn;
  const HeartbeatOptions opts{.keepaliveTime = 100ms, .probeInterval = 100ms, .probeCount = 5};
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    conn = c.shared_from_this();
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<Heartbeat>(opts);
    c.pipeline().emplaceLast<Streamer>(96, 256 << 10);  // 24 MiB
    c.pipeline().emplaceLast<Watch>(&out);
  });
  BlockingClient peer(srv.address());
  ASSERT_TRUE(peer.connected());
  const int small = 64 << 10;
  ::setsockopt(peer.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  // Read about 3 MB/s for 4x the dead time; the peer never sends a byte.
  const auto until = Clock::now() + 4 * opts.deadAfter();
  std::size_t got = 0;
  while (Clock::now() < until) {
    got += peer.recvExact(32 << 10).size();
    std::this_thread::sleep_for(10ms);
  }
  std::size_t queued = 0;
  srv.runAndWait([&] { queued = conn->outputBytes(); });
  EXPECT_FALSE(out.dead.load()) << "declared dead after reading " << got << " bytes";
  EXPECT_FALSE(out.closed()) << out.reasonText();
  EXPECT_GT(queued, 0u) << "the test must end while our output is still queued";

  // Once the peer stops reading, the drain stops and the silence counts.
  const std::int64_t stoppedReading = nowNs();
  ASSERT_TRUE(test::eventually([&] { return out.closed(); }, 10s));
  EXPECT_TRUE(out.closedWith(CloseReason::HeartbeatTimeout)) << out.reasonText();
  EXPECT_GE(nanoseconds(out.deadSilenceNs.load()), opts.deadAfter());
  EXPECT_LE(msBetween(stoppedReading, out.closedAtNs.load()), opts.deadAfter() + 3000ms);
  bool eof = true;
  int err = 0;
  (void)peer.recvUntilEof(&eof, &err);
  EXPECT_FALSE(eof);
  EXPECT_EQ(err, ECONNRESET) << "a heartbeat timeout resets";
  srv.runAndWait([&] { conn.reset(); });
}

// ---- 6. what each mechanism detects [measure] --------------------------------------

// Writes a small frame every `period` (keeps data in flight for TCP_USER_TIMEOUT).
class Ticker final : public Handler {
 public:
  explicit Ticker(milliseconds period) : period_(period) {}
  ~Ticker() override { stop(); }
  void onConnected(HandlerContext& ctx) override {
    loop_ = &ctx.loop();
    ctx_ = &ctx;
    timer_ = loop_->runEvery(period_, [this] { ctx_->writeFrame(std::string_view("tick")); });
    ctx.fireConnected();
  }
  void onClosed(HandlerContext& ctx, CloseReason r) override {
    stop();
    ctx.fireClosed(r);
  }
  void handlerRemoved(HandlerContext&) override { stop(); }

 private:
  void stop() {
    if (loop_ != nullptr && timer_.valid()) loop_->cancel(timer_);
    timer_ = {};
  }
  milliseconds period_;
  EventLoop* loop_ = nullptr;
  HandlerContext* ctx_ = nullptr;
  TimerId timer_;
};

// Four connections to one responder, each watched by a different mechanism
// with the same 4 s budget.
struct Mechanisms {
  static constexpr HeartbeatOptions kHeartbeat{
      .keepaliveTime = 1000ms, .probeInterval = 1000ms, .probeCount = 3};
  static constexpr KeepAliveParams kKeepAlive{.idle = 1s, .interval = 1s, .count = 3, .userTimeout = 0ms};
  static constexpr milliseconds kUserTimeout{4000};

  Outcome heartbeat, keepalive, userTimeout, userTimeoutIdle;
  std::atomic<int> optionErrors{0};
  std::unique_ptr<LoopClient> hb, ka, ut, utIdle;

  void connect(EventLoop& loop, const SocketAddress& peer) {
    hb = std::make_unique<LoopClient>(loop, peer, [this](Connection& c) {
      c.pipeline().emplaceLast<FrameCodec>();
      c.pipeline().emplaceLast<Heartbeat>(kHeartbeat);
      c.pipeline().emplaceLast<Watch>(&heartbeat);
    });
    ka = std::make_unique<LoopClient>(loop, peer, [this](Connection& c) {
      if (enableKernelKeepAlive(c.socket(), kKeepAlive)) ++optionErrors;
      c.pipeline().emplaceLast<Watch>(&keepalive);
    });
    ut = std::make_unique<LoopClient>(loop, peer, [this](Connection& c) {
      if (c.socket().setUserTimeout(kUserTimeout)) ++optionErrors;
      c.pipeline().emplaceLast<FrameCodec>();
      c.pipeline().emplaceLast<Ticker>(250ms);
      c.pipeline().emplaceLast<Watch>(&userTimeout);
    });
    utIdle = std::make_unique<LoopClient>(loop, peer, [this](Connection& c) {
      if (c.socket().setUserTimeout(kUserTimeout)) ++optionErrors;
      c.pipeline().emplaceLast<Watch>(&userTimeoutIdle);
    });
  }
  bool allConnected() const {
    return heartbeat.connected && keepalive.connected && userTimeout.connected && userTimeoutIdle.connected;
  }
  // Destroys the clients (on their loop) while the loop still runs.
  void reset() {
    hb.reset();
    ka.reset();
    ut.reset();
    utIdle.reset();
  }
};

std::string describe(const Outcome& o, std::int64_t fromNs) {
  if (!o.closed()) return "not detected";
  return std::to_string(msBetween(fromNs, o.closedAtNs.load()).count()) + " ms (" + o.reasonText() + ")";
}

TEST(Detection, BlackHoledPeerHeartbeatVsKeepaliveVsUserTimeout) {
  NetnsPair ns;
  if (!ns.ok()) GTEST_SKIP() << "black-hole test skipped: " << ns.error();
  ResponderProcess peer(
      {.netns = ns.b(), .host = "198.18.0.2", .exitOnClose = false});  // forked before any thread
  ASSERT_TRUE(peer.ok()) << "responder did not start in namespace " << ns.b();
  std::atomic<bool> inA{false};
  LoopThread thread("prober", [&](EventLoop&) { inA = enterNetns(ns.a()); });
  EventLoop& loop = thread.start();
  ASSERT_TRUE(inA.load()) << "could not enter namespace " << ns.a();

  Mechanisms m;
  m.connect(loop, peer.address());
  ASSERT_TRUE(test::eventually([&] { return m.allConnected(); }, 10s));
  ASSERT_EQ(m.optionErrors.load(), 0);
  ASSERT_TRUE(test::eventually([&] { return m.hb->pongs() >= 1; }, 10s));

  const std::string cutError = ns.cutB();
  ASSERT_TRUE(cutError.empty()) << cutError;
  const std::int64_t cutAt = nowNs();
  EXPECT_TRUE(test::eventually(
      [&] { return m.heartbeat.closed() && m.keepalive.closed() && m.userTimeout.closed(); }, 20s));
  std::this_thread::sleep_for(1s);  // one more second for the idle user-timeout connection

  std::printf("[measure] black hole (veth down), 4 s budget each:\n");
  std::printf("[measure]   keel heartbeat 1s x 3         : %s\n", describe(m.heartbeat, cutAt).c_str());
  std::printf("[measure]   kernel keepalive 1s/1s/3      : %s\n", describe(m.keepalive, cutAt).c_str());
  std::printf("[measure]   TCP_USER_TIMEOUT 4s, 4 writes/s: %s\n", describe(m.userTimeout, cutAt).c_str());
  std::printf("[measure]   TCP_USER_TIMEOUT 4s, idle     : %s\n", describe(m.userTimeoutIdle, cutAt).c_str());

  EXPECT_TRUE(m.heartbeat.closedWith(CloseReason::HeartbeatTimeout)) << m.heartbeat.reasonText();
  EXPECT_TRUE(m.heartbeat.deadBeforeClose.load());
  EXPECT_GE(nanoseconds(m.heartbeat.deadSilenceNs.load()), Mechanisms::kHeartbeat.deadAfter());
  EXPECT_LE(msBetween(cutAt, m.heartbeat.closedAtNs.load()), Mechanisms::kHeartbeat.deadAfter() + 1500ms);
  // The kernel reports ETIMEDOUT (or the EHOSTUNREACH it saw meanwhile): a socket error.
  EXPECT_TRUE(m.keepalive.closedWith(CloseReason::Error)) << m.keepalive.reasonText();
  EXPECT_LE(msBetween(cutAt, m.keepalive.closedAtNs.load()), Mechanisms::kKeepAlive.detection() + 2000ms);
  EXPECT_TRUE(m.userTimeout.closedWith(CloseReason::Error)) << m.userTimeout.reasonText();
  EXPECT_LE(msBetween(cutAt, m.userTimeout.closedAtNs.load()), Mechanisms::kUserTimeout + 2000ms);
  EXPECT_FALSE(m.userTimeoutIdle.closed()) << "TCP_USER_TIMEOUT needs data in flight";
  m.reset();
}

TEST(Detection, StoppedProcessHeartbeatVsKeepaliveVsUserTimeout) {
  ResponderProcess peer(ResponderProcess::Config{});  // forked before any thread exists
  ASSERT_TRUE(peer.ok());
  LoopThread thread("prober");
  EventLoop& loop = thread.start();
  Mechanisms m;
  m.connect(loop, peer.address());
  ASSERT_TRUE(test::eventually([&] { return m.allConnected(); }, 10s));
  ASSERT_EQ(m.optionErrors.load(), 0);
  ASSERT_TRUE(test::eventually([&] { return m.hb->pongs() >= 1; }, 10s));

  peer.stop();
  const std::int64_t stoppedAt = nowNs();
  // Kernel keepalive would notice a dead host after 4 s; give it three times that.
  const auto watchFor = 3 * Mechanisms::kKeepAlive.detection();
  EXPECT_TRUE(test::eventually([&] { return m.heartbeat.closed(); }, 10s));
  std::this_thread::sleep_until(std::chrono::steady_clock::time_point(nanoseconds(stoppedAt)) + watchFor);

  std::printf("[measure] SIGSTOPped peer process, watched for %lld s:\n",
              static_cast<long long>(watchFor.count()));
  std::printf("[measure]   keel heartbeat 1s x 3         : %s\n", describe(m.heartbeat, stoppedAt).c_str());
  std::printf("[measure]   kernel keepalive 1s/1s/3      : %s\n", describe(m.keepalive, stoppedAt).c_str());
  std::printf("[measure]   TCP_USER_TIMEOUT 4s, 4 writes/s: %s\n",
              describe(m.userTimeout, stoppedAt).c_str());
  std::printf("[measure]   TCP_USER_TIMEOUT 4s, idle     : %s\n",
              describe(m.userTimeoutIdle, stoppedAt).c_str());

  EXPECT_TRUE(m.heartbeat.closedWith(CloseReason::HeartbeatTimeout)) << m.heartbeat.reasonText();
  EXPECT_LE(msBetween(stoppedAt, m.heartbeat.closedAtNs.load()), Mechanisms::kHeartbeat.deadAfter() + 1500ms);
  EXPECT_FALSE(m.keepalive.closed()) << "the stopped process's kernel answers keepalive probes";
  EXPECT_FALSE(m.userTimeout.closed()) << "the stopped process's kernel acknowledges our data";
  EXPECT_FALSE(m.userTimeoutIdle.closed());
  m.reset();
}

// ---- kernel keepalive settings -----------------------------------------------------

TEST(KeepAlive, SetsKeepaliveTimingAndUserTimeoutOnTheSocket) {
  Socket s = keel::test::openTcp(AF_INET);
  ASSERT_FALSE(enableKernelKeepAlive(s, {.idle = 5s, .interval = 2s, .count = 4, .userTimeout = 1500ms}));
  EXPECT_TRUE(s.keepAlive());
  EXPECT_EQ(s.keepIdle(), 5s);
  EXPECT_EQ(s.keepInterval(), 2s);
  EXPECT_EQ(s.keepCount(), 4);
  EXPECT_EQ(s.userTimeout(), 1500ms);
  EXPECT_EQ((KeepAliveParams{.idle = 5s, .interval = 2s, .count = 4}.detection()), 13s);
}

TEST(KeepAlive, OutOfRangeValuesAreRefusedBeforeAnythingChanges) {
  Socket s = keel::test::openTcp(AF_INET);
  for (const KeepAliveParams& bad : {KeepAliveParams{.idle = 0s}, KeepAliveParams{.interval = 0s},
                                     KeepAliveParams{.count = 0}, KeepAliveParams{.count = 128},
                                     KeepAliveParams{.idle = 40000s}, KeepAliveParams{.userTimeout = -1ms}}) {
    EXPECT_EQ(enableKernelKeepAlive(s, bad), std::make_error_code(std::errc::invalid_argument));
  }
  EXPECT_FALSE(s.keepAlive());
}

TEST(KeepAlive, DefaultDetectionTimeComesFromTheSysctls) {
  auto readLong = [](const char* path) {
    long v = -1;
    if (FILE* f = std::fopen(path, "r")) {
      if (std::fscanf(f, "%ld", &v) != 1) v = -1;
      std::fclose(f);
    }
    return v;
  };
  const long time = readLong("/proc/sys/net/ipv4/tcp_keepalive_time");
  const long intvl = readLong("/proc/sys/net/ipv4/tcp_keepalive_intvl");
  const long probes = readLong("/proc/sys/net/ipv4/tcp_keepalive_probes");
  if (time < 0 || intvl < 0 || probes < 0) GTEST_SKIP() << "cannot read /proc/sys/net/ipv4/tcp_keepalive_*";
  const KernelKeepAliveDefaults d = readKernelKeepAliveDefaults();
  EXPECT_TRUE(d.fromSysctl);
  const std::chrono::seconds expect(time + intvl * probes);
  EXPECT_EQ(defaultKeepAliveDetection(), expect);
  const auto h = std::chrono::duration_cast<std::chrono::hours>(expect);
  const auto min = std::chrono::duration_cast<std::chrono::minutes>(expect - h);
  const auto sec = expect - h - min;
  std::printf(
      "[measure] kernel keepalive defaults here: %ld + %ld x %ld s = %lld s (%lld h %lld min %lld s)\n", time,
      probes, intvl, static_cast<long long>(expect.count()), static_cast<long long>(h.count()),
      static_cast<long long>(min.count()), static_cast<long long>(sec.count()));
  if (time == 7200 && intvl == 75 && probes == 9) {
    EXPECT_EQ(expect, 2h + 11min + 15s);
  }
}

// ---- 7. UDP -----------------------------------------------------------------------

// A responder endpoint and a probing endpoint on one loop thread.
struct UdpPair {
  static constexpr HeartbeatOptions kOpts{.keepaliveTime = 30ms, .probeInterval = 30ms, .probeCount = 3};

  LoopThread thread{"udp"};
  EventLoop* loop = nullptr;
  std::unique_ptr<UdpEndpoint> responder;
  std::unique_ptr<UdpHeartbeat> prober;
  std::unique_ptr<UdpEndpoint> proberEndpoint;
  std::atomic<int> rttSamples{0};
  std::atomic<std::int64_t> lastRttNs{0};
  std::atomic<bool> dead{false};
  std::atomic<std::int64_t> deadAtNs{0};
  std::atomic<std::int64_t> deadSilenceNs{0};
  std::vector<std::string> responderApp, proberApp;  // loop thread

  std::error_code start() {
    loop = &thread.start();
    std::error_code ec;
    runOn(*loop, [&] {
      responder = std::make_unique<UdpEndpoint>(
          *loop, udpPongResponder([this](UdpEndpoint&, std::span<const char> d, const SocketAddress&) {
            responderApp.emplace_back(d.data(), d.size());
          }));
      if ((ec = responder->bind(SocketAddress::loopback4(0)))) return;
      prober = std::make_unique<UdpHeartbeat>(*loop, responder->localAddress(), kOpts);
      prober->setRttCallback([this](Duration rtt) {
        lastRttNs = rtt.count();
        ++rttSamples;
      });
      prober->setDeadCallback([this](Duration silence) {
        deadSilenceNs = silence.count();
        deadAtNs = nowNs();
        dead = true;
      });
      proberEndpoint = std::make_unique<UdpEndpoint>(
          *loop, prober->wrap([this](UdpEndpoint&, std::span<const char> d, const SocketAddress&) {
            proberApp.emplace_back(d.data(), d.size());
          }));
      if ((ec = proberEndpoint->bind(SocketAddress::loopback4(0)))) return;
      prober->start(*proberEndpoint);
    });
    return ec;
  }
  ~UdpPair() {
    if (loop == nullptr) return;
    runOn(*loop, [&] {
      prober.reset();  // before its endpoint
      proberEndpoint.reset();
      responder.reset();
    });
  }
};

TEST(UdpHeartbeat, PongsGiveRttAndOtherDatagramsStillReachTheApplication) {
  UdpPair u;
  ASSERT_FALSE(u.start());
  ASSERT_TRUE(test::eventually([&] { return u.rttSamples.load() >= 5; }));
  EXPECT_GT(nanoseconds(u.lastRttNs.load()), 0ns);
  EXPECT_FALSE(u.dead.load());
  runOn(*u.loop, [&] {
    EXPECT_FALSE(u.proberEndpoint->sendTo(std::span<const char>("hello", 5), u.responder->localAddress()));
    EXPECT_FALSE(u.responder->sendTo(std::span<const char>("world", 5), u.proberEndpoint->localAddress()));
  });
  std::vector<std::string> atResponder, atProber;
  std::uint64_t pings = 0, pongs = 0;
  Duration srtt{};
  ASSERT_TRUE(test::eventually([&] {
    runOn(*u.loop, [&] {
      atResponder = u.responderApp;
      atProber = u.proberApp;
      pings = u.prober->pingsSent();
      pongs = u.prober->pongsReceived();
      srtt = u.prober->smoothedRtt();
    });
    return !atResponder.empty() && !atProber.empty();
  }));
  EXPECT_EQ(atResponder, std::vector<std::string>{"hello"}) << "PINGs are answered, not delivered";
  EXPECT_EQ(atProber, std::vector<std::string>{"world"}) << "PONGs are consumed, not delivered";
  EXPECT_GE(pings, pongs);
  EXPECT_GT(srtt, 0ns);
}

TEST(UdpHeartbeat, PeerIsDeadOnceItsEndpointCloses) {
  UdpPair u;
  ASSERT_FALSE(u.start());
  ASSERT_TRUE(test::eventually([&] { return u.rttSamples.load() >= 2; }));
  std::int64_t closedAt = 0;
  runOn(*u.loop, [&] {
    u.responder->close();
    closedAt = nowNs();
  });
  ASSERT_TRUE(test::eventually([&] { return u.dead.load(); }, 5s));
  EXPECT_GE(nanoseconds(u.deadSilenceNs.load()), UdpPair::kOpts.deadAfter());
  EXPECT_LE(msBetween(closedAt, u.deadAtNs.load()), UdpPair::kOpts.deadAfter() + 1500ms);
  bool probing = true;
  runOn(*u.loop, [&] { probing = u.prober->probing(); });
  EXPECT_FALSE(probing) << "probing stops once the peer is dead";
}

// ---- 8. jitter over 1,000 connections ---------------------------------------------

// Sits between the codec and the Heartbeat and notes when the first PING leaves.
class FirstPingRecorder final : public Handler {
 public:
  std::error_code write(HandlerContext& ctx, const Slices& data) override {
    if (!first_ && data.count() == 1 && data.totalBytes() == HeartbeatMessage::kFrameBytes) {
      const auto msg = HeartbeatMessage::decode(data[0].subspan(FrameCodec::kHeaderBytes));
      if (msg && msg->type == HeartbeatType::Ping) first_ = ctx.loop().now();
    }
    return ctx.write(data);
  }
  std::optional<TimePoint> first_;
};

TEST(Heartbeat, FirstPingsOfAThousandConnectionsAreSpreadByJitter) {
  constexpr int kConnections = 1000;
  std::vector<Connection::Ptr> conns;  // server loop only
  ServerThread srv(SocketAddress::loopback4(0), {}, [&](Connection& c) {
    conns.push_back(c.shared_from_this());
    c.pipeline().emplaceLast<FrameCodec>();
    c.pipeline().emplaceLast<FirstPingRecorder>();
  });
  std::vector<std::unique_ptr<BlockingClient>> peers;
  for (int i = 0; i < kConnections; ++i) {
    peers.push_back(std::make_unique<BlockingClient>(srv.address()));
    ASSERT_TRUE(peers.back()->connected()) << "connection " << i;
  }
  ASSERT_TRUE(test::eventually([&] { return srv.server().connectionCount() == kConnections; }));

  // Switches every connection's Heartbeat on in one loop task (so all start at
  // the same instant) and returns each first PING's offset from that instant.
  auto firstPingOffsets = [&](int jitterPercent) {
    const HeartbeatOptions opts{
        .keepaliveTime = 1000ms, .probeInterval = 10s, .probeCount = 3, .jitterPercent = jitterPercent};
    TimePoint t0;
    srv.runAndWait([&] {
      t0 = srv.loop().now();
      for (auto& c : conns) {
        (void)c->pipeline().remove<Heartbeat>();
        c->pipeline().find<FirstPingRecorder>()->first_.reset();
        c->pipeline().emplaceLast<Heartbeat>(opts);
      }
    });
    // Keep the loop undisturbed while the PINGs are due (polling it would
    // bunch the timers behind the polls), then collect.
    std::this_thread::sleep_for(opts.keepaliveTime + 100ms);
    std::vector<milliseconds> offsets;
    EXPECT_TRUE(test::eventually(
        [&] {
          offsets.clear();
          srv.runAndWait([&] {
            for (auto& c : conns) {
              if (auto& f = c->pipeline().find<FirstPingRecorder>()->first_) {
                offsets.push_back(std::chrono::duration_cast<milliseconds>(*f - t0));
              }
            }
          });
          return offsets.size() == kConnections;
        },
        10s));
    return offsets;
  };
  auto distinctMs = [](const std::vector<milliseconds>& v) {
    std::map<milliseconds::rep, int> perMs;
    for (auto o : v) ++perMs[o.count()];
    int busiest = 0;
    for (auto& [ms, n] : perMs) busiest = std::max(busiest, n);
    return std::pair<std::size_t, int>(perMs.size(), busiest);
  };

  const auto lockstep = firstPingOffsets(0);
  const auto [lockstepMs, lockstepBusiest] = distinctMs(lockstep);
  const auto spread = firstPingOffsets(10);
  const auto [spreadMs, spreadBusiest] = distinctMs(spread);
  ASSERT_EQ(spread.size(), static_cast<std::size_t>(kConnections));
  const auto [lo, hi] = std::minmax_element(spread.begin(), spread.end());
  std::printf(
      "[measure] first PINGs of %d connections started together: jitter 0%% -> %zu distinct ms (busiest "
      "%d); jitter 10%% -> %zu distinct ms over %lld..%lld ms (busiest %d)\n",
      kConnections, lockstepMs, lockstepBusiest, spreadMs, static_cast<long long>(lo->count()),
      static_cast<long long>(hi->count()), spreadBusiest);

  EXPECT_LE(lockstepMs, 5u) << "without jitter they all ping together (the control)";
  EXPECT_GE(*lo, 899ms) << "never earlier than keepaliveTime minus 10 %";
  EXPECT_LE(*hi, 1000ms + 500ms);
  EXPECT_GE(*hi - *lo, 50ms) << "spread over at least half the 100 ms jitter window";
  const auto early = std::count_if(spread.begin(), spread.end(), [](milliseconds o) { return o < 950ms; });
  EXPECT_GE(early, kConnections / 4) << "the first half of the window holds its share";
  EXPECT_LE(early, kConnections * 3 / 4) << "the second half of the window holds its share";
  // The loop wakes about once a millisecond, and on a loaded machine a
  // starved iteration sends every PING that fell due meanwhile with one
  // timestamp (with a load average of 10 on 2 cores we saw 4 distinct ms and
  // 385 PINGs in the busiest one); lockstep puts all 1,000 in one.
  EXPECT_GE(spreadMs, 2u);
  EXPECT_LE(spreadBusiest, kConnections / 2) << "half of the PINGs left in the same millisecond";

  srv.runAndWait([&] { conns.clear(); });
}

}  // namespace
}  // namespace keel
