// keel-nagle: its client completes every round against a kernel-profile and
// a latency-profile server, and the demo prints both side by side. Only the
// output format and completion are asserted; the timings are the demo's
// message, not a test condition (they belong to the bench).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support/Child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

std::string bin() { return binaryPath("keel-nagle"); }

TEST(NagleExample, ClientCompletesEveryRoundAgainstBothProfiles) {
  constexpr std::string_view round = "round {n}: p50 {f} ms  max {f} ms";
  for (const char* profile : {"kernel", "latency"}) {
    SCOPED_TRACE(profile);
    Child server({bin(), "server", "--port", "0", "--profile", profile});
    std::string line;
    const std::uint16_t port = awaitListening(server, &line);
    ASSERT_NE(port, 0) << server.stderrText();
    EXPECT_NE(line.find(std::string("(profile ") + profile + ")"), std::string::npos) << line;
    Child client({bin(), "client", "--port", std::to_string(port), "--rounds", "3", "--requests", "5"});
    for (int r = 1; r <= 3; ++r) {
      const auto l = client.readLine(30s);
      ASSERT_TRUE(l.has_value()) << client.stderrText();
      std::vector<std::string> m;
      ASSERT_TRUE(matchFormat(*l, round, &m)) << *l;
      EXPECT_EQ(std::stoi(m[0]), r);
    }
    EXPECT_EQ(client.readAll(5s), "");
    EXPECT_EQ(client.wait(30s), 0) << client.stderrText();
    EXPECT_EQ(server.terminate(), 0);
  }
}

TEST(NagleExample, DemoPrintsBothProfilesSideBySide) {
  Child demo({bin(), "demo", "--rounds", "2", "--requests", "5"});
  EXPECT_EQ(demo.readLine(30s), "2 rounds of 5 write-write-read requests, client Nagle on");
  constexpr std::string_view row = "round {n}: kernel p50 {f} ms max {f} ms | latency p50 {f} ms max {f} ms";
  for (int r = 1; r <= 2; ++r) {
    const auto l = demo.readLine(30s);
    ASSERT_TRUE(l.has_value()) << demo.stderrText();
    std::vector<std::string> m;
    ASSERT_TRUE(matchFormat(*l, row, &m)) << *l;
    EXPECT_EQ(std::stoi(m[0]), r);
  }
  EXPECT_EQ(demo.wait(30s), 0) << demo.stderrText();
}

TEST(NagleExample, ErrorsAreClear) {
  Child badProfile({bin(), "server", "--port", "0", "--profile", "turbo"});
  const auto st = badProfile.wait();
  ASSERT_TRUE(st.has_value());
  EXPECT_NE(*st, 0);
  EXPECT_NE(badProfile.stderrText().find("turbo"), std::string::npos) << badProfile.stderrText();

  Child noServer({bin(), "client", "--port", "1", "--rounds", "1"});
  EXPECT_EQ(noServer.wait(), 1);
  EXPECT_NE(noServer.stderrText().find("connect"), std::string::npos) << noServer.stderrText();
}

}  // namespace
}  // namespace keel::test
