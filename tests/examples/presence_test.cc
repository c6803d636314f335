// keel-presence, the tutorial's service, as real processes: several
// clients see each other's statuses (across two server loops), a stopped
// client is dropped at its heartbeat deadline, a silent one by the frame
// reaper, and clients reconnect after a server restart.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "support/Child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

std::string bin() { return binaryPath("keel-presence"); }

// Reads lines until one satisfies `pred`; returns it, or nullopt at EOF or
// the timeout. Every line read is appended to *seen when given.
std::optional<std::string> readUntil(Child& c, const std::function<bool(const std::string&)>& pred,
                                     std::vector<std::string>* seen = nullptr,
                                     std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto line = c.readLine(left);
    if (!line) return std::nullopt;
    if (seen != nullptr) seen->push_back(*line);
    if (pred(*line)) return line;
  }
}

bool startsWith(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }
auto prefix(std::string p) {
  return [p = std::move(p)](const std::string& l) { return startsWith(l, p); };
}

class PresenceExample : public ::testing::Test {
 protected:
  // Heartbeat on both sides: PING after 300 ms of silence, then every 200 ms,
  // dead after 3 unanswered: 900 ms.
  static constexpr int kKeepaliveMs = 300, kProbeMs = 200, kProbes = 3;
  static constexpr int kDeadlineMs = kKeepaliveMs + kProbes * kProbeMs;

  std::vector<std::string> heartbeatArgs() const {
    return {"--keepalive-ms", std::to_string(kKeepaliveMs), "--probe-ms", std::to_string(kProbeMs),
            "--probes",       std::to_string(kProbes)};
  }
  void startServer(std::uint16_t port = 0, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{bin(), "server", "--port", std::to_string(port), "--threads", "2"};
    for (auto& a : heartbeatArgs()) argv.push_back(a);
    argv.insert(argv.end(), extra.begin(), extra.end());
    server_ = std::make_unique<Child>(argv);
    port_ = awaitListening(*server_);
    ASSERT_NE(port_, 0) << server_->stderrText();
  }
  std::unique_ptr<Child> client(const std::string& name, std::vector<std::string> extra = {}) {
    // By host name: the client resolves it before each attempt.
    std::vector<std::string> argv{
        bin(),    "client", "--host",         "localhost", "--port", std::to_string(port_),
        "--name", name,     "--retry-max-ms", "200"};
    if (std::find(extra.begin(), extra.end(), "--interval-ms") == extra.end()) {
      argv.insert(argv.end(), {"--interval-ms", "100"});
    }
    for (auto& a : heartbeatArgs()) argv.push_back(a);
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto c = std::make_unique<Child>(argv);
    EXPECT_TRUE(readUntil(*c, prefix("< WELCOME " + name + " "))) << name << ": " << c->stderrText();
    return c;
  }
  void TearDown() override {
    if (server_) {
      EXPECT_EQ(server_->terminate(), 0) << server_->stderrText();
    }
  }

  std::unique_ptr<Child> server_;
  std::uint16_t port_ = 0;
};

TEST_F(PresenceExample, MembersSeeEachOthersStatusButNotTheirOwn) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  auto alice = client("alice");
  auto bob = client("bob");
  auto carol = client("carol");
  std::vector<std::string> seen;
  ASSERT_TRUE(readUntil(*alice, prefix("< STATUS bob "), &seen)) << alice->stderrText();
  ASSERT_TRUE(readUntil(*alice, prefix("< STATUS carol "), &seen)) << alice->stderrText();
  ASSERT_TRUE(readUntil(*carol, prefix("< STATUS alice "))) << carol->stderrText();
  ASSERT_TRUE(readUntil(*bob, prefix("< STATUS carol "))) << bob->stderrText();
  for (const auto& l : seen) EXPECT_FALSE(startsWith(l, "< STATUS alice ")) << "echoed back: " << l;
  // A member arriving later is told who is there.
  auto dave = client("dave");
  std::vector<std::string> daves;
  ASSERT_TRUE(readUntil(*dave, prefix("< STATUS "), &daves));
  int online = 0;
  for (const auto& l : daves) online += startsWith(l, "< ONLINE ") ? 1 : 0;
  EXPECT_EQ(online, 3);
  for (auto* c : {alice.get(), bob.get(), carol.get(), dave.get()}) EXPECT_EQ(c->terminate(), 0);
}

TEST_F(PresenceExample, AStoppedClientIsDroppedAtItsHeartbeatDeadline) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  auto alice = client("alice");
  auto bob = client("bob");
  ASSERT_TRUE(readUntil(*alice, prefix("< STATUS bob ")));
  ASSERT_TRUE(readUntil(*server_, prefix("join bob ")));
  bob->signal(SIGSTOP);  // hangs: its kernel still ACKs, the process answers nothing
  std::vector<std::string> caps;
  const auto dead = readUntil(*server_, prefix("dead bob "));
  ASSERT_TRUE(dead) << server_->stderrText();
  ASSERT_TRUE(matchFormat(*dead, "dead bob silent {n} ms", &caps)) << *dead;
  EXPECT_GE(std::stoi(caps[0]), kDeadlineMs) << "declared dead before its deadline";
  const auto leave = readUntil(*server_, prefix("leave bob "));
  ASSERT_TRUE(leave);
  EXPECT_TRUE(startsWith(*leave, "leave bob heartbeat-timeout ")) << *leave;
  EXPECT_TRUE(readUntil(*alice, [](const std::string& l) { return l == "< LEFT bob heartbeat-timeout"; }))
      << "the others are told";
  // Resumed, bob finds its connection reset and joins again.
  bob->signal(SIGCONT);
  EXPECT_TRUE(readUntil(*bob, prefix("< WELCOME bob ")));
  EXPECT_TRUE(readUntil(*alice, [](const std::string& l) { return l == "< JOINED bob"; }));
  EXPECT_EQ(alice->terminate(), 0);
  EXPECT_EQ(bob->terminate(), 0);
}

