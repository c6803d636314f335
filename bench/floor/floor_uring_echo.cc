// floor-uring-echo: the io_uring floor, next to floor-echo's epoll one. A
// minimal single-threaded echo server on io_uring with no framework, so an
// io_uring event loop (keel's or anyone's) can be compared with what a bare
// ring costs, and the two floors with each other.
//
//   floor-uring-echo --port P        (port 0 picks a free one)
//
// The loop: one multishot accept on the listening socket, one multishot recv
// per connection drawing from a ring of provided buffers, and each received
// buffer sent back as it is (no copy) by one send; the buffer returns to the
// ring when its bytes are all out. Every turn of the loop is one
// io_uring_submit_and_wait: it submits the sends and re-arms queued while
// handling the previous turn's completions and waits for the next ones.
// A connection has at most one send in flight (two could be reordered); the
// rest wait in its queue. MSG_WAITALL has the kernel finish a short send
// itself, so a short result means the socket failed (the remainder is
// queued anyway, and its send fails too).
// A send on loopback completes inside the io_uring_enter that submits it, so
// waiting for one completion would return at once with it: two enters per
// ping-pong message. The wait asks for one more completion than the sends
// just submitted, unless a connection needs its send's completion to go on
// (more bytes queued behind it, a recv to re-arm, a close to finish, buffers
// to give back to a starved recv): otherwise the peer's next bytes are the
// event that ends the wait, and the send's completion is handled with them.
// The ring runs with SINGLE_ISSUER | DEFER_TASKRUN (completion work runs in
// our io_uring_enter, not as an interrupt of whatever we are doing), or
// plain if the kernel refuses them.
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <vector>

#include "FloorListen.h"

