// Soak with proof of no loss: many connections send random-sized messages
// through a keel echo server (2 I/O threads) and every byte must come back
// in order and intact.
//
// Each message is [u32 total length][u32 connection][u64 sequence]
// [u32 FNV-1a of the payload][payload]. Its size and payload are derived
// from (connection, sequence), so the client keeps nothing it sent: it
// regenerates what it expects and compares every byte, the header fields
// and the checksum. Up to kWindow messages are in flight per connection.
// The client is one epoll thread (edge-triggered, fixed per-connection
// buffers allocated and touched before the run) so the server, not the
// client, is what is measured.
//
// RSS (the whole process: server and client) is sampled after a warm-up
// and at the end; it must stay within 10 %.
//
// Knobs (environment): KEEL_SOAK_SECONDS (default 20), KEEL_SOAK_CONNECTIONS
// (default 1000). Under AddressSanitizer the defaults drop to 10 s and 200
// connections; every byte is still verified. scripts/soak.sh wraps a long run.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keel/core/Fd.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "support/TestNet.h"

#if defined(__SANITIZE_ADDRESS__)
#define KEEL_SOAK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEEL_SOAK_ASAN 1
#endif
#endif
#ifndef KEEL_SOAK_ASAN
#define KEEL_SOAK_ASAN 0
#endif

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::ServerThread;

constexpr std::size_t kHeader = 20;
constexpr std::size_t kMaxPayload = 16 << 10;
constexpr std::size_t kMaxMessage = kHeader + kMaxPayload;
constexpr int kWindow = 4;

class Echo final : public Handler {
 public:
  void onData(HandlerContext& ctx, Buffer& in) override {
    ctx.write(in.readable());
    in.retrieveAll();
  }
};

long envOr(const char* name, long fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtol(v, nullptr, 10);
}

std::size_t rssBytes() {
  std::ifstream f("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

std::uint64_t mix(std::uint64_t x) {  // splitmix64
  x += 0x9E37'79B9'7F4A'7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58'476D'1CE4'E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D0'49BB'1331'11EBull;
  return x ^ (x >> 31);
}

std::size_t payloadSize(std::uint32_t conn, std::uint64_t seq) {
  return static_cast<std::size_t>(mix((std::uint64_t{conn} << 40) ^ seq) % (kMaxPayload + 1));
}

void fillPayload(std::uint32_t conn, std::uint64_t seq, char* out, std::size_t n) {
  std::uint64_t s = mix((std::uint64_t{conn} << 40) ^ seq ^ 0x5A5A'5A5A'0000'0000ull);
  for (std::size_t i = 0; i < n; i += 8) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const std::uint64_t v = s ^ (s >> 29);
    std::memcpy(out + i, &v, std::min<std::size_t>(8, n - i));
  }
}

std::uint32_t fnv1a(const char* p, std::size_t n) {
  std::uint32_t h = 2166136261u;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint8_t>(p[i])) * 16777619u;
  return h;
}

void putU32(char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (24 - 8 * i));
}
void putU64(char* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (56 - 8 * i));
}
std::uint32_t getU32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = v << 8 | static_cast<std::uint8_t>(p[i]);
  return v;
}
std::uint64_t getU64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | static_cast<std::uint8_t>(p[i]);
  return v;
}

struct Peer {
  Fd fd;
  std::uint32_t id = 0;
  std::vector<char> out;  // kWindow messages
  std::size_t outLen = 0, outOff = 0;
  std::vector<char> in;  // one whole message plus a read's worth
  std::size_t inLen = 0;
  std::uint64_t nextSend = 0, nextRecv = 0;
  bool dead = false;
};

struct Totals {
  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;
  std::uint64_t errors = 0;
};

