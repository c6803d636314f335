// N event loops on N threads, for spreading connections.
//
// With zero threads the pool hands out the base loop, so a single-threaded
// server and a multi-threaded one use the same code path.
//
// Thread-safety: start/stop/next/forHash from the base loop's thread.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "keel/core/LoopThread.h"

namespace keel {

class LoopThreadPool {
 public:
  LoopThreadPool(EventLoop& base, std::size_t threads, std::string name = "keel-io",
                 LoopOptions options = {});
  ~LoopThreadPool();
  LoopThreadPool(const LoopThreadPool&) = delete;
  LoopThreadPool& operator=(const LoopThreadPool&) = delete;

  void start(const LoopThread::InitCallback& init = {});
  void stop();

  // Round-robin.
  [[nodiscard]] EventLoop& next();
  // The same hash always maps to the same loop (affinity by key).
  [[nodiscard]] EventLoop& forHash(std::size_t hash);
  [[nodiscard]] std::vector<EventLoop*> loops() const;
  [[nodiscard]] std::size_t size() const noexcept { return loops_.empty() ? 1 : loops_.size(); }

 private:
  EventLoop& base_;
  std::size_t count_;
  std::string name_;
  LoopOptions options_;
  std::vector<std::unique_ptr<LoopThread>> threads_;
  std::vector<EventLoop*> loops_;
  std::size_t next_ = 0;
};

}  // namespace keel
