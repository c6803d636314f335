// Timer queue micro-benchmarks: keel::TimerWheel against a classic
// red-black-tree timer queue (std::multimap keyed by deadline), side by side,
// at 1k, 100k and 1M pending timers.
//
//   ScheduleCancel<Q>/N  N timers pending (delays uniform in 1 ms..60 s); each
//                        iteration schedules one more at a random delay and
//                        cancels it. One iteration = one schedule+cancel pair.
//   ScheduleExpire<Q>/N  N timers pending; each iteration moves the fake clock
//                        by a fixed step chosen so that on average one timer
//                        fires per iteration, and every timer that fires
//                        re-schedules itself with a fresh random delay, so N
//                        stays constant. One operation = one expiry plus the
//                        schedule it triggers ("ns_per_fire"; "fired/iter"
//                        should read ~1).
//
// Both queues see the same delays, the same clock steps and the same
// callbacks (a functor holding a pointer and an integer, which fits
// std::function's small-object buffer, so no callback allocates). Random
// delays are generated before the timed loop and cycled. Time is a fake clock.

#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "keel/core/Time.h"
#include "keel/core/TimerWheel.h"

namespace {

using keel::Duration;
using keel::TimePoint;
using Callback = std::function<void()>;

// ---- the classic tree queue ------------------------------------------------

// Deadline-ordered multimap; a handle is the iterator of the timer's node, so
// cancel is an erase by iterator. Equal deadlines fire in scheduling order.
// Unlike TimerWheel, a handle must refer to a pending timer when cancelled
// (the classic design has no generation check).
class TreeTimerQueue {
 public:
  struct Entry {
    Callback cb;
  };
  using Map = std::multimap<TimePoint, Entry>;
  struct Handle {
    Map::iterator it;
  };

  Handle schedule(TimePoint now, Duration delay, Callback cb) {
    if (delay < Duration::zero()) delay = Duration::zero();
    return Handle{q_.emplace(now + delay, Entry{std::move(cb)})};
  }

  bool cancel(Handle h) noexcept {
    q_.erase(h.it);
    return true;
  }

  // Fires every timer whose deadline is at or before `now`; returns how many.
  std::size_t advance(TimePoint now) {
    std::size_t fired = 0;
    while (!q_.empty()) {
      const auto it = q_.begin();
      if (it->first > now) break;
      Callback cb = std::move(it->second.cb);
      q_.erase(it);
      cb();
      ++fired;
    }
    return fired;
  }

  [[nodiscard]] std::size_t size() const noexcept { return q_.size(); }