TEST_F(PresenceExample, ClientsReconnectAfterAServerRestart) {
  // RTT sampled every 100 ms although STATUS traffic never lets the line go silent.
  ASSERT_NO_FATAL_FAILURE(startServer(0, {"--rtt-sample-ms", "100"}));
  const std::uint16_t port = port_;
  auto alice = client("alice");
  auto bob = client("bob");
  ASSERT_TRUE(readUntil(*alice, prefix("< STATUS bob ")));
  // Long enough for samples: a few of alice's statuses after bob's first.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(readUntil(*alice, prefix("< STATUS bob ")));
  ASSERT_EQ(server_->terminate(), 0) << server_->stderrText();  // graceful stop
  const auto leave = readUntil(*server_, prefix("leave alice "));
  ASSERT_TRUE(leave) << "the stopped server reported alice's session";
  const auto samples = numberAfter(*leave, "(");
  ASSERT_TRUE(samples) << *leave;
  EXPECT_GT(std::stoi(*samples), 0) << "no RTT measured on a busy connection: " << *leave;
  ASSERT_TRUE(readUntil(*alice, prefix("disconnected ")));
  ASSERT_TRUE(readUntil(*bob, prefix("disconnected ")));
  ASSERT_NO_FATAL_FAILURE(startServer(port));  // the same port: the clients retry it
  EXPECT_TRUE(readUntil(*alice, prefix("< WELCOME alice ")));
  EXPECT_TRUE(readUntil(*bob, prefix("< WELCOME bob ")));
  EXPECT_TRUE(readUntil(*alice, prefix("< STATUS bob "))) << "statuses flow again";
  EXPECT_TRUE(readUntil(*bob, prefix("< STATUS alice ")));
  EXPECT_EQ(alice->terminate(), 0);
  EXPECT_EQ(bob->terminate(), 0);
}

TEST_F(PresenceExample, AMemberThatOnlyAnswersPingsIsClosedForSilence) {
  // 600 ms without a STATUS frame; the heartbeat (PINGs both ways every
  // 300 ms of byte silence) keeps the line busy but does not count.
  ASSERT_NO_FATAL_FAILURE(startServer(0, {"--silence-ms", "600"}));
  auto alice = client("alice", {"--interval-ms", "100"});
  auto quiet = client("quiet", {"--interval-ms", "600000"});  // JOINs, then never a STATUS
  const auto leave = readUntil(*server_, prefix("leave quiet "));
  ASSERT_TRUE(leave) << server_->stderrText();
  EXPECT_TRUE(startsWith(*leave, "leave quiet idle-timeout ")) << *leave;
  EXPECT_TRUE(readUntil(*alice, [](const std::string& l) { return l == "< LEFT quiet idle-timeout"; }));
  EXPECT_EQ(alice->terminate(), 0);
  EXPECT_EQ(quiet->terminate(), 0);
}

TEST_F(PresenceExample, AClientWithACountLeavesAndTheOthersAreTold) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  auto alice = client("alice");
  auto bob = client("bob", {"--count", "5"});
  EXPECT_EQ(bob->wait(), 0) << bob->stderrText();
  EXPECT_TRUE(readUntil(*alice, prefix("< STATUS bob 5")));
  EXPECT_TRUE(readUntil(*alice, [](const std::string& l) { return l == "< LEFT bob peer-closed"; }));
  EXPECT_EQ(alice->terminate(), 0);
}

TEST_F(PresenceExample, BadInputGetsAnErrorAndTheOthersCarryOn) {
  if (!haveTool("socat")) GTEST_SKIP() << "socat not installed (scripts/install-deps.sh)";
  ASSERT_NO_FATAL_FAILURE(startServer());
  auto alice = client("alice");
  const std::string peer = "TCP:127.0.0.1:" + std::to_string(port_);
  {
    // A well-formed frame with a bad name: an ERROR frame, then a clean close.
    Child raw({"socat", "-t", "0.5", "-", peer});
    const std::string join = "JOIN b@d!";
    ASSERT_TRUE(raw.write(std::string("\0\0\0", 3) + static_cast<char>(join.size()) + join));
    const std::string got = raw.readAll();
    EXPECT_NE(got.find("ERROR JOIN <name> first"), std::string::npos) << got;
    EXPECT_EQ(raw.wait(), 0) << raw.stderrText();
  }
  {
    // Unframed text: "HELL" reads as a 1.2 GB length, over the frame limit.
    Child raw({"socat", "-t", "0.5", "-", peer});
    ASSERT_TRUE(raw.write("HELLO there\n"));
    EXPECT_EQ(raw.readAll(), "");
    EXPECT_EQ(raw.wait(), 0) << raw.stderrText();
  }
  auto bob = client("bob");
  EXPECT_TRUE(readUntil(*alice, prefix("< STATUS bob "))) << "the server still serves";
  EXPECT_EQ(alice->terminate(), 0);
  EXPECT_EQ(bob->terminate(), 0);
}

}  // namespace
}  // namespace keel::test
