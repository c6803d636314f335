#include "keel/net/Listeners.h"

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <optional>
#include <string_view>

#include <fcntl.h>
#include <unistd.h>

namespace keel {

namespace {

class ListenerCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "keel.listener"; }
  std::string message(int e) const override {
    switch (static_cast<ListenerError>(e)) {
      case ListenerError::NotASocket:
        return "adopted descriptor is not a socket";
      case ListenerError::NotStream:
        return "adopted socket is not SOCK_STREAM";
      case ListenerError::NotListening:
        return "adopted socket is not listening (no listen() on it)";
      case ListenerError::WrongFamily:
        return "adopted socket is of another address family";
      case ListenerError::TooMany:
        return "too many listening sockets to adopt (kMaxAdoptedListeners)";
      case ListenerError::BadEnvironment:
        return "LISTEN_PID/LISTEN_FDS malformed";
    }
    return "unknown listener error";
  }
};

bool intOption(int fd, int name, int& value) noexcept {
  socklen_t len = sizeof value;
  return ::getsockopt(fd, SOL_SOCKET, name, &value, &len) == 0;
}

// A decimal number that fills all of `text`.
bool parseNumber(std::string_view text, long& out) noexcept {
  if (text.empty()) return false;
  const auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), out);
  return err == std::errc() && end == text.data() + text.size();
}

}  // namespace

const std::error_category& listenerCategory() noexcept {
  static const ListenerCategory category;
  return category;
}

std::error_code make_error_code(ListenerError e) noexcept {
  return {static_cast<int>(e), listenerCategory()};
}

std::error_code checkListener(int fd, sa_family_t family) noexcept {
  int type = 0;
  if (!intOption(fd, SO_TYPE, type)) {
    return errno == ENOTSOCK || errno == EBADF ? make_error_code(ListenerError::NotASocket)
                                               : std::error_code(errno, std::generic_category());
  }
  if (type != SOCK_STREAM) return ListenerError::NotStream;
  int domain = 0;
  if (!intOption(fd, SO_DOMAIN, domain)) return {errno, std::generic_category()};
  const bool known = domain == AF_INET || domain == AF_INET6 || domain == AF_UNIX;
  if (!known || (family != AF_UNSPEC && domain != family)) return ListenerError::WrongFamily;
  int listening = 0;
  if (!intOption(fd, SO_ACCEPTCONN, listening)) return {errno, std::generic_category()};
  if (listening == 0) return ListenerError::NotListening;
  return {};
}

std::vector<ActivatedListener> takeSystemdListeners(std::error_code& ec, bool unsetEnvironment) {
  ec.clear();
  std::vector<ActivatedListener> out;
  // Copied before unsetenv, which may free what getenv pointed at.
  auto take = [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    return v != nullptr ? std::optional<std::string>(v) : std::nullopt;
  };
  const auto pidText = take("LISTEN_PID");
  const auto countText = take("LISTEN_FDS");
  const std::string names = take("LISTEN_FDNAMES").value_or("");
  if (unsetEnvironment) {
    ::unsetenv("LISTEN_PID");
    ::unsetenv("LISTEN_FDS");
    ::unsetenv("LISTEN_FDNAMES");
  }
  if (!pidText || !countText) return out;
  long pid = 0, count = 0;
  if (!parseNumber(*pidText, pid) || !parseNumber(*countText, count) || count < 0) {
    ec = ListenerError::BadEnvironment;
    return out;
  }
  if (pid != static_cast<long>(::getpid())) return out;  // for another process
  if (static_cast<std::size_t>(count) > kMaxAdoptedListeners) {
    ec = ListenerError::TooMany;
    return out;
  }
  constexpr int kFirst = 3;  // SD_LISTEN_FDS_START
  std::string_view rest = names;
  for (long i = 0; i < count; ++i) {
    const int fd = kFirst + static_cast<int>(i);
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0 || ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0) {
      ec = {errno, std::generic_category()};
      out.clear();  // closes what was taken: a half set is worse than none
      return out;
    }
    ActivatedListener l{Fd(fd), {}};
    const std::size_t colon = rest.find(':');
    l.name = std::string(rest.substr(0, colon));
    rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
    out.push_back(std::move(l));
  }
  return out;
}

}  // namespace keel
