#include "keel/core/Fd.h"

#include <unistd.h>

namespace keel {

void Fd::reset(int fd) noexcept {
  // close() is not retried on EINTR: on Linux the descriptor is released
  // whatever close returns, and a retry could close a descriptor another
  // thread has just been given.
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

}  // namespace keel
