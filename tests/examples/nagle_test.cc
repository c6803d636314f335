// keel-nagle: its client completes every round against a kernel-profile and
// a latency-profile server, and the demo prints both side by side. Only the
// output format and completion are asserted; the timings are the demo's
// message, not a test condition (they belong to the bench).
#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "example_child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

std::string bin() { return binaryPath("keel-nagle"); }

TEST(NagleExample, ClientCompletesEveryRoundAgainstBothProfiles) {
  const std::regex round(R"(round (\d+): p50 \d+\.\d{3} ms  max \d+\.\d{3} ms)");
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
      std::smatch m;
      ASSERT_TRUE(std::regex_match(*l, m, round)) << *l;
      EXPECT_EQ(std::stoi(m[1].str()), r);
    }
    EXPECT_EQ(client.readAll(5s), "");
    EXPECT_EQ(client.wait(30s), 0) << client.stderrText();
    EXPECT_EQ(server.terminate(), 0);
  }
}

TEST(NagleExample, DemoPrintsBothProfilesSideBySide) {
  Child demo({bin(), "demo", "--rounds", "2", "--requests", "5"});
  EXPECT_EQ(demo.readLine(30s), "2 rounds of 5 write-write-read requests, client Nagle on");
  const std::regex row(
      R"(round (\d+): kernel p50 \d+\.\d{3} ms max \d+\.\d{3} ms \| latency p50 \d+\.\d{3} ms max \d+\.\d{3} ms)");
  for (int r = 1; r <= 2; ++r) {
    const auto l = demo.readLine(30s);
    ASSERT_TRUE(l.has_value()) << demo.stderrText();
    std::smatch m;
    ASSERT_TRUE(std::regex_match(*l, m, row)) << *l;
    EXPECT_EQ(std::stoi(m[1].str()), r);
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
