#include "keel/core/LoopThread.h"

#include <pthread.h>

#include "keel/core/ThreadSignals.h"

namespace keel {

LoopThread::LoopThread(std::string name, InitCallback init, LoopOptions options)
    : name_(std::move(name)), init_(std::move(init)), options_(options) {}

LoopThread::~LoopThread() { stop(); }

EventLoop& LoopThread::start() {
  // Signals sent to the process go to the application's threads, never to
  // this loop (see ThreadSignals.h).
  thread_ = startThreadWithoutSignals([this] { run(); });
  std::unique_lock lock(mutex_);
  ready_.wait(lock, [this] { return loop_ != nullptr; });
  return *loop_;
}

void LoopThread::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    if (loop_ != nullptr) loop_->quit();
  }
  thread_.join();
}

void LoopThread::run() {
  if (!name_.empty()) ::pthread_setname_np(::pthread_self(), name_.substr(0, 15).c_str());
  EventLoop loop(options_);
  if (init_) init_(loop);
  {
    std::lock_guard lock(mutex_);
    loop_ = &loop;
  }
  ready_.notify_one();
  loop.loop();
  std::lock_guard lock(mutex_);
  loop_ = nullptr;
}

}  // namespace keel
