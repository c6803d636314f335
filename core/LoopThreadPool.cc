#include "keel/core/LoopThreadPool.h"

namespace keel {

LoopThreadPool::LoopThreadPool(EventLoop& base, std::size_t threads, std::string name, LoopOptions options)
    : base_(base), count_(threads), name_(std::move(name)), options_(options) {}

LoopThreadPool::~LoopThreadPool() { stop(); }

void LoopThreadPool::start(const LoopThread::InitCallback& init) {
  base_.assertInLoopThread();
  for (std::size_t i = 0; i < count_; ++i) {
    auto t = std::make_unique<LoopThread>(name_ + "-" + std::to_string(i), init, options_);
    loops_.push_back(&t->start());
    threads_.push_back(std::move(t));
  }
  if (count_ == 0 && init) init(base_);
}

void LoopThreadPool::stop() {
  for (auto& t : threads_) t->stop();
  threads_.clear();
  loops_.clear();
}

EventLoop& LoopThreadPool::next() {
  if (loops_.empty()) return base_;
  EventLoop& loop = *loops_[next_];
  next_ = (next_ + 1) % loops_.size();
  return loop;
}

EventLoop& LoopThreadPool::forHash(std::size_t hash) {
  if (loops_.empty()) return base_;
  return *loops_[hash % loops_.size()];
}

std::vector<EventLoop*> LoopThreadPool::loops() const {
  if (loops_.empty()) return {&base_};
  return loops_;
}

}  // namespace keel
