// Resolver on the real getaddrinfo: the numeric fast path (no worker
// started), "localhost" from /etc/hosts (the machine's, and a private one
// with both families), an unknown name (.invalid, RFC 6761), cancelling by
// dropping the handle, the queue cap and the lookup timeout (a private name
// server that never answers), and HostPort parsing. The private files live
// in a forked child's own mount and network namespaces
// (net/ResolverIsolation.h), so the machine's files are never touched.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "keel/core/EventLoop.h"
#include "keel/net/Resolver.h"
#include "keel/net/Socket.h"
#include "net/ClientFixture.h"
#include "net/ResolverIsolation.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using namespace keel::test;

struct Outcome {
  bool done = false;
  std::error_code ec;
  std::vector<SocketAddress> addrs;
};

Resolver::Callback into(Outcome& o) {
  return [&o](std::error_code ec, std::vector<SocketAddress> addrs) {
    o.done = true;
    o.ec = ec;
    o.addrs = std::move(addrs);
  };
}

bool has(const std::vector<SocketAddress>& addrs, const SocketAddress& a) {
  return std::find(addrs.begin(), addrs.end(), a) != addrs.end();
}

// What /etc/hosts (the machine's) says about `name`, per family.
bool hostsFileHas(std::string_view name, std::string_view addr) {
  std::ifstream f("/etc/hosts");
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream words(line.substr(0, line.find('#')));
    std::string a;
    if (!(words >> a) || a != addr) continue;
    for (std::string n; words >> n;)
      if (n == name) return true;
  }
  return false;
}

// ---- HostPort ---------------------------------------------------------------------

TEST(HostPort, ParsesNamesAndLiterals) {
  EXPECT_EQ(HostPort::parse("localhost:7100"), (HostPort{"localhost", 7100}));
  EXPECT_EQ(HostPort::parse("db.example.com:0"), (HostPort{"db.example.com", 0}));
  EXPECT_EQ(HostPort::parse("10.0.0.1:65535"), (HostPort{"10.0.0.1", 65535}));
  EXPECT_EQ(HostPort::parse("[::1]:80"), (HostPort{"::1", 80}));
  EXPECT_EQ(HostPort::parse("[fe80::1%2]:80"), (HostPort{"fe80::1%2", 80}));
  EXPECT_EQ(HostPort::parse("[::1]:80")->toString(), "[::1]:80");
  EXPECT_EQ(HostPort::parse("localhost:7100")->toString(), "localhost:7100");
}

TEST(HostPort, RejectsWhatIsNotHostColonPort) {
  for (const char* bad : {"localhost", "localhost:", ":80", "host:65536", "host:-1", "host:8o", "::1:80",
                          "[::1]", "[]:80", "[::1:80", "host:123456"}) {
    EXPECT_FALSE(HostPort::parse(bad)) << bad;
  }
  EXPECT_FALSE(HostPort::parse(std::string_view("ho\0st:80", 8)));
}

// ---- errors -------------------------------------------------------------------------

TEST(ResolveError, MessagesAreForPeople) {
  EXPECT_EQ(std::error_code(ResolveError::HostNotFound).message(), "host not found");
  EXPECT_EQ(resolveErrorCode(EAI_NONAME, 0), ResolveError::HostNotFound);
  EXPECT_EQ(resolveErrorCode(EAI_AGAIN, 0).category(), resolverCategory());
  EXPECT_STREQ(resolverCategory().name(), "keel.resolve");
  // EAI_SYSTEM carries errno: it becomes a system error.
  EXPECT_EQ(resolveErrorCode(EAI_SYSTEM, EMFILE), std::errc::too_many_files_open);
  EXPECT_FALSE(resolveErrorCode(0, 0));
}

// ---- the numeric fast path ----------------------------------------------------------

