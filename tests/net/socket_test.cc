// SocketAddress and Socket on real sockets over loopback: address formats and
// their rejections, connect/accept over IPv4, IPv6, Unix path and abstract
// sockets, every option read back from the kernel, TCP_INFO, half-close.
#include "keel/net/Socket.h"
#include "support/TestNet.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/un.h>
#include <unistd.h>

#include "keel/net/SocketAddress.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using namespace std::string_literals;

constexpr int kTimeoutMs = 5000;
constexpr socklen_t kSunPathOffset = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path));

// poll() one descriptor; true when one of `events` came before the timeout.
bool waitFor(int fd, short events, int timeoutMs = kTimeoutMs) {
  pollfd p{fd, events, 0};
  int n;
  do {
    n = ::poll(&p, 1, timeoutMs);
  } while (n < 0 && errno == EINTR);
  return n == 1 && (p.revents & (events | POLLERR | POLLHUP)) != 0;
}

void sendAll(const Socket& s, std::string_view data) {
  while (!data.empty()) {
    ASSERT_TRUE(waitFor(s.fd(), POLLOUT));
    ssize_t n = ::send(s.fd(), data.data(), data.size(), MSG_NOSIGNAL);
    ASSERT_GT(n, 0) << std::strerror(errno);
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Reads exactly `size` bytes, or fewer if the peer closes first.
std::string recvExactly(const Socket& s, std::size_t size) {
  std::string out;
  char buf[4096];
  while (out.size() < size) {
    if (!waitFor(s.fd(), POLLIN)) break;
    ssize_t n = ::recv(s.fd(), buf, std::min(sizeof(buf), size - out.size()), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

// A listener, a client connected to it and the server side accepted from it.
struct Connection {
  Socket listener;
  Socket client;
  Socket server;
  SocketAddress acceptedPeer;  // what accept() reported
};

// Binds a listener to `bindAddr`, connects a non-blocking client to the
// address the listener actually got, waits for the connect with poll() and
// accepts. Fatal failures are reported through gtest; check HasFatalFailure.
void connectPair(const SocketAddress& bindAddr, Connection& c) {
  c.listener = keel::test::openStream(bindAddr.family());
  ASSERT_FALSE(c.listener.bind(bindAddr)) << bindAddr.toString();
  ASSERT_FALSE(c.listener.listen());
  SocketAddress target = c.listener.localAddress();

  c.client = keel::test::openStream(bindAddr.family());
  std::error_code ec = c.client.connect(target);
  if (ec) {
    ASSERT_EQ(ec, std::errc::operation_in_progress) << ec.message();
    ASSERT_TRUE(waitFor(c.client.fd(), POLLOUT)) << "connect did not finish";
    ASSERT_FALSE(c.client.takeError());
  }

  ASSERT_TRUE(waitFor(c.listener.fd(), POLLIN)) << "nothing to accept";
  c.server = c.listener.accept(&c.acceptedPeer, ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_TRUE(c.server.valid());
}

void expectPingPong(Connection& c) {
  sendAll(c.client, "ping");
  EXPECT_EQ(recvExactly(c.server, 4), "ping");
  sendAll(c.server, "pong!");
  EXPECT_EQ(recvExactly(c.client, 5), "pong!");
}

bool hasFlags(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  int fdfl = ::fcntl(fd, F_GETFD);
  return fl >= 0 && fdfl >= 0 && (fl & O_NONBLOCK) != 0 && (fdfl & FD_CLOEXEC) != 0;
}

// ---- SocketAddress ------------------------------------------------------------

TEST(SocketAddress, DefaultIsUnspecified) {
  SocketAddress a;
  EXPECT_EQ(a.family(), AF_UNSPEC);
  EXPECT_EQ(a.length(), 0u);
  EXPECT_FALSE(a.isInet());
  EXPECT_FALSE(a.isUnix());
  EXPECT_EQ(a.port(), 0);
  EXPECT_EQ(a, SocketAddress());
}

TEST(SocketAddress, Ipv4) {
  auto a = SocketAddress::ipv4("127.0.0.1", 8080);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->family(), AF_INET);
  EXPECT_TRUE(a->isInet());
  EXPECT_FALSE(a->isUnix());
  EXPECT_EQ(a->port(), 8080);
  EXPECT_EQ(a->length(), sizeof(sockaddr_in));
  EXPECT_EQ(a->toString(), "127.0.0.1:8080");
  EXPECT_EQ(*a, SocketAddress::loopback4(8080));

  sockaddr_in sin{};
  std::memcpy(&sin, a->data(), sizeof(sin));
  EXPECT_EQ(ntohs(sin.sin_port), 8080);
  EXPECT_EQ(ntohl(sin.sin_addr.s_addr), INADDR_LOOPBACK);

  auto back = SocketAddress::parse(a->toString());
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, *a);

  EXPECT_EQ(SocketAddress::any4(0).toString(), "0.0.0.0:0");
  EXPECT_EQ(SocketAddress::ipv4("0.0.0.0", 65535)->toString(), "0.0.0.0:65535");
  EXPECT_EQ(*SocketAddress::parse("10.1.2.3:65535"), *SocketAddress::ipv4("10.1.2.3", 65535));
}

TEST(SocketAddress, Ipv6) {
  auto a = SocketAddress::ipv6("::1", 8080);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->family(), AF_INET6);
  EXPECT_TRUE(a->isInet());
  EXPECT_EQ(a->port(), 8080);
  EXPECT_EQ(a->length(), sizeof(sockaddr_in6));
  EXPECT_EQ(a->toString(), "[::1]:8080");
  EXPECT_EQ(*a, SocketAddress::loopback6(8080));
  EXPECT_EQ(*SocketAddress::parse("[::1]:8080"), *a);

  // toString prints the canonical form whatever form came in.
  auto full = SocketAddress::ipv6("2001:0db8:0000:0000:0000:0000:0000:0001", 443);
  ASSERT_TRUE(full);
  EXPECT_EQ(full->toString(), "[2001:db8::1]:443");
  EXPECT_EQ(*SocketAddress::parse(full->toString()), *full);

  auto mapped = SocketAddress::ipv6("::ffff:192.0.2.1", 1);
  ASSERT_TRUE(mapped);
  EXPECT_EQ(*SocketAddress::parse(mapped->toString()), *mapped);
}

TEST(SocketAddress, Ipv6ZoneIsPrintedParsedAndCompared) {
  auto zoned = SocketAddress::ipv6("fe80::1%2", 80);
  ASSERT_TRUE(zoned);
  EXPECT_EQ(zoned->toString(), "[fe80::1%2]:80");
  EXPECT_EQ(*SocketAddress::parse("[fe80::1%2]:80"), *zoned);
  EXPECT_NE(*zoned, *SocketAddress::ipv6("fe80::1", 80));
  EXPECT_FALSE(SocketAddress::ipv6("fe80::1%", 80));
  EXPECT_FALSE(SocketAddress::ipv6("fe80::1%eth0", 80));  // numeric zones only
}

TEST(SocketAddress, UnixPath) {
  auto a = SocketAddress::unixPath("/tmp/x.sock");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->family(), AF_UNIX);
  EXPECT_TRUE(a->isUnix());
  EXPECT_FALSE(a->isInet());
  EXPECT_EQ(a->port(), 0);
  EXPECT_EQ(a->length(), kSunPathOffset + std::strlen("/tmp/x.sock") + 1);
  EXPECT_EQ(a->toString(), "unix:/tmp/x.sock");
  sockaddr_un sun{};
  std::memcpy(&sun, a->data(), a->length());
  EXPECT_STREQ(sun.sun_path, "/tmp/x.sock");

  auto back = SocketAddress::parse("unix:/tmp/x.sock");
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, *a);

  // The longest path that fits: 107 bytes and the NUL.
  std::string longest = "/" + std::string(106, 'p');
  auto l = SocketAddress::unixPath(longest);
  ASSERT_TRUE(l);
  EXPECT_EQ(l->length(), sizeof(sockaddr_un));
  EXPECT_EQ(l->toString(), "unix:" + longest);
  EXPECT_EQ(*SocketAddress::parse(l->toString()), *l);
}

TEST(SocketAddress, UnixAbstract) {
  auto a = SocketAddress::unixAbstract("name");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->family(), AF_UNIX);
  EXPECT_TRUE(a->isUnix());
  EXPECT_EQ(a->port(), 0);
  EXPECT_EQ(a->length(), kSunPathOffset + 1 + 4);
  EXPECT_EQ(a->toString(), "unix-abstract:name");
  sockaddr_un sun{};
  std::memcpy(&sun, a->data(), a->length());
  EXPECT_EQ(sun.sun_path[0], '\0');
  EXPECT_EQ(std::string_view(sun.sun_path + 1, 4), "name");

  auto back = SocketAddress::parse("unix-abstract:name");
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, *a);

  // Not the same as a path of the same bytes, nor as a longer name.
  EXPECT_NE(*a, *SocketAddress::unixPath("name"));
  EXPECT_NE(*a, *SocketAddress::unixAbstract("name2"));
  EXPECT_NE(*a, *SocketAddress::unixAbstract("nam"));

  // The longest name: sun_path minus the leading NUL. A NUL inside is kept.
  std::string longest(107, 'a');
  auto l = SocketAddress::unixAbstract(longest);
  ASSERT_TRUE(l);
  EXPECT_EQ(l->length(), sizeof(sockaddr_un));
  EXPECT_EQ(*SocketAddress::parse(l->toString()), *l);
  auto withNul = SocketAddress::unixAbstract("a\0b"s);
  ASSERT_TRUE(withNul);
  EXPECT_EQ(withNul->toString(), "unix-abstract:a\0b"s);
  EXPECT_NE(*withNul, *SocketAddress::unixAbstract("a"));
}

