// keel-sockperf as a real process, measured by the real sockperf client
// (ping-pong and under-load, TCP and UDP), plus raw sockets for what that
// client never sends: messages split at every byte, coalesced messages,
// warm-up and no-pong flags, and lengths outside the format. Every test ends
// with SIGTERM and expects exit status 0.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <sys/socket.h>
#include <unistd.h>

#include "support/Child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

// The wire format, written out here independently of the server's code
// (examples/sockperf/SockperfFrame.h): 14-byte header, network byte order,
// u64 sequence, u16 flags, u32 length of the whole message.
constexpr std::size_t kHeader = 14;
constexpr std::uint16_t kClient = 1, kPong = 2, kWarmup = 4;

void put(char* p, std::uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}
std::uint64_t get(const char* p, int n) {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string message(std::uint64_t seq, std::uint16_t flags, std::size_t size, std::uint32_t length = 0) {
  std::string m(std::max(size, kHeader), 'x');
  put(m.data(), seq, 8);
  put(m.data() + 8, flags, 2);
  put(m.data() + 10, length != 0 ? length : size, 4);
  m.resize(size);
  return m;
}

// The reply sockperf expects: the same bytes, client flag cleared.
std::string replyTo(std::string m) {
  m[9] = static_cast<char>(m[9] & ~kClient);
  return m;
}

// What sockperf printed, reduced to the figures the tests judge.
struct Summary {
  long totalSent = -1, totalReceived = -1;  // [Total Run]
  long validSent = -1, validReceived = -1;  // [Valid Duration]
  long dropped = -1, duplicated = -1, outOfOrder = -1;
  bool hasP50 = false;
};

Summary parseSummary(const std::string& out) {
  Summary s;
  auto num = [&](std::string_view line, std::string_view key) {
    const auto n = numberAfter(out, key, line);
    return n ? std::stol(*n) : -1L;
  };
  s.totalSent = num("[Total Run]", "SentMessages=");
  s.totalReceived = num("[Total Run]", "ReceivedMessages=");
  s.validSent = num("[Valid Duration]", "SentMessages=");
  s.validReceived = num("[Valid Duration]", "ReceivedMessages=");
  s.dropped = num("# dropped messages", "dropped messages = ");
  s.duplicated = num("# dropped messages", "duplicated messages = ");
  s.outOfOrder = num("# dropped messages", "out-of-order messages = ");
  s.hasP50 = out.find("percentile 50.000") != std::string::npos;
  return s;
}

class SockperfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string bin = binaryPath("keel-sockperf");
    ASSERT_EQ(::access(bin.c_str(), X_OK), 0) << bin << " not built";
    server_ = std::make_unique<Child>(std::vector<std::string>{bin, "--port", "0"});
    port_ = awaitListening(*server_);
    ASSERT_NE(port_, 0) << "keel-sockperf did not come up: " << server_->stderrText();
    addr_ = *SocketAddress::ipv4("127.0.0.1", port_);
  }
  void TearDown() override {
    if (!server_) return;
    EXPECT_FALSE(server_->wait(std::chrono::milliseconds(0)).has_value())
        << "keel-sockperf died during the test";
    EXPECT_EQ(server_->terminate(), 0) << server_->stderrText();
  }

  // Runs the sockperf client (stdout and stderr together) and returns its output.
  std::string sockperf(const std::string& mode, bool tcp, std::size_t size, int* status) {
    std::string cmd = "sockperf " + mode + (tcp ? " --tcp" : "") + " -i 127.0.0.1 -p " +
                      std::to_string(port_) + " -m " + std::to_string(size) + " -t 1 2>&1";
    Child c({"sh", "-c", cmd});
    c.closeStdin();
    std::string out = c.readAll(std::chrono::seconds(30));
    *status = c.wait(std::chrono::seconds(10)).value_or(-1);
    return out;
  }

  // A ping-pong run: every message sent in the measured window came back,
  // none lost, duplicated or out of order.
  void expectPingPong(bool tcp, std::size_t size) {
    if (!haveTool("sockperf")) GTEST_SKIP() << "sockperf not installed (scripts/install-deps.sh)";
    int status = 0;
    const std::string out = sockperf("ping-pong", tcp, size, &status);
    const Summary s = parseSummary(out);
    EXPECT_EQ(status, 0) << out;
    EXPECT_GT(s.validSent, 100) << out;
    EXPECT_EQ(s.validReceived, s.validSent) << out;
    // The run stops on a timer with at most one message in flight.
    EXPECT_GE(s.totalReceived, s.totalSent - 1) << out;
    EXPECT_EQ(s.dropped, 0) << out;
    EXPECT_EQ(s.duplicated, 0) << out;
    EXPECT_EQ(s.outOfOrder, 0) << out;
    EXPECT_TRUE(s.hasP50) << out;
    EXPECT_EQ(out.find("ERROR"), std::string::npos) << out;
  }

  // Under load only about one message in a hundred asks for a pong; every
  // one of those must be answered.
  void expectUnderLoad(bool tcp) {
    if (!haveTool("sockperf")) GTEST_SKIP() << "sockperf not installed (scripts/install-deps.sh)";
    int status = 0;
    const std::string out = sockperf("under-load", tcp, 64, &status);
    const Summary s = parseSummary(out);
    EXPECT_EQ(status, 0) << out;
    EXPECT_GT(s.validSent, 1000) << out;
    EXPECT_GT(s.validReceived, 0) << out;
    EXPECT_LT(s.validReceived, s.validSent) << "only pong requests are answered\n" << out;
    EXPECT_EQ(s.dropped, 0) << out;
    EXPECT_EQ(s.duplicated, 0) << out;
    EXPECT_EQ(s.outOfOrder, 0) << out;
    EXPECT_TRUE(s.hasP50) << out;
  }

  void expectServing() {
    BlockingClient c(addr_);
    ASSERT_TRUE(c.connected());
    const std::string ping = message(99, kClient | kPong, 32);
    ASSERT_TRUE(c.sendAll(ping));
    EXPECT_EQ(c.recvExact(ping.size()), replyTo(ping));
  }

  std::unique_ptr<Child> server_;
  std::uint16_t port_ = 0;
  SocketAddress addr_;
};