TEST(Resolver, NumericHostsNeverReachAWorkerAndStillArriveOnTheLoop) {
  EventLoop loop;
  Resolver resolver;
  Outcome v4, v6, bracketed, wrongFamily;
  ResolveRequest r1 = resolver.resolve(loop, "127.0.0.1", 80, {}, into(v4));
  ResolveRequest r2 = resolver.resolve(loop, "::1", 81, {}, into(v6));
  ResolveRequest r3 = resolver.resolve(loop, "[::1]", 82, {.family = AddressFamily::V6}, into(bracketed));
  ResolveRequest r4 =
      resolver.resolve(loop, "127.0.0.1", 83, {.family = AddressFamily::V6}, into(wrongFamily));
  EXPECT_FALSE(v4.done) << "never inside resolve()";
  EXPECT_TRUE(r1.pending());
  ASSERT_TRUE(runUntil(loop, [&] { return v4.done && v6.done && bracketed.done && wrongFamily.done; }));
  EXPECT_FALSE(v4.ec);
  EXPECT_EQ(v4.addrs, std::vector<SocketAddress>{SocketAddress::loopback4(80)});
  EXPECT_EQ(v6.addrs, std::vector<SocketAddress>{SocketAddress::loopback6(81)});
  EXPECT_EQ(bracketed.addrs, std::vector<SocketAddress>{SocketAddress::loopback6(82)});
  EXPECT_EQ(wrongFamily.ec, ResolveError::NoAddressInFamily) << wrongFamily.ec.message();
  EXPECT_FALSE(r1.pending());
  EXPECT_EQ(resolver.threadsStarted(), 0);
}

TEST(Resolver, EmptyOrOverlongHostsAreRefusedWithoutAWorker) {
  EventLoop loop;
  Resolver resolver;
  Outcome empty, tooLong;
  ResolveRequest r1 = resolver.resolve(loop, "", 80, {}, into(empty));
  ResolveRequest r2 = resolver.resolve(loop, std::string(300, 'a'), 80, {}, into(tooLong));
  ASSERT_TRUE(runUntil(loop, [&] { return empty.done && tooLong.done; }));
  EXPECT_EQ(empty.ec, ResolveError::BadHost);
  EXPECT_EQ(tooLong.ec, ResolveError::BadHost);
  EXPECT_EQ(resolver.threadsStarted(), 0);
}

// ---- names --------------------------------------------------------------------------

TEST(Resolver, LocalhostV4FromThisMachinesHostsFile) {
  if (!hostsFileHas("localhost", "127.0.0.1")) GTEST_SKIP() << "/etc/hosts has no 127.0.0.1 localhost";
  EventLoop loop;
  Resolver resolver;
  Outcome v4;
  ResolveRequest r = resolver.resolve(loop, "localhost", 7100, {.family = AddressFamily::V4}, into(v4));
  ASSERT_TRUE(runUntil(loop, [&] { return v4.done; }));
  ASSERT_FALSE(v4.ec) << v4.ec.message();
  EXPECT_EQ(v4.addrs, std::vector<SocketAddress>{SocketAddress::loopback4(7100)});
  EXPECT_EQ(resolver.threadsStarted(), 1);
}

TEST(Resolver, LocalhostV6FromThisMachinesHostsFile) {
  if (!hostsFileHas("localhost", "::1"))
    GTEST_SKIP() << "/etc/hosts has no ::1 localhost (the private-hosts-file test covers IPv6)";
  EventLoop loop;
  Resolver resolver;
  Outcome v6;
  ResolveRequest r = resolver.resolve(loop, "localhost", 7100, {.family = AddressFamily::V6}, into(v6));
  ASSERT_TRUE(runUntil(loop, [&] { return v6.done; }));
  ASSERT_FALSE(v6.ec) << v6.ec.message();
  EXPECT_TRUE(has(v6.addrs, SocketAddress::loopback6(7100)));
}