TEST(SocketAddress, Equality) {
  auto a = SocketAddress::loopback4(80);
  SocketAddress copy = a;
  EXPECT_EQ(copy, a);
  EXPECT_EQ(SocketAddress(a.data(), a.length()), a);
  EXPECT_NE(a, SocketAddress::loopback4(81));
  EXPECT_NE(a, SocketAddress::any4(80));
  EXPECT_NE(a, SocketAddress::loopback6(80));
  EXPECT_NE(a, SocketAddress());
  EXPECT_NE(*SocketAddress::unixPath("/a"), *SocketAddress::unixPath("/b"));
  EXPECT_NE(*SocketAddress::unixPath("/a"), *SocketAddress::unixPath("/a/"));

  // Bytes past the meaningful part (sin_zero) do not count.
  sockaddr_in sin{};
  std::memcpy(&sin, a.data(), sizeof(sin));
  std::memset(sin.sin_zero, 0x5a, sizeof(sin.sin_zero));
  EXPECT_EQ(SocketAddress(reinterpret_cast<const sockaddr*>(&sin), sizeof(sin)), a);
}

TEST(SocketAddress, RejectsBadHosts) {
  EXPECT_FALSE(SocketAddress::ipv4("256.1.1.1", 80));
  EXPECT_FALSE(SocketAddress::ipv4("1.2.3", 80));
  EXPECT_FALSE(SocketAddress::ipv4("1.2.3.4.5", 80));
  EXPECT_FALSE(SocketAddress::ipv4("localhost", 80));  // no DNS
  EXPECT_FALSE(SocketAddress::ipv4("::1", 80));
  EXPECT_FALSE(SocketAddress::ipv4("", 80));
  EXPECT_FALSE(SocketAddress::ipv4(" 1.2.3.4", 80));
  EXPECT_FALSE(SocketAddress::ipv4("1.2.3.4\0garbage"s, 80));
  EXPECT_FALSE(SocketAddress::ipv4(std::string(100, '1'), 80));
  EXPECT_FALSE(SocketAddress::ipv6("127.0.0.1", 80));
  EXPECT_FALSE(SocketAddress::ipv6("::g", 80));
  EXPECT_FALSE(SocketAddress::ipv6("1::2::3", 80));
  EXPECT_FALSE(SocketAddress::ipv6("[::1]", 80));
  EXPECT_FALSE(SocketAddress::ipv6("", 80));
}

