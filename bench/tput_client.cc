// keel-tput: the ping-pong throughput client every echo server in the bench
// suite is driven by (the test muduo and asio use). Plain non-blocking
// sockets and one edge-triggered epoll loop on one thread, no keel.
//
//   keel-tput --host 127.0.0.1 --port P --connections C --block B --seconds S
//             [--warmup W] [--json]
//
// All C connections are made first (the soft RLIMIT_NOFILE is raised to the
// hard one so 1000+ work). Then each sends one block of B bytes; whenever a
// connection has its whole block back it checks it and sends it again, so
// every connection always has exactly one block in flight. Bytes received
// are counted over S seconds, after a warm-up of at least W seconds in which
// every connection has had at least one reply. Each connection's block
// starts with its own 8-byte id (and, for B >= 16, a message counter), and
// every echoed block must equal what was sent.
// Prints MiB/s and messages/s; --json prints one JSON object on one line.
// --server-pid PID also reads that process's utime+stime (/proc/PID/stat) at
// the start and end of the timed run, so the server's CPU per message covers
// exactly the messages counted (not the connects or the warm-up).
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::int64_t kMaxBlock = std::int64_t{64} << 20;
constexpr double kReplyTimeoutSeconds = 10;  // warm-up gives up if a connection is still silent

struct Conn {
  int fd = -1;
  std::size_t index = 0;
  std::uint64_t id = 0;  // the block's first 8 bytes
  std::uint64_t seq = 0;
  std::vector<char> out;  // the block in flight
  std::vector<char> in;   // its echo, as it arrives
  std::size_t sent = 0;
  std::size_t got = 0;
  bool answered = false;  // at least one full block came back
};

struct Totals {
  std::uint64_t bytes = 0;
  std::uint64_t msgs = 0;
  std::size_t answered = 0;  // connections with at least one reply
};

bool fail(const char* what, const Conn& c) {
  std::fprintf(stderr, "keel-tput: connection %zu: %s\n", c.index, what);
  return false;
}

// Writes the rest of the block until it is all out or the kernel is full
// (then the next EPOLLOUT edge resumes).
bool pumpOut(Conn& c) {
  while (c.sent < c.out.size()) {
    ssize_t w = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) return true;
    if (w < 0) return fail(std::strerror(errno), c);
    c.sent += static_cast<std::size_t>(w);
  }
  return true;
}

void stampNext(Conn& c) {
  ++c.seq;
  if (c.out.size() >= 16) std::memcpy(c.out.data() + 8, &c.seq, sizeof c.seq);
  c.sent = 0;
}

// Edge-triggered: read until EAGAIN, sending the block again each time a
// full copy has come back.
bool onReady(Conn& c, std::uint32_t events, Totals& t) {
  if (events & EPOLLERR) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    return fail(std::strerror(err), c);
  }
  if (!pumpOut(c)) return false;
  for (;;) {
    ssize_t r = ::recv(c.fd, c.in.data() + c.got, c.in.size() - c.got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return true;
    if (r < 0) return fail(std::strerror(errno), c);
    if (r == 0) return fail("server closed the connection", c);
    c.got += static_cast<std::size_t>(r);
    t.bytes += static_cast<std::uint64_t>(r);
    if (c.got < c.in.size()) continue;
    if (std::memcmp(c.in.data(), c.out.data(), c.in.size()) != 0)
      return fail("echoed block differs from the one sent", c);
    c.got = 0;
    ++t.msgs;
    if (!c.answered) {
      c.answered = true;
      ++t.answered;
    }
    stampNext(c);
    if (!pumpOut(c)) return false;
  }
}

int connectTo(const addrinfo* list, std::string& error) {
  for (const addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      error = std::strerror(errno);
      continue;
    }
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      return fd;
    }
    error = std::strerror(errno);
    ::close(fd);
  }
  return -1;
}