namespace {

volatile std::sig_atomic_t gStop = 0;
void onSignal(int) { gStop = 1; }

constexpr unsigned kRingEntries = 4096;
constexpr unsigned kBufCount = 1024;  // a power of two, as the buffer ring needs
constexpr unsigned kBufSize = 16 * 1024;
constexpr int kBufGroup = 0;
// A peer that sends faster than it reads would otherwise pin the whole ring
// (an armed multishot recv keeps taking buffers): past this many queued
// buffers its recv is cancelled, and re-armed once the queue has drained.
constexpr std::size_t kMaxQueued = 8;

enum Op : std::uint64_t { kAccept = 0, kRecv = 1, kSend = 2, kCancel = 3 };
std::uint64_t tag(int fd, Op op) { return (static_cast<std::uint64_t>(fd) << 2) | op; }

struct Chunk {
  unsigned short bid;  // provided buffer holding the bytes
  unsigned off;
  unsigned len;
};

struct Conn {
  bool open = false;
  bool recvArmed = false;   // a multishot recv may still post completions
  bool cancelling = false;  // the recv is being cancelled (queue full)
  bool sending = false;     // out.front() is in flight
  bool eof = false;         // the peer's FIN came: close once the queue is out
  bool closing = false;
  std::deque<Chunk> out;
};

io_uring gRing;
io_uring_buf_ring* gBufRing = nullptr;
char* gBufs = nullptr;
int gReturned = 0;          // buffers given back this turn, published at its end
std::vector<Conn> gConns;   // indexed by fd
std::vector<int> gStarved;  // recv ended with -ENOBUFS: re-armed once buffers return
std::vector<int> gSent;     // connections whose send was queued this turn
bool gFlushed = false;      // the SQ filled up mid-turn and was submitted early
int gListenFd = -1;

io_uring_sqe* sqe() {
  io_uring_sqe* s = io_uring_get_sqe(&gRing);
  if (s == nullptr) {  // queue full: submit what is there, which frees every slot
    io_uring_submit(&gRing);
    gFlushed = true;
    s = io_uring_get_sqe(&gRing);
  }
  return s;
}

void recycle(unsigned short bid) {
  io_uring_buf_ring_add(gBufRing, gBufs + std::size_t{bid} * kBufSize, kBufSize, bid,
                        io_uring_buf_ring_mask(kBufCount), gReturned++);
}

void armAccept() {
  io_uring_sqe* s = sqe();
  io_uring_prep_multishot_accept(s, gListenFd, nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(s, tag(gListenFd, kAccept));
}

void armRecv(int fd, Conn& c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_recv_multishot(s, fd, nullptr, 0, 0);
  s->flags |= IOSQE_BUFFER_SELECT;
  s->buf_group = kBufGroup;
  io_uring_sqe_set_data64(s, tag(fd, kRecv));
  c.recvArmed = true;
}

void sendFront(int fd, Conn& c) {
  const Chunk& ch = c.out.front();
  io_uring_sqe* s = sqe();
  io_uring_prep_send(s, fd, gBufs + std::size_t{ch.bid} * kBufSize + ch.off, ch.len,
                     MSG_NOSIGNAL | MSG_WAITALL);
  io_uring_sqe_set_data64(s, tag(fd, kSend));
  c.sending = true;
  gSent.push_back(fd);
}

// The fd is closed only once no operation on it can still complete, so a
// late completion never lands on a new connection that reused the number.
void startClose(int fd, Conn& c) {
  if (!c.closing) {
    c.closing = true;
    ::shutdown(fd, SHUT_RDWR);  // ends the armed recv and fails the send in flight
  }
  if (c.recvArmed || c.sending) return;
  for (const Chunk& ch : c.out) recycle(ch.bid);
  ::close(fd);
  c = Conn{};
}

bool wantsRecv(const Conn& c) { return !c.closing && !c.eof && !c.recvArmed && c.out.size() < kMaxQueued; }

void pauseRecv(int fd, Conn& c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_cancel64(s, tag(fd, kRecv), 0);
  io_uring_sqe_set_data64(s, tag(fd, kCancel));
  c.cancelling = true;
}

void onAccept(const io_uring_cqe* cqe) {
  if (!(cqe->flags & IORING_CQE_F_MORE)) armAccept();
  if (cqe->res < 0) {
    if (cqe->res != -ECONNABORTED && cqe->res != -EINTR)
      std::fprintf(stderr, "floor-uring-echo: accept: %s\n", std::strerror(-cqe->res));
    return;
  }
  int fd = cqe->res;
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (static_cast<std::size_t>(fd) >= gConns.size()) gConns.resize(static_cast<std::size_t>(fd) * 2 + 1);
  Conn& c = gConns[static_cast<std::size_t>(fd)];
  c.open = true;
  armRecv(fd, c);
}

void onRecv(int fd, Conn& c, const io_uring_cqe* cqe) {
  if (!(cqe->flags & IORING_CQE_F_MORE)) c.recvArmed = c.cancelling = false;
  const int res = cqe->res;
  if (res > 0 && !c.closing) {
    c.out.push_back(
        {static_cast<unsigned short>(cqe->flags >> IORING_CQE_BUFFER_SHIFT), 0, static_cast<unsigned>(res)});
    if (!c.sending) sendFront(fd, c);
    if (c.recvArmed && !c.cancelling && c.out.size() >= kMaxQueued) pauseRecv(fd, c);
  } else if (cqe->flags & IORING_CQE_F_BUFFER) {
    recycle(static_cast<unsigned short>(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
  }
  if (res == 0) c.eof = true;
  if (c.closing || (res < 0 && res != -ENOBUFS && res != -ECANCELED) || (c.eof && c.out.empty()))
    return startClose(fd, c);
  if (res == -ENOBUFS) return gStarved.push_back(fd);
  if (wantsRecv(c)) armRecv(fd, c);  // the multishot ended: re-arm
}

void onSend(int fd, Conn& c, const io_uring_cqe* cqe) {
  c.sending = false;
  if (cqe->res < 0 || c.closing) return startClose(fd, c);
  Chunk& ch = c.out.front();
  ch.off += static_cast<unsigned>(cqe->res);
  ch.len -= static_cast<unsigned>(cqe->res);
  if (ch.len == 0) {
    recycle(ch.bid);
    c.out.pop_front();
  }
  if (!c.out.empty()) return sendFront(fd, c);  // the rest of a short send, or the next chunk
  if (c.eof) return startClose(fd, c);
  if (wantsRecv(c)) armRecv(fd, c);  // resumes a recv paused by kMaxQueued
}

void onCompletion(const io_uring_cqe* cqe) {
  const auto op = static_cast<Op>(cqe->user_data & 3);
  const auto fd = static_cast<int>(cqe->user_data >> 2);
  if (op == kAccept) return onAccept(cqe);
  if (op == kCancel) return;  // the cancelled recv reports on its own
  Conn& c = gConns[static_cast<std::size_t>(fd)];
  if (!c.open) return;
  op == kRecv ? onRecv(fd, c, cqe) : onSend(fd, c, cqe);
}

// Publishes the buffers given back this turn, then re-arms the recvs that
// found the ring empty (only then: re-armed on an empty ring they would
// fail again at once).
void endTurn() {
  if (gReturned == 0) return;
  io_uring_buf_ring_advance(gBufRing, gReturned);
  gReturned = 0;
  for (int fd : gStarved) {
    Conn& c = gConns[static_cast<std::size_t>(fd)];
    if (c.open && wantsRecv(c)) armRecv(fd, c);
  }
  gStarved.clear();
}

// How many completions the next io_uring_enter waits for (see the top).
unsigned waitCount() {
  bool needed = gFlushed || !gStarved.empty();
  for (int fd : gSent) {
    const Conn& c = gConns[static_cast<std::size_t>(fd)];
    needed = needed || c.out.size() > 1 || !c.recvArmed || c.closing;
  }
  const auto n = needed ? 1 : static_cast<unsigned>(gSent.size()) + 1;
  gSent.clear();
  gFlushed = false;
  return n;
}

bool setupRing(const char*& mode) {
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  mode = "single_issuer+defer_taskrun";
  if (io_uring_queue_init_params(kRingEntries, &gRing, &p) < 0) {
    p = io_uring_params{};
    mode = "plain";
    if (int rc = io_uring_queue_init_params(kRingEntries, &gRing, &p); rc < 0) {
      std::fprintf(stderr, "floor-uring-echo: io_uring_queue_init: %s\n", std::strerror(-rc));
      return false;
    }
  }
  const std::size_t ringBytes = kBufCount * sizeof(io_uring_buf);
  void* mem = ::mmap(nullptr, ringBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  gBufs = static_cast<char*>(std::aligned_alloc(4096, std::size_t{kBufCount} * kBufSize));
  if (mem == MAP_FAILED || gBufs == nullptr) {
    std::perror("floor-uring-echo: buffers");
    return false;
  }
  gBufRing = static_cast<io_uring_buf_ring*>(mem);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uintptr_t>(mem);
  reg.ring_entries = kBufCount;
  reg.bgid = kBufGroup;
  if (int rc = io_uring_register_buf_ring(&gRing, &reg, 0); rc < 0) {
    std::fprintf(stderr, "floor-uring-echo: register_buf_ring: %s\n", std::strerror(-rc));
    return false;
  }
  io_uring_buf_ring_init(gBufRing);
  for (unsigned i = 0; i < kBufCount; ++i) recycle(static_cast<unsigned short>(i));
  io_uring_buf_ring_advance(gBufRing, gReturned);
  gReturned = 0;
  return true;
}

int usage() {
  std::fprintf(stderr, "usage: floor-uring-echo --port P   (P in 0..65535, 0 picks a free port)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  long port = -1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      char* end = nullptr;
      port = std::strtol(argv[++i], &end, 10);
      if (*argv[i] == '\0' || *end != '\0' || port < 0 || port > 65535) return usage();
    } else {
      return usage();
    }
  }
  if (port < 0) return usage();

  struct sigaction sa {};
  sa.sa_handler = onSignal;  // no SA_RESTART: io_uring_enter returns -EINTR
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  std::uint16_t bound = 0;
  gListenFd = listenLoopback(static_cast<std::uint16_t>(port), 0, bound);
  if (gListenFd < 0) {
    std::perror("floor-uring-echo: listen");
    return 1;
  }
  const char* mode = nullptr;
  if (!setupRing(mode)) return 1;
  armAccept();
  std::printf("floor-uring-echo listening on 127.0.0.1:%u (io_uring %s)\n", bound, mode);
  std::fflush(stdout);

  while (!gStop) {
    int rc = io_uring_submit_and_wait(&gRing, waitCount());
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
      std::fprintf(stderr, "floor-uring-echo: io_uring_submit_and_wait: %s\n", std::strerror(-rc));
      return 1;
    }
    unsigned head = 0, seen = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(&gRing, head, cqe) {
      onCompletion(cqe);
      ++seen;
    }
    io_uring_cq_advance(&gRing, seen);
    endTurn();
  }
  for (std::size_t fd = 0; fd < gConns.size(); ++fd)
    if (gConns[fd].open) ::close(static_cast<int>(fd));
  io_uring_queue_exit(&gRing);
  ::close(gListenFd);
  return 0;
}