TEST(SocketAddress, RejectsBadUnixNames) {
  EXPECT_FALSE(SocketAddress::unixPath("/" + std::string(107, 'p')));  // 108 + NUL
  EXPECT_FALSE(SocketAddress::unixPath(""));
  EXPECT_FALSE(SocketAddress::unixPath("/tmp/a\0b"s));
  EXPECT_FALSE(SocketAddress::unixAbstract(std::string(108, 'a')));
  EXPECT_FALSE(SocketAddress::parse("unix:/" + std::string(107, 'p')));
  EXPECT_FALSE(SocketAddress::parse("unix-abstract:" + std::string(108, 'a')));
  EXPECT_FALSE(SocketAddress::parse("unix:"));
}

TEST(SocketAddress, ParseRejectsWhatToStringNeverPrints) {
  for (std::string_view bad : {
           "",
           "127.0.0.1",        // missing port
           "127.0.0.1:",       // empty port
           "127.0.0.1:65536",  // port > 65535
           "127.0.0.1:99999",  //
           "127.0.0.1:4294967297",
           "127.0.0.1:-1",
           "127.0.0.1:+80",
           "127.0.0.1: 80",
           "127.0.0.1:080",  // toString never pads
           "127.0.0.1:80x",
           "300.0.0.1:80",  // bad literal
           "localhost:80",
           ":80",
           "::1:80",  // IPv6 needs brackets
           "[::1]",
           "[::1]80",
           "[::1:80",
           "::1]:80",
           "[]:80",
           "[127.0.0.1]:80",
           "[::1]:65536",
           "unix",
           "unix-abstract",
           "tcp://127.0.0.1:80",
       }) {
    EXPECT_FALSE(SocketAddress::parse(bad)) << "accepted \"" << bad << "\"";
  }
  EXPECT_TRUE(SocketAddress::parse("127.0.0.1:0"));
  EXPECT_TRUE(SocketAddress::parse("[::]:0"));
}

// ---- connect / accept -----------------------------------------------------------

