#include "support/Process.h"

#include <algorithm>
#include <cerrno>
#include <csignal>

#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel/core/Fd.h"

namespace keel::test {

std::optional<int> waitExit(pid_t pid, std::chrono::milliseconds timeout) {
  int status = 0;
  if (::waitpid(pid, &status, WNOHANG) == pid) return status;
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) return std::nullopt;  // not a process of ours (or gone and reaped already)
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    // The child may have exited between the first waitpid and pidfd_open;
    // the pidfd is readable then too, so poll sees it at once.
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{pidfd.get(), POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::max<long long>(left.count(), 0)));
    if (r < 0 && errno == EINTR) continue;
    if (r == 1 && ::waitpid(pid, &status, WNOHANG) == pid) return status;
    if (r == 0 || std::chrono::steady_clock::now() >= deadline) return std::nullopt;
  }
}

int exitCode(int rawStatus) noexcept {
  return WIFEXITED(rawStatus) ? WEXITSTATUS(rawStatus) : 128 + WTERMSIG(rawStatus);
}

void killAndReap(pid_t pid) noexcept {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace keel::test
