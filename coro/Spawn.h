// spawn(loop, task): runs a Task<void> as a detached root on `loop`.
//
//   keel::spawn(loop, pinger(loop), [](std::exception_ptr e) { ... });
//
// The task starts at once, inside spawn(), and runs until its first
// suspension. From then on the loop owns its frame:
//  - it ends by itself when the task returns (the frame goes back to the
//    thread's FramePool);
//  - an exception that escapes it goes to `onError` (called on the loop
//    thread, after the task's frame is unwound); with no handler it is
//    logged and the loop carries on;
//  - when the loop is destroyed with the task still suspended, its frame is
//    destroyed without being resumed: every awaiter in it deregisters and
//    cancels its timer, locals are destroyed in reverse order, and no code
//    after the suspension point runs.
//
// Loop thread only (asserted where assertions are on): the frame is
// allocated from the calling thread's pool and its awaiters use the loop's
// timers. From another thread, call spawn inside loop.runInLoop.
#pragma once

#include <cstddef>
#include <exception>
#include <functional>

#include "keel/core/EventLoop.h"
#include "keel/coro/Task.h"

namespace keel {

using CoroErrorHandler = std::function<void(std::exception_ptr)>;

void spawn(EventLoop& loop, Task<void> task, CoroErrorHandler onError = {});

// Spawned tasks on `loop` that have not finished yet.
[[nodiscard]] std::size_t spawnedCount(EventLoop& loop) noexcept;

// What a root does with an exception when nobody handles it: logs it.
void logCoroException(std::exception_ptr e, const char* where) noexcept;

}  // namespace keel