TEST(Resolver, LocalhostWithBothFamiliesInAPrivateHostsFile) {
  IsolatedFiles files;
  files.hosts = "::1 localhost\n127.0.0.1 localhost\n";
  KEEL_RUN_ISOLATED(files, [] {
    EventLoop loop;
    Resolver resolver;
    Outcome any, v4, v6;
    ResolveRequest r1 = resolver.resolve(loop, "localhost", 9, {}, into(any));
    ResolveRequest r2 = resolver.resolve(loop, "localhost", 9, {.family = AddressFamily::V4}, into(v4));
    ResolveRequest r3 = resolver.resolve(loop, "localhost", 9, {.family = AddressFamily::V6}, into(v6));
    CHILD_CHECK(runUntil(loop, [&] { return any.done && v4.done && v6.done; }), "no answer");
    CHILD_CHECK(!any.ec, any.ec.message());
    CHILD_CHECK(any.addrs.size() == 2, std::to_string(any.addrs.size()));
    CHILD_CHECK(has(any.addrs, SocketAddress::loopback4(9)), "");
    CHILD_CHECK(has(any.addrs, SocketAddress::loopback6(9)), "");
    CHILD_CHECK(v4.addrs == std::vector<SocketAddress>{SocketAddress::loopback4(9)}, v4.ec.message());
    CHILD_CHECK(v6.addrs == std::vector<SocketAddress>{SocketAddress::loopback6(9)}, v6.ec.message());
    return std::string();
  });
}

TEST(Resolver, UnknownNameIsHostNotFound) {
  // RFC 6761: .invalid never resolves. Files only, so no name server is asked.
  KEEL_RUN_ISOLATED(IsolatedFiles{}, [] {
    EventLoop loop;
    Resolver resolver;
    Outcome o;
    ResolveRequest r = resolver.resolve(loop, "no-such-host.invalid", 80, {}, into(o));
    CHILD_CHECK(runUntil(loop, [&] { return o.done; }), "no answer");
    CHILD_CHECK(o.ec == ResolveError::HostNotFound, o.ec.message());
    CHILD_CHECK(o.ec.message() == "host not found", o.ec.message());
    CHILD_CHECK(o.addrs.empty(), "");
    return std::string();
  });
}

TEST(Resolver, UnknownNameOnThisMachine) {
  EventLoop loop;
  Resolver resolver;
  Outcome o;
  ResolveRequest r = resolver.resolve(loop, "no-such-host.invalid", 80, {}, into(o));
  ASSERT_TRUE(runUntil(
      loop, [&] { return o.done; }, 15s));
  if (o.ec == ResolveError::TryAgain || o.ec == std::errc::timed_out)
    GTEST_SKIP() << "this machine's name server did not answer (" << o.ec.message() << ")";
  EXPECT_EQ(o.ec, ResolveError::HostNotFound) << o.ec.message();
}

// The default resolver's workers do not come along into a forked child, yet
// the child can resolve: it starts workers of its own.
TEST(Resolver, DefaultResolverWorksInAForkedChild) {
  {
    EventLoop loop;
    Outcome parent;
    ResolveRequest r = Resolver::defaultResolver().resolve(loop, "localhost", 1, {}, into(parent));
    ASSERT_TRUE(runUntil(loop, [&] { return parent.done; }));
    ASSERT_GE(Resolver::defaultResolver().threadsStarted(), 1);
  }
  KEEL_RUN_ISOLATED(IsolatedFiles{}, [] {
    EventLoop loop;
    Outcome child;
    ResolveRequest r = Resolver::defaultResolver().resolve(loop, "localhost", 2, {}, into(child));
    CHILD_CHECK(runUntil(loop, [&] { return child.done; }), "no answer in the child");
    CHILD_CHECK(!child.ec, child.ec.message());
    CHILD_CHECK(child.addrs == std::vector<SocketAddress>{SocketAddress::loopback4(2)}, "");
    return std::string();
  });
}

