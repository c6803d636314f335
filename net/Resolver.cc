#include "keel/net/Resolver.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <mutex>
#include <thread>

#include <pthread.h>
#include <sys/socket.h>

#include "keel/core/EventLoop.h"
#include "keel/core/Log.h"

namespace keel {

// ---- shared state ---------------------------------------------------------------

namespace detail {

struct Lookup {
  EventLoop* loop = nullptr;
  std::string host;
  std::uint16_t port = 0;
  ResolveOptions options;
  std::weak_ptr<ResolverState> resolver;
  // Loop thread only.
  Resolver::Callback cb;
  bool finished = false;
  TimerId timer;
  // Orders a worker posting the result against the loop retiring the lookup:
  // once `retired` is set under it, no worker touches `loop` again (the loop
  // may be gone by then).
  std::mutex postMutex;
  bool retired = false;
};

struct ResolverState {
  ResolverOptions options;
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::shared_ptr<Lookup>> queue;  // guarded by mutex
  std::size_t running = 0;                    // guarded by mutex: lookups inside getaddrinfo
  int idle = 0;                               // guarded by mutex: workers waiting for work
  bool stopping = false;                      // guarded by mutex
  std::vector<std::thread> threads;           // guarded by mutex
  std::atomic<int> started{0};
  std::shared_ptr<ResolverState> forkedFrom;  // the parent's, after a fork (Resolver::resetAfterFork)
};

}  // namespace detail

namespace {

using detail::Lookup;
using detail::ResolverState;

// Loop thread. After this, no worker will post for the lookup, and it frees
// its place in the queue if it is still waiting there.
void retire(Lookup& l) {
  {
    std::lock_guard lock(l.postMutex);
    l.retired = true;
  }
  if (auto state = l.resolver.lock()) {
    std::lock_guard lock(state->mutex);
    auto it = std::find_if(state->queue.begin(), state->queue.end(),
                           [&](const std::shared_ptr<Lookup>& q) { return q.get() == &l; });
    if (it != state->queue.end()) state->queue.erase(it);
  }
}

// Loop thread: the one place a callback runs.
void finish(const std::shared_ptr<Lookup>& l, std::error_code ec, std::vector<SocketAddress> addrs) {
  if (l->finished) return;
  l->finished = true;
  if (l->timer.valid()) l->loop->cancel(l->timer);
  l->timer = {};
  retire(*l);
  Resolver::Callback cb = std::move(l->cb);
  // Last: the callback may destroy the request, the resolver's user, anything.
  if (cb) cb(ec, std::move(addrs));
}

// Worker thread: hands the outcome to the lookup's loop unless it was retired.
void post(const std::shared_ptr<Lookup>& l, std::error_code ec, std::vector<SocketAddress> addrs) {
  std::lock_guard lock(l->postMutex);
  if (l->retired) return;
  l->loop->queueInLoop([l, ec, addrs = std::move(addrs)]() mutable { finish(l, ec, std::move(addrs)); });
}

int toAf(AddressFamily f) noexcept {
  switch (f) {
    case AddressFamily::V4:
      return AF_INET;
    case AddressFamily::V6:
      return AF_INET6;
    case AddressFamily::Any:
      break;
  }
  return AF_UNSPEC;
}

void withPort(SocketAddress& a, std::uint16_t port) noexcept {
  // getaddrinfo is called without a service (no /etc/services lookup); the
  // port goes straight into the address.
  if (a.family() == AF_INET) {
    reinterpret_cast<sockaddr_in*>(a.data())->sin_port = htons(port);
  } else if (a.family() == AF_INET6) {
    reinterpret_cast<sockaddr_in6*>(a.data())->sin6_port = htons(port);
  }
}

void lookUp(const std::shared_ptr<Lookup>& l) {
  addrinfo hints{};
  hints.ai_family = toAf(l->options.family);
  hints.ai_socktype = SOCK_STREAM;
  // No AI_ADDRCONFIG: glibc ignores loopback when deciding which families
  // are configured, so a machine (or namespace) with only loopback would
  // not resolve "localhost". Happy Eyeballs copes with an unusable family.
  hints.ai_flags = 0;
  addrinfo* res = nullptr;
  errno = 0;
  const int rc = ::getaddrinfo(l->host.c_str(), nullptr, &hints, &res);
  const int savedErrno = errno;
  std::vector<SocketAddress> out;
  if (rc == 0) {
    for (const addrinfo* ai = res; ai != nullptr && out.size() < l->options.maxAddresses; ai = ai->ai_next) {
      if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
      SocketAddress a(ai->ai_addr, ai->ai_addrlen);
      withPort(a, l->port);
      if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
    }
    ::freeaddrinfo(res);
  }
  std::error_code ec = resolveErrorCode(rc, savedErrno);
  if (!ec && out.empty()) ec = ResolveError::NoAddress;
  post(l, ec, std::move(out));
}

void workerMain(const std::shared_ptr<ResolverState>& state) {
  // Named for top, gdb and the test that checks the signal mask.
  pthread_setname_np(pthread_self(), "keel-resolver");
  std::unique_lock lock(state->mutex);
  for (;;) {
    ++state->idle;
    state->wake.wait(lock, [&] { return state->stopping || !state->queue.empty(); });
    --state->idle;
    if (state->stopping) return;
    std::shared_ptr<Lookup> l = std::move(state->queue.front());
    state->queue.pop_front();
    ++state->running;
    lock.unlock();
    lookUp(l);
    l.reset();
    lock.lock();
    --state->running;
  }
}

// Guarded by state->mutex. Starts a worker when none is idle and the cap
// allows; false when there is no worker at all and none could be started.
bool ensureWorker(const std::shared_ptr<ResolverState>& state) {
  const auto max = static_cast<std::size_t>(state->options.threads);
  if (state->idle > 0 || state->threads.size() >= max) return !state->threads.empty();
  // Created with the asynchronous signals blocked, so the thread inherits the
  // mask from its first instruction on (blocking them inside the thread would
  // leave a window where such a signal could be delivered to it).
  sigset_t block;
  sigset_t old;
  sigemptyset(&block);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD}) sigaddset(&block, sig);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  try {
    state->threads.emplace_back([state] { workerMain(state); });
    state->started.fetch_add(1, std::memory_order_relaxed);
  } catch (const std::system_error& e) {
    KEEL_WARN("resolver: cannot start a worker thread: {}", e.what());
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return !state->threads.empty();
}

ResolverOptions normalised(ResolverOptions o) {
  o.maxQueued = std::max<std::size_t>(o.maxQueued, 1);
  o.threads = std::clamp(o.threads, 1, 16);
  return o;
}

}  // namespace

