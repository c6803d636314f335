// keel-sws: silly-window avoidance on Linux, measured from TCP_INFO.
//
//   keel-sws [--rcvbuf B] [--read R] [--bytes N] [--mss M] [--ss] [--json]
//
// One process, one loopback connection: a sender thread writes N bytes in
// 64 KiB blocking writes as fast as the receiver lets it; the receiver
// thread drains them R bytes per recv(). --rcvbuf sets SO_RCVBUF on the
// listening socket before listen() (the accepted socket inherits it, the
// window scale is chosen from it, and receive autotuning is off); 0 keeps
// the kernel's autotuned buffer. --mss clamps the MSS of both ends with
// TCP_MAXSEG before the handshake (loopback's own is about 64 KiB, far
// above any real path's), so a window of a few KiB spans several segments.
//
// Silly-window syndrome is a receiver that announces every few bytes it
// frees and a sender that fills each such sliver with a tiny segment. What
// this measures, with both ends' counters read before and after the
// transfer: the sender's data segments and their mean size (bytes sent /
// data segments), the receiver's segments (pure ACKs: its window updates)
// and the bytes each of them released, and the receiver's reads. With --ss
// a helper thread runs `ss -tin` on the connection when half the bytes are
// in, and its lines are part of the JSON.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "tcp_stats.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "keel-sws: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

void setInt(int fd, int level, int name, int value, const char* what) {
  if (::setsockopt(fd, level, name, &value, sizeof value) < 0) die(what);
}

int getInt(int fd, int level, int name) {
  int v = 0;
  socklen_t len = sizeof v;
  return ::getsockopt(fd, level, name, &v, &len) == 0 ? v : -1;
}

// tcpi_rcv_wnd (Linux 6.2) sits right after tcpi_snd_wnd; this header's
// struct ends before it, so it is read from the raw bytes when the kernel
// filled them.
long rcvWnd(int fd) {
  alignas(8) unsigned char raw[sizeof(tcp_info) + 64] = {};
  socklen_t len = sizeof raw;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, raw, &len) < 0) return -1;
  const std::size_t at = offsetof(tcp_info, tcpi_snd_wnd) + sizeof(std::uint32_t);
  if (len < at + sizeof(std::uint32_t)) return -1;
  std::uint32_t v = 0;
  std::memcpy(&v, raw + at, sizeof v);
  return v;
}

std::string jsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) >= 0x20) {
      out += c;
    }
  }
  return out + "\"";
}