// The workers must leave the asynchronous signals to the application's
// handling: each thread's mask is in /proc/self/task/TID/status (SigBlk, hex).
TEST(Resolver, WorkersBlockTheAsynchronousSignals) {
  EventLoop loop;
  Resolver resolver({.maxQueued = 8, .threads = 1});
  Outcome o;
  ResolveRequest r = resolver.resolve(loop, "localhost", 1, {}, into(o));
  ASSERT_TRUE(runUntil(loop, [&] { return o.done; }));
  ASSERT_EQ(resolver.threadsStarted(), 1);
  int workers = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    std::string comm;
    std::getline(std::ifstream(entry.path() / "comm"), comm);
    if (comm != "keel-resolver") continue;  // the test's own threads (and a sanitizer's)
    std::ifstream f(entry.path() / "status");
    std::string line;
    unsigned long long blocked = 0;
    while (std::getline(f, line))
      if (line.rfind("SigBlk:", 0) == 0) blocked = std::stoull(line.substr(7), nullptr, 16);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD})
      EXPECT_NE(blocked & (1ULL << (sig - 1)), 0u)
          << "signal " << sig << " not blocked in thread " << entry.path();
    ++workers;
  }
  EXPECT_GE(workers, 1);  // the default resolver's too, when earlier tests in this process used it
}

// ---- cancel -------------------------------------------------------------------------

TEST(Resolver, DroppingTheHandleMeansTheCallbackNeverRuns) {
  EventLoop loop;
  // One worker: lookups run in order, so when the second has answered, the
  // first is over too (run, posted or skipped) and anything it posted has
  // been dispatched before the second's answer.
  Resolver resolver({.maxQueued = 8, .threads = 1});
  bool firstRan = false;
  Outcome second;
  {
    ResolveRequest first = resolver.resolve(
        loop, "localhost", 1, {}, [&](std::error_code, std::vector<SocketAddress>) { firstRan = true; });
    EXPECT_TRUE(first.pending());
  }
  ResolveRequest cancelled = resolver.resolve(
      loop, "localhost", 2, {}, [&](std::error_code, std::vector<SocketAddress>) { firstRan = true; });
  cancelled.cancel();
  EXPECT_FALSE(cancelled.pending());
  ResolveRequest r = resolver.resolve(loop, "localhost", 3, {}, into(second));
  ASSERT_TRUE(runUntil(loop, [&] { return second.done; }));
  runFor(loop, 20ms);  // and a few more turns of the loop
  EXPECT_FALSE(firstRan);
}

// Cancels racing the workers' answers at every stage (queued, inside
// getaddrinfo, posted to the loop): the kept lookups answer exactly once,
// the cancelled ones never. Meant for the tsan build as much as for its asserts.
TEST(Resolver, CancelsRacingAnswersNeverLeakACallback) {
  EventLoop loop;
  Resolver resolver({.maxQueued = 256, .threads = 2});
  constexpr int kLookups = 200;
  std::vector<int> calls(kLookups, 0);
  std::vector<ResolveRequest> requests;
  requests.reserve(kLookups);
  for (int i = 0; i < kLookups; ++i) {
    requests.push_back(resolver.resolve(
        loop, "localhost", 1, {}, [&calls, i](std::error_code, std::vector<SocketAddress>) { ++calls[i]; }));
    if (i % 4 == 1) requests.back().cancel();        // at once: still queued, most likely
    if (i % 8 == 3) loop.runOnce(Duration::zero());  // let some answers land meanwhile
  }
  // The rest of the odd ones while workers are busy with the tail.
  for (int i = 3; i < kLookups; i += 4) requests[static_cast<std::size_t>(i)].cancel();
  auto kept = [&] {
    for (int i = 0; i < kLookups; i += 2)
      if (calls[static_cast<std::size_t>(i)] == 0) return false;
    return true;
  };
  ASSERT_TRUE(runUntil(loop, kept));
  runFor(loop, 20ms);
  for (int i = 0; i < kLookups; ++i) {
    // An odd lookup cancelled late may have answered before its cancel: that is fine, but only once.
    if (i % 2 == 0) {
      EXPECT_EQ(calls[static_cast<std::size_t>(i)], 1) << i;
    }
    if (i % 4 == 1) {
      EXPECT_EQ(calls[static_cast<std::size_t>(i)], 0) << i;
    }
    EXPECT_LE(calls[static_cast<std::size_t>(i)], 1) << i;
  }
}

