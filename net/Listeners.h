// Listening sockets that come from outside the process: passed by systemd
// socket activation (LISTEN_FDS) or by the process being replaced
// (net/Handoff.h), checked before a Server adopts them
// (Server::adoptListeners).
//
//   std::error_code ec;
//   auto activated = keel::takeSystemdListeners(ec);   // empty: not socket-activated
//   std::vector<keel::Fd> fds;
//   for (auto& l : activated) fds.push_back(std::move(l.fd));
//   if (!fds.empty()) ec = server.adoptListeners(std::move(fds));
//   if (!ec) ec = server.start();
//
// Thread-safety: takeSystemdListeners reads and changes the environment,
// which is process-wide: call it from main() before starting threads.
#pragma once

#include <cstddef>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#include <sys/socket.h>

#include "keel/core/Fd.h"

namespace keel {

enum class ListenerError {
  NotASocket = 1,  // a pipe, a file, a closed descriptor
  NotStream,       // SOCK_DGRAM and friends: nothing to accept
  NotListening,    // a stream socket that never called listen()
  WrongFamily,     // not the family the server was built for (or not inet/unix)
  TooMany,         // more than kMaxAdoptedListeners
  BadEnvironment,  // LISTEN_FDS / LISTEN_PID malformed
};

[[nodiscard]] const std::error_category& listenerCategory() noexcept;
[[nodiscard]] std::error_code make_error_code(ListenerError e) noexcept;

// The cap on listening sockets adopted or handed over at once: one per I/O
// loop is the most keel opens, and no machine has 64 cores' worth of loops
// that each need two. It bounds the SCM_RIGHTS control buffer too.
inline constexpr std::size_t kMaxAdoptedListeners = 64;

// {} when `fd` is a listening SOCK_STREAM socket (SO_ACCEPTCONN, SO_TYPE)
// of `family` (SO_DOMAIN); AF_UNSPEC accepts AF_INET, AF_INET6 and AF_UNIX.
[[nodiscard]] std::error_code checkListener(int fd, sa_family_t family = AF_UNSPEC) noexcept;

struct ActivatedListener {
  Fd fd;
  std::string name;  // from LISTEN_FDNAMES (systemd's FileDescriptorName=), or empty
};

// The sockets systemd passed (sd_listen_fds' protocol, without libsystemd):
// when LISTEN_PID is this process, descriptors 3 .. 3+LISTEN_FDS-1, made
// close-on-exec. Empty without error when the variables are absent or meant
// for another process (a parent that did not unset them). The descriptors
// are not checked here: adoptListeners checks what it is given. With
// `unsetEnvironment` (the default) LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES are removed, even on error, so a child this process
// starts does not believe the sockets are its own.
[[nodiscard]] std::vector<ActivatedListener> takeSystemdListeners(std::error_code& ec,
                                                                  bool unsetEnvironment = true);

}  // namespace keel

template <>
struct std::is_error_code_enum<keel::ListenerError> : std::true_type {};
