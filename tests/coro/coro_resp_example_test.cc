// keel-resp --coroutine (examples/resp/CoResp.h) driven by a real client:
// the request loop written as a coroutine answers like the callback one
// (tests/examples/resp_test.cc): pipelining, commands split anywhere, QUIT,
// a protocol error, the FIN after pipelined commands, and backpressure.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "support/Child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

// Appends only, no "literal" + std::string: GCC 12 at -O2 reports a false
// -Wrestrict on that (the release build compiles the tests with -Werror).
std::string bulk(const std::string& v) {
  std::string out = "$";
  out += std::to_string(v.size());
  out += "\r\n";
  out += v;
  out += "\r\n";
  return out;
}
std::string command(const std::vector<std::string>& args) {
  std::string out = "*";
  out += std::to_string(args.size());
  out += "\r\n";
  for (const auto& a : args) out += bulk(a);
  return out;
}
std::string numbered(const char* prefix, int i) {
  std::string out = prefix;
  out += std::to_string(i);
  return out;
}

class CoRespTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<Child>(
        std::vector<std::string>{binaryPath("keel-resp"), "--port", "0", "--coroutine"});
    port_ = awaitListening(*server_);
    ASSERT_NE(port_, 0) << "keel-resp --coroutine did not come up: " << server_->stderrText();
  }
  void TearDown() override {
    if (server_) {
      EXPECT_EQ(server_->terminate(), 0) << server_->stderrText();
    }
  }
  [[nodiscard]] SocketAddress addr() const { return SocketAddress::loopback4(port_); }
  std::unique_ptr<Child> server_;
  std::uint16_t port_ = 0;
};

TEST_F(CoRespTest, PipelinedCommandsInOneWrite) {
  std::string req, want;
  for (int i = 0; i < 100; ++i) {
    const std::string k = numbered("key", i);
    req += command({"SET", k, numbered("v", i)});
    req += command({"GET", k});
    req += "PING\r\n";
    want += "+OK\r\n";
    want += bulk(numbered("v", i));
    want += "+PONG\r\n";
  }
  BlockingClient c(addr());
  ASSERT_TRUE(c.sendAll(req));
  EXPECT_EQ(c.recvExact(want.size()), want);
}

TEST_F(CoRespTest, CommandSplitAtEveryByte) {
  const std::string req =
      command({"SET", "split", "a value"}) + command({"GET", "split"}) + "ECHO inline\r\n";
  const std::string want = "+OK\r\n" + bulk("a value") + bulk("inline");
  BlockingClient c(addr());
  c.setNoDelay(true);
  for (std::size_t cut = 1; cut < req.size(); ++cut) {
    ASSERT_TRUE(c.sendAll(std::string_view(req).substr(0, cut)));
    ASSERT_TRUE(c.sendAll(std::string_view(req).substr(cut)));
    ASSERT_EQ(c.recvExact(want.size()), want) << "split at byte " << cut;
  }
}

TEST_F(CoRespTest, QuitRepliesThenCloses) {
  BlockingClient c(addr());
  ASSERT_TRUE(c.sendAll(command({"PING"}) + command({"QUIT"}) + command({"PING"})));
  bool eof = false;
  EXPECT_EQ(c.recvUntilEof(&eof), "+PONG\r\n+OK\r\n");
  EXPECT_TRUE(eof);
}

TEST_F(CoRespTest, MalformedInputGetsProtocolErrorAndClose) {
  BlockingClient c(addr());
  ASSERT_TRUE(c.sendAll("PING\r\n*abc\r\n"));
  bool eof = false;
  EXPECT_EQ(c.recvUntilEof(&eof), "+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n");
  EXPECT_TRUE(eof);
}

TEST_F(CoRespTest, CommandsBeforeTheFinAreAnsweredEvenBehindBackpressure) {
  // 4 MiB of replies to commands sent before a FIN, read only afterwards:
  // the coroutine's writes suspend above the high watermark, and every
  // reply still arrives before the close.
  const std::string value(64 << 10, 'v');
  BlockingClient c(addr(), std::chrono::milliseconds(20000));
  ASSERT_TRUE(c.sendAll(command({"SET", "big", value})));
  ASSERT_EQ(c.recvExact(5), "+OK\r\n");
  std::string req, want;
  for (int i = 0; i < 64; ++i) {
    req += command({"GET", "big"});
    want += bulk(value);
  }
  ASSERT_TRUE(c.sendAll(req));
  c.shutdownWrite();
  bool eof = false;
  const std::string got = c.recvUntilEof(&eof);
  EXPECT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want);
  EXPECT_TRUE(eof);
}

}  // namespace
}  // namespace keel::test