TEST(Socket, NewSocketsAreNonBlockingAndCloseOnExec) {
  for (sa_family_t family : {sa_family_t{AF_INET}, sa_family_t{AF_INET6}, sa_family_t{AF_UNIX}}) {
    Socket s = keel::test::openTcp(family);
    ASSERT_TRUE(s.valid());
    EXPECT_TRUE(hasFlags(s.fd())) << family;
    Socket u = keel::test::openUdp(family);
    ASSERT_TRUE(u.valid());
    EXPECT_TRUE(hasFlags(u.fd())) << family;
  }
  int type = 0;
  socklen_t len = sizeof(type);
  Socket s = keel::test::openStream(AF_UNIX);
  ASSERT_EQ(::getsockopt(s.fd(), SOL_SOCKET, SO_TYPE, &type, &len), 0);
  EXPECT_EQ(type, SOCK_STREAM);
}

TEST(Socket, BadFamilyReportsAnErrorCode) {
  // Opening a socket is a fallible call like the rest of Socket: an
  // error_code, never an exception (docs/design.md, error policy).
  std::error_code ec;
  Socket s = Socket::tcp(AF_UNSPEC, ec);
  EXPECT_FALSE(s.valid());
  EXPECT_TRUE(ec);
  Socket u = Socket::udp(static_cast<sa_family_t>(9999), ec);
  EXPECT_FALSE(u.valid());
  EXPECT_EQ(ec, std::errc::address_family_not_supported) << ec.message();
  Socket ok = Socket::tcp(AF_INET, ec);
  EXPECT_TRUE(ok.valid());
  EXPECT_FALSE(ec);
}

TEST(Socket, ReleaseGivesUpOwnership) {
  Socket s = keel::test::openTcp(AF_INET);
  int raw = s.fd();
  Fd fd = s.release();
  EXPECT_FALSE(s.valid());
  EXPECT_EQ(fd.get(), raw);
  EXPECT_GE(::fcntl(raw, F_GETFD), 0);  // still open
}

TEST(Socket, ConnectAcceptIpv4) {
  Connection c;
  connectPair(SocketAddress::loopback4(0), c);
  ASSERT_FALSE(HasFatalFailure());

  SocketAddress listen = c.listener.localAddress();
  EXPECT_EQ(listen.family(), AF_INET);
  EXPECT_NE(listen.port(), 0);
  EXPECT_EQ(c.client.peerAddress(), listen);
  EXPECT_EQ(c.server.localAddress(), listen);
  EXPECT_EQ(c.server.peerAddress(), c.client.localAddress());
  EXPECT_EQ(c.acceptedPeer, c.client.localAddress());
  EXPECT_EQ(c.acceptedPeer.toString(), "127.0.0.1:" + std::to_string(c.acceptedPeer.port()));
  EXPECT_FALSE(c.client.isSelfConnect());
  EXPECT_FALSE(c.server.isSelfConnect());
  EXPECT_TRUE(hasFlags(c.server.fd()));
  expectPingPong(c);
}

TEST(Socket, ConnectAcceptIpv6) {
  Connection c;
  connectPair(SocketAddress::loopback6(0), c);
  ASSERT_FALSE(HasFatalFailure());

  SocketAddress listen = c.listener.localAddress();
  EXPECT_EQ(listen.family(), AF_INET6);
  EXPECT_EQ(listen.toString(), "[::1]:" + std::to_string(listen.port()));
  EXPECT_EQ(c.client.peerAddress(), listen);
  EXPECT_EQ(c.server.localAddress(), listen);
  EXPECT_EQ(c.server.peerAddress(), c.client.localAddress());
  EXPECT_EQ(c.acceptedPeer, c.client.localAddress());
  EXPECT_FALSE(c.client.isSelfConnect());
  EXPECT_FALSE(c.server.isSelfConnect());
  expectPingPong(c);
}

TEST(Socket, ConnectAcceptUnixPath) {
  test::TempPath path("keel_socket_test");
  auto addr = SocketAddress::unixPath(path.str());
  ASSERT_TRUE(addr);
  Connection c;
  connectPair(*addr, c);
  ASSERT_FALSE(HasFatalFailure());

  EXPECT_EQ(::access(path.str().c_str(), F_OK), 0) << "bind made no file";
  EXPECT_EQ(c.listener.localAddress(), *addr);
  EXPECT_EQ(c.listener.localAddress().toString(), "unix:" + path.str());
  EXPECT_EQ(c.client.peerAddress(), *addr);
  EXPECT_EQ(c.server.localAddress(), *addr);
  // The client never bound: both ends see it as an unnamed socket.
  EXPECT_EQ(c.acceptedPeer.family(), AF_UNIX);
  EXPECT_EQ(c.acceptedPeer.length(), kSunPathOffset);
  EXPECT_EQ(c.acceptedPeer, c.server.peerAddress());
  EXPECT_EQ(c.acceptedPeer, c.client.localAddress());
  EXPECT_EQ(c.acceptedPeer.toString(), "unix:");
  EXPECT_FALSE(c.client.isSelfConnect());
  EXPECT_TRUE(hasFlags(c.server.fd()));
  expectPingPong(c);
}

