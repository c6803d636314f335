// keel-chat with real socat clients as child processes: broadcast to the
// others, the line cap, the idle kick, and a member that never reads while
// another floods (the server's RSS stays bounded, the others keep receiving).
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <unistd.h>

#include "support/Child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

class ChatExample : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!haveTool("socat")) GTEST_SKIP() << "socat not installed (scripts/install-deps.sh)";
  }
  void startServer(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{binaryPath("keel-chat"), "--port", "0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    server_ = std::make_unique<Child>(argv);
    port_ = awaitListening(*server_);
    ASSERT_NE(port_, 0) << server_->stderrText();
  }
  void TearDown() override {
    if (server_) {
      EXPECT_EQ(server_->terminate(), 0) << server_->stderrText();
    }
  }
  // A member: socat between the test and the room. Returns it with its name
  // (from the welcome line "*** you are userN; ...").
  std::unique_ptr<Child> join(std::string* name, ChildOptions opt = {}) {
    auto c = std::make_unique<Child>(
        std::vector<std::string>{"socat", "-t", "1", "-", "TCP:127.0.0.1:" + std::to_string(port_)}, opt);
    if (!opt.stdoutToNull && name != nullptr) {
      const auto welcome = c->readLine();
      std::vector<std::string> caps;
      if (welcome && matchFormat(*welcome, "*** you are user{n}; {n} other(s) here", &caps))
        *name = "user" + caps[0];
    }
    return c;
  }
  std::unique_ptr<Child> server_;
  std::uint16_t port_ = 0;
};

TEST_F(ChatExample, LinesGoToTheOtherMembersNotBackToTheSender) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  std::string a, b, c;
  auto ca = join(&a);
  ASSERT_FALSE(a.empty());
  auto cb = join(&b);
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(ca->readLine(), "*** " + b + " joined");
  auto cc = join(&c);
  ASSERT_FALSE(c.empty());
  EXPECT_EQ(ca->readLine(), "*** " + c + " joined");
  EXPECT_EQ(cb->readLine(), "*** " + c + " joined");

  ASSERT_TRUE(ca->write("hello from a\n"));
  EXPECT_EQ(cb->readLine(), a + ": hello from a");
  EXPECT_EQ(cc->readLine(), a + ": hello from a");
  // CRLF is accepted; empty lines are not broadcast.
  ASSERT_TRUE(cb->write("\nfrom b\r\n"));
  // a's next line is b's message: its own line never came back to it.
  EXPECT_EQ(ca->readLine(), b + ": from b");
  EXPECT_EQ(cc->readLine(), b + ": from b");

  // A member leaving is announced to the rest.
  cc->closeStdin();
  EXPECT_EQ(cc->wait(), 0);
  EXPECT_EQ(ca->readLine(), "*** " + c + " left (peer-closed)");
  EXPECT_EQ(cb->readLine(), "*** " + c + " left (peer-closed)");
}

TEST_F(ChatExample, LinesSplitAcrossWritesAndCrlfAtTheCap) {
  ASSERT_NO_FATAL_FAILURE(startServer({"--max-line", "100"}));
  std::string a, b;
  auto ca = join(&a);
  auto cb = join(&b);
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(ca->readLine(), "*** " + b + " joined");
  // One line in three pieces: nothing is broadcast until its newline.
  ASSERT_TRUE(cb->write("hel"));
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(cb->write("lo wor"));
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(cb->write("ld\nsecond\n"));
  EXPECT_EQ(ca->readLine(), b + ": hello world");
  EXPECT_EQ(ca->readLine(), b + ": second");
  // 100 bytes of content plus CRLF is within the cap; 101 is not.
  ASSERT_TRUE(cb->write(std::string(100, 'z') + "\r\n"));
  EXPECT_EQ(ca->readLine(), b + ": " + std::string(100, 'z'));
  ASSERT_TRUE(cb->write(std::string(101, 'z') + "\r\n"));
  EXPECT_EQ(cb->readLine(), "*** error: line longer than 100 bytes; bye");
  EXPECT_EQ(ca->readLine(), "*** " + b + " left (protocol-error)");
}

