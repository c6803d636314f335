// A keel responder in a child process (EventLoop + Server + FrameCodec +
// PongResponder), for heartbeat tests whose peer must be SIGSTOPped or live
// in another network namespace. Fork it before the test has any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "keel/core/EventLoop.h"
#include "keel/heartbeat/PongResponder.h"
#include "keel/net/Connection.h"
#include "keel/net/FrameCodec.h"
#include "keel/net/Pipeline.h"
#include "keel/net/Server.h"
#include "keel/net/SocketAddress.h"
#include "support/Netns.h"
#include "support/Process.h"

namespace keel::test {

// The peer closes the process with 10 + its connection's CloseReason.
class ExitOnClose final : public Handler {
 public:
  void onClosed(HandlerContext&, CloseReason r) override { ::_exit(10 + static_cast<int>(r)); }
};

// A keel responder in a child process: EventLoop + Server + FrameCodec +
// PongResponder. Fork it before this process has any thread.
class ResponderProcess {
 public:
  struct Config {
    std::string netns;  // enter this namespace first (empty: stay)
    std::string host = "127.0.0.1";
    bool exitOnClose = false;  // exit with 10 + CloseReason when a connection closes
  };

  explicit ResponderProcess(const Config& cfg) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(fds[0]);
      runChild(fds[1], cfg);
    }
    ::close(fds[1]);
    if (pid_ < 0) {
      ::close(fds[0]);
      return;
    }
    pollfd p{fds[0], POLLIN, 0};
    std::uint16_t port = 0;
    if (::poll(&p, 1, 10'000) == 1 &&
        ::read(fds[0], &port, sizeof port) == static_cast<ssize_t>(sizeof port)) {
      port_ = port;
    }
    ::close(fds[0]);
    address_ = SocketAddress::ipv4(cfg.host, port_).value_or(SocketAddress());
  }
  ~ResponderProcess() {
    if (!reaped_) test::killAndReap(pid_);
  }
  ResponderProcess(const ResponderProcess&) = delete;
  ResponderProcess& operator=(const ResponderProcess&) = delete;

  [[nodiscard]] bool ok() const { return pid_ > 0 && port_ != 0; }
  [[nodiscard]] const SocketAddress& address() const { return address_; }
  void stop() { ::kill(pid_, SIGSTOP); }
  void resume() { ::kill(pid_, SIGCONT); }
  // The raw wait status once the child has exited, or nullopt after `timeout`.
  std::optional<int> waitExit(std::chrono::milliseconds timeout) {
    const auto status = test::waitExit(pid_, timeout);
    if (status) reaped_ = true;
    return status;
  }

 private:
  [[noreturn]] static void runChild(int readyFd, const Config& cfg) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
    if (!cfg.netns.empty() && !test::enterNetns(cfg.netns)) ::_exit(2);
    {
      EventLoop loop;
      const auto listen = SocketAddress::ipv4(cfg.host, 0);
      if (!listen) ::_exit(3);
      Server server(loop, *listen);
      const bool exitOnClose = cfg.exitOnClose;
      server.setPipelineInit([exitOnClose](Connection& c) {
        c.pipeline().emplaceLast<FrameCodec>();
        c.pipeline().emplaceLast<PongResponder>();
        if (exitOnClose) c.pipeline().emplaceLast<ExitOnClose>();
      });
      if (server.start()) ::_exit(4);
      const std::uint16_t port = server.listenAddress().port();
      if (::write(readyFd, &port, sizeof port) != static_cast<ssize_t>(sizeof port)) ::_exit(5);
      ::close(readyFd);
      loop.loop();
    }
    ::_exit(0);
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  std::uint16_t port_ = 0;
  SocketAddress address_;
};

}  // namespace keel::test