 private:
  Map q_;
};

// ---- uniform adapters -------------------------------------------------------

struct Wheel {
  using Handle = keel::TimerId;
  keel::TimerWheel w;
  Wheel(TimePoint origin, std::size_t capacity) : w(origin, std::chrono::milliseconds(1)) {
    w.reserve(capacity);
  }
  Handle schedule(TimePoint now, Duration delay, Callback cb) {
    return w.schedule(now, delay, std::move(cb));
  }
  bool cancel(Handle h) noexcept { return w.cancel(h); }
  std::size_t advance(TimePoint now) { return w.advance(now); }
  [[nodiscard]] std::size_t size() const noexcept { return w.size(); }
};

struct Tree {
  using Handle = TreeTimerQueue::Handle;
  TreeTimerQueue q;
  Tree(TimePoint /*origin*/, std::size_t /*capacity*/) {}
  Handle schedule(TimePoint now, Duration delay, Callback cb) {
    return q.schedule(now, delay, std::move(cb));
  }
  bool cancel(Handle h) noexcept { return q.cancel(h); }
  std::size_t advance(TimePoint now) { return q.advance(now); }
  [[nodiscard]] std::size_t size() const noexcept { return q.size(); }
};

// ---- workload data ------------------------------------------------------------

constexpr Duration kMinDelay = std::chrono::milliseconds(1);
constexpr Duration kMaxDelay = std::chrono::seconds(60);
constexpr std::size_t kDelayCount = std::size_t{1} << 16;
constexpr std::size_t kDelayMask = kDelayCount - 1;
const TimePoint kOrigin = TimePoint{} + std::chrono::hours(1);

// Delays cycled inside the timed loops (same sequence for both queues).
const std::vector<Duration>& loopDelays() {
  static const std::vector<Duration> delays = [] {
    std::mt19937_64 rng(0x6b65656cU);
    std::uniform_int_distribution<std::int64_t> dist(kMinDelay.count(), kMaxDelay.count());
    std::vector<Duration> v(kDelayCount);
    for (auto& d : v) d = Duration(dist(rng));
    return v;
  }();
  return delays;
}

// n delays for the initial fill, uniform in [kMinDelay, kMaxDelay].
std::vector<Duration> uniformFill(std::size_t n) {
  std::mt19937_64 rng(1234567);
  std::uniform_int_distribution<std::int64_t> dist(kMinDelay.count(), kMaxDelay.count());
  std::vector<Duration> v(n);
  for (auto& d : v) d = Duration(dist(rng));
  return v;
}

// n remaining lifetimes drawn from the steady state of "every timer re-arms
// with a uniform 0..max delay when it fires": density falls linearly from 0 to
// max (r = max * (1 - sqrt(u))). Starting there means the expiry rate is at
// its long-run value from the first iteration instead of half of it.
std::vector<Duration> steadyStateFill(std::size_t n) {
  std::mt19937_64 rng(7654321);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const auto span = static_cast<double>(kMaxDelay.count());
  std::vector<Duration> v(n);
  for (auto& d : v) d = Duration(static_cast<std::int64_t>(span * (1.0 - std::sqrt(unit(rng)))));
  return v;
}

// ---- benchmarks ---------------------------------------------------------------

template <class Q>
void ScheduleCancel(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<Duration>& delays = loopDelays();
  const TimePoint now = kOrigin;
  std::uint64_t sink = 0;  // what the (never fired) callbacks would touch

  Q q(kOrigin, n + 1);
  {
    const std::vector<Duration> fill = uniformFill(n);
    for (std::size_t i = 0; i < n; ++i) {
      auto h =
          q.schedule(now, fill[i], [p = &sink, k = static_cast<int>(i)] { *p += static_cast<unsigned>(k); });
      benchmark::DoNotOptimize(h);
    }
  }

  std::size_t k = 0;
  for (auto _ : state) {
    auto h = q.schedule(now, delays[k & kDelayMask],
                        [p = &sink, v = static_cast<int>(k)] { *p += static_cast<unsigned>(v); });
    benchmark::DoNotOptimize(h);
    bool cancelled = q.cancel(h);
    benchmark::DoNotOptimize(cancelled);
    ++k;
  }

  if (q.size() != n) state.SkipWithError("pending count changed");
  benchmark::DoNotOptimize(sink);
  state.SetItemsProcessed(state.iterations());
  state.counters["ns_per_op"] =
      benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

template <class Q>
class Rearming {
 public:
  Rearming(std::size_t n, TimePoint origin) : q_(origin, n + 16), now_(origin), delays_(loopDelays().data()) {
    handles_.resize(n);
    const std::vector<Duration> fill = steadyStateFill(n);
    for (std::size_t i = 0; i < n; ++i) {
      handles_[i] = q_.schedule(now_, fill[i], Fire{this, static_cast<std::uint32_t>(i)});
    }
  }

  std::size_t step(Duration by) {
    now_ += by;
    return q_.advance(now_);
  }

  [[nodiscard]] std::size_t size() const noexcept { return q_.size(); }

 private:
  struct Fire {
    Rearming* self;
    std::uint32_t index;
    void operator()() const { self->rearm(index); }
  };

  void rearm(std::uint32_t index) {
    handles_[index] = q_.schedule(now_, delays_[next_++ & kDelayMask], Fire{this, index});
  }

  Q q_;
  TimePoint now_;
  const Duration* delays_;
  std::size_t next_ = 0;
  std::vector<typename Q::Handle> handles_;
};

template <class Q>
void ScheduleExpire(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  // Every timer lives (min+max)/2 on average, so n pending timers expire at
  // n / mean per unit of time; step = mean / n gives one expiry per step.
  const Duration meanLifetime = (kMinDelay + kMaxDelay) / 2;
  const Duration step = meanLifetime / static_cast<std::int64_t>(n);

  auto timers = std::make_unique<Rearming<Q>>(n, kOrigin);

  std::size_t fired = 0;
  for (auto _ : state) {
    fired += timers->step(step);
  }
  benchmark::DoNotOptimize(fired);

  if (timers->size() != n) state.SkipWithError("pending count changed");
  const auto firedD = static_cast<double>(fired);
  state.SetItemsProcessed(static_cast<std::int64_t>(fired));
  state.counters["fired/iter"] = benchmark::Counter(firedD, benchmark::Counter::kAvgIterations);
  state.counters["ns_per_fire"] =
      benchmark::Counter(firedD, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

BENCHMARK_TEMPLATE(ScheduleCancel, Wheel)->Arg(1000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kNanosecond);
BENCHMARK_TEMPLATE(ScheduleCancel, Tree)->Arg(1000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kNanosecond);
BENCHMARK_TEMPLATE(ScheduleExpire, Wheel)->Arg(1000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kNanosecond);
BENCHMARK_TEMPLATE(ScheduleExpire, Tree)->Arg(1000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kNanosecond);

}  // namespace

BENCHMARK_MAIN();
