// Child processes that a test execs and talks to through pipes: the example
// binaries and the real clients (socat, nc, keel-pingpong), with a deadline
// on every wait so a hung child fails the test instead of hanging it. For
// forked (not exec'd) peers, see support/Process.h.
//
// Thread-safety: one Child per thread; fork() is called only from the
// test's main thread before it starts threads of its own.
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel/core/Fd.h"
#include "support/Process.h"

namespace keel::test {

struct ChildOptions {
  // stdin: a pipe the test writes to (default), or a file opened read-only.
  std::string stdinFile;
  // stdout: a pipe the test reads (default), or /dev/null.
  bool stdoutToNull = false;
};

class Child {
 public:
  Child() = default;
  explicit Child(const std::vector<std::string>& argv, const ChildOptions& opt = {}) { start(argv, opt); }
  ~Child() { killAndReap(pid_); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] bool started() const noexcept { return pid_ > 0 || status_.has_value(); }

  // Writes everything to the child's stdin (blocking); false on error.
  bool write(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::write(in_.get(), data.data(), data.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  void closeStdin() { in_.reset(); }

  // One line of stdout (without the newline), or nullopt at EOF/timeout.
  std::optional<std::string> readLine(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (const auto nl = outBuf_.find('\n'); nl != std::string::npos) {
        std::string line = outBuf_.substr(0, nl);
        outBuf_.erase(0, nl + 1);
        return line;
      }
      if (!fill(out_, outBuf_, deadline)) return std::nullopt;
    }
  }
  // Reads stdout until `n` bytes are buffered, then takes them (or what came
  // before EOF/timeout).
  std::string readBytes(std::size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (outBuf_.size() < n && fill(out_, outBuf_, deadline)) {
    }
    std::string r = outBuf_.substr(0, std::min(n, outBuf_.size()));
    outBuf_.erase(0, r.size());
    return r;
  }
  // Everything on stdout until EOF (or the timeout).
  std::string readAll(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (fill(out_, outBuf_, deadline)) {
    }
    return std::exchange(outBuf_, {});
  }
  // What the child wrote on stderr so far (non-blocking drain).
  std::string stderrText() {
    while (fill(err_, errBuf_, std::chrono::steady_clock::now())) {
    }
    return errBuf_;
  }

  // Exit status (signals as 128 + signo), or nullopt if still running at the deadline.
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    if (status_) return status_;
    const auto st = waitExit(pid_, timeout);
    if (!st) return std::nullopt;
    pid_ = -1;
    status_ = exitCode(*st);
    stderrText();
    return status_;
  }
  void signal(int sig) const {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  // SIGTERM, then the exit status (SIGKILL after the timeout).
  std::optional<int> terminate(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    signal(SIGCONT);
    signal(SIGTERM);
    auto st = wait(timeout);
    if (!st) {
      signal(SIGKILL);
      wait();
    }
    return st;
  }

 private:
  void start(const std::vector<std::string>& argv, const ChildOptions& opt) {
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    if (opt.stdinFile.empty() && ::pipe2(in, O_CLOEXEC) != 0) return;
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return;
    // Everything the child needs is prepared before fork(): between fork and
    // exec only async-signal-safe calls (another thread may hold malloc's lock).
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const char* stdinPath = opt.stdinFile.empty() ? nullptr : opt.stdinFile.c_str();
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
      const int i = stdinPath == nullptr ? in[0] : ::open(stdinPath, O_RDONLY);
      const int o = opt.stdoutToNull ? ::open("/dev/null", O_WRONLY) : out[1];
      if (i < 0 || o < 0 || ::dup2(i, 0) < 0 || ::dup2(o, 1) < 0 || ::dup2(err[1], 2) < 0) ::_exit(126);
      ::execvp(args[0], args.data());
      static constexpr char kMsg[] = "exec failed\n";
      [[maybe_unused]] const ssize_t w = ::write(2, kMsg, sizeof kMsg - 1);
      ::_exit(127);
    }
    if (in[0] >= 0) ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    in_ = Fd(in[1]);
    out_ = Fd(out[0]);
    err_ = Fd(err[0]);
    ::fcntl(out_.get(), F_SETFL, O_NONBLOCK);
    ::fcntl(err_.get(), F_SETFL, O_NONBLOCK);
    if (in_.valid()) ::fcntl(in_.get(), F_SETFD, FD_CLOEXEC);
    pid_ = pid;
  }

