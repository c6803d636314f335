// Listening sockets across Servers and processes, with real sockets: export
// and adopt (one socket, and reuse-port sets over any number of loops),
// descriptors that must be refused, the drain, the handoff protocol over a
// Unix socket (filesystem and abstract paths, stale files, a successor that
// never acks), and systemd's LISTEN_FDS in a forked child.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "keel/core/EventLoop.h"
#include "keel/net/Handoff.h"
#include "keel/net/Listeners.h"
#include "keel/net/Server.h"
#include "support/Forked.h"
#include "support/TestNet.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using test::BlockingClient;
using test::ServerThread;

// Answers every read with its server's tag and the bytes: which server
// holds the connection is what these tests are about.
class Tagged final : public Handler {
 public:
  explicit Tagged(char tag) : tag_(tag) {}
  void onData(HandlerContext& ctx, Buffer& in) override {
    std::string out(1, tag_);
    out.append(in.view());
    in.retrieveAll();
    ctx.write(out);
  }

 private:
  char tag_;
};

Server::PipelineInit tagged(char tag) {
  return [tag](Connection& c) { c.pipeline().emplaceLast<Tagged>(tag); };
}

// The tag of the server that answers a fresh connection to `addr`.
char whoAnswers(const SocketAddress& addr) {
  BlockingClient c(addr);
  if (!c.connected() || !c.sendAll("x")) return '?';
  const std::string r = c.recvExact(2);
  return r.size() == 2 && r[1] == 'x' ? r[0] : '?';
}

std::vector<Fd> exportFrom(ServerThread& srv) {
  std::vector<Fd> fds;
  std::error_code ec;
  srv.runAndWait([&] { fds = srv.server().exportListeners(ec); });
  EXPECT_FALSE(ec) << ec.message();
  return fds;
}

ServerThread::Configure adopting(std::vector<Fd>& fds) {
  return [&fds](Server& s) {
    const std::error_code ec = s.adoptListeners(std::move(fds));
    EXPECT_FALSE(ec) << "adoptListeners: " << ec.message();
  };
}

TEST(ListenerAdoption, RefusesWhatIsNotAListeningStreamSocket) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  Fd pipeRead(p[0]), pipeWrite(p[1]);
  EXPECT_EQ(checkListener(pipeRead.get()), ListenerError::NotASocket);
  EXPECT_EQ(checkListener(-1), ListenerError::NotASocket);
  Socket udp = test::openUdp(AF_INET);
  EXPECT_EQ(checkListener(udp.fd()), ListenerError::NotStream);
  Socket unbound = test::openTcp(AF_INET);
  EXPECT_EQ(checkListener(unbound.fd()), ListenerError::NotListening);
  Socket v6 = test::openTcp(AF_INET6);
  ASSERT_FALSE(v6.bind(SocketAddress::loopback6(0)));
  ASSERT_FALSE(v6.listen());
  EXPECT_FALSE(checkListener(v6.fd()));
  EXPECT_EQ(checkListener(v6.fd(), AF_INET), ListenerError::WrongFamily);
  EXPECT_NE(make_error_code(ListenerError::NotListening).message().find("not listening"), std::string::npos);

  // Server::adoptListeners says the same, keeps nothing, and still binds.
  EventLoop loop;
  Server server(loop, SocketAddress::loopback4(0));
  std::vector<Fd> fds;
  fds.push_back(v6.release());
  EXPECT_EQ(server.adoptListeners(std::move(fds)), ListenerError::WrongFamily);
  fds.clear();
  fds.push_back(unbound.release());
  EXPECT_EQ(server.adoptListeners(std::move(fds)), ListenerError::NotListening);
  EXPECT_EQ(server.adoptListeners({}), std::errc::invalid_argument);
  ASSERT_FALSE(server.start());
  EXPECT_NE(server.listenAddress().port(), 0);
  fds.clear();
  fds.push_back(test::openTcp(AF_INET).release());
  EXPECT_EQ(server.adoptListeners(std::move(fds)), std::errc::already_connected);
}

TEST(ListenerAdoption, ExportedSocketServesFromAnotherServer) {
  ServerThread a(SocketAddress::loopback4(0), {}, tagged('A'));
  const SocketAddress addr = a.address();
  BlockingClient before(addr);  // accepted by A: stays A's through the move
  ASSERT_TRUE(before.sendAll("1"));
  ASSERT_EQ(before.recvExact(2), "A1");
  std::vector<Fd> fds = exportFrom(a);
  ASSERT_EQ(fds.size(), 1u);
  ServerThread b(SocketAddress{}, {}, tagged('B'), adopting(fds));
  EXPECT_EQ(b.address().toString(), addr.toString());
  a.runAndWait([&] { a.server().stopAccepting(); });
  for (int i = 0; i < 5; ++i) EXPECT_EQ(whoAnswers(addr), 'B');
  ASSERT_TRUE(before.sendAll("2"));
  EXPECT_EQ(before.recvExact(2), "A2");
  std::error_code ec;
  a.runAndWait([&] { (void)a.server().exportListeners(ec); });
  EXPECT_TRUE(ec);  // nothing left to export once it stopped accepting
}