TEST_F(SockperfTest, PingPongTcpCompletesWithEveryReply) { expectPingPong(true, 64); }
TEST_F(SockperfTest, PingPongUdpCompletesWithEveryReply) { expectPingPong(false, 64); }
// 60000-byte messages cross several reads each on TCP: framing by length.
TEST_F(SockperfTest, PingPongTcpLargeMessages) { expectPingPong(true, 60000); }
TEST_F(SockperfTest, PingPongUdpLargeDatagrams) { expectPingPong(false, 60000); }
TEST_F(SockperfTest, UnderLoadTcpAnswersPongRequests) { expectUnderLoad(true); }
TEST_F(SockperfTest, UnderLoadUdpAnswersPongRequests) { expectUnderLoad(false); }

TEST_F(SockperfTest, ReplyIsTheMessageWithTheClientFlagCleared) {
  BlockingClient c(addr_);
  ASSERT_TRUE(c.connected());
  std::string msg = message(0x0102030405060708ULL, kClient | kPong, 100);
  for (std::size_t i = kHeader; i < msg.size(); ++i) msg[i] = static_cast<char>(i * 7);
  ASSERT_TRUE(c.sendAll(msg));
  const std::string reply = c.recvExact(msg.size());
  ASSERT_EQ(reply.size(), msg.size());
  EXPECT_EQ(get(reply.data(), 8), 0x0102030405060708ULL);
  EXPECT_EQ(get(reply.data() + 8, 2), kPong);
  EXPECT_EQ(get(reply.data() + 10, 4), 100u);
  EXPECT_EQ(reply.substr(kHeader), msg.substr(kHeader));
}

