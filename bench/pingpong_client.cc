// keel-pingpong: the latency client every echo server in the bench suite is
// driven by. Plain blocking sockets, no keel, one connection, one request in
// flight: send N bytes, read N bytes back, time the round trip.
//
//   keel-pingpong --host 127.0.0.1 --port P --size N --count C
//                 [--warmup W] [--nodelay 0|1] [--mode echo|wwr|tiny]
//                 [--batch none|cork|msgmore] [--json]
//
// --mode echo: each request is one write() of N bytes.
// --mode wwr:  "write-write-read", each request is two write() calls (the
//              first half, then the second half) before the N-byte read; with
//              --nodelay 0 this shows the Nagle / delayed-ACK interaction.
// --mode tiny: N write() calls of 1 byte each, then the N-byte read: the
//              tinygram pattern Nagle exists for.
// --batch cork:    TCP_CORK on before a request's writes, off after them.
// --batch msgmore: every write of a request but the last carries MSG_MORE.
// Prints p50, p90, p99, p99.9, max and mean in microseconds; --json prints
// them as one JSON object on one line instead, with the segments each end
// sent and received during the timed round trips (TCP_INFO here, sock_diag
// for the server's end; see tcp_stats.h).
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "tcp_stats.h"

namespace {

// The whole request is written before the reply is read, so it must fit in
// the socket buffers between client and server (several MiB on loopback;
// 16 MB deadlocks with default sysctls). 1 MiB leaves a wide margin.
constexpr std::int64_t kMaxSize = std::int64_t{1} << 20;

int connectTo(const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &list); rc != 0) {
    std::fprintf(stderr, "keel-pingpong: %s: %s\n", host.c_str(), ::gai_strerror(rc));
    return -1;
  }
  int fd = -1;
  int lastErrno = 0;
  for (addrinfo* ai = list; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd >= 0 && ::connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
      lastErrno = errno;
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(list);
  if (fd < 0)
    std::fprintf(stderr, "keel-pingpong: connect %s:%u: %s\n", host.c_str(), port, std::strerror(lastErrno));
  return fd;
}

