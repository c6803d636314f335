// Counters, gauges and histograms, exposed in the Prometheus text format.
//
//   keel::Registry reg;
//   keel::Counter& served = reg.counter("app_requests", "Requests answered.");
//   keel::Histogram& rtt = reg.histogram("app_rtt_seconds", "RTT.", {0.001, 0.01, 0.1});
//   served.inc();            // any thread, no lock, no allocation
//   rtt.observe(0.004);
//   std::string text = reg.expose();   // what GET /metrics answers
//
// Updates are per thread: a counter or histogram holds kMetricShards shards,
// each on its own cache line, and a thread writes only the shard it owns
// (relaxed load + store, no read-modify-write, so no bus lock and no line
// bouncing between cores). A scrape sums the shards with relaxed loads; it
// may see one update and miss another made at the same instant, never a torn
// value. A thread takes a free shard the first time it updates a metric and
// gives it back when it exits; beyond kMetricShards live threads, the extra
// threads share one overflow shard with atomic adds (correct, just slower).
//
// Registration allocates and takes a lock; do it at start-up and keep the
// returned reference (stable for the registry's life). Registering the same
// name and labels again returns the same metric. A bad name, a name reused
// with another type, or histogram bounds that are not increasing are
// programming errors and throw std::invalid_argument.
//
// Thread-safety: everything is safe from any thread. Callback series
// (counterFn, gaugeFn) and scrape hooks run on the scraping thread, under the
// registry's lock: they must not register, and what they read must outlive
// the registry (or at least the last scrape).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keel {

// Enough for the I/O threads of a server on one machine; more threads work
// (see the overflow shard above).
inline constexpr std::size_t kMetricShards = 16;

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

namespace metrics_detail {

inline constexpr std::size_t kCacheLine = 64;

// The calling thread's shard, and whether it shares it (the overflow shard).
struct ShardRef {
  std::size_t index;
  bool shared;
};
[[nodiscard]] ShardRef threadShard() noexcept;

inline void add(std::atomic<std::uint64_t>& cell, std::uint64_t n, bool shared) noexcept {
  if (shared) {
    cell.fetch_add(n, std::memory_order_relaxed);
  } else {
    cell.store(cell.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
}

struct alignas(kCacheLine) Line {
  std::array<std::atomic<std::uint64_t>, kCacheLine / sizeof(std::uint64_t)> w{};
};

}  // namespace metrics_detail

// Only goes up.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void inc() noexcept { add(1); }
  void add(std::uint64_t n) noexcept {
    const auto s = metrics_detail::threadShard();
    metrics_detail::add(shards_[s.index].w[0], n, s.shared);
  }
  [[nodiscard]] std::uint64_t value() const noexcept;

 private:
  std::array<metrics_detail::Line, kMetricShards> shards_{};
};

// A value that goes up and down. One atomic, not sharded: a gauge is either
// set by one owner (a queue depth, a per-loop figure) or changes rarely, so
// set() is a plain store and add() a compare-exchange loop.
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void set(double v) noexcept;
  void add(double delta) noexcept;
  [[nodiscard]] double value() const noexcept;

 private:
  std::atomic<std::uint64_t> bits_{0};  // the double's bit pattern; 0 is 0.0
};

// Fixed buckets given at registration (upper bounds, increasing, +Inf
// implied). observe() finds the bucket with a linear scan: a dozen bounds
// are faster to scan than to bisect.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void observe(double v) noexcept;

  struct Snapshot {
    std::vector<std::uint64_t> cumulative;  // one per bound, then +Inf (== count)
    double sum = 0;
    std::uint64_t count = 0;
  };
  [[nodiscard]] Snapshot snapshot() const;
  [[nodiscard]] const std::vector<double>& bounds() const noexcept { return bounds_; }

 private:
  [[nodiscard]] std::atomic<std::uint64_t>& cell(std::size_t shard, std::size_t i) noexcept;
  [[nodiscard]] const std::atomic<std::uint64_t>& cell(std::size_t shard, std::size_t i) const noexcept;

  std::vector<double> bounds_;
  std::size_t stride_;  // cells per shard: buckets + 1 (+Inf) + 1 (sum), in whole lines
  std::vector<metrics_detail::Line> lines_;
};

enum class MetricType : std::uint8_t { Counter, Gauge, Histogram };

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Counter names get "_total" appended unless they end with it already.
  Counter& counter(std::string_view name, std::string_view help, const MetricLabels& labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, const MetricLabels& labels = {});
  Histogram& histogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                       const MetricLabels& labels = {});
  // Series whose value is read at scrape time: for figures something else
  // already keeps (ServerStats, EventLoop::load()), so the hot path pays
  // nothing extra for them.
  void counterFn(std::string_view name, std::string_view help, const MetricLabels& labels,
                 std::function<double()> read);
  void gaugeFn(std::string_view name, std::string_view help, const MetricLabels& labels,
               std::function<double()> read);
  // Runs at the start of every scrape, before any series is read (take one
  // snapshot that several callback series then read).
  void onScrape(std::function<void()> hook);

  // The Prometheus text exposition format 0.0.4, every family in
  // registration order.
  [[nodiscard]] std::string expose() const;
  [[nodiscard]] std::uint64_t scrapes() const noexcept { return scrapes_.load(std::memory_order_relaxed); }

  // Bucket bounds in seconds for network round trips: 50 µs to 10 s.
  [[nodiscard]] static std::vector<double> latencyBuckets();

 private:
  struct Series;
  struct Family;
  Family& family(std::string_view name, std::string_view help, MetricType type);
  Series& series(Family& f, const MetricLabels& labels);

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Family>> families_;  // guarded by mutex_
  std::vector<std::function<void()>> hooks_;       // guarded by mutex_
  mutable std::atomic<std::uint64_t> scrapes_{0};
};

}  // namespace keel
