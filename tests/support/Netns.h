// Network namespaces for tests that need a link they can cut: two
// namespaces joined by a veth pair, and entering one from a thread or a
// child process. Needs root (CAP_SYS_ADMIN); without it NetnsPair says why
// in error(), so the test can skip with that message.
#pragma once

#include <string>
#include <utility>

namespace keel::test {

// Runs `cmd` through the shell; its exit status and what it printed
// (stdout and stderr).
[[nodiscard]] std::pair<int, std::string> shell(const std::string& cmd);

// Sets this thread's network namespace: sockets it creates afterwards live
// there. False when /var/run/netns/NAME cannot be opened or entered.
[[nodiscard]] bool enterNetns(const std::string& name);

// Two network namespaces joined by a veth pair: A 198.18.0.1/24, B
// 198.18.0.2/24. The names carry `prefix`, the pid and a counter, so
// parallel test processes (and several pairs in one) never collide; the
// destructor deletes both namespaces (which destroys the veth pair) however
// the test ends.
class NetnsPair {
 public:
  // `prefix`: at most 3 characters (the veth names must fit IFNAMSIZ).
  explicit NetnsPair(const std::string& prefix = "kns");
  ~NetnsPair();
  NetnsPair(const NetnsPair&) = delete;
  NetnsPair& operator=(const NetnsPair&) = delete;

  [[nodiscard]] bool ok() const { return error_.empty(); }
  [[nodiscard]] const std::string& error() const { return error_; }
  [[nodiscard]] const std::string& a() const { return a_; }
  [[nodiscard]] const std::string& b() const { return b_; }
  // Black-holes B: its end of the veth goes down, so nothing passes either
  // way. Empty on success, else what `ip` printed.
  std::string cutB();

 private:
  std::string a_, b_, error_;
  bool createdA_ = false, createdB_ = false;
};

}  // namespace keel::test
