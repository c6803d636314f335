// Waiting for child processes with a deadline, without a polling loop: a
// pidfd becomes readable when the child exits, so the wait is an event.
// Used by every test that forks (peers that must be SIGSTOPped, moved into
// another network namespace, or killed mid-transfer; the example binaries).
#pragma once

#include <chrono>
#include <optional>

#include <sys/types.h>

namespace keel::test {

// Waits up to `timeout` for child `pid` to exit and reaps it: its raw wait
// status (for WIFEXITED and friends), or nullopt if it is still running (or
// is not our child).
[[nodiscard]] std::optional<int> waitExit(pid_t pid, std::chrono::milliseconds timeout);

// The exit code of a raw wait status, or 128 + the signal that ended it, as
// a shell reports it.
[[nodiscard]] int exitCode(int rawStatus) noexcept;

// SIGKILL (which also ends a stopped process), then reaps it. For
// destructors: a child never outlives the test that forked it.
void killAndReap(pid_t pid) noexcept;

}  // namespace keel::test
