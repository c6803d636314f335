// Internal to keel (not installed): where a Connection's bytes go when they
// do not go to a socket. EmbeddedConnection plugs an in-memory one in; a
// connection without a transport talks to its socket with direct syscalls
// (the hot path pays no virtual call).
//
// Return conventions follow the syscalls they stand for: a count, or -1
// with errno set (EAGAIN when nothing can move now).
#pragma once

#include <cstddef>
#include <span>
#include <system_error>

#include <sys/types.h>
#include <sys/uio.h>

namespace keel {

class Transport {
 public:
  virtual ~Transport() = default;
  virtual ssize_t read(std::span<char> into) = 0;  // 0: the peer's FIN
  virtual ssize_t writev(const iovec* iov, int count) = 0;
  virtual std::error_code shutdownWrite() = 0;
  // The descriptor's close; `reset` for an abortive close (RST).
  virtual void close(bool reset) = 0;
};

}  // namespace keel
