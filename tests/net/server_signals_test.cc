// Server::stopOnSignals in a real process: the server runs in a forked child
// with its connections on an I/O thread, the test is its client and sends
// it real signals. The first SIGTERM must end in a graceful close (all the
// queued output, then FIN) and exit 0; a second one must abort at once.
#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <string>

#include "keel/core/EventLoop.h"
#include "keel/core/SignalWatcher.h"
#include "keel/net/Connection.h"
#include "keel/net/Server.h"
#include "support/Forked.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;

// More than the socket buffers on both sides can hold (loopback autotuning
// tops out at a few MiB each), so most of it is still queued in the server
// when the signal comes.
constexpr std::size_t kReplyBytes = std::size_t{32} << 20;

std::string reply() {
  std::string r(kReplyBytes, '\0');
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = static_cast<char>('a' + i % 26);
  return r;
}

// Queues the whole reply as soon as the client connects.
class BigReply final : public Handler {
 public:
  void onConnected(HandlerContext& ctx) override { (void)ctx.write(reply()); }
};

enum class When { BeforeStart, AfterStart };

struct ChildSpec {
  When when = When::BeforeStart;
  bool customDone = false;
  bool start = true;
};

// The child: a server on one I/O thread, stopOnSignals, and a second
// watcher of SIGTERM that tells the test each signal has been taken.
int runServer(test::Forked::Report& report, const ChildSpec& spec) {
  EventLoop loop;
  ServerOptions options;
  options.ioThreads = 1;
  // Long: only a second signal, not the timeout, may abort within the test.
  options.stopTimeout = 120s;
  Server server(loop, SocketAddress::loopback4(0), options);
  server.setPipelineInit([](Connection& c) { c.pipeline().emplaceLast<BigReply>(); });
  std::function<void()> done;
  if (spec.customDone) {
    done = [&] {
      report.line("done");
      loop.quit();
    };
  }
  SignalWatcher seen(loop, {SIGTERM}, [&](int) { report.line("signal"); });
  if (spec.when == When::BeforeStart && server.stopOnSignals({SIGTERM, SIGINT}, done)) return 10;
  if (spec.start && server.start()) return 11;
  if (spec.when == When::AfterStart && server.stopOnSignals({SIGTERM, SIGINT}, done)) return 12;
  report.line("port " + std::to_string(spec.start ? server.listenAddress().port() : 0));
  loop.loop();
  report.line("returned");
  return 0;
}

std::uint16_t portOf(const std::optional<std::string>& line) {
  if (!line || line->rfind("port ", 0) != 0) return 0;
  return static_cast<std::uint16_t>(std::stoi(line->substr(5)));
}

TEST(ServerSignals, FirstSigtermClosesGracefullyAfterTheQueuedOutputAndExitsZero) {
  test::Forked child([](test::Forked::Report& r) { return runServer(r, {When::BeforeStart, true}); });
  ASSERT_GT(child.pid(), 0);
  const std::uint16_t port = portOf(child.readLine());
  ASSERT_NE(port, 0);
  test::BlockingClient client(SocketAddress::loopback4(port), 10000ms);
  ASSERT_TRUE(client.connected());
  // The first byte says the connection is up and its reply queued.
  std::string got = client.recvExact(1);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(::kill(child.pid(), SIGTERM), 0);
  EXPECT_EQ(child.readLine(), "signal");
  bool eof = false;
  int err = 0;
  got += client.recvUntilEof(&eof, &err);
  EXPECT_TRUE(eof) << "errno " << err << ": a graceful stop ends in FIN, not a reset";
  ASSERT_EQ(got.size(), kReplyBytes) << "the output queued at the signal must all arrive before the FIN";
  EXPECT_TRUE(got == reply());
  client.close();  // the server's connection finishes when the client closes its side too
  EXPECT_EQ(child.readLine(), "done");
  EXPECT_EQ(child.readLine(), "returned");
  EXPECT_EQ(child.wait(), 0);
}

TEST(ServerSignals, SecondSigtermWhileStoppingAbortsAtOnceAndTheDefaultDoneQuits) {
  test::Forked child([](test::Forked::Report& r) { return runServer(r, {When::AfterStart, false}); });
  ASSERT_GT(child.pid(), 0);
  const std::uint16_t port = portOf(child.readLine());
  ASSERT_NE(port, 0);
  test::BlockingClient client(SocketAddress::loopback4(port), 10000ms);
  ASSERT_TRUE(client.connected());
  ASSERT_EQ(client.recvExact(1).size(), 1u);
  // This client reads no more: the graceful stop cannot finish (its
  // timeout is 120 s) until the second signal aborts it.
  ASSERT_EQ(::kill(child.pid(), SIGTERM), 0);
  ASSERT_EQ(child.readLine(), "signal");
  ASSERT_EQ(::kill(child.pid(), SIGTERM), 0);
  EXPECT_EQ(child.readLine(), "signal");
  EXPECT_EQ(child.readLine(30s), "returned");
  EXPECT_EQ(child.wait(30s), 0);
  bool eof = false;
  int err = 0;
  const std::string rest = client.recvUntilEof(&eof, &err);
  EXPECT_EQ(err, ECONNRESET) << "aborted: the queued output is dropped with a reset";
  EXPECT_LT(rest.size() + 1, kReplyBytes);
}

TEST(ServerSignals, ASignalBeforeStartRunsDoneAtOnce) {
  test::Forked child([](test::Forked::Report& r) {
    return runServer(r, {.when = When::BeforeStart, .customDone = true, .start = false});
  });
  ASSERT_GT(child.pid(), 0);
  ASSERT_EQ(child.readLine(), "port 0");
  ASSERT_EQ(::kill(child.pid(), SIGINT), 0);
  EXPECT_EQ(child.readLine(), "done");
  EXPECT_EQ(child.readLine(), "returned");
  EXPECT_EQ(child.wait(), 0);
}

TEST(ServerSignals, AFailedRegistrationLeavesTheServerAsItWas) {
  EventLoop loop;
  Server server(loop, SocketAddress::loopback4(0));
  EXPECT_EQ(server.stopOnSignals({SIGTERM, SIGKILL}), std::errc::invalid_argument);
  struct sigaction now {};
  ASSERT_EQ(::sigaction(SIGTERM, nullptr, &now), 0);
  EXPECT_EQ(now.sa_handler, SIG_DFL);
}

}  // namespace
}  // namespace keel
