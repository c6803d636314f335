#include "support/LoopClient.h"

namespace keel::test {

LoopClient::LoopClient(EventLoop& loop, SocketAddress server, Client::PipelineInit init) : loop_(loop) {
  runOn(loop_, [&] {
    client_ = std::make_unique<Client>(loop_, server);
    client_->setPipelineInit(std::move(init));
    client_->connect();
  });
}

LoopClient::~LoopClient() {
  runOn(loop_, [&] { client_.reset(); });
}

}  // namespace keel::test
