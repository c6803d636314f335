// Runs a piece of a resolver test in a forked child with its own mount and
// network namespaces, where /etc/hosts, /etc/nsswitch.conf and
// /etc/resolv.conf are files the test wrote: name resolution becomes
// deterministic (a "localhost" with both families, a name server that never
// answers) without touching the machine's own files, which other tests and
// engineers share. The child starts with only loopback, brought up.
//
// The body runs in the child and returns "" on success or what went wrong;
// the parent turns that into a test failure. Needs root (unshare); without
// it the result starts with "SKIP:" and the test skips with the reason.
#pragma once

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include "keel/core/Fd.h"
#include "support/Process.h"
#include "support/TestNet.h"

// For the isolated children, which cannot use gtest's assertions: the
// failure, with its line, is the child's answer.
#define CHILD_CHECK(cond, what)                                                                     \
  do {                                                                                              \
    if (!(cond)) return std::string("line ") + std::to_string(__LINE__) + ": " #cond ": " + (what); \
  } while (0)

namespace keel::test {

struct IsolatedFiles {
  std::string hosts = "127.0.0.1 localhost\n";
  std::string nsswitch = "hosts: files\n";
  std::string resolv;  // empty: the machine's own (bind-mounted only when set)
};

namespace isolation_detail {

inline std::string bindFile(const std::string& content, const char* target) {
  const std::string path = "/tmp/keel_resolver_" + uniqueSuffix();
  {
    std::ofstream f(path);
    f << content;
    if (!f) return std::string("cannot write ") + path;
  }
  if (::mount(path.c_str(), target, nullptr, MS_BIND, nullptr) != 0)
    return std::string("bind mount over ") + target + ": " + std::strerror(errno);
  ::unlink(path.c_str());  // the mount keeps the file alive
  return {};
}

inline std::string enter(const IsolatedFiles& files) {
  if (::unshare(CLONE_NEWNS | CLONE_NEWNET) != 0)
    return std::string("SKIP: unshare(CLONE_NEWNS|CLONE_NEWNET): ") + std::strerror(errno);
  // Private propagation, so the bind mounts below stay in this namespace.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return std::string("SKIP: making / private: ") + std::strerror(errno);
  if (std::system("ip link set lo up >/dev/null 2>&1") != 0) return "SKIP: `ip link set lo up` failed";
  if (auto e = bindFile(files.hosts, "/etc/hosts"); !e.empty()) return "SKIP: " + e;
  if (auto e = bindFile(files.nsswitch, "/etc/nsswitch.conf"); !e.empty()) return "SKIP: " + e;
  if (!files.resolv.empty()) {
    if (auto e = bindFile(files.resolv, "/etc/resolv.conf"); !e.empty()) return "SKIP: " + e;
  }
  return {};
}

}  // namespace isolation_detail

#if defined(__SANITIZE_THREAD__)
#define KEEL_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KEEL_TEST_TSAN 1
#endif
#endif

// Forks, isolates, runs `body` in the child; "" when it passed.
inline std::string runIsolated(const IsolatedFiles& files, const std::function<std::string()>& body,
                               std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
#ifdef KEEL_TEST_TSAN
  // The child starts threads (the resolver's workers); tsan cannot do that
  // after a fork of a process that already has several.
  std::size_t threads = 0;
  for ([[maybe_unused]] const auto& t : std::filesystem::directory_iterator("/proc/self/task")) ++threads;
  if (threads > 1) return "SKIP: under tsan, a child of a multi-threaded process cannot start threads";
#endif
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return std::string("pipe: ") + std::strerror(errno);
  const pid_t pid = ::fork();
  if (pid < 0) return std::string("fork: ") + std::strerror(errno);
  if (pid == 0) {
    ::close(fds[0]);
    std::string result = isolation_detail::enter(files);
    if (result.empty()) result = body();
    if (result.empty()) result = "ok";
    [[maybe_unused]] const ssize_t w = ::write(fds[1], result.data(), result.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  Fd in(fds[0]);
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{in.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[512];
    const ssize_t n = ::read(in.get(), buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  const auto status = waitExit(pid, std::chrono::milliseconds(100));
  if (!status) {
    killAndReap(pid);
    return "the isolated child did not finish in time; it said: " + out;
  }
  if (out == "ok") return {};
  return out.empty() ? "the isolated child died (exit " + std::to_string(exitCode(*status)) + ")" : out;
}

// In a TEST body: runs it and reports (variadic: the body is a lambda with commas).
#define KEEL_RUN_ISOLATED(files, ...)                                                \
  do {                                                                               \
    const std::string keelIsolated_ = ::keel::test::runIsolated(files, __VA_ARGS__); \
    if (keelIsolated_.rfind("SKIP:", 0) == 0) GTEST_SKIP() << keelIsolated_;         \
    EXPECT_EQ(keelIsolated_, "");                                                    \
  } while (0)

}  // namespace keel::test