TEST(Socket, ConnectAcceptUnixAbstract) {
  std::string name = "keel_socket_test_" + test::uniqueSuffix();
  auto addr = SocketAddress::unixAbstract(name);
  ASSERT_TRUE(addr);
  Connection c;
  connectPair(*addr, c);
  ASSERT_FALSE(HasFatalFailure());

  EXPECT_EQ(c.listener.localAddress(), *addr);
  EXPECT_EQ(c.listener.localAddress().toString(), "unix-abstract:" + name);
  EXPECT_EQ(c.client.peerAddress(), *addr);
  EXPECT_EQ(c.server.localAddress(), *addr);
  EXPECT_EQ(c.acceptedPeer, c.server.peerAddress());
  EXPECT_FALSE(c.client.isSelfConnect());
  expectPingPong(c);

  // The name is taken while the listener lives.
  Socket other = keel::test::openStream(AF_UNIX);
  EXPECT_EQ(other.bind(*addr), std::errc::address_in_use);
}

TEST(Socket, AcceptWithNothingPendingIsEagain) {
  Socket listener = keel::test::openTcp(AF_INET);
  ASSERT_FALSE(listener.bind(SocketAddress::loopback4(0)));
  ASSERT_FALSE(listener.listen());
  SocketAddress peer = *SocketAddress::unixAbstract("untouched");
  std::error_code ec;
  Socket s = listener.accept(&peer, ec);
  EXPECT_FALSE(s.valid());
  EXPECT_EQ(ec, std::errc::resource_unavailable_try_again) << ec.message();
  EXPECT_EQ(peer, *SocketAddress::unixAbstract("untouched"));

  // And without asking for the peer address.
  ec = std::make_error_code(std::errc::io_error);
  Socket s2 = listener.accept(nullptr, ec);
  EXPECT_FALSE(s2.valid());
  EXPECT_EQ(ec, std::errc::resource_unavailable_try_again);
}

TEST(Socket, AcceptWithoutPeerAddressClearsError) {
  Socket listener = keel::test::openTcp(AF_INET);
  ASSERT_FALSE(listener.bind(SocketAddress::loopback4(0)));
  ASSERT_FALSE(listener.listen());
  Socket client = keel::test::openTcp(AF_INET);
  auto ec = client.connect(listener.localAddress());
  ASSERT_TRUE(!ec || ec == std::errc::operation_in_progress);
  ASSERT_TRUE(waitFor(listener.fd(), POLLIN));
  ec = std::make_error_code(std::errc::io_error);
  Socket server = listener.accept(nullptr, ec);
  EXPECT_FALSE(ec);
  EXPECT_TRUE(server.valid());
}

TEST(Socket, ConnectRefusedIsReported) {
  // A bound socket that does not listen: its port answers with a RST.
  Socket bound = keel::test::openTcp(AF_INET);
  ASSERT_FALSE(bound.bind(SocketAddress::loopback4(0)));
  Socket client = keel::test::openTcp(AF_INET);
  std::error_code ec = client.connect(bound.localAddress());
  if (ec == std::errc::operation_in_progress) {
    ASSERT_TRUE(waitFor(client.fd(), POLLOUT));
    ec = client.takeError();
  }
  EXPECT_EQ(ec, std::errc::connection_refused) << ec.message();
  EXPECT_FALSE(client.takeError());  // reading SO_ERROR cleared it
  EXPECT_FALSE(client.isSelfConnect());
}

TEST(Socket, UnixConnectToMissingPathFails) {
  test::TempPath path("keel_socket_test");
  Socket client = keel::test::openStream(AF_UNIX);
  EXPECT_EQ(client.connect(*SocketAddress::unixPath(path.str())), std::errc::no_such_file_or_directory);
}

TEST(Socket, BindToAddressInUseFails) {
  Socket a = keel::test::openTcp(AF_INET);
  ASSERT_FALSE(a.bind(SocketAddress::loopback4(0)));
  ASSERT_FALSE(a.listen());
  Socket b = keel::test::openTcp(AF_INET);
  EXPECT_EQ(b.bind(a.localAddress()), std::errc::address_in_use);
}

TEST(Socket, SelfConnectIsDetected) {
  // Bound to a port and connected to that same address and port: TCP's
  // simultaneous open connects the socket to itself.
  Socket s = keel::test::openTcp(AF_INET);
  ASSERT_FALSE(s.bind(SocketAddress::loopback4(0)));
  SocketAddress self = s.localAddress();
  std::error_code ec = s.connect(self);
  if (ec == std::errc::operation_in_progress) {
    ASSERT_TRUE(waitFor(s.fd(), POLLOUT));
    ec = s.takeError();
  }
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(s.peerAddress(), self);
  EXPECT_TRUE(s.isSelfConnect());
}

TEST(Socket, AddressesOfUnconnectedSocket) {
  Socket s = keel::test::openTcp(AF_INET);
  EXPECT_EQ(s.localAddress(), SocketAddress::any4(0));
  EXPECT_THROW((void)s.peerAddress(), std::system_error);
  EXPECT_FALSE(s.isSelfConnect());
  EXPECT_FALSE(s.takeError());
}

