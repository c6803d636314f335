// An EventLoop running on a thread of its own.
//
// start() blocks until the loop exists and returns it; stop() (or the
// destructor) quits the loop and joins the thread. The loop object lives on
// the thread's stack, so it is destroyed on the thread that ran it. The
// thread blocks the asynchronous signals (core/ThreadSignals.h): a SIGTERM
// sent to the process is taken by an application thread, and a
// SignalWatcher on this loop still receives it.
//
// Thread-safety: start/stop from the owning (creating) thread only.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "keel/core/EventLoop.h"

namespace keel {

class LoopThread {
 public:
  // Runs on the new thread, inside the loop, before the first iteration.
  using InitCallback = std::function<void(EventLoop&)>;

  explicit LoopThread(std::string name = {}, InitCallback init = {}, LoopOptions options = {});
  ~LoopThread();
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;

  EventLoop& start();
  void stop();
  [[nodiscard]] EventLoop* loop() const noexcept { return loop_; }

 private:
  void run();

  std::string name_;
  InitCallback init_;
  LoopOptions options_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable ready_;
  EventLoop* loop_ = nullptr;  // guarded by mutex_ until start() returns
};

}  // namespace keel