ServerOptions reusePortLoops(std::size_t n) {
  ServerOptions o;
  o.ioThreads = n;
  o.reusePort = true;
  return o;
}

TEST(ListenerAdoption, ReusePortSocketsSpreadOverAnyNumberOfLoops) {
  const ServerOptions two = reusePortLoops(2);
  ServerThread a(SocketAddress::loopback4(0), two, tagged('A'));
  const SocketAddress addr = a.address();
  std::vector<Fd> fromA = exportFrom(a);
  ASSERT_EQ(fromA.size(), 2u);
  const ServerOptions three = reusePortLoops(3);
  ServerThread b(SocketAddress{}, three, tagged('B'), adopting(fromA));  // more loops than sockets
  a.runAndWait([&] { a.server().stopAccepting(); });
  for (int i = 0; i < 6; ++i) EXPECT_EQ(whoAnswers(addr), 'B');
  std::vector<Fd> fromB = exportFrom(b);
  EXPECT_EQ(fromB.size(), 3u);  // one per loop, the third a dup
  const ServerOptions one = reusePortLoops(1);
  ServerThread c(SocketAddress{}, one, tagged('C'), adopting(fromB));  // more sockets than loops
  b.runAndWait([&] { b.server().stopAccepting(); });
  for (int i = 0; i < 12; ++i) EXPECT_EQ(whoAnswers(addr), 'C');
}

TEST(ListenerAdoption, DrainWaitsForConnectionsToCloseOnTheirOwn) {
  ServerThread a(SocketAddress::loopback4(0), {}, tagged('A'));
  BlockingClient client(a.address());
  ASSERT_TRUE(client.sendAll("1"));
  ASSERT_EQ(client.recvExact(2), "A1");
  std::atomic<bool> done{false};
  a.runAndWait([&] { a.server().drain(30s, [&done] { done = true; }); });
  ASSERT_TRUE(client.sendAll("2"));  // still served while draining
  EXPECT_EQ(client.recvExact(2), "A2");
  EXPECT_FALSE(done.load());
  client.close();
  EXPECT_TRUE(test::eventually([&] { return done.load(); }));
}

TEST(ListenerAdoption, DrainTimeoutShutsDownWhatIsLeft) {
  ServerThread a(SocketAddress::loopback4(0), {}, tagged('A'));
  BlockingClient client(a.address());
  ASSERT_TRUE(client.sendAll("1"));
  ASSERT_EQ(client.recvExact(2), "A1");
  std::atomic<bool> done{false};
  a.runAndWait([&] { a.server().drain(50ms, [&done] { done = true; }); });
  bool eof = false;
  (void)client.recvUntilEof(&eof);
  EXPECT_TRUE(eof);  // the graceful shutdown's FIN
  client.close();
  EXPECT_TRUE(test::eventually([&] { return done.load(); }));
}

// Declared after its ServerThread, so that it goes first: the
// HandoffServer is destroyed on its loop even when an ASSERT returns early.
struct HandoffSide {
  explicit HandoffSide(ServerThread& s) : srv(s) {}
  ~HandoffSide() {
    srv.runAndWait([this] { handoff.reset(); });
  }
  HandoffSide(const HandoffSide&) = delete;
  HandoffSide& operator=(const HandoffSide&) = delete;
  ServerThread& srv;
  std::unique_ptr<HandoffServer> handoff;
  std::atomic<bool> handedOff{false};
};

// A HandoffServer for `srv` on its loop: on success it stops accepting.
void offer(ServerThread& srv, HandoffSide& side, const std::string& path, HandoffOptions opt = {}) {
  std::error_code ec;
  srv.runAndWait([&] {
    side.handoff = std::make_unique<HandoffServer>(
        srv.loop(), path, [&srv](std::error_code& e) { return srv.server().exportListeners(e); },
        [&srv, &side] {
          srv.server().stopAccepting();
          side.handedOff = true;
        },
        opt);
    ec = side.handoff->listen();
  });
  ASSERT_FALSE(ec) << ec.message();
}

void withdraw(HandoffSide& side) {
  side.srv.runAndWait([&] { side.handoff.reset(); });
}

TEST(Handoff, HandsListenersToASuccessorAndReleasesThePath) {
  test::TempPath file("keel_handoff");
  for (const std::string& path : {file.str(), "@keel_handoff_" + test::uniqueSuffix()}) {
    SCOPED_TRACE(path);
    ServerThread a(SocketAddress::loopback4(0), {}, tagged('A'));
    HandoffSide sideA(a);
    offer(a, sideA, path);
    std::error_code ec;
    auto takeover = requestHandoff(path, ec);
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_TRUE(takeover.has_value());
    EXPECT_EQ(takeover->previousPid, ::getpid());
    ASSERT_EQ(takeover->listeners.size(), 1u);
    ServerThread b(SocketAddress{}, {}, tagged('B'), adopting(takeover->listeners));
    EXPECT_EQ(b.address().toString(), a.address().toString());
    EXPECT_FALSE(takeover->confirm());
    EXPECT_TRUE(test::eventually([&] { return sideA.handedOff.load(); }));
    for (int i = 0; i < 5; ++i) EXPECT_EQ(whoAnswers(a.address()), 'B');
    // PATH is free for the successor to offer in its turn.
    HandoffSide sideB(b);
    offer(b, sideB, path);
    withdraw(sideB);
    withdraw(sideA);
  }
}