TEST_F(SockperfTest, TcpMessagesSplitAtEveryByteAndCoalescedAreAllAnsweredInOrder) {
  BlockingClient c(addr_);
  ASSERT_TRUE(c.connected());
  c.setNoDelay(true);
  // Byte by byte: each message arrives in many reads.
  for (std::uint64_t seq = 1; seq <= 3; ++seq) {
    const std::string m = message(seq, kClient | kPong, 20 + seq);
    for (char ch : m) ASSERT_TRUE(c.sendAll(std::string_view(&ch, 1)));
    EXPECT_EQ(c.recvExact(m.size()), replyTo(m)) << "seq " << seq;
  }
  // 50 messages in one write, some that must not be answered among them.
  std::string burst, expected;
  for (std::uint64_t seq = 100; seq < 150; ++seq) {
    std::uint16_t flags = kClient | kPong;
    bool answered = true;
    if (seq % 5 == 0) flags = kClient, answered = false;                    // under-load traffic
    if (seq % 7 == 0) flags = kClient | kPong | kWarmup, answered = false;  // warm-up
    if (seq % 11 == 0) flags = kPong, answered = false;                     // a reply: never echoed
    const std::string m = message(seq, flags, kHeader + seq % 30);
    burst += m;
    if (answered) expected += replyTo(m);
  }
  ASSERT_TRUE(c.sendAll(burst));
  EXPECT_EQ(c.recvExact(expected.size()), expected);
  expectServing();
}

TEST_F(SockperfTest, OversizedLengthClosesThatConnectionOnly) {
  BlockingClient bad(addr_);
  ASSERT_TRUE(bad.connected());
  ASSERT_TRUE(bad.sendAll(message(1, kClient | kPong, kHeader, 1u << 20)));  // 1 MiB > the 64 KiB cap
  bool eof = false;
  int err = 0;
  EXPECT_EQ(bad.recvUntilEof(&eof, &err), "");
  EXPECT_TRUE(eof || err != 0) << "the connection must be closed";
  EXPECT_TRUE(eventually([&] { return server_->stderrText().find("above the cap") != std::string::npos; }))
      << server_->stderrText();
  expectServing();
}

TEST_F(SockperfTest, LengthBelowTheHeaderClosesThatConnectionOnly) {
  BlockingClient bad(addr_);
  ASSERT_TRUE(bad.connected());
  ASSERT_TRUE(bad.sendAll(message(1, kClient | kPong, kHeader, 3)));
  bool eof = false;
  int err = 0;
  EXPECT_EQ(bad.recvUntilEof(&eof, &err), "");
  EXPECT_TRUE(eof || err != 0);
  expectServing();
}

// UDP: a datagram that is not exactly one message is dropped (and
// reported), a valid one on the same port is answered.
TEST_F(SockperfTest, UdpInvalidDatagramsAreDroppedValidOnesAnswered) {
  Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(fd.valid());
  timeval tv{2, 0};
  ASSERT_EQ(::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  ASSERT_EQ(::connect(fd.get(), addr_.data(), addr_.length()), 0);
  const std::string shortOne = "tiny";
  const std::string lying = message(5, kClient | kPong, 40, 64);  // length field says 64
  const std::string warm = message(6, kClient | kPong | kWarmup, 64);
  const std::string good = message(7, kClient | kPong, 64);
  for (const auto* d : {&shortOne, &lying, &warm, &good}) {
    ASSERT_EQ(::send(fd.get(), d->data(), d->size(), 0), static_cast<ssize_t>(d->size()));
  }
  char buf[256];
  const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
  ASSERT_EQ(n, 64);
  EXPECT_EQ(get(buf, 8), 7u) << "only the valid, non-warm-up message is answered";
  EXPECT_EQ(get(buf + 8, 2), kPong);
  EXPECT_TRUE(eventually(
      [&] { return server_->stderrText().find("not one sockperf message") != std::string::npos; }));
}

}  // namespace
}  // namespace keel::test
