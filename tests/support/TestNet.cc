#include "support/TestNet.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace keel::test {

Socket openTcp(sa_family_t family) {
  std::error_code ec;
  Socket s = Socket::tcp(family, ec);
  if (ec) throw std::system_error(ec, "socket(SOCK_STREAM)");
  return s;
}

Socket openUdp(sa_family_t family) {
  std::error_code ec;
  Socket s = Socket::udp(family, ec);
  if (ec) throw std::system_error(ec, "socket(SOCK_DGRAM)");
  return s;
}

BlockingClient::BlockingClient(const SocketAddress& addr, std::chrono::milliseconds timeout)
    : timeout_(timeout) {
  Fd fd(::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return;
  if (::connect(fd.get(), addr.data(), addr.length()) < 0 && errno != EINPROGRESS) return;
  fd_ = std::move(fd);
  if (!waitFor(POLLOUT)) {
    fd_.reset();
    return;
  }
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) fd_.reset();
}

void BlockingClient::setNoDelay(bool on) {
  int v = on ? 1 : 0;
  ::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &v, sizeof v);
}

bool BlockingClient::waitFor(short events) {
  pollfd p{fd_.get(), events, 0};
  return ::poll(&p, 1, static_cast<int>(timeout_.count())) == 1;
}

bool BlockingClient::sendAll(std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EAGAIN) {
      if (!waitFor(POLLOUT)) return false;
    } else {
      return false;
    }
  }
  return true;
}

std::string BlockingClient::recvExact(std::size_t n) {
  std::string out;
  out.reserve(n);
  char buf[65536];
  while (out.size() < n) {
    const ssize_t r = ::recv(fd_.get(), buf, std::min(sizeof buf, n - out.size()), 0);
    if (r > 0) {
      out.append(buf, static_cast<std::size_t>(r));
    } else if (r < 0 && errno == EAGAIN) {
      if (!waitFor(POLLIN)) break;
    } else {
      break;
    }
  }
  return out;
}

std::string BlockingClient::recvUntilEof(bool* eof, int* err) {
  std::string out;
  char buf[65536];
  if (eof) *eof = false;
  if (err) *err = 0;
  for (;;) {
    const ssize_t r = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (r > 0) {
      out.append(buf, static_cast<std::size_t>(r));
    } else if (r == 0) {
      if (eof) *eof = true;
      break;
    } else if (errno == EAGAIN) {
      if (!waitFor(POLLIN)) break;
    } else {
      if (err) *err = errno;
      break;
    }
  }
  return out;
}

std::string BlockingClient::echo(std::string_view data) {
  const std::size_t total = data.size();
  std::string back;
  back.reserve(total);
  char buf[65536];
  const auto deadline = std::chrono::steady_clock::now() + timeout_ * 4;
  while (back.size() < total && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd_.get(), static_cast<short>(POLLIN | (data.empty() ? 0 : POLLOUT)), 0};
    if (::poll(&p, 1, static_cast<int>(timeout_.count())) != 1) break;
    if ((p.revents & POLLOUT) && !data.empty()) {
      const ssize_t n =
          ::send(fd_.get(), data.data(), std::min<std::size_t>(data.size(), 256 * 1024), MSG_NOSIGNAL);
      if (n > 0) data.remove_prefix(static_cast<std::size_t>(n));
      if (n < 0 && errno != EAGAIN) break;
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t r = ::recv(fd_.get(), buf, sizeof buf, 0);
      if (r > 0) back.append(buf, static_cast<std::size_t>(r));
      if (r == 0 || (r < 0 && errno != EAGAIN)) break;
    }
  }
  return back;
}

void BlockingClient::shutdownWrite() { ::shutdown(fd_.get(), SHUT_WR); }

SocketAddress BlockingClient::localAddress() const {
  SocketAddress a;
  socklen_t len = SocketAddress::capacity();
  ::getsockname(fd_.get(), a.data(), &len);
  a.setLength(len);
  return a;
}

ServerThread::ServerThread(SocketAddress listen, ServerOptions options, Server::PipelineInit init,
                           Configure configure) {
  loop_ = &thread_.start();
  std::string error;
  runAndWait([&] {
    server_ = std::make_unique<Server>(*loop_, listen, options);
    server_->setPipelineInit(std::move(init));
    if (configure) configure(*server_);
    if (auto ec = server_->start()) {
      error = ec.message();
      server_.reset();
      return;
    }
    address_ = server_->listenAddress();
  });
  if (!error.empty()) throw std::runtime_error("ServerThread: " + error);
}

ServerThread::~ServerThread() {
  runAndWait([this] { server_.reset(); });
  thread_.stop();
}

void runOn(EventLoop& loop, const std::function<void()>& f) {
  std::promise<void> done;
  loop.runInLoop([&] {
    f();
    done.set_value();
  });
  done.get_future().wait();
}

void ServerThread::runAndWait(const std::function<void()>& f) { runOn(*loop_, f); }

std::string uniqueSuffix() {
  static std::atomic<int> counter{0};
  return std::to_string(::getpid()) + "_" + std::to_string(counter.fetch_add(1));
}

TempPath::TempPath(const std::string& prefix) : path_("/tmp/" + prefix + "_" + uniqueSuffix() + ".sock") {
  ::unlink(path_.c_str());
}

TempPath::~TempPath() { ::unlink(path_.c_str()); }

int countTimeWait(std::uint16_t port, std::uint16_t other) {
  int count = 0;
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string sl, local, remote, state;
      fields >> sl >> local >> remote >> state;
      if (state != "06") continue;  // TCP_TIME_WAIT
      auto portOf = [](const std::string& a) {
        return static_cast<std::uint16_t>(std::stoul(a.substr(a.find(':') + 1), nullptr, 16));
      };
      const std::uint16_t l = portOf(local), r = portOf(remote);
      if (other != 0) {
        if ((l == port && r == other) || (l == other && r == port)) ++count;
      } else if (port == 0 || l == port || r == port) {
        ++count;
      }
    }
  }
  return count;
}

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return pred();
}

std::string randomBytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

std::string binaryPath(const std::string& name) {
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  std::string dir = n > 0 ? std::string(self, static_cast<std::size_t>(n)) : std::string();
  dir = dir.substr(0, dir.rfind('/'));
  return dir + "/" + name;
}

std::size_t pushWithoutReading(int fd, std::size_t max, std::chrono::milliseconds budget) {
  const std::string chunk(64 * 1024, 'p');
  std::size_t sent = 0;
  const auto deadline = std::chrono::steady_clock::now() + budget;
  auto lastProgress = std::chrono::steady_clock::now();
  while (sent < max && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 100) == 1) {
      const ssize_t n =
          ::send(fd, chunk.data(), std::min(chunk.size(), max - sent), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno != EAGAIN) break;
      if (n > 0) {
        sent += static_cast<std::size_t>(n);
        lastProgress = std::chrono::steady_clock::now();
      }
    }
    if (std::chrono::steady_clock::now() - lastProgress > 500ms) break;
  }
  return sent;
}

long procStatusKiB(pid_t pid, std::string_view field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (f >> key) {
    if (key == field) {
      long v = 0;
      f >> v;
      return v;
    }
    f.ignore(1 << 12, '\n');
  }
  return 0;
}

}  // namespace keel::test
