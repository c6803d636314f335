// floor-echo: the baseline ("floor") for the echo benchmarks. A minimal,
// single-threaded epoll echo server with no framework, so every other server
// can be compared with what a bare loop costs.
//
//   floor-echo --port P [--et]        (port 0 picks a free one)
//
// Level-triggered (default): on EPOLLIN one read() into a 64 KiB buffer, then
// one write() of those bytes. If the kernel takes only part, the rest waits in
// the connection's string, reading pauses and the interest becomes EPOLLOUT
// until the string is drained, then EPOLLIN again.
// Edge-triggered (--et): registered once for EPOLLIN|EPOLLOUT|EPOLLET; read
// until EAGAIN, writing each chunk back (until EAGAIN) as it arrives.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "FloorListen.h"

namespace {

volatile std::sig_atomic_t gStop = 0;
void onSignal(int) { gStop = 1; }

struct Conn {
  bool open = false;
  bool paused = false;  // ET: input left unread while output was stuck
  std::string pending;  // bytes the kernel has not taken yet
};

bool gEdge = false;
int gEpoll = -1;
std::vector<Conn> gConns;  // indexed by fd
char gBuf[64 * 1024];

void closeConn(int fd) {
  ::close(fd);  // also drops it from the epoll set
  gConns[static_cast<std::size_t>(fd)] = Conn{};
}

void setInterest(int fd, std::uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  ::epoll_ctl(gEpoll, EPOLL_CTL_MOD, fd, &ev);
}

// Writes n bytes (once under LT, until EAGAIN under ET); whatever the kernel
// does not take is appended to c.pending. Returns false on a socket error.
bool writeOut(int fd, Conn& c, const char* data, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno != EAGAIN) return false;
    std::size_t done = w < 0 ? 0 : static_cast<std::size_t>(w);
    data += done;
    n -= done;
    if (w < 0 || !gEdge) break;
  }
  c.pending.append(data, n);
  return true;
}

bool flush(int fd, Conn& c) {
  std::string rest;
  rest.swap(c.pending);
  return writeOut(fd, c, rest.data(), rest.size());
}

void onLevel(int fd, Conn& c) {
  if (!c.pending.empty()) {  // interest is EPOLLOUT only (or an error came)
    if (!flush(fd, c)) return closeConn(fd);
    if (c.pending.empty()) setInterest(fd, EPOLLIN);
    return;
  }
  ssize_t r = ::read(fd, gBuf, sizeof gBuf);
  if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (r <= 0) return closeConn(fd);
  if (!writeOut(fd, c, gBuf, static_cast<std::size_t>(r))) return closeConn(fd);
  if (!c.pending.empty()) setInterest(fd, EPOLLOUT);
}

void onEdge(int fd, Conn& c, std::uint32_t events) {
  if (!c.pending.empty() && !flush(fd, c)) return closeConn(fd);
  if (!c.pending.empty()) return;  // still stuck: the next EPOLLOUT edge resumes
  if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !c.paused) return;
  c.paused = false;
  for (;;) {
    ssize_t r = ::read(fd, gBuf, sizeof gBuf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) return closeConn(fd);
    if (!writeOut(fd, c, gBuf, static_cast<std::size_t>(r))) return closeConn(fd);
    if (!c.pending.empty()) {
      c.paused = true;  // stop reading until the output drains
      return;
    }
  }
}

void acceptAll(int listenFd) {
  for (;;) {
    int fd = ::accept4(listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN) std::perror("floor-echo: accept4");
      return;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (static_cast<std::size_t>(fd) >= gConns.size()) gConns.resize(static_cast<std::size_t>(fd) * 2 + 1);
    gConns[static_cast<std::size_t>(fd)].open = true;
    epoll_event ev{};
    ev.events = gEdge ? (EPOLLIN | EPOLLOUT | EPOLLET) : EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(gEpoll, EPOLL_CTL_ADD, fd, &ev);
  }
}

int usage() {
  std::fprintf(stderr, "usage: floor-echo --port P [--et]   (P in 0..65535, 0 picks a free port)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  long port = -1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--et") == 0) {
      gEdge = true;
    } else if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      char* end = nullptr;
      port = std::strtol(argv[++i], &end, 10);
      if (*argv[i] == '\0' || *end != '\0' || port < 0 || port > 65535) return usage();
    } else {
      return usage();
    }
  }
  if (port < 0) return usage();

  struct sigaction sa {};
  sa.sa_handler = onSignal;  // no SA_RESTART: epoll_wait returns EINTR
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  std::uint16_t bound = 0;
  const int listenFd = listenLoopback(static_cast<std::uint16_t>(port), SOCK_NONBLOCK, bound);
  if (listenFd < 0) {
    std::perror("floor-echo: listen");
    return 1;
  }

  gEpoll = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.fd = listenFd;
  ::epoll_ctl(gEpoll, EPOLL_CTL_ADD, listenFd, &lev);
  std::printf("floor-echo listening on 127.0.0.1:%u\n", bound);
  std::fflush(stdout);

  epoll_event events[256];
  while (!gStop) {
    int n = ::epoll_wait(gEpoll, events, 256, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::perror("floor-echo: epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == listenFd) {
        acceptAll(listenFd);
      } else if (gConns[static_cast<std::size_t>(fd)].open) {
        Conn& c = gConns[static_cast<std::size_t>(fd)];
        gEdge ? onEdge(fd, c, events[i].events) : onLevel(fd, c);
      }
    }
  }
  for (std::size_t fd = 0; fd < gConns.size(); ++fd)
    if (gConns[fd].open) ::close(static_cast<int>(fd));
  ::close(gEpoll);
  ::close(listenFd);
  return 0;
}
