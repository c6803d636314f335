#include "keel/metrics/MetricsServer.h"

#include <future>
#include <string>
#include <string_view>

#include "keel/heartbeat/IdleReaper.h"
#include "keel/metrics/Registry.h"
#include "keel/net/Buffer.h"
#include "keel/net/Server.h"

namespace keel {
namespace {

// One request, one answer, then the connection is shut down.
class MetricsHttp final : public Handler {
 public:
  MetricsHttp(Registry& registry, std::size_t maxRequest) : registry_(registry), maxRequest_(maxRequest) {}
  [[nodiscard]] std::string_view name() const noexcept override { return "metrics-http"; }

  void onData(HandlerContext& ctx, Buffer& in) override {
    if (answered_) {  // anything after the request is ignored
      in.retrieveAll();
      return;
    }
    const std::string_view req = in.view();
    const std::size_t end = req.find("\r\n\r\n");
    if (end == std::string_view::npos) {
      if (req.size() > maxRequest_) answer(ctx, "431 Request Header Fields Too Large", "request too large\n");
      return;
    }
    if (end > maxRequest_) return answer(ctx, "431 Request Header Fields Too Large", "request too large\n");
    const std::string_view line = req.substr(0, req.find("\r\n"));
    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || !line.substr(sp2 + 1).starts_with("HTTP/1."))
      return answer(ctx, "400 Bad Request", "bad request\n");
    const std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    target = target.substr(0, target.find('?'));  // Prometheus may add ?name[]=..., which is ignored
    if (target != "/metrics") return answer(ctx, "404 Not Found", "try /metrics\n");
    if (method != "GET" && method != "HEAD")
      return answer(ctx, "405 Method Not Allowed", "GET only\n", "GET, HEAD");
    const std::string body = registry_.expose();
    answer(ctx, "200 OK", body, {}, "text/plain; version=0.0.4; charset=utf-8", method == "HEAD");
  }

 private:
  void answer(HandlerContext& ctx, std::string_view status, std::string_view body,
              std::string_view allow = {}, std::string_view type = "text/plain; charset=utf-8",
              bool headOnly = false) {
    answered_ = true;
    std::string head;
    head.reserve(160);
    head += "HTTP/1.1 ";
    head += status;
    head += "\r\nContent-Type: ";
    head += type;
    head += "\r\nContent-Length: ";
    head += std::to_string(body.size());
    if (!allow.empty()) {
      head += "\r\nAllow: ";
      head += allow;
    }
    head += "\r\nConnection: close\r\n\r\n";
    if (!headOnly) head += body;
    (void)ctx.write(head);  // a failed write means the connection is closing anyway
    ctx.shutdown(CloseReason::LocalClose);
  }

  Registry& registry_;
  std::size_t maxRequest_;
  bool answered_ = false;
};

}  // namespace

MetricsServer::MetricsServer(Registry& registry, SocketAddress listen, MetricsServerOptions options)
    : registry_(registry), listen_(listen), options_(options) {}

MetricsServer::~MetricsServer() { stop(); }

std::error_code MetricsServer::start() {
  if (server_) return std::make_error_code(std::errc::already_connected);
  EventLoop& loop = thread_.start();
  std::error_code result;
  std::promise<void> done;
  loop.runInLoop([&] {
    ServerOptions so;
    so.maxConnections = options_.maxConnections;
    so.outputBudget = options_.outputBudget;
    so.stopTimeout = std::chrono::seconds(1);
    server_ = std::make_unique<Server>(loop, listen_, so);
    server_->setPipelineInit([this](Connection& c) {
      IdleLimits idle;
      idle.all = options_.idleTimeout;
      c.pipeline().emplaceLast<IdleReaper>(idle, IdleAction::Close);
      c.pipeline().emplaceLast<MetricsHttp>(registry_, options_.maxRequestBytes);
    });
    result = server_->start();
    if (result) {
      server_.reset();
    } else {
      bound_ = server_->listenAddress();
    }
    done.set_value();
  });
  done.get_future().wait();
  if (result) thread_.stop();
  return result;
}

void MetricsServer::stop() {
  EventLoop* loop = thread_.loop();
  if (loop == nullptr) return;
  if (server_) {
    std::promise<void> done;
    loop->runInLoop([&] {
      server_.reset();  // closes the listener and every connection on this loop
      done.set_value();
    });
    done.get_future().wait();
  }
  thread_.stop();
}

}  // namespace keel
