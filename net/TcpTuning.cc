#include "keel/net/TcpTuning.h"

#include <atomic>

#include "keel/core/Log.h"
#include "keel/net/Buffer.h"
#include "keel/net/Connection.h"
#include "keel/net/Pipeline.h"

namespace keel {
namespace {

// Set by whichever loop thread first meets a Unix-domain connection: one
// debug line per process is enough to explain why no TCP option was set.
std::atomic<bool> unixLogged{false};

}  // namespace

std::string_view toString(TcpProfile profile) noexcept {
  switch (profile) {
    case TcpProfile::Kernel:
      return "kernel";
    case TcpProfile::Latency:
      return "latency";
    case TcpProfile::Throughput:
      return "throughput";
  }
  return "unknown";
}

void TcpTuning::handlerAdded(HandlerContext& ctx) {
  ctx_ = &ctx;
  Connection& conn = ctx.connection();
  tcp_ = conn.localAddress().isInet();
  if (!tcp_ && !unixLogged.exchange(true, std::memory_order_relaxed)) {
    KEEL_DEBUG("conn {}: not a TCP connection ({}); TcpTuning leaves socket options alone", conn.id(),
               conn.localAddress().toString());
  }
  apply(conn);
}

void TcpTuning::handlerRemoved(HandlerContext& ctx) {
  Connection& conn = ctx.connection();
  profile_ = TcpProfile::Kernel;
  apply(conn);
  ctx_ = nullptr;
}

void TcpTuning::setProfile(TcpProfile profile) {
  profile_ = profile;
  if (ctx_ != nullptr) apply(ctx_->connection());
}

void TcpTuning::apply(Connection& conn) {
  const bool latency = profile_ == TcpProfile::Latency;
  if (conn.closed()) {
    corked_ = false;  // the descriptor is gone; nothing to set or undo
    return;
  }
  conn.setWriteCoalescing(latency);
  if (corked_ && profile_ != TcpProfile::Throughput) uncork(conn);
  if (!tcp_) return;
  Socket& s = conn.socket();
  (void)check(conn, "setsockopt(TCP_NODELAY)", s.setNoDelay(latency));
  if (latency) {
    (void)check(conn, "setsockopt(TCP_QUICKACK)", s.setQuickAck(true));
  } else if (!corked_) {
    // Another owner of the socket may have corked it; the profiles other
    // than Throughput-inside-a-dispatch all mean "not corked".
    (void)check(conn, "setsockopt(TCP_CORK)", s.setCork(false));
  }
}

void TcpTuning::rearmQuickAck(Connection& conn) {
  if (!tcp_ || conn.closed()) return;
  if (quickAckOnlyWhenSilent_ && wroteInDispatch_) {
    ++quickAcksSkipped_;
    return;
  }
  if (check(conn, "setsockopt(TCP_QUICKACK)", conn.socket().setQuickAck(true))) ++quickAcksArmed_;
}

void TcpTuning::onReadComplete(HandlerContext& ctx) {
  if (profile_ != TcpProfile::Latency) {
    ctx.fireReadComplete();
    return;
  }
  // Writes the handlers after this one make here still answer the read.
  dispatching_ = quickAckOnlyWhenSilent_;
  ctx.fireReadComplete();
  dispatching_ = false;
  rearmQuickAck(ctx.connection());
}

void TcpTuning::onData(HandlerContext& ctx, Buffer& in) {
  if (profile_ == TcpProfile::Latency && quickAckOnlyWhenSilent_) {
    wroteInDispatch_ = false;
    dispatching_ = true;
    ctx.fireData(in);
    dispatching_ = false;
    return;
  }
  if (profile_ != TcpProfile::Throughput) {
    ctx.fireData(in);
    return;
  }
  dispatching_ = true;
  ctx.fireData(in);
  dispatching_ = false;
  if (corked_) uncork(ctx.connection());  // the dispatch's writes are all in: push them out
}

std::error_code TcpTuning::write(HandlerContext& ctx, const Slices& data) {
  // Corking lazily, at the first write of a dispatch, puts the cork on
  // before any byte of the answer reaches the kernel (the effect of corking
  // before the dispatch) without a syscall for reads that answer nothing.
  if (dispatching_ && !corked_ && tcp_ && profile_ == TcpProfile::Throughput) cork(ctx.connection());
  if (dispatching_ && !data.empty()) wroteInDispatch_ = true;
  return ctx.write(data);
}

void TcpTuning::flush(HandlerContext& ctx) {
  ctx.flush();                            // hand keel's queue to the kernel while still corked...
  if (corked_) uncork(ctx.connection());  // ...then let it all go at once
}

void TcpTuning::cork(Connection& conn) {
  if (conn.closed()) return;
  if (check(conn, "setsockopt(TCP_CORK)", conn.socket().setCork(true))) {
    corked_ = true;
    ++corks_;
  }
}

void TcpTuning::uncork(Connection& conn) {
  corked_ = false;
  if (conn.closed()) return;  // closing released everything held
  (void)check(conn, "setsockopt(TCP_CORK)", conn.socket().setCork(false));
}

bool TcpTuning::check(Connection& conn, std::string_view what, std::error_code ec) {
  if (!ec) return true;
  ++failures_;
  const std::string msg = Socket::errorMessage(what, conn.socket().fd(), ec);
  if (failures_ == 1) {
    KEEL_WARN("conn {}: {}", conn.id(), msg);
  } else {
    KEEL_DEBUG("conn {}: {} (failure {})", conn.id(), msg, failures_);
  }
  return false;
}

}  // namespace keel
