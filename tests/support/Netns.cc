#include "support/Netns.h"

#include <atomic>
#include <cstdio>
#include <tuple>
#include <vector>

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

namespace keel::test {

std::pair<int, std::string> shell(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, "popen failed"};
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

bool enterNetns(const std::string& name) {
  const int fd = ::open(("/var/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::setns(fd, CLONE_NEWNET) == 0;
  ::close(fd);
  return ok;
}

NetnsPair::NetnsPair(const std::string& prefix) {
  static std::atomic<int> counter{0};
  const std::string tag = prefix.substr(0, 3) + std::to_string(::getpid()) + "x" + std::to_string(counter++);
  a_ = tag + "a";
  b_ = tag + "b";  // also the veth names: at most 3 + 7 + 1 + 2 + 1 = 14 characters
  if (::geteuid() != 0) {
    error_ = "needs root (CAP_SYS_ADMIN) to create network namespaces; running as uid " +
             std::to_string(::geteuid());
    return;
  }
  const std::vector<std::string> steps = {
      "ip netns add " + a_,
      "ip netns add " + b_,
      "ip link add " + a_ + " netns " + a_ + " type veth peer name " + b_ + " netns " + b_,
      "ip -n " + a_ + " addr add 198.18.0.1/24 dev " + a_,
      "ip -n " + b_ + " addr add 198.18.0.2/24 dev " + b_,
      "ip -n " + a_ + " link set lo up",
      "ip -n " + b_ + " link set lo up",
      "ip -n " + a_ + " link set " + a_ + " up",
      "ip -n " + b_ + " link set " + b_ + " up",
  };
  for (const auto& step : steps) {
    auto [rc, out] = shell(step);
    if (rc != 0 && step.rfind("ip netns add", 0) == 0) {
      // Two processes creating the first namespace at once can race on the
      // /var/run/netns mount; once more settles it.
      std::tie(rc, out) = shell(step);
    }
    if (rc != 0) {
      error_ = "`" + step + "` failed (exit " + std::to_string(rc) + "): " + out;
      return;
    }
    if (step == "ip netns add " + a_) createdA_ = true;
    if (step == "ip netns add " + b_) createdB_ = true;
  }
}

NetnsPair::~NetnsPair() {
  if (createdA_) (void)shell("ip netns del " + a_);
  if (createdB_) (void)shell("ip netns del " + b_);
}

std::string NetnsPair::cutB() {
  auto [rc, out] = shell("ip -n " + b_ + " link set " + b_ + " down");
  return rc == 0 ? std::string() : out;
}

}  // namespace keel::test