class SoakClient {
 public:
  SoakClient(const SocketAddress& addr, std::size_t n) : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
    expect_.resize(kMaxPayload);
    peers_.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      Peer& p = peers_[i];
      p.id = static_cast<std::uint32_t>(i);
      p.out.assign(kWindow * kMaxMessage, 0);  // touched now, so RSS does not grow later
      p.in.assign(2 * kMaxMessage + (64 << 10), 0);
      p.fd = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      if (::connect(p.fd.get(), addr.data(), addr.length()) < 0 && errno != EINPROGRESS) {
        ++totals_.errors;
        p.dead = true;
        continue;
      }
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
      ev.data.u64 = i;
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, p.fd.get(), &ev);
    }
  }

  // Runs until `until`, then stops issuing messages and drains every
  // connection (up to `drainFor`). Messages still owed after that are errors.
  void run(std::chrono::steady_clock::time_point until, std::chrono::milliseconds drainFor) {
    for (Peer& p : peers_) refill(p);
    std::vector<epoll_event> events(1024);
    auto deadline = until;
    while (true) {
      const auto now = std::chrono::steady_clock::now();
      if (!draining_ && now >= until) {
        draining_ = true;
        deadline = now + drainFor;
      }
      if (draining_ && (owed(/*liveOnly=*/true) == 0 || now >= deadline)) break;
      const int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), 50);
      for (int i = 0; i < n; ++i) {
        Peer& p = peers_[events[static_cast<std::size_t>(i)].data.u64];
        if (p.dead) continue;
        if ((events[static_cast<std::size_t>(i)].events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) !=
            0) {
          readAll(p);
        }
        if (!p.dead) {
          refill(p);
          writeSome(p);
        }
      }
    }
    totals_.errors += owed();  // lost: sent, never echoed
    lost_ = owed();
  }

  // Messages sent and not (yet) echoed back.
  [[nodiscard]] std::uint64_t owed(bool liveOnly = false) const {
    std::uint64_t o = 0;
    for (const Peer& p : peers_) o += liveOnly && p.dead ? 0 : p.nextSend - p.nextRecv;
    return o;
  }
  [[nodiscard]] const Totals& totals() const { return totals_; }
  [[nodiscard]] std::uint64_t lost() const { return lost_; }
  [[nodiscard]] std::uint64_t deadPeers() const {
    std::uint64_t d = 0;
    for (const Peer& p : peers_) d += p.dead ? 1 : 0;
    return d;
  }

 private:
  void fail(Peer& p, const char* why) {
    if (totals_.errors < 10) std::fprintf(stderr, "soak: connection %u: %s\n", p.id, why);
    ++totals_.errors;
    p.dead = true;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, p.fd.get(), nullptr);
  }

  // Composes new messages while the window has room and the previous batch
  // is fully written.
  void refill(Peer& p) {
    if (draining_ || p.outOff < p.outLen) return;
    p.outLen = p.outOff = 0;
    while (p.nextSend - p.nextRecv < kWindow) {
      const std::size_t n = payloadSize(p.id, p.nextSend);
      char* m = p.out.data() + p.outLen;
      fillPayload(p.id, p.nextSend, m + kHeader, n);
      putU32(m, static_cast<std::uint32_t>(kHeader + n));
      putU32(m + 4, p.id);
      putU64(m + 8, p.nextSend);
      putU32(m + 16, fnv1a(m + kHeader, n));
      p.outLen += kHeader + n;
      ++p.nextSend;
    }
  }

  void writeSome(Peer& p) {
    while (p.outOff < p.outLen) {
      const ssize_t w = ::send(p.fd.get(), p.out.data() + p.outOff, p.outLen - p.outOff, MSG_NOSIGNAL);
      if (w > 0) {
        p.outOff += static_cast<std::size_t>(w);
      } else if (w < 0 && errno == EAGAIN) {
        return;
      } else if (w < 0 && errno == EINTR) {
        continue;
      } else {
        fail(p, "send failed");
        return;
      }
    }
  }

  void readAll(Peer& p) {
    while (true) {
      const ssize_t r = ::recv(p.fd.get(), p.in.data() + p.inLen, p.in.size() - p.inLen, 0);
      if (r > 0) {
        p.inLen += static_cast<std::size_t>(r);
        if (!parse(p)) return;
        continue;
      }
      if (r < 0 && errno == EAGAIN) return;
      if (r < 0 && errno == EINTR) continue;
      fail(p, r == 0 ? "unexpected EOF" : "recv failed");
      return;
    }
  }

  // Verifies every whole message in p.in; false when the connection failed.
  bool parse(Peer& p) {
    std::size_t off = 0;
    while (p.inLen - off >= kHeader) {
      const char* m = p.in.data() + off;
      const std::uint32_t len = getU32(m);
      const std::size_t want = kHeader + payloadSize(p.id, p.nextRecv);
      if (len != want || getU32(m + 4) != p.id || getU64(m + 8) != p.nextRecv || p.nextRecv >= p.nextSend) {
        fail(p, "header out of order or corrupted");
        return false;
      }
      if (p.inLen - off < len) break;
      const std::size_t n = len - kHeader;
      fillPayload(p.id, p.nextRecv, expect_.data(), n);
      if (getU32(m + 16) != fnv1a(m + kHeader, n) || std::memcmp(m + kHeader, expect_.data(), n) != 0) {
        fail(p, "payload corrupted");
        return false;
      }
      ++p.nextRecv;
      ++totals_.messages;
      totals_.bytes += len;
      off += len;
    }
    if (off > 0) {
      std::memmove(p.in.data(), p.in.data() + off, p.inLen - off);
      p.inLen -= off;
    }
    return true;
  }

  Fd epoll_;
  std::vector<Peer> peers_;
  std::vector<char> expect_;
  Totals totals_;
  bool draining_ = false;
  std::uint64_t lost_ = 0;
};

