#include "keel/net/Client.h"

#include <utility>

#include "keel/core/Log.h"
#include "keel/net/internal/ConnectionAccess.h"
#include "keel/net/internal/Connector.h"

namespace keel {
namespace {

// Process-wide, so that two clients' connections never share an id in the log.
std::atomic<std::uint64_t> g_nextConnectionId{1};

// disconnect() completions waiting for one close. Each comes from an
// explicit call, but a caller looping on disconnect() must not grow this
// without bound; past the cap a completion is refused with an error log.
constexpr std::size_t kMaxDisconnectWaiters = 1024;

ConnectorOptions connectorOptions(const ClientOptions& o) {
  ConnectorOptions c;
  c.connectTimeout = o.connectTimeout;
  c.attemptDelay = o.attemptDelay;
  c.retry = o.reconnect != ClientOptions::Reconnect::Never;
  c.resolve = o.resolve;
  c.resolver = o.resolver;
  c.retryInitial = o.retryInitial;
  c.retryMax = o.retryMax;
  c.jitterPercent = o.jitterPercent;
  c.maxAttempts = o.maxAttempts;
  return c;
}

}  // namespace

std::string_view toString(ClientState s) noexcept {
  switch (s) {
    case ClientState::Disconnected:
      return "disconnected";
    case ClientState::Connecting:
      return "connecting";
    case ClientState::Connected:
      return "connected";
  }
  return "unknown";
}

Client::Client(EventLoop& loop, SocketAddress server, ClientOptions options)
    : Client(loop, std::vector<SocketAddress>{server}, options) {}

Client::Client(EventLoop& loop, std::vector<SocketAddress> servers, ClientOptions options)
    : loop_(loop),
      options_(options),
      connector_(std::make_unique<Connector>(loop, std::move(servers), connectorOptions(options_))) {
  init();
}

Client::Client(EventLoop& loop, HostPort server, ClientOptions options)
    : loop_(loop),
      options_(options),
      connector_(std::make_unique<Connector>(loop, std::move(server), connectorOptions(options_))) {
  init();
}

Client::Client(EventLoop& loop, std::string host, std::uint16_t port, ClientOptions options)
    : Client(loop, HostPort{std::move(host), port}, options) {}

void Client::init() {
  // The connector is a member and dies with the client, so `this` is safe
  // in its callbacks: they only run from its own timers and watcher.
  connector_->setConnected([this](Socket socket) { onConnected(std::move(socket)); });
  connector_->setFailed([this](std::error_code ec) { onConnectFailed(ec); });
}

Client::~Client() {
  // Checked in every build: a client torn down under its loop's feet corrupts
  // the loop's timers and watchers, far from the cause.
  loop_.assertInLoopThread("Client::~Client");
  *alive_ = false;  // from here on, queued tasks and the connection's hook skip this client
  connector_->stop();
  disconnectDone_.clear();
  Connection::Ptr conn = std::move(current_);
  {
    std::lock_guard lock(mutex_);
    connection_.reset();
  }
  if (conn) {
    conn->abort();  // on the loop thread: closed by the time it returns
    // The destructor may be running inside one of this connection's own
    // callbacks: let go of it only after the current dispatch.
    loop_.queueInLoop([conn = std::move(conn)] {});
  }
}

void Client::setPipelineInit(PipelineInit f) {
  if (started_.load(std::memory_order_acquire)) KEEL_ASSERT_IN_LOOP(loop_, "Client::setPipelineInit");
  pipelineInit_ = std::move(f);
}

void Client::setConnectFailed(ConnectFailed f) {
  if (started_.load(std::memory_order_acquire)) KEEL_ASSERT_IN_LOOP(loop_, "Client::setConnectFailed");
  connectFailed_ = std::move(f);
}

const std::vector<SocketAddress>& Client::servers() const noexcept { return connector_->servers(); }

const std::optional<HostPort>& Client::host() const noexcept { return connector_->host(); }

void Client::runInLoopIfAlive(EventLoop::Task task) {
  if (loop_.isInLoopThread()) {
    // Also checked here: a handler run by the destructor's abort() may call
    // back into the client.
    if (*alive_) task();
    return;
  }
  loop_.queueInLoop([alive = alive_, task = std::move(task)] {
    if (*alive) task();
  });
}

void Client::connect() {
  started_.store(true, std::memory_order_release);
  runInLoopIfAlive([this] { connectInLoop(); });
}

void Client::disconnect(std::function<void()> done) {
  runInLoopIfAlive([this, done = std::move(done)]() mutable { disconnectInLoop(std::move(done)); });
}

void Client::stop() {
  runInLoopIfAlive([this] { stopInLoop(); });
}

int Client::attempts() const noexcept { return connector_->attempts(); }

Connection::Ptr Client::connection() const {
  std::lock_guard lock(mutex_);
  return connection_;
}

void Client::connectInLoop() {
  wanted_ = true;
  if (connector_->connecting()) return;  // the attempt in flight decides
  if (current_) {
    // A connection that is still closing (after disconnect()) cannot be
    // dropped (its output would be lost), and two at once is not what a
    // client is: connect again as soon as it has closed.
    if (current_->state() == ConnectionState::Closing) connectAfterClose_ = true;
    return;
  }
  // Also when waiting to retry: a fresh series starts at once.
  setState(ClientState::Connecting);
  connector_->start();
}

void Client::stopInLoop() {
  wanted_ = false;
  connectAfterClose_ = false;
  connector_->stop();
  if (!current_) setState(ClientState::Disconnected);
}

void Client::disconnectInLoop(std::function<void()> done) {
  stopInLoop();
  // A copy: close() may finish at once, and the hook then clears current_.
  Connection::Ptr conn = current_;
  if (!conn) {
    if (done) {
      loop_.queueInLoop([alive = alive_, done = std::move(done)] {
        if (*alive) done();
      });
    }
    return;
  }
  if (done) {
    if (disconnectDone_.size() >= kMaxDisconnectWaiters) {
      KEEL_ERROR("Client::disconnect: {} completions already waiting; this one will not run",
                 disconnectDone_.size());
    } else {
      disconnectDone_.push_back(std::move(done));
    }
  }
  if (options_.close == ClientOptions::Close::PeerFirst) {
    conn->awaitPeerClose(options_.peerCloseTimeout);
  } else {
    conn->close();
  }
}

void Client::onConnected(Socket socket) {
  auto conn = std::make_shared<Connection>(loop_, std::move(socket),
                                           g_nextConnectionId.fetch_add(1, std::memory_order_relaxed),
                                           options_.connection);
  ConnectionAccess::setClosedHook(*conn, [this, alive = alive_](const Connection::Ptr& c) {
    if (*alive) onConnectionClosed(c);
  });
  current_ = conn;
  KEEL_DEBUG("conn {}: connected to {} ({}) from {}", conn->id(), connector_->describe(),
             conn->peerAddress().toString(), conn->localAddress().toString());
  if (pipelineInit_) pipelineInit_(*conn);
  // The init may have refused the connection (closed it); a closed
  // connection must not be started.
  if (!conn->closed()) ConnectionAccess::start(*conn);
  // Published only now: another thread must never be handed a connection
  // that cannot send yet. If it closed during its start, the hook has
  // already cleared current_ and settled the state.
  if (current_ == conn) {
    {
      std::lock_guard lock(mutex_);
      connection_ = conn;
    }
    setState(ClientState::Connected);
  }
}

void Client::onConnectFailed(std::error_code ec) {
  if (connector_->idle()) {
    wanted_ = false;  // gave up
    setState(ClientState::Disconnected);
  } else {
    setState(ClientState::Connecting);
  }
  if (connectFailed_) connectFailed_(ec);
}

void Client::onConnectionClosed(const Connection::Ptr& conn) {
  // Inside the connection's close: it must outlive this call and whatever
  // its caller still does with it, so the last reference is dropped by a
  // task that runs after the current dispatch.
  if (current_ != conn) return;
  Connection::Ptr dead = std::move(current_);
  {
    std::lock_guard lock(mutex_);
    connection_.reset();
  }
  loop_.queueInLoop([dead = std::move(dead)] {});
  settleAfterClose(*conn);
  if (disconnectDone_.empty()) return;
  // After the close's dispatch, like the connection's release: a completion
  // may then do anything, even destroy the client (the token says so to the
  // ones after it).
  loop_.queueInLoop([alive = alive_, done = std::exchange(disconnectDone_, {})] {
    for (const auto& f : done) {
      if (!*alive) return;
      f();
    }
  });
}

void Client::settleAfterClose(const Connection& conn) {
  if (connectAfterClose_) {
    connectAfterClose_ = false;
    setState(ClientState::Connecting);
    connector_->start();
  } else if (wanted_ && options_.reconnect == ClientOptions::Reconnect::Always) {
    KEEL_DEBUG("conn {} to {} lost ({}); reconnecting", conn.id(), connector_->describe(),
               toString(conn.closeReason().value_or(CloseReason::Error)));
    setState(ClientState::Connecting);
    connector_->restart();
  } else {
    setState(ClientState::Disconnected);
  }
}

}  // namespace keel