// utime + stime of a process in seconds, or a negative value if unreadable.
double cpuSeconds(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = stat.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) return -1;
  std::istringstream fields(stat.substr(paren + 1));
  std::string skip;
  for (int i = 0; i < 11; ++i) fields >> skip;  // state .. cmajflt
  unsigned long long utime = 0, stime = 0;
  if (!(fields >> utime >> stime)) return -1;
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-tput: ping-pong throughput client (one block in flight per connection)"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  int connections = 1;
  std::int64_t block = 16384;
  double seconds = 0;
  double warmup = 1;
  bool json = false;
  long serverPid = 0;
  app.add_option("--host", host, "server address or name")->capture_default_str();
  app.add_option("--port", port, "server TCP port")->required();
  app.add_option("--connections", connections, "concurrent connections")->capture_default_str();
  app.add_option("--block", block, "bytes per message (each connection has one in flight)")
      ->capture_default_str();
  app.add_option("--seconds", seconds, "length of the timed run")->required();
  app.add_option("--warmup", warmup, "untimed seconds first (and until every connection had a reply)")
      ->capture_default_str();
  app.add_flag("--json", json, "print one JSON object on one line");
  app.add_option("--server-pid", serverPid, "also report this process's CPU time over the timed run")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  if (port == 0) return std::fprintf(stderr, "keel-tput: --port must be in 1..65535\n"), 2;
  if (connections < 1) return std::fprintf(stderr, "keel-tput: --connections must be >= 1\n"), 2;
  if (block < 8 || block > kMaxBlock)
    return std::fprintf(stderr, "keel-tput: --block must be in 8..67108864\n"), 2;
  if (!(seconds > 0)) return std::fprintf(stderr, "keel-tput: --seconds must be > 0\n"), 2;
  if (!(warmup >= 0)) return std::fprintf(stderr, "keel-tput: --warmup must be >= 0\n"), 2;

  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  if (lim.rlim_cur != RLIM_INFINITY && static_cast<rlim_t>(connections) + 16 > lim.rlim_cur) {
    std::fprintf(stderr, "keel-tput: %d connections need more descriptors than RLIMIT_NOFILE (%llu)\n",
                 connections, static_cast<unsigned long long>(lim.rlim_cur));
    return 1;
  }

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list); rc != 0) {
    std::fprintf(stderr, "keel-tput: %s: %s\n", host.c_str(), ::gai_strerror(rc));
    return 1;
  }
  const auto n = static_cast<std::size_t>(block);
  std::vector<Conn> conns(static_cast<std::size_t>(connections));
  for (std::size_t i = 0; i < conns.size(); ++i) {
    Conn& c = conns[i];
    std::string error;
    c.fd = connectTo(list, error);
    if (c.fd < 0) {
      std::fprintf(stderr, "keel-tput: connect %s:%u (connection %zu): %s\n", host.c_str(), port, i,
                   error.c_str());
      return 1;
    }
    c.index = i;
    c.id = 0x6b65656c00000000ull + i;  // "keel" + index: distinct first 8 bytes per connection
    c.out.resize(n);
    c.in.resize(n);
    for (std::size_t j = 8; j < n; ++j) c.out[j] = static_cast<char>('a' + (i + j) % 26);
    std::memcpy(c.out.data(), &c.id, sizeof c.id);
  }
  ::freeaddrinfo(list);

  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  for (std::size_t i = 0; i < conns.size(); ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
    ev.data.u64 = i;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
  }

  Totals totals;
  std::vector<epoll_event> events(std::min<std::size_t>(conns.size(), 1024));
  // Runs the loop until `done()` says so; false if a connection failed.
  auto run = [&](auto done) {
    while (!done()) {
      int k = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 10);
      if (k < 0 && errno == EINTR) continue;
      if (k < 0) {
        std::perror("keel-tput: epoll_wait");
        return false;
      }
      for (int e = 0; e < k; ++e) {
        const epoll_event& ev = events[static_cast<std::size_t>(e)];
        if (!onReady(conns[ev.data.u64], ev.events, totals)) return false;
      }
    }
    return true;
  };

  for (Conn& c : conns)
    if (!pumpOut(c)) return 1;
  const auto warmStart = Clock::now();
  bool silent = false;
  if (!run([&] {
        double s = secondsSince(warmStart);
        silent = totals.answered < conns.size() && s > warmup + kReplyTimeoutSeconds;
        return silent || (s >= warmup && totals.answered == conns.size());
      }))
    return 1;
  if (silent) {
    std::fprintf(stderr, "keel-tput: %zu of %zu connections had no reply after %.0f s\n",
                 conns.size() - totals.answered, conns.size(), secondsSince(warmStart));
    return 1;
  }

  const Totals before = totals;
  const double cpu0 = serverPid > 0 ? cpuSeconds(serverPid) : -1;
  const auto start = Clock::now();
  if (!run([&] { return secondsSince(start) >= seconds; })) return 1;
  const double elapsed = secondsSince(start);
  const double cpu1 = serverPid > 0 ? cpuSeconds(serverPid) : -1;
  for (Conn& c : conns) ::close(c.fd);
  ::close(ep);

  const auto bytes = static_cast<double>(totals.bytes - before.bytes);
  const auto msgs = static_cast<double>(totals.msgs - before.msgs);
  const double mibPerS = bytes / elapsed / (1024.0 * 1024.0);
  const double msgsPerS = msgs / elapsed;
  std::string cpu;  // empty, or the JSON members / text of the server's CPU
  if (serverPid > 0 && cpu0 >= 0 && cpu1 >= 0 && msgs > 0) {
    const double usPerMsg = (cpu1 - cpu0) * 1e6 / msgs;
    char text[160];
    if (json)
      std::snprintf(text, sizeof text, ",\"server_cpu_s\":%.3f,\"server_cpu_us_per_msg\":%.4f", cpu1 - cpu0,
                    usPerMsg);
    else
      std::snprintf(text, sizeof text, "  server %.3f s CPU, %.3f us/msg\n", cpu1 - cpu0, usPerMsg);
    cpu = text;
  } else if (serverPid > 0) {
    std::fprintf(stderr, "keel-tput: no CPU time for process %ld\n", serverPid);
    return 1;
  }
  if (json) {
    std::printf(
        "{\"connections\":%d,\"block\":%lld,\"seconds\":%.3f,\"mib_per_s\":%.2f,\"msgs_per_s\":%.1f%s}\n",
        connections, static_cast<long long>(block), elapsed, mibPerS, msgsPerS, cpu.c_str());
  } else {
    std::printf("keel-tput %s:%u connections=%d block=%lld seconds=%.3f warmup=%.1f\n", host.c_str(), port,
                connections, static_cast<long long>(block), elapsed, warmup);
    std::printf("  %.2f MiB/s  %.1f msgs/s\n%s", mibPerS, msgsPerS, cpu.c_str());
  }
  return 0;
}