std::vector<std::string> runSs(std::uint16_t port) {
  const std::string cmd =
      "ss -tin '( sport = :" + std::to_string(port) + " or dport = :" + std::to_string(port) + " )' 2>&1";
  std::vector<std::string> lines;
  if (std::FILE* p = ::popen(cmd.c_str(), "r")) {
    char line[1024];
    while (std::fgets(line, sizeof line, p) != nullptr) {
      std::string l(line);
      while (!l.empty() && (l.back() == '\n' || l.back() == ' ')) l.pop_back();
      if (!l.empty()) lines.push_back(l);
    }
    ::pclose(p);
  }
  return lines;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keel-sws: bulk sender against a small, slowly drained receive buffer"};
  int rcvbuf = 4096;
  std::size_t readSize = 1;
  std::size_t bytes = std::size_t{256} << 10;
  int mss = 0;
  bool ss = false, json = false;
  app.add_option("--rcvbuf", rcvbuf, "SO_RCVBUF of the receiver (0: the kernel's autotuning)")
      ->check(CLI::Range(0, 64 << 20))
      ->capture_default_str();
  app.add_option("--read", readSize, "bytes per recv() on the receiver")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--bytes", bytes, "bytes to transfer")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 32))
      ->capture_default_str();
  app.add_option("--mss", mss, "TCP_MAXSEG on both ends before the handshake (0: loopback's)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_flag("--ss", ss, "run `ss -tin` on the connection halfway through");
  app.add_flag("--json", json, "print one JSON object on one line");
  CLI11_PARSE(app, argc, argv);

  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  if (rcvbuf > 0) setInt(lfd, SOL_SOCKET, SO_RCVBUF, rcvbuf, "SO_RCVBUF");
  if (mss > 0) setInt(lfd, IPPROTO_TCP, TCP_MAXSEG, mss, "TCP_MAXSEG (listener)");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof addr;
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 || ::listen(lfd, 1) < 0)
    die("bind/listen");
  if (::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &alen) < 0) die("getsockname");
  const std::uint16_t port = ntohs(addr.sin_port);

  const int sfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sfd < 0) die("socket");
  if (mss > 0) setInt(sfd, IPPROTO_TCP, TCP_MAXSEG, mss, "TCP_MAXSEG (sender)");
  if (::connect(sfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) die("connect");
  const int rfd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  if (rfd < 0) die("accept");
  ::close(lfd);

  const auto s0 = keelbench::localCounts(sfd);
  const auto r0 = keelbench::localCounts(rfd);
  if (!s0 || !r0) die("TCP_INFO");

  // The helper thread waits for "half the bytes are in", then looks.
  std::mutex mu;
  std::condition_variable cv;
  bool half = false, quit = false;
  std::vector<std::string> ssLines;
  long midRcvWnd = -1, midSndWnd = -1;
  unsigned midRcvSsthresh = 0;
  std::thread helper([&] {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return half || quit; });
    if (!half) return;
    lock.unlock();
    midRcvWnd = rcvWnd(rfd);
    if (auto c = keelbench::localCounts(sfd)) midSndWnd = c->sndWnd;
    if (auto c = keelbench::localCounts(rfd)) midRcvSsthresh = c->rcvSsthresh;
    if (ss) ssLines = runSs(port);
  });

  std::thread sender([&] {
    std::vector<char> block(std::size_t{64} << 10, 's');
    std::size_t left = bytes;
    while (left > 0) {
      const ssize_t w = ::send(sfd, block.data(), std::min(left, block.size()), MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) die("send");
      left -= static_cast<std::size_t>(w);
    }
  });

  std::vector<char> buf(readSize);
  std::size_t got = 0;
  std::uint64_t reads = 0;
  const auto start = Clock::now();
  while (got < bytes) {
    const ssize_t r = ::recv(rfd, buf.data(), std::min(readSize, bytes - got), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) die("recv");
    got += static_cast<std::size_t>(r);
    ++reads;
    if (!half && got >= bytes / 2) {
      std::lock_guard lock(mu);
      half = true;
      cv.notify_one();
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  sender.join();
  {
    std::lock_guard lock(mu);
    quit = true;
    cv.notify_one();
  }
  helper.join();
  const auto s1 = keelbench::localCounts(sfd);
  const auto r1 = keelbench::localCounts(rfd);
  if (!s1 || !r1) die("TCP_INFO");
  const int effRcvbuf = getInt(rfd, SOL_SOCKET, SO_RCVBUF);

  const auto dataSegs = s1->dataSegsOut - s0->dataSegsOut;
  const auto sent = s1->bytesSent - s0->bytesSent;
  const auto acks = r1->segsOut - r0->segsOut;
  const double meanSeg = dataSegs ? static_cast<double>(sent) / static_cast<double>(dataSegs) : 0;
  const double perAck = acks ? static_cast<double>(got) / static_cast<double>(acks) : 0;
  if (json) {
    std::printf(
        "{\"rcvbuf_set\":%d,\"rcvbuf_effective\":%d,\"read_size\":%zu,\"bytes\":%zu,\"mss_set\":%d,"
        "\"snd_mss\":%u,\"rcv_mss\":%u,\"seconds\":%.4f,\"mib_per_s\":%.2f,\"reads\":%llu,"
        "\"sender_data_segs\":%llu,\"sender_bytes_sent\":%llu,\"mean_segment_bytes\":%.1f,"
        "\"receiver_segs_out\":%llu,\"bytes_per_receiver_segment\":%.1f,\"reads_per_window_update\":%.1f,"
        "\"mid_rcv_wnd\":%ld,\"mid_snd_wnd\":%ld,\"mid_rcv_ssthresh\":%u,",
        rcvbuf, effRcvbuf, readSize, bytes, mss, s1->sndMss, r1->rcvMss, seconds,
        static_cast<double>(got) / seconds / (1 << 20), static_cast<unsigned long long>(reads),
        static_cast<unsigned long long>(dataSegs), static_cast<unsigned long long>(sent), meanSeg,
        static_cast<unsigned long long>(acks), perAck,
        acks ? static_cast<double>(reads) / static_cast<double>(acks) : 0.0, midRcvWnd, midSndWnd,
        midRcvSsthresh);
    keelbench::printDelta(stdout, "sender_tcp", *s0, *s1);
    std::printf(",");
    keelbench::printDelta(stdout, "receiver_tcp", *r0, *r1);
    std::printf(",\"ss\":[");
    for (std::size_t i = 0; i < ssLines.size(); ++i)
      std::printf("%s%s", i ? "," : "", jsonString(ssLines[i]).c_str());
    std::printf("]}\n");
  } else {
    std::printf(
        "keel-sws rcvbuf %d (effective %d) read %zu B mss %u: %.1f MiB/s, %llu data segments of %.0f B "
        "mean, %llu receiver segments (%.0f B each)\n",
        rcvbuf, effRcvbuf, readSize, s1->sndMss, static_cast<double>(got) / seconds / (1 << 20),
        static_cast<unsigned long long>(dataSegs), meanSeg, static_cast<unsigned long long>(acks), perAck);
    for (const auto& l : ssLines) std::printf("  %s\n", l.c_str());
  }
  ::close(sfd);
  ::close(rfd);
  return 0;
}