TEST(Handoff, NobodyOnThePathMeansBindNormally) {
  test::TempPath path("keel_handoff");
  std::error_code ec;
  EXPECT_FALSE(requestHandoff(path.str(), ec).has_value());
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_FALSE(requestHandoff("@keel_nobody_" + test::uniqueSuffix(), ec).has_value());
  EXPECT_FALSE(ec) << ec.message();
  {  // a stale socket file: bound once, its process gone
    Fd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.str().c_str());
    ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }
  ASSERT_EQ(::access(path.str().c_str(), F_OK), 0);
  EXPECT_FALSE(requestHandoff(path.str(), ec).has_value());
  EXPECT_FALSE(ec) << ec.message();
  ServerThread a(SocketAddress::loopback4(0), {}, tagged('A'));
  HandoffSide side(a);
  offer(a, side, path.str());  // replaces the stale file
  std::error_code again;
  a.runAndWait([&] {
    HandoffServer second(a.loop(), path.str(), {}, {});
    again = second.listen();
  });
  EXPECT_EQ(again, HandoffError::InUse);
  EXPECT_EQ(requestHandoff(std::string(200, 'x'), ec), std::nullopt);
  EXPECT_EQ(ec, HandoffError::BadPath);
  withdraw(side);
}

TEST(Handoff, SuccessorThatNeverConfirmsLeavesTheOldOneServing) {
  test::TempPath path("keel_handoff");
  ServerThread a(SocketAddress::loopback4(0), {}, tagged('A'));
  HandoffSide side(a);
  offer(a, side, path.str(), HandoffOptions{200ms});
  std::error_code ec;
  auto failures = [&] {
    std::uint64_t n = 0;
    a.runAndWait([&] { n = side.handoff->failures(); });
    return n;
  };
  {
    auto dropped = requestHandoff(path.str(), ec);  // a successor that fails to start
    ASSERT_TRUE(dropped.has_value()) << ec.message();
  }
  ASSERT_TRUE(test::eventually([&] { return failures() == 1; }));
  {
    auto silent = requestHandoff(path.str(), ec);  // one that hangs: the old one's timeout
    ASSERT_TRUE(silent.has_value()) << ec.message();
    EXPECT_TRUE(test::eventually([&] { return failures() == 2; }));
    EXPECT_EQ(silent->confirm(), HandoffError::Refused);  // too late: the old one gave up
  }
  EXPECT_FALSE(side.handedOff.load());
  EXPECT_EQ(whoAnswers(a.address()), 'A');
  auto later = requestHandoff(path.str(), ec);  // and the next successor is served
  ASSERT_TRUE(later.has_value()) << ec.message();
  EXPECT_FALSE(later->confirm());
  EXPECT_TRUE(test::eventually([&] { return side.handedOff.load(); }));
  withdraw(side);
}

TEST(SystemdActivation, TakesListenFdsMeantForThisProcess) {
  // The child reports by exit code only: fd 3 may be its report pipe, and
  // the test takes fd 3 over as systemd would.
  test::Forked child([](test::Forked::Report&) {
    Socket l = test::openTcp(AF_INET);
    if (l.bind(SocketAddress::loopback4(0)) || l.listen()) return 10;
    Fd high(::fcntl(l.fd(), F_DUPFD_CLOEXEC, 10));  // l itself may be fd 3
    l.close();
    if (::dup2(high.get(), 3) != 3) return 11;  // dup2 clears FD_CLOEXEC, as systemd passes it
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "1", 1);
    ::setenv("LISTEN_FDNAMES", "web", 1);
    std::error_code ec;
    auto got = takeSystemdListeners(ec);
    if (ec || got.size() != 1) return 12;
    if (got[0].fd.get() != 3 || got[0].name != "web") return 13;
    if ((::fcntl(3, F_GETFD) & FD_CLOEXEC) == 0) return 14;
    if (std::getenv("LISTEN_FDS") != nullptr || std::getenv("LISTEN_PID") != nullptr) return 15;
    if (checkListener(3)) return 16;
    Fd keep = std::move(got[0].fd);
    ::setenv("LISTEN_PID", "1", 1);  // a parent's variables, not ours
    ::setenv("LISTEN_FDS", "1", 1);
    if (!takeSystemdListeners(ec).empty() || ec) return 17;
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "two", 1);
    if (!takeSystemdListeners(ec).empty() || ec != ListenerError::BadEnvironment) return 18;
    if (!takeSystemdListeners(ec).empty() || ec) return 19;  // nothing set: not activated
    return 0;
  });
  EXPECT_EQ(child.wait(), 0) << "the child's exit code names the check that failed";
}

}  // namespace
}  // namespace keel
