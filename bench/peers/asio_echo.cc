// asio-echo: the echo server written against standalone Asio (no Boost), as a
// peer for the keel echo benchmarks.
//
//   asio-echo --port P [--threads N]      (port 0 picks a free one)
//
// How it echoes: a tcp::acceptor keeps one async_accept outstanding; each
// accepted socket gets no_delay and a Session (held by shared_ptr in its own
// handlers) that loops async_read_some into a 64 KiB buffer, then
// async_write of exactly those bytes, then reads again, so a session never
// has two operations in flight and needs no strand. --threads N runs the one
// io_context on N threads. SIGINT/SIGTERM (asio::signal_set) stop it.
#include <array>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <asio.hpp>

namespace {

using asio::ip::tcp;

class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(tcp::socket socket) : socket_(std::move(socket)) {}

  void readSome() {
    socket_.async_read_some(
        asio::buffer(buf_), [self = shared_from_this()](std::error_code ec, std::size_t n) {
          if (!ec) self->writeBack(n);  // on EOF or error the last reference goes and the socket closes
        });
  }

 private:
  void writeBack(std::size_t n) {
    asio::async_write(socket_, asio::buffer(buf_, n),
                      [self = shared_from_this()](std::error_code ec, std::size_t) {
                        if (!ec) self->readSome();
                      });
  }

  tcp::socket socket_;
  std::array<char, 64 * 1024> buf_;
};

void acceptNext(tcp::acceptor& acceptor) {
  acceptor.async_accept([&acceptor](std::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      std::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      std::make_shared<Session>(std::move(socket))->readSome();
    } else {
      std::fprintf(stderr, "asio-echo: accept: %s\n", ec.message().c_str());
    }
    acceptNext(acceptor);
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"asio-echo: echo server on standalone Asio"};
  std::uint16_t port = 7000;
  int threads = 1;
  app.add_option("--port", port, "TCP port on 127.0.0.1 (0 picks a free one)")->capture_default_str();
  app.add_option("--threads", threads, "threads running the io_context")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  CLI11_PARSE(app, argc, argv);

  asio::io_context ctx(threads);
  try {
    tcp::acceptor acceptor(ctx, tcp::endpoint(asio::ip::address_v4::loopback(), port));  // sets SO_REUSEADDR
    asio::signal_set signals(ctx, SIGINT, SIGTERM);
    signals.async_wait([&ctx](std::error_code, int) { ctx.stop(); });
    acceptNext(acceptor);

    std::printf("asio-echo listening on 127.0.0.1:%u\n", acceptor.local_endpoint().port());
    std::fflush(stdout);
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) pool.emplace_back([&ctx] { ctx.run(); });
    ctx.run();
    for (auto& t : pool) t.join();
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "asio-echo: %s\n", e.what());
    return 1;
  }
  return 0;
}