TEST_F(ChatExample, TooLongLineGetsAnErrorAndACloseOthersUnaffected) {
  ASSERT_NO_FATAL_FAILURE(startServer({"--max-line", "4096"}));
  std::string a, b;
  auto ca = join(&a);
  auto cb = join(&b);
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(ca->readLine(), "*** " + b + " joined");
  ASSERT_TRUE(cb->write(std::string(4096, 'y') + "\n"));  // exactly the cap: fine
  EXPECT_EQ(ca->readLine(), b + ": " + std::string(4096, 'y'));
  ASSERT_TRUE(cb->write(std::string(5000, 'x') + "\n"));
  EXPECT_EQ(cb->readLine(), "*** error: line longer than 4096 bytes; bye");
  EXPECT_EQ(cb->wait(), 0) << "socat ends once the server closed";
  EXPECT_EQ(ca->readLine(), "*** " + b + " left (protocol-error)");
  // The room goes on.
  std::string c;
  auto cc = join(&c);
  EXPECT_EQ(ca->readLine(), "*** " + c + " joined");
  ASSERT_TRUE(cc->write("still chatting\n"));
  EXPECT_EQ(ca->readLine(), c + ": still chatting");
}

TEST_F(ChatExample, IdleMemberIsKickedActiveOneStays) {
  ASSERT_NO_FATAL_FAILURE(startServer({"--idle-timeout-ms", "300"}));
  std::string idle, active;
  auto ci = join(&idle);
  auto ca = join(&active);
  ASSERT_FALSE(active.empty());
  EXPECT_EQ(ci->readLine(), "*** " + active + " joined");
  // The active member speaks every 100 ms for 1.5 s (five idle periods).
  std::atomic<bool> done{false};
  std::thread talker([&] {
    for (int i = 0; i < 15; ++i) {
      ca->write("tick " + std::to_string(i) + "\n");
      std::this_thread::sleep_for(100ms);
    }
    done = true;
  });
  // The idle member reads the ticks, then is told why it goes, then socat exits.
  std::string last;
  while (auto l = ci->readLine(10s)) last = *l;
  talker.join();
  EXPECT_TRUE(matchFormat(last, "*** idle for {n} ms; bye")) << last;
  EXPECT_EQ(ci->wait(), 0);
  // The active member saw it leave and is still in the room.
  bool sawLeave = false;
  while (auto l = ca->readLine(3s)) {
    if (*l == "*** " + idle + " left (idle-timeout)") {
      sawLeave = true;
      break;
    }
  }
  EXPECT_TRUE(sawLeave);
  std::string other;
  auto co = join(&other);
  EXPECT_EQ(ca->readLine(), "*** " + other + " joined");
}

TEST_F(ChatExample, MemberThatNeverReadsDoesNotGrowServerMemory) {
#if defined(__SANITIZE_ADDRESS__)
  // Under ASan freed blocks sit in a quarantine (256 MiB by default) that RSS
  // counts; the bound is about live memory, so the server runs without it.
  const char* asan = std::getenv("ASAN_OPTIONS");
  ::setenv("ASAN_OPTIONS", (std::string(asan != nullptr ? asan : "") + ":quarantine_size_mb=0").c_str(), 1);
#endif
  ASSERT_NO_FATAL_FAILURE(startServer({"--idle-timeout-ms", "0"}));
  // 40 MiB of 1 KiB lines from one member. Without the watermark cap the
  // server would queue nearly all of it for the member that never reads.
  const std::string flood = "/tmp/keel-chat-flood-" + std::to_string(::getpid());
  constexpr int kLines = 40 * 1024;
  {
    std::ofstream f(flood);
    const std::string body(1000, 'f');
    for (int i = 0; i < kLines; ++i) f << "flood " << i << ' ' << body << '\n';
  }
  std::string slow, reader, flooder, late;
  // The slow member: its socat stops reading the socket once the pipe to us
  // (which we never read) is full.
  auto cs = join(&slow);
  ASSERT_FALSE(slow.empty());
  auto cr = join(&reader);
  ASSERT_FALSE(reader.empty());
  const long before = procStatusKiB(server_->pid(), "VmRSS:");
  ASSERT_GT(before, 0);

  std::atomic<long> peak{before};
  std::atomic<bool> stop{false};
  std::thread sampler([&] {
    while (!stop) {
      peak = std::max(peak.load(), procStatusKiB(server_->pid(), "VmRSS:"));
      std::this_thread::sleep_for(20ms);
    }
  });
  // The reader drains everything, counting flood lines, until the marker.
  std::atomic<int> floodSeen{0};
  std::atomic<bool> markerSeen{false};
  std::atomic<int> missedNotices{0};
  std::thread drain([&] {
    while (auto l = cr->readLine(60s)) {
      if (l->find(": flood ") != std::string::npos) ++floodSeen;
      if (l->rfind("*** you missed ", 0) == 0) ++missedNotices;
      if (l->find(": marker after the flood") != std::string::npos) {
        markerSeen = true;
        return;
      }
    }
  });
  ChildOptions fromFile;
  fromFile.stdinFile = flood;
  fromFile.stdoutToNull = true;
  auto cf = join(nullptr, fromFile);
  EXPECT_EQ(cf->wait(120s), 0) << "the flooder's socat sends the file, then ends";

  // After the flood a new member speaks. A message that reaches the reader
  // while its queue is still above the watermark is dropped like the flood
  // lines, so the marker is repeated until the reader has caught up.
  auto cl = join(&late);
  const auto giveUp = std::chrono::steady_clock::now() + 60s;
  while (!markerSeen && std::chrono::steady_clock::now() < giveUp) {
    if (!cl->write("marker after the flood\n")) break;
    std::this_thread::sleep_for(200ms);
  }
  drain.join();
  stop = true;
  sampler.join();
  ::unlink(flood.c_str());

  EXPECT_TRUE(markerSeen) << "the reading member stopped receiving";
  EXPECT_GT(floodSeen.load(), 0);
  if (floodSeen < kLines) {
    EXPECT_GT(missedNotices.load(), 0) << "a member that missed lines is told so";
  }
  const long grewKiB = peak.load() - before;
  std::printf("server RSS %ld KiB before, peak %ld KiB; reader got %d of %d flood lines\n", before,
              peak.load(), floodSeen.load(), kLines);
  // The bound: one capped queue per member (256 KiB) plus buffers, far
  // below the ~35 MiB the slow member's share of the flood would take.
  EXPECT_LT(grewKiB, 16 * 1024) << "server RSS grew by " << grewKiB << " KiB";
  EXPECT_FALSE(cs->wait(0ms).has_value()) << "the slow member is still there (its socat still runs)";
  // The cap was really hit: the server reports what it dropped when it stops.
  EXPECT_EQ(server_->terminate(), 0);
  const std::string err = server_->stderrText();
  server_.reset();
  const std::size_t at = err.find("keel-chat: ");
  ASSERT_NE(at, std::string::npos) << err;
  std::vector<std::string> caps;
  ASSERT_TRUE(matchFormat(err.substr(at, err.find('\n', at) - at),
                          "keel-chat: {n} message(s) dropped for slow readers", &caps))
      << err;
  EXPECT_GT(std::stol(caps[0]), 0) << err;
}

