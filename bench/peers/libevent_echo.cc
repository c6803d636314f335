// libevent-echo: the echo server written against libevent 2.1, as a peer for
// the keel echo benchmarks.
//
//   libevent-echo --port P [--threads 1]      (port 0 picks a free one)
//
// How it echoes: an evconnlistener accepts (sockets come out non-blocking),
// each connection gets TCP_NODELAY and a socket bufferevent; the read
// callback moves the whole input evbuffer onto the output evbuffer
// (bufferevent_write_buffer, no copy) and libevent writes it when it can.
// If more than 1 MiB is waiting to go out, reading stops until the output
// has drained. One event_base, one thread: --threads above 1 is refused.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <unordered_set>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <CLI/CLI.hpp>

namespace {

constexpr std::size_t kOutputLimit = std::size_t{1} << 20;

std::unordered_set<bufferevent*> gConns;  // freed at exit

void closeConn(bufferevent* bev) {
  gConns.erase(bev);
  bufferevent_free(bev);  // BEV_OPT_CLOSE_ON_FREE closes the socket
}

void onRead(bufferevent* bev, void*);
void onEvent(bufferevent* bev, short what, void*);

// The write callback, set only while reading is paused: libevent calls it
// once the output has fallen to the low watermark (0, i.e. all sent).
void resume(bufferevent* bev, void*) {
  bufferevent_setcb(bev, onRead, nullptr, onEvent, nullptr);
  bufferevent_enable(bev, EV_READ);
}

void onRead(bufferevent* bev, void*) {
  evbuffer* out = bufferevent_get_output(bev);
  bufferevent_write_buffer(bev, bufferevent_get_input(bev));
  if (evbuffer_get_length(out) > kOutputLimit) {
    bufferevent_disable(bev, EV_READ);
    bufferevent_setcb(bev, onRead, resume, onEvent, nullptr);
  }
}

void onEvent(bufferevent* bev, short what, void*) {
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) closeConn(bev);
}

void onAccept(evconnlistener* listener, evutil_socket_t fd, sockaddr*, int, void*) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  event_base* base = evconnlistener_get_base(listener);
  bufferevent* bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (bev == nullptr) {
    evutil_closesocket(fd);
    return;
  }
  gConns.insert(bev);
  bufferevent_setcb(bev, onRead, nullptr, onEvent, nullptr);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
}

void onAcceptError(evconnlistener*, void*) {
  std::fprintf(stderr, "libevent-echo: accept: %s\n", std::strerror(errno));
}

void onSignal(evutil_socket_t, short, void* base) {
  event_base_loopexit(static_cast<event_base*>(base), nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"libevent-echo: echo server on libevent"};
  std::uint16_t port = 7000;
  int threads = 1;
  app.add_option("--port", port, "TCP port on 127.0.0.1 (0 picks a free one)")->capture_default_str();
  app.add_option("--threads", threads, "event loops (only 1 is supported)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (threads != 1) {
    std::fprintf(stderr, "libevent-echo: --threads %d: only one event_base (--threads 1) is supported\n",
                 threads);
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);

  event_base* base = event_base_new();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  evconnlistener* listener = evconnlistener_new_bind(
      base, onAccept, nullptr, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, -1,
      reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  if (base == nullptr || listener == nullptr ||
      ::getsockname(evconnlistener_get_fd(listener), reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
    std::perror("libevent-echo: listen");
    return 1;
  }
  evconnlistener_set_error_cb(listener, onAcceptError);

  event* sigint = evsignal_new(base, SIGINT, onSignal, base);
  event* sigterm = evsignal_new(base, SIGTERM, onSignal, base);
  event_add(sigint, nullptr);
  event_add(sigterm, nullptr);

  std::printf("libevent-echo listening on 127.0.0.1:%u\n", ntohs(addr.sin_port));
  std::fflush(stdout);
  event_base_dispatch(base);

  for (bufferevent* bev : gConns) bufferevent_free(bev);
  gConns.clear();
  event_free(sigint);
  event_free(sigterm);
  evconnlistener_free(listener);
  event_base_free(base);
  return 0;
}