// ---- ResolveRequest -------------------------------------------------------------

ResolveRequest& ResolveRequest::operator=(ResolveRequest&& other) noexcept {
  if (this != &other) {
    cancel();
    lookup_ = std::move(other.lookup_);
  }
  return *this;
}

void ResolveRequest::cancel() noexcept {
  if (!lookup_) return;
  std::shared_ptr<Lookup> l = std::move(lookup_);
  // A finished lookup needs nothing more (and its loop may be gone).
  if (l->finished) return;
  KEEL_ASSERT_IN_LOOP(*l->loop, "ResolveRequest::cancel");
  l->finished = true;
  if (l->timer.valid()) l->loop->cancel(l->timer);
  l->timer = {};
  retire(*l);
  l->cb = nullptr;
}

bool ResolveRequest::pending() const noexcept { return lookup_ && !lookup_->finished; }

// ---- Resolver -------------------------------------------------------------------

Resolver::Resolver(ResolverOptions options)
    : options_(normalised(options)), state_(std::make_shared<ResolverState>()) {
  state_->options = options_;
}

Resolver::~Resolver() {
  std::vector<std::thread> threads;
  std::deque<std::shared_ptr<Lookup>> left;
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
    threads.swap(state_->threads);
    left.swap(state_->queue);
  }
  state_->wake.notify_all();
  for (auto& l : left) post(l, std::make_error_code(std::errc::operation_canceled), {});
  for (auto& t : threads) t.join();
}

