// libuv-echo: the echo server written against libuv 1.x, as a peer for the
// keel echo benchmarks.
//
//   libuv-echo --port P [--threads 1]      (port 0 picks a free one)
//
// How it echoes: uv_listen on a uv_tcp_t; each accepted connection gets
// uv_tcp_nodelay and uv_read_start. The alloc callback hands libuv a 64 KiB
// heap buffer; the read callback passes that buffer, holding the nread
// bytes, to uv_write with its own write request, and the write callback
// frees the request and keeps the buffer as the connection's spare for its
// next read (one is recycled, any extra freed, so a steady echo does not
// allocate per read). When more than 1 MiB is queued behind the kernel,
// reading stops until the queue is empty. One uv_loop, one thread:
// --threads above 1 is refused. SIGINT/SIGTERM close every handle, so
// uv_run returns by itself.
#include <sys/socket.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <utility>

#include <uv.h>
#include <CLI/CLI.hpp>

namespace {

constexpr std::size_t kReadSize = 64 * 1024;
constexpr std::size_t kQueueLimit = std::size_t{1} << 20;

struct Conn {
  uv_tcp_t tcp;           // tcp.data points back here; listener and signals keep data null
  char* spare = nullptr;  // a read buffer whose write has finished
  bool paused = false;
  ~Conn() { delete[] spare; }
};

struct WriteReq {
  uv_write_t req;  // first member: the uv_write_t* libuv hands back is the WriteReq*
  uv_buf_t buf;
};

uv_stream_t* asStream(Conn* c) { return reinterpret_cast<uv_stream_t*>(&c->tcp); }
uv_handle_t* asHandle(Conn* c) { return reinterpret_cast<uv_handle_t*>(&c->tcp); }

void onClosed(uv_handle_t* h) { delete static_cast<Conn*>(h->data); }

void closeConn(uv_stream_t* s) {
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(s)))
    uv_close(reinterpret_cast<uv_handle_t*>(s), onClosed);
}

void onAlloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  auto* c = static_cast<Conn*>(h->data);
  buf->base = c->spare != nullptr ? std::exchange(c->spare, nullptr) : new char[kReadSize];
  buf->len = kReadSize;
}

void giveBack(Conn* c, char* base) {
  if (c->spare == nullptr) {
    c->spare = base;
  } else {
    delete[] base;
  }
}

void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);

void onWrite(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<WriteReq*>(req);
  uv_stream_t* s = req->handle;
  auto* c = static_cast<Conn*>(s->data);  // still alive: cancelled writes report before the close callback
  giveBack(c, w->buf.base);
  delete w;
  if (status < 0) return closeConn(s);  // includes UV_ECANCELED while closing
  if (c->paused && uv_stream_get_write_queue_size(s) == 0) {
    c->paused = false;
    uv_read_start(s, onAlloc, onRead);
  }
}

void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  if (nread <= 0) {
    giveBack(static_cast<Conn*>(s->data), buf->base);
    if (nread < 0) closeConn(s);  // UV_EOF or an error; 0 is just EAGAIN
    return;
  }
  auto* w = new WriteReq;
  w->buf = uv_buf_init(buf->base, static_cast<unsigned>(nread));
  if (uv_write(&w->req, s, &w->buf, 1, onWrite) != 0) {
    giveBack(static_cast<Conn*>(s->data), w->buf.base);
    delete w;
    return closeConn(s);
  }
  if (uv_stream_get_write_queue_size(s) > kQueueLimit) {
    static_cast<Conn*>(s->data)->paused = true;
    uv_read_stop(s);
  }
}

void onConnection(uv_stream_t* server, int status) {
  if (status < 0) {
    std::fprintf(stderr, "libuv-echo: accept: %s\n", uv_strerror(status));
    return;
  }
  auto* c = new Conn;
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, asStream(c)) != 0) return uv_close(asHandle(c), onClosed);
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start(asStream(c), onAlloc, onRead);
}

void onSignal(uv_signal_t* sig, int) {
  uv_walk(
      sig->loop,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, h->data != nullptr ? onClosed : nullptr);
      },
      nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"libuv-echo: echo server on libuv"};
  std::uint16_t port = 7000;
  int threads = 1;
  app.add_option("--port", port, "TCP port on 127.0.0.1 (0 picks a free one)")->capture_default_str();
  app.add_option("--threads", threads, "event loops (only 1 is supported)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (threads != 1) {
    std::fprintf(stderr, "libuv-echo: --threads %d: only one uv_loop (--threads 1) is supported\n", threads);
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);

  uv_loop_t* loop = uv_default_loop();
  uv_tcp_t server;
  uv_tcp_init(loop, &server);
  server.data = nullptr;
  sockaddr_in addr{};
  uv_ip4_addr("127.0.0.1", port, &addr);
  int len = sizeof addr;
  int rc = uv_tcp_bind(&server, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&server), SOMAXCONN, onConnection);
  if (rc == 0) rc = uv_tcp_getsockname(&server, reinterpret_cast<sockaddr*>(&addr), &len);
  if (rc != 0) {
    std::fprintf(stderr, "libuv-echo: listen: %s\n", uv_strerror(rc));
    return 1;
  }

  uv_signal_t sigint, sigterm;
  uv_signal_init(loop, &sigint);
  uv_signal_init(loop, &sigterm);
  sigint.data = sigterm.data = nullptr;
  uv_signal_start(&sigint, onSignal, SIGINT);
  uv_signal_start(&sigterm, onSignal, SIGTERM);

  std::printf("libuv-echo listening on 127.0.0.1:%u\n", ntohs(addr.sin_port));
  std::fflush(stdout);
  uv_run(loop, UV_RUN_DEFAULT);  // returns once every handle is closed
  return uv_loop_close(loop) == 0 ? 0 : 1;
}
