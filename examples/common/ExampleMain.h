// What every example server's main() does the same way, in one place:
// a TCP profile named on the command line and the "NAME listening on ADDR"
// line that scripts and tests wait for. (SIGINT/SIGTERM into a graceful
// stop is Server::stopOnSignals.)
//
// Header-only: each example is one program, and this is a few lines of glue.
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <keel/core/EventLoop.h>
#include <keel/net/Server.h>
#include <keel/net/TcpTuning.h>
#include <CLI/CLI.hpp>

namespace keel::example {

// The names --profile accepts, for CLI11's IsMember check.
inline const std::vector<std::string> kProfileNames{"kernel", "latency", "throughput"};

[[nodiscard]] inline std::optional<TcpProfile> parseProfile(std::string_view name) noexcept {
  if (name == "kernel") return TcpProfile::Kernel;
  if (name == "latency") return TcpProfile::Latency;
  if (name == "throughput") return TcpProfile::Throughput;
  return std::nullopt;
}

// The names --backend accepts. auto: KEEL_LOOP_BACKEND, else epoll.
inline const std::vector<std::string> kBackendNames{"auto", "epoll", "io_uring"};

// --backend NAME into `backend` (one of kBackendNames).
inline void addBackendOption(CLI::App& app, std::string& backend) {
  app.add_option("--backend", backend,
                 "loop backend: auto (KEEL_LOOP_BACKEND, else epoll), epoll or io_uring")
      ->check(CLI::IsMember(kBackendNames));
}

// The loop options for --backend NAME, for the main loop and the server's
// I/O loops alike. An io_uring this machine refuses is reported here, with
// the reason, before anything is built; nullopt then (exit 1).
[[nodiscard]] inline std::optional<LoopOptions> loopOptionsFor(std::string_view backend,
                                                               std::string_view name) {
  LoopOptions o;
  o.backend = parseLoopBackend(backend).value_or(LoopBackend::Auto);
  if (o.backend != LoopBackend::IoUring) return o;
  try {
    EventLoop probe(o);
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "%.*s: --backend io_uring: %s\n", static_cast<int>(name.size()), name.data(),
                 e.what());
    return std::nullopt;
  }
  return o;
}

// Starts `server` and prints "NAME listening on ADDR" (what the tests and
// the bench wait for), or the error. Returns main()'s exit code: 0 when
// listening, 1 when not.
[[nodiscard]] inline int startAndAnnounce(Server& server, std::string_view name,
                                          std::string_view extra = {}) {
  if (const std::error_code ec = server.start()) {
    std::fprintf(stderr, "%.*s: cannot listen: %s\n", static_cast<int>(name.size()), name.data(),
                 ec.message().c_str());
    return 1;
  }
  // One std::string, not "%.*s" with extra.data(): an empty string_view's
  // data() is null, which GCC's format checker rejects under -Werror.
  const std::string line =
      std::string(name) + " listening on " + server.listenAddress().toString() + std::string(extra) + "\n";
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace keel::example