TEST(Soak, EveryByteComesBackInOrderAndRssStaysFlat) {
  const long seconds = envOr("KEEL_SOAK_SECONDS", KEEL_SOAK_ASAN ? 10 : 20);
  const auto conns = static_cast<std::size_t>(envOr("KEEL_SOAK_CONNECTIONS", KEEL_SOAK_ASAN ? 200 : 1000));
  const auto warmup = std::chrono::seconds(std::min<long>(3, std::max<long>(1, seconds / 5)));
  ServerOptions opts;
  opts.ioThreads = 2;
  opts.maxConnections = conns + 16;
  ServerThread srv(SocketAddress::loopback4(0), opts,
                   [](Connection& c) { c.pipeline().emplaceLast<Echo>(); });

  SoakClient client(srv.address(), conns);
  ASSERT_TRUE(test::eventually([&] { return srv.server().connectionCount() == conns; }, 30s));
  const auto start = std::chrono::steady_clock::now();
  // Warm-up: the same traffic, so buffers, arenas and the wheel have grown.
  std::size_t rssStart = 0;
  std::thread sampler([&] {
    std::this_thread::sleep_for(warmup);
    rssStart = rssBytes();
  });
  client.run(start + warmup + std::chrono::seconds(seconds), 20s);
  sampler.join();
  const std::size_t rssEnd = rssBytes();
  const Totals& t = client.totals();
  const ServerStats st = srv.server().stats();
  std::printf(
      "[soak] connections=%zu seconds=%ld (+%lld s warm-up) messages=%llu bytes=%llu errors=%llu lost=%llu "
      "server_closed=%llu rss_start=%.1f MiB rss_end=%.1f MiB (%+.1f%%)\n",
      conns, seconds, static_cast<long long>(warmup.count()), static_cast<unsigned long long>(t.messages),
      static_cast<unsigned long long>(t.bytes), static_cast<unsigned long long>(t.errors),
      static_cast<unsigned long long>(client.lost()), static_cast<unsigned long long>(st.closed),
      static_cast<double>(rssStart) / (1 << 20), static_cast<double>(rssEnd) / (1 << 20),
      100.0 * (static_cast<double>(rssEnd) - static_cast<double>(rssStart)) / static_cast<double>(rssStart));
  std::fflush(stdout);
  EXPECT_EQ(t.errors, 0u);
  EXPECT_EQ(client.lost(), 0u);
  EXPECT_EQ(client.deadPeers(), 0u);
  EXPECT_EQ(st.closed, 0u) << "the server closed connections during the soak";
  EXPECT_GT(t.messages, conns) << "too little traffic to prove anything";
  EXPECT_LE(static_cast<double>(rssEnd), static_cast<double>(rssStart) * 1.10) << "RSS grew more than 10 %";
}

// The checker itself: a server that flips one bit, or drops one byte, on
// one connection must be caught.
class Saboteur final : public Handler {
 public:
  explicit Saboteur(bool drop) : drop_(drop) {}
  void onData(HandlerContext& ctx, Buffer& in) override {
    seen_ += in.readableBytes();
    if (!done_ && seen_ > 100'000 && in.readableBytes() > 1) {
      done_ = true;
      std::string copy(in.view());
      if (drop_) {
        copy.erase(copy.size() / 2, 1);
      } else {
        copy[copy.size() / 2] = static_cast<char>(copy[copy.size() / 2] ^ 0x10);
      }
      ctx.write(copy);
    } else {
      ctx.write(in.readable());
    }
    in.retrieveAll();
  }

 private:
  bool drop_;
  bool done_ = false;
  std::size_t seen_ = 0;
};

TEST(Soak, CheckerCatchesAFlippedBitAndADroppedByte) {
  for (const bool drop : {false, true}) {
    ServerOptions opts;
    opts.ioThreads = 2;
    std::atomic<int> built{0};
    ServerThread srv(SocketAddress::loopback4(0), opts, [&](Connection& c) {
      if (built.fetch_add(1) == 3) {
        c.pipeline().emplaceLast<Saboteur>(drop);
      } else {
        c.pipeline().emplaceLast<Echo>();
      }
    });
    SoakClient client(srv.address(), 8);
    client.run(std::chrono::steady_clock::now() + 1500ms, 2s);
    EXPECT_GE(client.totals().errors, 1u) << (drop ? "a dropped byte" : "a flipped bit") << " went unnoticed";
    EXPECT_EQ(client.deadPeers(), 1u);
    std::printf(
        "[soak-check] %s on one of 8 connections: errors=%llu, messages verified on the others=%llu\n",
        drop ? "one dropped byte" : "one flipped bit",
        static_cast<unsigned long long>(client.totals().errors),
        static_cast<unsigned long long>(client.totals().messages));
  }
}

}  // namespace
}  // namespace keel