TEST(Resolver, TheCallbackMayDestroyItsOwnHandle) {
  EventLoop loop;
  Resolver resolver;
  auto req = std::make_unique<ResolveRequest>();
  bool ran = false;
  *req = resolver.resolve(loop, "127.0.0.1", 1, {}, [&](std::error_code, std::vector<SocketAddress>) {
    ran = true;
    req.reset();
  });
  ASSERT_TRUE(runUntil(loop, [&] { return ran; }));
  EXPECT_FALSE(req);
}

// ---- a name server that never answers: the cap and the deadline ---------------------

IsolatedFiles silentNameServer() {
  IsolatedFiles files;
  files.nsswitch = "hosts: files dns\n";
  // getaddrinfo waits this long for the silent server: longer than any
  // deadline below, so only keel's timeout can end those lookups early.
  files.resolv = "nameserver 127.0.0.1\noptions timeout:3 attempts:1\n";
  return files;
}

// Bound to the name server's port in the child's namespace and never read:
// queries are accepted (no ICMP refusal) and never answered.
std::string bindSilentServer(Socket& s) {
  std::error_code ec;
  s = Socket::udp(AF_INET, ec);
  if (ec) return "udp socket: " + ec.message();
  if (auto e = s.bind(SocketAddress::loopback4(53))) return "bind 127.0.0.1:53: " + e.message();
  return {};
}

TEST(Resolver, ALookupPastItsDeadlineGetsTimedOut) {
  KEEL_RUN_ISOLATED(silentNameServer(), [] {
    Socket server;
    if (auto e = bindSilentServer(server); !e.empty()) return e;
    EventLoop loop;
    // Leaked: its worker stays inside getaddrinfo for seconds, and the
    // child exits without waiting for it.
    auto* resolver = new Resolver();
    Outcome o;
    ResolveRequest r = resolver->resolve(loop, "slow.test", 80, {.timeout = 100ms}, into(o));
    CHILD_CHECK(runUntil(loop, [&] { return o.done; }), "no answer at all");
    CHILD_CHECK(o.ec == std::errc::timed_out, o.ec.message());
    CHILD_CHECK(o.addrs.empty(), "");
    return std::string();
  });
}

TEST(Resolver, LookupsBeyondTheQueueCapAreRefused) {
  KEEL_RUN_ISOLATED(silentNameServer(), [] {
    Socket server;
    if (auto e = bindSilentServer(server); !e.empty()) return e;
    EventLoop loop;
    auto* resolver = new Resolver({.maxQueued = 2, .threads = 1});  // leaked, as above
    Outcome a, b, c;
    ResolveRequest ra = resolver->resolve(loop, "slow-a.test", 80, {}, into(a));
    ResolveRequest rb = resolver->resolve(loop, "slow-b.test", 80, {}, into(b));
    ResolveRequest rc = resolver->resolve(loop, "slow-c.test", 80, {}, into(c));
    CHILD_CHECK(runUntil(loop, [&] { return c.done; }), "no answer for the third");
    CHILD_CHECK(c.ec == std::errc::resource_unavailable_try_again, c.ec.message());
    CHILD_CHECK(!a.done && !b.done, "the first two are still waiting for the silent server");
    // Cancelling a waiting lookup frees its place.
    rb.cancel();
    Outcome d;
    ResolveRequest rd = resolver->resolve(loop, "127.0.0.1", 80, {}, into(d));  // numeric: not counted
    ResolveRequest re = resolver->resolve(loop, "slow-e.test", 80, {.timeout = 50ms}, into(c));
    CHILD_CHECK(runUntil(loop, [&] { return d.done; }), "");
    c = {};
    CHILD_CHECK(runUntil(loop, [&] { return c.done; }), "no answer for the fifth");
    CHILD_CHECK(c.ec == std::errc::timed_out, "admitted, then timed out: " + c.ec.message());
    return std::string();
  });
}

}  // namespace
}  // namespace keel