// What a client refused at maxConnections (--max-members) sees, measured for
// docs/limits.md (issue 12 found the page wrong): the server accepts and
// closes at once, so a client that reads before sending sees a FIN and no
// data; a request that reaches the closed socket is answered with a reset,
// which a client that reads later sees as ECONNRESET. Never any data, never
// a hang. The split between FIN and reset for the senders depends on timing
// and is printed, not asserted.
TEST_F(ChatExample, RefusedMemberSeesAFinOrAResetAndNoData) {
  startServer({"--max-members", "1"});
  BlockingClient member(*SocketAddress::ipv4("127.0.0.1", port_));
  ASSERT_TRUE(member.recvExact(12) == "*** you are ") << "the one member was not admitted";
  constexpr int kTries = 40;
  struct Mode {
    const char* name;
    bool send;
    std::chrono::milliseconds readAfter;
  };
  for (const Mode mode : {Mode{"silent", false, 0ms}, Mode{"send, read at once", true, 0ms},
                          Mode{"send, read 20 ms later", true, 20ms}}) {
    int fin = 0, reset = 0, other = 0;
    for (int i = 0; i < kTries; ++i) {
      BlockingClient c(*SocketAddress::ipv4("127.0.0.1", port_), 3000ms);
      ASSERT_TRUE(c.connected());
      if (mode.send) (void)c.sendAll("hello, is there room?\n");
      std::this_thread::sleep_for(mode.readAfter);  // the client under test is slow to read
      bool eof = false;
      int err = 0;
      const std::string got = c.recvUntilEof(&eof, &err);
      EXPECT_TRUE(got.empty()) << mode.name << ": a refused client got " << got;
      if (got.empty() && eof) {
        ++fin;
      } else if (got.empty() && err == ECONNRESET) {
        ++reset;
      } else {
        ++other;
      }
    }
    std::printf("[measure] chat --max-members 1, refused (%s): %d FIN, %d reset, %d other of %d\n", mode.name,
                fin, reset, other, kTries);
    EXPECT_EQ(other, 0) << mode.name;
    if (!mode.send) {
      EXPECT_EQ(fin, kTries) << "a refused client that sent nothing must see a clean FIN";
    }
  }
}

}  // namespace
}  // namespace keel::test
