#include "keel/heartbeat/KeepAlive.h"

#include <fstream>
#include <optional>

namespace keel {
namespace {

// The kernel's limits (MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT).
constexpr std::chrono::seconds kMaxKeepSeconds{32767};
constexpr int kMaxKeepCount = 127;

bool inRange(std::chrono::seconds s) noexcept { return s >= std::chrono::seconds(1) && s <= kMaxKeepSeconds; }

std::optional<long> readSysctl(const char* path) {
  std::ifstream in(path);
  long value = 0;
  if (!(in >> value) || value < 0) return std::nullopt;
  return value;
}

}  // namespace

std::error_code enableKernelKeepAlive(Socket& socket, const KeepAliveParams& params) noexcept {
  if (!inRange(params.idle) || !inRange(params.interval) || params.count < 1 ||
      params.count > kMaxKeepCount || params.userTimeout < std::chrono::milliseconds::zero()) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  if (auto ec = socket.setKeepAlive(true)) return ec;
  if (auto ec = socket.setKeepAliveParams(params.idle, params.interval, params.count)) return ec;
  return socket.setUserTimeout(params.userTimeout);
}

KernelKeepAliveDefaults readKernelKeepAliveDefaults() {
  KernelKeepAliveDefaults d;
  const auto time = readSysctl("/proc/sys/net/ipv4/tcp_keepalive_time");
  const auto intvl = readSysctl("/proc/sys/net/ipv4/tcp_keepalive_intvl");
  const auto probes = readSysctl("/proc/sys/net/ipv4/tcp_keepalive_probes");
  if (time) d.time = std::chrono::seconds(*time);
  if (intvl) d.interval = std::chrono::seconds(*intvl);
  if (probes) d.probes = static_cast<int>(*probes);
  d.fromSysctl = time && intvl && probes;
  return d;
}

std::chrono::seconds defaultKeepAliveDetection() { return readKernelKeepAliveDefaults().detection(); }

}  // namespace keel