// One blocking write() per call unless the kernel takes only part.
bool sendAll(int fd, const char* data, std::size_t n, int flags = 0) {
  while (n > 0) {
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL | flags);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      std::fprintf(stderr, "keel-pingpong: send: %s\n", std::strerror(errno));
      return false;
    }
    data += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool recvAll(int fd, char* data, std::size_t n) {
  while (n > 0) {
    ssize_t r = ::recv(fd, data, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      std::fprintf(stderr, "keel-pingpong: recv: %s\n",
                   r == 0 ? "server closed the connection" : std::strerror(errno));
      return false;
    }
    data += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// Nearest-rank percentile of sorted samples (nanoseconds), in microseconds.
double percentileUs(const std::vector<std::int64_t>& sorted, double p) {
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  std::size_t idx = std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1);
  return static_cast<double>(sorted[idx]) / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-pingpong: blocking-socket ping-pong latency client"};
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::int64_t size = 0;
  std::int64_t count = 0;
  std::int64_t warmup = 1000;
  int nodelay = 1;
  std::string mode = "echo";
  std::string batch = "none";
  bool json = false;
  app.add_option("--host", host, "server address or name")->capture_default_str();
  app.add_option("--port", port, "server TCP port")->required();
  app.add_option("--size", size, "bytes per request (and per reply)")->required();
  app.add_option("--count", count, "timed round trips")->required();
  app.add_option("--warmup", warmup, "untimed round trips first")->capture_default_str();
  app.add_option("--nodelay", nodelay, "TCP_NODELAY on the client socket (0|1)")->capture_default_str();
  app.add_option("--mode", mode,
                 "echo: one write per request; wwr: two writes (halves), then read; tiny: one write per byte")
      ->check(CLI::IsMember({"echo", "wwr", "tiny"}))
      ->capture_default_str();
  app.add_option("--batch", batch, "hold a request's writes together: TCP_CORK or MSG_MORE")
      ->check(CLI::IsMember({"none", "cork", "msgmore"}))
      ->capture_default_str();
  app.add_flag("--json", json, "print one JSON object on one line");
  CLI11_PARSE(app, argc, argv);

  auto fail = [](const char* msg, std::int64_t got) {
    std::fprintf(stderr, "keel-pingpong: %s (got %lld)\n", msg, static_cast<long long>(got));
    return 2;
  };
  if (port == 0) return fail("--port must be in 1..65535", port);
  if (size < 1 || size > kMaxSize) return fail("--size must be in 1..1048576 bytes", size);
  if (count < 1) return fail("--count must be >= 1", count);
  if (warmup < 0) return fail("--warmup must be >= 0", warmup);
  if (nodelay != 0 && nodelay != 1) return fail("--nodelay must be 0 or 1", nodelay);
  const bool wwr = mode == "wwr";
  if (wwr && size < 2) return fail("--mode wwr needs --size >= 2 (two non-empty writes)", size);
  if (mode == "tiny" && size > 65536)
    return fail("--mode tiny needs --size <= 65536 (one write per byte)", size);
  const bool cork = batch == "cork";
  const int moreFlag = batch == "msgmore" ? MSG_MORE : 0;

  int fd = connectTo(host, port);
  if (fd < 0) return 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay) < 0) {
    std::fprintf(stderr, "keel-pingpong: TCP_NODELAY: %s\n", std::strerror(errno));
    return 1;
  }

  const auto n = static_cast<std::size_t>(size);
  // Where each write of a request ends: one, two (halves) or n pieces.
  std::vector<std::size_t> cuts;
  if (mode == "tiny") {
    for (std::size_t i = 1; i <= n; ++i) cuts.push_back(i);
  } else if (wwr) {
    cuts = {n / 2, n};
  } else {
    cuts = {n};
  }
  auto setCork = [fd](int on) { return ::setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on) == 0; };
  auto sendRequest = [&](const char* data) {
    if (cork && !setCork(1)) return false;
    std::size_t at = 0;
    for (std::size_t k = 0; k < cuts.size(); ++k) {
      const bool last = k + 1 == cuts.size();
      if (!sendAll(fd, data + at, cuts[k] - at, last ? 0 : moreFlag)) return false;
      at = cuts[k];
    }
    return !cork || setCork(0);  // uncorking pushes the held bytes out at once
  };
  std::vector<char> request(n);
  std::vector<char> reply(n);
  for (std::size_t i = 0; i < n; ++i) request[i] = static_cast<char>('a' + i % 26);

  // Segment counters of both ends, read around the timed round trips only.
  struct Ends {
    std::optional<keelbench::SegCounts> client, server;
  } before, after;
  std::string diagError;
  auto snapshot = [&](Ends& e) {
    e.client = keelbench::localCounts(fd);
    e.server = keelbench::peerCounts(fd, &diagError);
  };

  std::vector<std::int64_t> samples;
  samples.reserve(static_cast<std::size_t>(count));
  const std::int64_t total = warmup + count;
  for (std::int64_t i = 0; i < total; ++i) {
    request[0] = static_cast<char>(i);  // a stale or shifted reply shows up below
    if (i == warmup) snapshot(before);
    auto start = std::chrono::steady_clock::now();
    bool ok = sendRequest(request.data()) && recvAll(fd, reply.data(), n);
    auto end = std::chrono::steady_clock::now();
    if (!ok) {
      std::fprintf(stderr, "keel-pingpong: failed after %lld round trips\n", static_cast<long long>(i));
      return 1;
    }
    if (std::memcmp(request.data(), reply.data(), n) != 0) {
      std::fprintf(stderr, "keel-pingpong: reply %lld differs from the request\n", static_cast<long long>(i));
      return 1;
    }
    if (i >= warmup)
      samples.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
  }
  snapshot(after);
  ::close(fd);

  double sum = 0;
  for (auto s : samples) sum += static_cast<double>(s);
  const double meanUs = sum / static_cast<double>(samples.size()) / 1000.0;
  std::sort(samples.begin(), samples.end());
  const double p50 = percentileUs(samples, 50), p90 = percentileUs(samples, 90),
               p99 = percentileUs(samples, 99), p999 = percentileUs(samples, 99.9),
               maxUs = static_cast<double>(samples.back()) / 1000.0;
  if (json) {
    std::printf(
        "{\"size\":%lld,\"count\":%lld,\"warmup\":%lld,\"mode\":\"%s\",\"nodelay\":%d,\"batch\":\"%s\","
        "\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,\"p999_us\":%.3f,\"max_us\":%.3f,\"mean_us\":%.3f",
        static_cast<long long>(size), static_cast<long long>(count), static_cast<long long>(warmup),
        mode.c_str(), nodelay, batch.c_str(), p50, p90, p99, p999, maxUs, meanUs);
    if (before.client && after.client) {
      std::printf(",");
      keelbench::printDelta(stdout, "client_tcp", *before.client, *after.client);
    }
    if (before.server && after.server) {
      std::printf(",");
      keelbench::printDelta(stdout, "server_tcp", *before.server, *after.server);
    } else {
      std::printf(",\"server_tcp_error\":\"%s\"", diagError.c_str());
    }
    std::printf("}\n");
  } else {
    std::printf("keel-pingpong %s:%u size=%lld count=%lld warmup=%lld mode=%s nodelay=%d\n", host.c_str(),
                port, static_cast<long long>(size), static_cast<long long>(count),
                static_cast<long long>(warmup), mode.c_str(), nodelay);
    std::printf("  p50 %.2f us  p90 %.2f us  p99 %.2f us  p99.9 %.2f us  max %.2f us  mean %.2f us\n", p50,
                p90, p99, p999, maxUs, meanUs);
  }
  return 0;
}
