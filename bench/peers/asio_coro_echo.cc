// asio-coro-echo: the echo server written with standalone Asio's own C++20
// coroutines, as the peer of keel-echo --coroutine in the echo benchmarks.
//
//   asio-coro-echo --port P      (port 0 picks a free one; one thread)
//
// How it echoes: an acceptor coroutine co_spawns one session coroutine per
// socket (no_delay on); the session loops co_await async_read_some into a
// 64 KiB buffer, then co_await async_write of exactly those bytes
// (asio::use_awaitable), until EOF or an error. One io_context on one thread,
// the way Asio's coroutine examples run. SIGINT/SIGTERM stop it. The CLI
// and the listening line mirror asio-echo (bench/peers/asio_echo.cc).
#include <array>
#include <cstdint>
#include <cstdio>
#include <system_error>

#include <CLI/CLI.hpp>
#include <asio.hpp>

namespace {

using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;

awaitable<void> session(tcp::socket socket) {
  std::array<char, 64 * 1024> buf;
  try {
    for (;;) {
      const std::size_t n = co_await socket.async_read_some(asio::buffer(buf), use_awaitable);
      co_await asio::async_write(socket, asio::buffer(buf, n), use_awaitable);
    }
  } catch (const std::system_error&) {
    // EOF or a reset: the session ends and the socket closes.
  }
}

awaitable<void> acceptLoop(tcp::acceptor& acceptor) {
  for (;;) {
    std::error_code ec;
    tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(use_awaitable, ec));
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) {
      std::fprintf(stderr, "asio-coro-echo: accept: %s\n", ec.message().c_str());
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    asio::co_spawn(acceptor.get_executor(), session(std::move(socket)), asio::detached);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"asio-coro-echo: echo server on standalone Asio's C++20 coroutines"};
  std::uint16_t port = 7000;
  app.add_option("--port", port, "TCP port on 127.0.0.1 (0 picks a free one)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  asio::io_context ctx(1);
  try {
    tcp::acceptor acceptor(ctx, tcp::endpoint(asio::ip::address_v4::loopback(), port));  // sets SO_REUSEADDR
    asio::signal_set signals(ctx, SIGINT, SIGTERM);
    signals.async_wait([&ctx](std::error_code, int) { ctx.stop(); });
    asio::co_spawn(ctx, acceptLoop(acceptor), asio::detached);
    std::printf("asio-coro-echo listening on 127.0.0.1:%u\n", acceptor.local_endpoint().port());
    std::fflush(stdout);
    ctx.run();
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "asio-coro-echo: %s\n", e.what());
    return 1;
  }
  return 0;
}
