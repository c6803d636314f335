// Segment counters of one TCP connection, read on both of its ends.
//
// The near end is getsockopt(TCP_INFO) on our descriptor. The far end is
// the same struct tcp_info fetched over netlink sock_diag by the exact
// 4-tuple (what `ss -ti` does), so a bench client can count the server's
// segments without the server's cooperation: floor-echo and keel-rr alike.
// Only IPv4 is looked up that way (the bench runs on 127.0.0.1).
//
// Header-only and no keel: keel-pingpong, which must keep measuring the
// same way whatever state keel is in, includes it too. Nothing here runs in
// a timed loop; the counters are read before and after one.
#pragma once

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>  // rtattr, RTA_*
#include <linux/sock_diag.h>
#include <linux/tcp.h>  // the full struct tcp_info; glibc's <netinet/tcp.h> stops before tcpi_segs_out
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

namespace keelbench {

struct SegCounts {
  std::uint64_t segsOut = 0;  // every segment sent, pure ACKs included
  std::uint64_t segsIn = 0;
  std::uint64_t dataSegsOut = 0;  // segments that carried payload
  std::uint64_t dataSegsIn = 0;
  std::uint64_t bytesSent = 0;  // payload bytes, retransmissions included
  std::uint64_t bytesReceived = 0;
  std::uint32_t sndMss = 0;
  std::uint32_t rcvMss = 0;
  std::uint32_t sndWnd = 0;  // the peer's last advertised window, scaled (bytes)
  std::uint32_t rcvSpace = 0;
  std::uint32_t rcvSsthresh = 0;  // the most this end is prepared to advertise now
};

inline SegCounts fromInfo(const tcp_info& ti) {
  SegCounts c;
  c.segsOut = ti.tcpi_segs_out;
  c.segsIn = ti.tcpi_segs_in;
  c.dataSegsOut = ti.tcpi_data_segs_out;
  c.dataSegsIn = ti.tcpi_data_segs_in;
  c.bytesSent = ti.tcpi_bytes_sent;
  c.bytesReceived = ti.tcpi_bytes_received;
  c.sndMss = ti.tcpi_snd_mss;
  c.rcvMss = ti.tcpi_rcv_mss;
  c.sndWnd = ti.tcpi_snd_wnd;
  c.rcvSpace = ti.tcpi_rcv_space;
  c.rcvSsthresh = ti.tcpi_rcv_ssthresh;
  return c;
}

inline std::optional<SegCounts> localCounts(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof ti;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) return std::nullopt;
  return fromInfo(ti);
}

// The far end of our connection `fd`: the socket whose source is our peer
// and whose destination is us. Empty (with `why` set) if it is not on this
// host or netlink refuses.
inline std::optional<SegCounts> peerCounts(int fd, std::string* why = nullptr) {
  auto failed = [why](const char* what) -> std::optional<SegCounts> {
    if (why != nullptr) *why = std::string(what) + ": " + std::strerror(errno);
    return std::nullopt;
  };
  sockaddr_in local{}, peer{};
  socklen_t ll = sizeof local, pl = sizeof peer;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) < 0 ||
      ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) < 0)
    return failed("getsockname/getpeername");
  if (local.sin_family != AF_INET) {
    errno = EAFNOSUPPORT;
    return failed("sock_diag lookup (IPv4 only)");
  }
  const int nl = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) return failed("socket(NETLINK_SOCK_DIAG)");
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST;  // an exact lookup, not a dump
  msg.req.sdiag_family = AF_INET;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_ext = 1u << (INET_DIAG_INFO - 1);
  msg.req.idiag_states = ~0u;
  msg.req.id.idiag_sport = peer.sin_port;  // the far socket's own view: it is the source
  msg.req.id.idiag_dport = local.sin_port;
  msg.req.id.idiag_src[0] = peer.sin_addr.s_addr;
  msg.req.id.idiag_dst[0] = local.sin_addr.s_addr;
  msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  std::optional<SegCounts> out;
  if (::sendto(nl, &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
    out = failed("sock_diag sendto");
  } else {
    alignas(nlmsghdr) char buf[8192];
    ssize_t n;
    do {
      n = ::recv(nl, buf, sizeof buf, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      out = failed("sock_diag recv");
    } else {
      auto left = static_cast<unsigned>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, left) && !out; h = NLMSG_NEXT(h, left)) {
        if (h->nlmsg_type == NLMSG_ERROR) {
          errno = -static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
          failed("sock_diag lookup of the peer socket");
          break;
        }
        if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
        const auto* d = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
        auto alen = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *d));
        for (auto* a = reinterpret_cast<const rtattr*>(d + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
          if (a->rta_type != INET_DIAG_INFO) continue;
          // The kernel's struct may be longer or shorter than this header's.
          tcp_info ti{};
          std::memcpy(&ti, RTA_DATA(a), std::min<std::size_t>(RTA_PAYLOAD(a), sizeof ti));
          out = fromInfo(ti);
        }
      }
    }
  }
  ::close(nl);
  return out;
}

// Counter differences after minus before, as a JSON object body (no braces).
inline void printDelta(std::FILE* f, const char* key, const SegCounts& a, const SegCounts& b) {
  std::fprintf(f,
               "\"%s\":{\"segs_out\":%llu,\"segs_in\":%llu,\"data_segs_out\":%llu,\"data_segs_in\":%llu,"
               "\"bytes_sent\":%llu,\"bytes_received\":%llu,\"snd_mss\":%u,\"rcv_mss\":%u}",
               key, static_cast<unsigned long long>(b.segsOut - a.segsOut),
               static_cast<unsigned long long>(b.segsIn - a.segsIn),
               static_cast<unsigned long long>(b.dataSegsOut - a.dataSegsOut),
               static_cast<unsigned long long>(b.dataSegsIn - a.dataSegsIn),
               static_cast<unsigned long long>(b.bytesSent - a.bytesSent),
               static_cast<unsigned long long>(b.bytesReceived - a.bytesReceived), b.sndMss, b.rcvMss);
}

}  // namespace keelbench