namespace {
Resolver* g_default = nullptr;
}  // namespace

Resolver& Resolver::defaultResolver() {
  // Leaked on purpose: a worker may be inside getaddrinfo at exit, and
  // joining it from a static destructor could hang the exit.
  static Resolver* const instance = [] {
    g_default = new Resolver();
    // A forked child has none of the parent's workers, yet the copied state
    // says they exist (and are idle): its lookups would wait forever.
    ::pthread_atfork(nullptr, nullptr, [] { g_default->resetAfterFork(); });
    return g_default;
  }();
  return *instance;
}

void Resolver::resetAfterFork() noexcept {
  // The old state is kept, never destroyed: its threads do not exist here
  // (destroying a joinable std::thread terminates), and its mutex may have
  // been held by one of them at the fork.
  auto fresh = std::make_shared<ResolverState>();
  fresh->options = options_;
  fresh->forkedFrom = std::move(state_);
  state_ = std::move(fresh);
}

int Resolver::threadsStarted() const noexcept { return state_->started.load(std::memory_order_relaxed); }

std::optional<SocketAddress> Resolver::numeric(std::string_view host, std::uint16_t port,
                                               AddressFamily family) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (family != AddressFamily::V6) {
    if (auto a = SocketAddress::ipv4(host, port)) return a;
  }
  if (family != AddressFamily::V4) {
    if (auto a = SocketAddress::ipv6(host, port)) return a;
  }
  return std::nullopt;
}

ResolveRequest Resolver::resolve(EventLoop& loop, std::string_view host, std::uint16_t port,
                                 ResolveOptions options, Callback cb) {
  KEEL_ASSERT_IN_LOOP(loop, "Resolver::resolve");
  if (options.timeout <= Duration::zero()) options.timeout = ResolveOptions{}.timeout;
  options.maxAddresses = std::max<std::size_t>(options.maxAddresses, 1);
  auto l = std::make_shared<Lookup>();
  l->loop = &loop;
  l->port = port;
  l->options = options;
  l->resolver = state_;
  l->cb = std::move(cb);

  // Outcomes known at once still go through the loop: never inside resolve().
  auto now = [&](std::error_code ec, std::vector<SocketAddress> addrs) {
    loop.queueInLoop([l, ec, addrs = std::move(addrs)]() mutable { finish(l, ec, std::move(addrs)); });
    return ResolveRequest(l);
  };
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  // 253 is the longest DNS name; /etc/hosts names are no longer in practice.
  if (host.empty() || host.size() > 253 || host.find('\0') != std::string_view::npos)
    return now(ResolveError::BadHost, {});
  if (auto a = numeric(host, port, options.family)) return now({}, {*a});
  if (numeric(host, port, AddressFamily::Any)) return now(ResolveError::NoAddressInFamily, {});

  l->host.assign(host);
  {
    std::lock_guard lock(state_->mutex);
    if (state_->queue.size() + state_->running >= options_.maxQueued) {
      KEEL_WARN("resolver: {} lookups queued or running (the cap); refusing {}", options_.maxQueued, l->host);
      return now(std::make_error_code(std::errc::resource_unavailable_try_again), {});
    }
    if (!ensureWorker(state_))
      return now(std::make_error_code(std::errc::resource_unavailable_try_again), {});
    state_->queue.push_back(l);
  }
  state_->wake.notify_one();
  l->timer = loop.runAfter(options.timeout, [l] {
    l->timer = {};
    finish(l, std::make_error_code(std::errc::timed_out), {});
  });
  return ResolveRequest(l);
}

}  // namespace keel