TEST(Socket, ShutdownWriteIsAHalfClose) {
  Connection c;
  connectPair(SocketAddress::loopback4(0), c);
  ASSERT_FALSE(HasFatalFailure());

  sendAll(c.client, "last words");
  ASSERT_FALSE(c.client.shutdownWrite());

  // The peer reads what was sent, then EOF.
  EXPECT_EQ(recvExactly(c.server, 10), "last words");
  ASSERT_TRUE(waitFor(c.server.fd(), POLLIN));
  char byte;
  EXPECT_EQ(::recv(c.server.fd(), &byte, 1, 0), 0);

  // The other direction still works.
  sendAll(c.server, "reply after EOF");
  EXPECT_EQ(recvExactly(c.client, 15), "reply after EOF");

  // And we can no longer write.
  EXPECT_EQ(::send(c.client.fd(), "x", 1, MSG_NOSIGNAL), -1);
  EXPECT_EQ(errno, EPIPE);
}

TEST(Socket, ShutdownWriteOnUnixSocket) {
  std::string name = "keel_socket_test_" + test::uniqueSuffix();
  Connection c;
  connectPair(*SocketAddress::unixAbstract(name), c);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_FALSE(c.server.shutdownWrite());
  ASSERT_TRUE(waitFor(c.client.fd(), POLLIN));
  char byte;
  EXPECT_EQ(::recv(c.client.fd(), &byte, 1, 0), 0);
  sendAll(c.client, "still here");
  EXPECT_EQ(recvExactly(c.server, 10), "still here");
}

TEST(Socket, ShutdownWriteOnUnconnectedSocketFails) {
  Socket s = keel::test::openTcp(AF_INET);
  EXPECT_EQ(s.shutdownWrite(), std::errc::not_connected);
}

// ---- options ------------------------------------------------------------------

class SocketOptions : public ::testing::Test {
 protected:
  void SetUp() override {
    connectPair(SocketAddress::loopback4(0), c_);
    ASSERT_FALSE(HasFatalFailure());
  }
  Socket& s() { return c_.client; }
  Connection c_;
};

TEST_F(SocketOptions, NoDelay) {
  ASSERT_FALSE(s().setNoDelay(true));
  EXPECT_TRUE(s().noDelay());
  ASSERT_FALSE(s().setNoDelay(false));
  EXPECT_FALSE(s().noDelay());
}

TEST_F(SocketOptions, QuickAck) {
  // Not sticky, but with no traffic in between the kernel reports what was set.
  ASSERT_FALSE(s().setQuickAck(false));
  EXPECT_FALSE(s().quickAck());
  ASSERT_FALSE(s().setQuickAck(true));
  EXPECT_TRUE(s().quickAck());
}

TEST_F(SocketOptions, Cork) {
  ASSERT_FALSE(s().setCork(true));
  EXPECT_TRUE(s().cork());
  ASSERT_FALSE(s().setCork(false));
  EXPECT_FALSE(s().cork());
}

TEST_F(SocketOptions, KeepAlive) {
  ASSERT_FALSE(s().setKeepAlive(true));
  EXPECT_TRUE(s().keepAlive());
  ASSERT_FALSE(s().setKeepAlive(false));
  EXPECT_FALSE(s().keepAlive());
}

