// Time types used across keel. Everything is std::chrono on the monotonic
// clock; there is no `double seconds` anywhere in the API.
#pragma once

#include <chrono>

namespace keel {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = Clock::duration;  // nanoseconds on Linux

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

}  // namespace keel
