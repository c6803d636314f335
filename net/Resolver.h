// Asynchronous host name resolution: getaddrinfo on a few worker threads,
// results delivered as a callback on the requesting loop.
//
//   ResolveRequest req = Resolver::defaultResolver().resolve(
//       loop, "example.com", 443, {}, [](std::error_code ec, std::vector<SocketAddress> addrs) {...});
//
// getaddrinfo blocks (files, DNS, whatever nsswitch.conf says) and cannot be
// interrupted, so it never runs on a loop thread. The workers start lazily,
// on the first lookup that needs one, and block the asynchronous signals
// (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2, SIGCHLD) so those keep going
// to the application's own handling (SignalWatcher) instead of landing on a
// thread that happens to be inside getaddrinfo.
//
// Numeric hosts ("127.0.0.1", "::1", "[::1]") are parsed on the calling
// thread and never reach a worker; their result still comes through the
// loop, never inside resolve().
//
// Caps: at most ResolverOptions::maxQueued lookups waiting or running (a
// lookup beyond that is refused with std::errc::resource_unavailable_try_again,
// through the callback); each lookup has a deadline (ResolveOptions::timeout):
// when it passes, the callback gets std::errc::timed_out and the late result
// of getaddrinfo, which cannot be stopped, is thrown away; at most
// ResolveOptions::maxAddresses addresses are returned.
//
// getaddrinfo's failures come as codes of resolverCategory() (ResolveError),
// with messages meant for people: "host not found", not "Name or service not
// known".
//
// Thread-safety: resolve() on the loop thread of `loop` (the handle it
// returns belongs to that loop: cancel and destroy it there). The callback
// runs on that loop thread; it may destroy its own ResolveRequest.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <netdb.h>

#include "keel/core/Time.h"
#include "keel/net/SocketAddress.h"

namespace keel {

class EventLoop;

// getaddrinfo's EAI_* codes (negative on glibc), as values of resolverCategory().
enum class ResolveError : int {
  HostNotFound = EAI_NONAME,
  TryAgain = EAI_AGAIN,
  ServerFailure = EAI_FAIL,
  NoAddress = EAI_NODATA,              // the name exists but has no address
  NoAddressInFamily = EAI_ADDRFAMILY,  // none of the family asked for
  FamilyNotSupported = EAI_FAMILY,
  OutOfMemory = EAI_MEMORY,
  BadHost = EAI_OVERFLOW,  // keel's own use: empty, too long, or holding a NUL
};

[[nodiscard]] const std::error_category& resolverCategory() noexcept;
[[nodiscard]] std::error_code make_error_code(ResolveError e) noexcept;
// An EAI_* code from getaddrinfo as an error_code (EAI_SYSTEM: `savedErrno`
// in the system category).
[[nodiscard]] std::error_code resolveErrorCode(int eai, int savedErrno) noexcept;

enum class AddressFamily : std::uint8_t { Any, V4, V6 };

struct ResolveOptions {
  AddressFamily family = AddressFamily::Any;
  // From resolve() to the callback. Zero or less is taken as the default: a
  // lookup without a deadline could keep a caller waiting forever.
  Duration timeout = std::chrono::seconds(10);
  std::size_t maxAddresses = 16;  // the rest are dropped (at least 1)
};

struct ResolverOptions {
  std::size_t maxQueued = 64;  // lookups waiting for or inside a worker; at least 1
  int threads = 2;             // started lazily; clamped to 1..16
};

// A host name (or numeric address) and a port, as written in "host:port",
// "[v6]:port" or "1.2.3.4:port".
struct HostPort {
  std::string host;  // without brackets
  std::uint16_t port = 0;

  // nullopt when there is no ":port", the port is not decimal 0..65535, the
  // host is empty, or an IPv6 literal is not bracketed.
  [[nodiscard]] static std::optional<HostPort> parse(std::string_view text);
  [[nodiscard]] std::string toString() const;  // brackets a host holding ':'
  friend bool operator==(const HostPort&, const HostPort&) = default;
};

namespace detail {
struct Lookup;
struct ResolverState;
}  // namespace detail

// RAII handle of one lookup. Destroying it, or cancel(), guarantees the
// callback never runs (if it has not run yet). Loop thread of the lookup.
class ResolveRequest {
 public:
  ResolveRequest() noexcept = default;
  ~ResolveRequest() { cancel(); }
  ResolveRequest(ResolveRequest&& other) noexcept = default;
  ResolveRequest& operator=(ResolveRequest&& other) noexcept;
  ResolveRequest(const ResolveRequest&) = delete;
  ResolveRequest& operator=(const ResolveRequest&) = delete;

  void cancel() noexcept;
  // The callback has neither run nor been cancelled.
  [[nodiscard]] bool pending() const noexcept;

 private:
  friend class Resolver;
  explicit ResolveRequest(std::shared_ptr<detail::Lookup> lookup) noexcept : lookup_(std::move(lookup)) {}
  std::shared_ptr<detail::Lookup> lookup_;
};

class Resolver {
 public:
  using Callback = std::function<void(std::error_code, std::vector<SocketAddress>)>;

  explicit Resolver(ResolverOptions options = {});
  // Waits for the workers, which may be inside getaddrinfo (bounded by the
  // system's resolver timeouts, not by keel). Lookups still queued get
  // std::errc::operation_canceled on their loops.
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // The process-wide instance (default options). Never destroyed, so it may
  // be used from static destructors and at exit. It survives fork(): the
  // child starts workers of its own (lookups in flight at the fork stay in
  // the parent). A constructed Resolver belongs to the process that made it.
  [[nodiscard]] static Resolver& defaultResolver();

  // Loop thread of `loop`. `cb` runs later on that loop, exactly once unless
  // the handle is cancelled first, with the addresses (at least one, in
  // getaddrinfo's order, the port set) or an error.
  [[nodiscard]] ResolveRequest resolve(EventLoop& loop, std::string_view host, std::uint16_t port,
                                       ResolveOptions options, Callback cb);

  // Worker threads started so far (they are started on demand).
  [[nodiscard]] int threadsStarted() const noexcept;
  [[nodiscard]] const ResolverOptions& options() const noexcept { return options_; }

  // The numeric fast path on its own: `host` as an IPv4 or IPv6 literal
  // (brackets allowed) of the wanted family, or nullopt.
  [[nodiscard]] static std::optional<SocketAddress> numeric(std::string_view host, std::uint16_t port,
                                                            AddressFamily family);

 private:
  void resetAfterFork() noexcept;

  ResolverOptions options_;
  std::shared_ptr<detail::ResolverState> state_;
};

}  // namespace keel

template <>
struct std::is_error_code_enum<keel::ResolveError> : std::true_type {};
