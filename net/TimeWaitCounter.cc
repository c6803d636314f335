#include "keel/net/TimeWaitCounter.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keel/core/Fd.h"

namespace keel {
namespace {

bool matches(const TimeWaitFilter& f, std::uint16_t local, std::uint16_t remote) {
  return (f.localPort == 0 || f.localPort == local) && (f.remotePort == 0 || f.remotePort == remote);
}

// One netlink dump for one address family; the kernel filters by state.
std::optional<std::size_t> dumpFamily(int fd, std::uint8_t family, const TimeWaitFilter& filter) {
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  msg.req.sdiag_family = family;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = 1u << TCP_TIME_WAIT;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd, &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
    return std::nullopt;

  std::size_t count = 0;
  alignas(nlmsghdr) char buf[32768];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    auto left = static_cast<unsigned>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) return count;
      if (h->nlmsg_type == NLMSG_ERROR) return std::nullopt;
      const auto* d = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
      if (d->idiag_state == TCP_TIME_WAIT &&
          matches(filter, ntohs(d->id.idiag_sport), ntohs(d->id.idiag_dport))) {
        ++count;
      }
    }
  }
}

std::optional<std::size_t> fromProc(const TimeWaitFilter& filter) {
  std::size_t count = 0;
  bool any = false;
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(path);
    if (!in) continue;
    any = true;
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state;
      fields >> slot >> local >> remote >> state;
      if (state != "06") continue;
      auto port = [](const std::string& a) {
        return static_cast<std::uint16_t>(std::stoul(a.substr(a.find(':') + 1), nullptr, 16));
      };
      if (matches(filter, port(local), port(remote))) ++count;
    }
  }
  return any ? std::optional<std::size_t>(count) : std::nullopt;
}

}  // namespace

std::optional<std::size_t> countTimeWait(TimeWaitFilter filter) {
  Fd fd(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (fd) {
    auto v4 = dumpFamily(fd.get(), AF_INET, filter);
    auto v6 = v4 ? dumpFamily(fd.get(), AF_INET6, filter) : std::nullopt;
    if (v4 && v6) return *v4 + *v6;
  }
  return fromProc(filter);
}

}  // namespace keel
