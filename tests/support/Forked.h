// A forked (not exec'd) child that runs a function and reports back in
// lines over a pipe: for tests of what happens to a whole process, such as
// a signal sent to it, where the test process itself must survive a failure.
//
//   test::Forked child([](test::Forked::Report& r) { ...; r.line("ready"); ...; return 0; });
//   ASSERT_EQ(child.readLine(), "ready");
//   ::kill(child.pid(), SIGTERM);
//   EXPECT_EQ(child.wait(), 0);
//
// The child's exit status is the function's return value; it leaves with
// _exit(), so it runs no atexit handlers of the test framework.
//
// Thread-safety: construct on the test's main thread before it starts any
// thread (fork copies only the calling thread).
#pragma once

#include <cerrno>
#include <chrono>
#include <csignal>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "keel/core/Fd.h"
#include "support/Process.h"

namespace keel::test {

class Forked {
 public:
  class Report {
   public:
    explicit Report(int fd) noexcept : fd_(fd) {}
    // One line to the parent (blocking; the parent reads as it waits).
    void line(std::string_view text) const {
      std::string l(text);
      l.push_back('\n');
      for (std::size_t off = 0; off < l.size();) {
        const ssize_t n = ::write(fd_, l.data() + off, l.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        off += static_cast<std::size_t>(n);
      }
    }

   private:
    int fd_;
  };

  explicit Forked(const std::function<int(Report&)>& body) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
      ::close(fds[0]);
      Report r(fds[1]);
      ::_exit(body(r));
    }
    ::close(fds[1]);
    from_ = Fd(fds[0]);
  }
  ~Forked() {
    if (!status_) killAndReap(pid_);
  }
  Forked(const Forked&) = delete;
  Forked& operator=(const Forked&) = delete;

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

  // The child's next line, or nullopt at EOF or when none came in time.
  std::optional<std::string> readLine(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (const auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() < 0 || !from_) return std::nullopt;
      pollfd p{from_.get(), POLLIN, 0};
      const int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return std::nullopt;
      char tmp[512];
      const ssize_t n = ::read(from_.get(), tmp, sizeof tmp);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      buf_.append(tmp, static_cast<std::size_t>(n));
    }
  }

  // Exit code (128 + signal when a signal ended it), or nullopt if it is
  // still running at the deadline.
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    if (status_) return status_;
    const auto raw = waitExit(pid_, timeout);
    if (raw) status_ = exitCode(*raw);
    return status_;
  }

 private:
  pid_t pid_ = -1;
  Fd from_;
  std::string buf_;
  std::optional<int> status_;
};

}  // namespace keel::test
