// Runs a loop with one timer and one cross-thread task; exits 0 when both ran.
#include <keel/core/EventLoop.h>
#include <keel/core/LoopThread.h>

#include <cstdio>

int main() {
  keel::EventLoop loop;
  int fired = 0;
  keel::LoopThread other;
  keel::EventLoop& remote = other.start();
  remote.runInLoop([&loop, &fired] {
    loop.runInLoop([&loop, &fired] {
      ++fired;
      loop.quit();
    });
  });
  (void)loop.runAfter(std::chrono::milliseconds(1), [&fired] { ++fired; });
  loop.loop();
  while (fired < 2) loop.runOnce(std::chrono::milliseconds(5));
  std::printf("consumer: ok (%d events)\n", fired);
  return fired == 2 ? 0 : 1;
}