TEST_F(SocketOptions, KeepAliveParams) {
  ASSERT_FALSE(s().setKeepAliveParams(30s, 5s, 4));
  EXPECT_EQ(s().keepIdle(), 30s);
  EXPECT_EQ(s().keepInterval(), 5s);
  EXPECT_EQ(s().keepCount(), 4);

  // Below one second becomes one second.
  ASSERT_FALSE(s().setKeepAliveParams(0s, -3s, 9));
  EXPECT_EQ(s().keepIdle(), 1s);
  EXPECT_EQ(s().keepInterval(), 1s);
  EXPECT_EQ(s().keepCount(), 9);

  // Out of the kernel's range is an error, not a silent clamp.
  EXPECT_TRUE(s().setKeepAliveParams(10s, 10s, 0));
  EXPECT_TRUE(s().setKeepAliveParams(std::chrono::seconds(1'000'000), 10s, 3));
  EXPECT_TRUE(s().setKeepAliveParams(10s, 10s, 100'000));
}

TEST_F(SocketOptions, UserTimeout) {
  ASSERT_FALSE(s().setUserTimeout(1500ms));
  EXPECT_EQ(s().userTimeout(), 1500ms);
  ASSERT_FALSE(s().setUserTimeout(0ms));
  EXPECT_EQ(s().userTimeout(), 0ms);
  EXPECT_EQ(s().setUserTimeout(-1ms), std::errc::invalid_argument);
  EXPECT_EQ(s().setUserTimeout(std::chrono::milliseconds(1LL << 40)), std::errc::invalid_argument);
  EXPECT_EQ(s().userTimeout(), 0ms);
}

TEST_F(SocketOptions, Linger) {
  ASSERT_FALSE(s().setLinger({true, 5s}));
  Linger l = s().linger();
  EXPECT_TRUE(l.on);
  EXPECT_EQ(l.timeout, 5s);
  ASSERT_FALSE(s().setLinger({false, 0s}));
  EXPECT_FALSE(s().linger().on);
  EXPECT_EQ(s().setLinger({true, -1s}), std::errc::invalid_argument);
}

TEST_F(SocketOptions, ReuseAddrAndPort) {
  ASSERT_FALSE(s().setReuseAddr(true));
  EXPECT_TRUE(s().reuseAddr());
  ASSERT_FALSE(s().setReuseAddr(false));
  EXPECT_FALSE(s().reuseAddr());
  ASSERT_FALSE(s().setReusePort(true));
  EXPECT_TRUE(s().reusePort());
  ASSERT_FALSE(s().setReusePort(false));
  EXPECT_FALSE(s().reusePort());
}

TEST_F(SocketOptions, Buffers) {
  constexpr int kBytes = 64 * 1024;
  ASSERT_FALSE(s().setSendBuffer(kBytes));
  EXPECT_GE(s().sendBuffer(), kBytes);
  ASSERT_FALSE(s().setReceiveBuffer(kBytes));
  EXPECT_GE(s().receiveBuffer(), kBytes);
}

TEST(Socket, ReusePortLetsTwoListenersShareAPort) {
  Socket a = keel::test::openTcp(AF_INET);
  ASSERT_FALSE(a.setReusePort(true));
  ASSERT_FALSE(a.bind(SocketAddress::loopback4(0)));
  ASSERT_FALSE(a.listen());
  Socket b = keel::test::openTcp(AF_INET);
  ASSERT_FALSE(b.setReusePort(true));
  EXPECT_FALSE(b.bind(a.localAddress()));
}

TEST(Socket, Ipv6Only) {
  Socket s = keel::test::openTcp(AF_INET6);
  ASSERT_FALSE(s.setIpv6Only(true));
  EXPECT_TRUE(s.ipv6Only());
  ASSERT_FALSE(s.setIpv6Only(false));
  EXPECT_FALSE(s.ipv6Only());

  // An IPv6 option on an IPv4 socket is an error.
  Socket v4 = keel::test::openTcp(AF_INET);
  EXPECT_TRUE(v4.setIpv6Only(true));
  EXPECT_THROW((void)v4.ipv6Only(), std::system_error);
}

TEST(Socket, DualStackListenerAcceptsIpv4WhenNotV6Only) {
  Socket listener = keel::test::openTcp(AF_INET6);
  ASSERT_FALSE(listener.setIpv6Only(false));
  ASSERT_FALSE(listener.bind(*SocketAddress::ipv6("::", 0)));
  ASSERT_FALSE(listener.listen());
  Socket client = keel::test::openTcp(AF_INET);
  auto ec = client.connect(SocketAddress::loopback4(listener.localAddress().port()));
  ASSERT_TRUE(!ec || ec == std::errc::operation_in_progress) << ec.message();
  ASSERT_TRUE(waitFor(listener.fd(), POLLIN));
  SocketAddress peer;
  Socket server = listener.accept(&peer, ec);
  ASSERT_FALSE(ec);
  EXPECT_EQ(peer.family(), AF_INET6);
  EXPECT_EQ(peer.toString(), "[::ffff:127.0.0.1]:" + std::to_string(client.localAddress().port()));
}

// ---- errors -------------------------------------------------------------------

TEST(Socket, ErrorMessageFormat) {
  std::error_code ec(EBADF, std::generic_category());
  EXPECT_EQ(Socket::errorMessage("setsockopt(TCP_NODELAY)", 7, ec),
            "setsockopt(TCP_NODELAY) on fd 7: Bad file descriptor");
}

TEST(Socket, SetterOnClosedSocketReportsEbadf) {
  Socket s = keel::test::openTcp(AF_INET);
  s.close();
  EXPECT_FALSE(s.valid());
  std::error_code ec = s.setNoDelay(true);
  ASSERT_TRUE(ec);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  std::string msg = Socket::errorMessage("setsockopt(TCP_NODELAY)", s.fd(), ec);
  EXPECT_NE(msg.find("Bad file descriptor"), std::string::npos) << msg;
  EXPECT_EQ(msg, "setsockopt(TCP_NODELAY) on fd -1: Bad file descriptor");

  // Every setter fails the same way, none silently.
  Socket never;
  EXPECT_EQ(never.setQuickAck(true), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.setCork(true), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.setKeepAlive(true), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.setKeepAliveParams(1s, 1s, 1), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.setUserTimeout(1ms), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.setLinger({true, 1s}), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.setReuseAddr(true), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.setReusePort(true), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.setSendBuffer(4096), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.setReceiveBuffer(4096), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.setIpv6Only(true), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.bind(SocketAddress::loopback4(0)), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.listen(), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.connect(SocketAddress::loopback4(1)), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.shutdownWrite(), std::errc::bad_file_descriptor);
  EXPECT_EQ(never.takeError(), std::errc::bad_file_descriptor);
  std::error_code acceptEc;
  EXPECT_FALSE(never.accept(nullptr, acceptEc).valid());
  EXPECT_EQ(acceptEc, std::errc::bad_file_descriptor);
  EXPECT_FALSE(never.tcpInfo());
  EXPECT_FALSE(never.isSelfConnect());
}

TEST(Socket, GetterOnClosedSocketThrowsWithErrorMessage) {
  Socket s;
  try {
    (void)s.noDelay();
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::bad_file_descriptor);
    EXPECT_STREQ(e.what(), Socket::errorMessage("getsockopt(TCP_NODELAY)", -1, e.code()).c_str());
  }
  EXPECT_THROW((void)s.linger(), std::system_error);
  EXPECT_THROW((void)s.keepIdle(), std::system_error);
  EXPECT_THROW((void)s.sendBuffer(), std::system_error);
  try {
    (void)s.localAddress();
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_STREQ(e.what(), "getsockname on fd -1: Bad file descriptor");
  }
}

TEST(Socket, TcpOptionOnUnixSocketIsAnError) {
  Socket s = keel::test::openStream(AF_UNIX);
  ASSERT_TRUE(s.valid());
  std::error_code ec = s.setNoDelay(true);
  EXPECT_TRUE(ec) << "TCP_NODELAY on AF_UNIX was silently accepted";
  EXPECT_TRUE(s.setKeepAliveParams(10s, 10s, 3));
  EXPECT_TRUE(s.setUserTimeout(100ms));
  EXPECT_TRUE(s.setCork(true));
  EXPECT_THROW((void)s.noDelay(), std::system_error);
  EXPECT_FALSE(s.tcpInfo());
}

// ---- TCP_INFO -----------------------------------------------------------------

TEST(Socket, TcpInfoOnEstablishedConnection) {
  Connection c;
  connectPair(SocketAddress::loopback4(0), c);
  ASSERT_FALSE(HasFatalFailure());

  auto info = c.client.tcpInfo();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->state, TCP_ESTABLISHED);
  auto serverInfo = c.server.tcpInfo();
  ASSERT_TRUE(serverInfo);
  EXPECT_EQ(serverInfo->state, TCP_ESTABLISHED);
  auto listenInfo = c.listener.tcpInfo();
  ASSERT_TRUE(listenInfo);
  EXPECT_EQ(listenInfo->state, TCP_LISTEN);

  // A few round trips so both ends have RTT samples from acknowledged data.
  const std::string request(1000, 'q');
  const std::string response(3000, 'r');
  constexpr int kRounds = 5;
  for (int i = 0; i < kRounds; ++i) {
    sendAll(c.client, request);
    ASSERT_EQ(recvExactly(c.server, request.size()), request);
    sendAll(c.server, response);
    ASSERT_EQ(recvExactly(c.client, response.size()), response);
  }

  info = c.client.tcpInfo();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->state, TCP_ESTABLISHED);
  EXPECT_GT(info->rtt.count(), 0);
  EXPECT_LT(info->rtt, 1s);  // loopback
  EXPECT_GT(info->sndMss, 0u);
  EXPECT_GT(info->sndCwnd, 0u);
  EXPECT_GT(info->rcvSpace, 0u);
  EXPECT_EQ(info->retransmits, 0u);
  EXPECT_GE(info->bytesReceived, kRounds * response.size());
  // Everything but possibly the last request has been acknowledged by now.
  EXPECT_GE(info->bytesAcked, (kRounds - 1) * request.size());
  EXPECT_LT(info->lastDataRecv, 60s);

  serverInfo = c.server.tcpInfo();
  ASSERT_TRUE(serverInfo);
  EXPECT_GT(serverInfo->rtt.count(), 0);
  EXPECT_GE(serverInfo->bytesReceived, kRounds * request.size());
}

TEST(Socket, TcpInfoAfterShutdown) {
  Connection c;
  connectPair(SocketAddress::loopback6(0), c);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_FALSE(c.client.shutdownWrite());
  ASSERT_TRUE(waitFor(c.server.fd(), POLLIN));
  auto info = c.server.tcpInfo();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->state, TCP_CLOSE_WAIT);
}

TEST(Socket, TcpInfoOnUdpIsNullopt) {
  Socket u = keel::test::openUdp(AF_INET);
  ASSERT_TRUE(u.valid());
  EXPECT_FALSE(u.tcpInfo());
  Socket u6 = keel::test::openUdp(AF_INET6);
  EXPECT_FALSE(u6.tcpInfo());
  EXPECT_TRUE(u.setNoDelay(true));
}

}  // namespace
}  // namespace keel