  // Appends what `fd` has, waiting until the deadline; false at EOF/timeout.
  static bool fill(Fd& fd, std::string& buf, std::chrono::steady_clock::time_point deadline) {
    if (!fd.valid()) return false;
    for (;;) {
      char tmp[65536];
      const ssize_t n = ::read(fd.get(), tmp, sizeof tmp);
      if (n > 0) {
        buf.append(tmp, static_cast<std::size_t>(n));
        return true;
      }
      if (n == 0) {
        fd.reset();
        return false;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return false;
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd.get(), POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 100)));
    }
  }

  pid_t pid_ = -1;
  std::optional<int> status_;
  Fd in_, out_, err_;
  std::string outBuf_, errBuf_;
};

// Matches all of `text` against `pattern`, in which {n} stands for one or
// more digits and {f} for digits, '.', digits; everything else is literal.
// The numbers are captured, in order, into *caps. (Not std::regex: GCC 12
// warns inside <regex> at -O2, and warnings are errors in CI.)
inline bool matchFormat(std::string_view text, std::string_view pattern,
                        std::vector<std::string>* caps = nullptr) {
  std::vector<std::string> got;
  std::size_t t = 0;
  auto digits = [&] {
    const std::size_t from = t;
    while (t < text.size() && text[t] >= '0' && text[t] <= '9') ++t;
    return t > from;
  };
  for (std::size_t p = 0; p < pattern.size();) {
    const std::string_view token = pattern.substr(p, 3);
    if (token == "{n}" || token == "{f}") {
      const std::size_t from = t;
      if (!digits()) return false;
      if (token == "{f}" && (t >= text.size() || text[t++] != '.' || !digits())) return false;
      got.emplace_back(text.substr(from, t - from));
      p += 3;
    } else if (t < text.size() && text[t] == pattern[p]) {
      ++t;
      ++p;
    } else {
      return false;
    }
  }
  if (t != text.size()) return false;
  if (caps != nullptr) *caps = std::move(got);
  return true;
}

// Finds `key` in `text` where it starts a word (at the start of the text or
// after a character that is not a letter, digit or '_'), and returns the
// number ([0-9.]+) right after it; nullopt when no occurrence is followed by
// one. With `line` set, only the line (up to '\n') that holds `line` is
// searched. Used to read figures out of real clients' reports.
inline std::optional<std::string> numberAfter(std::string_view text, std::string_view key,
                                              std::string_view line = {}) {
  if (!line.empty()) {
    const std::size_t at = text.find(line);
    if (at == std::string_view::npos) return std::nullopt;
    text = text.substr(at, text.find('\n', at) - at);
  }
  auto wordChar = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  };
  for (std::size_t at = text.find(key); at != std::string_view::npos; at = text.find(key, at + 1)) {
    if (at > 0 && wordChar(text[at - 1])) continue;
    std::size_t end = at + key.size();
    while (end < text.size() && ((text[end] >= '0' && text[end] <= '9') || text[end] == '.')) ++end;
    if (end > at + key.size()) return std::string(text.substr(at + key.size(), end - at - key.size()));
  }
  return std::nullopt;
}

// Waits for an example server's "listening on HOST:PORT" line; returns the
// port (0 when it did not come up; the child's stderr says why).
inline std::uint16_t awaitListening(Child& server, std::string* line = nullptr) {
  static constexpr std::string_view kTag = "listening on ";
  for (int i = 0; i < 20; ++i) {
    auto l = server.readLine(std::chrono::seconds(15));
    if (!l) return 0;
    const std::size_t at = l->find(kTag);
    if (at == std::string::npos) continue;
    const std::string addr = l->substr(at + kTag.size(), l->find(' ', at + kTag.size()) - at - kTag.size());
    const std::size_t colon = addr.rfind(':');
    std::vector<std::string> caps;
    if (colon == std::string::npos || !matchFormat(std::string_view(addr).substr(colon + 1), "{n}", &caps))
      continue;
    if (line != nullptr) *line = *l;
    return static_cast<std::uint16_t>(std::stoi(caps[0]));
  }
  return 0;
}

// True when `tool` is on PATH.
inline bool haveTool(const std::string& tool) {
  return std::system(("command -v " + tool + " >/dev/null 2>&1").c_str()) == 0;
}

}  // namespace keel::test
