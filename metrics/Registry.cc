#include "keel/metrics/Registry.h"

#include <bit>
#include <cmath>
#include <stdexcept>

#include "keel/metrics/internal/Families.h"

namespace keel {
namespace metrics_detail {
namespace {

// Bit i set: shard i has an owner. The last shard is the overflow shard,
// never owned, always written with atomic adds.
constexpr std::size_t kOwnable = kMetricShards - 1;
static_assert(kOwnable <= 32, "the ownership mask is 32 bits");
std::atomic<std::uint32_t> g_owned{0};

struct ThreadShard {
  ShardRef ref{kOwnable, true};
  ThreadShard() noexcept {
    std::uint32_t owned = g_owned.load(std::memory_order_relaxed);
    for (;;) {
      const auto free = static_cast<std::uint32_t>(~owned);
      const auto i = static_cast<std::size_t>(std::countr_zero(free));
      if (i >= kOwnable) return;  // all taken: share the overflow shard
      // Acquire: this thread's first load of the shard must see the last
      // store of the thread that gave it back.
      if (g_owned.compare_exchange_weak(owned, owned | (std::uint32_t{1} << i), std::memory_order_acq_rel,
                                        std::memory_order_relaxed)) {
        ref = {i, false};
        return;
      }
    }
  }
  ~ThreadShard() {
    // Release: publishes this thread's last stores to the next owner.
    if (!ref.shared) g_owned.fetch_and(~(std::uint32_t{1} << ref.index), std::memory_order_release);
  }
  ThreadShard(const ThreadShard&) = delete;
  ThreadShard& operator=(const ThreadShard&) = delete;
};

thread_local ThreadShard t_shard;

}  // namespace

ShardRef threadShard() noexcept { return t_shard.ref; }

bool validMetricName(std::string_view name) noexcept {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool validLabelName(std::string_view name) noexcept {
  return validMetricName(name) && name.find(':') == std::string_view::npos && name.substr(0, 2) != "__";
}

}  // namespace metrics_detail

std::uint64_t Counter::value() const noexcept {
  std::uint64_t sum = 0;
  for (const auto& s : shards_) sum += s.w[0].load(std::memory_order_relaxed);
  return sum;
}

void Gauge::set(double v) noexcept {
  bits_.store(std::bit_cast<std::uint64_t>(v), std::memory_order_relaxed);
}

void Gauge::add(double delta) noexcept {
  std::uint64_t old = bits_.load(std::memory_order_relaxed);
  while (!bits_.compare_exchange_weak(old, std::bit_cast<std::uint64_t>(std::bit_cast<double>(old) + delta),
                                      std::memory_order_relaxed)) {
  }
}

double Gauge::value() const noexcept { return std::bit_cast<double>(bits_.load(std::memory_order_relaxed)); }

namespace {
constexpr std::size_t kCellsPerLine = metrics_detail::kCacheLine / sizeof(std::uint64_t);
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), stride_((bounds_.size() + 2 + kCellsPerLine - 1) / kCellsPerLine) {
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1]))
      throw std::invalid_argument("histogram bounds must be finite and increasing");
  }
  lines_ = std::vector<metrics_detail::Line>(kMetricShards * stride_);
}

std::atomic<std::uint64_t>& Histogram::cell(std::size_t shard, std::size_t i) noexcept {
  return lines_[shard * stride_ + i / kCellsPerLine].w[i % kCellsPerLine];
}
const std::atomic<std::uint64_t>& Histogram::cell(std::size_t shard, std::size_t i) const noexcept {
  return lines_[shard * stride_ + i / kCellsPerLine].w[i % kCellsPerLine];
}

void Histogram::observe(double v) noexcept {
  if (std::isnan(v)) return;  // would poison _sum for ever
  std::size_t b = 0;
  while (b < bounds_.size() && v > bounds_[b]) ++b;
  const auto s = metrics_detail::threadShard();
  metrics_detail::add(cell(s.index, b), 1, s.shared);
  auto& sum = cell(s.index, bounds_.size() + 1);
  std::uint64_t old = sum.load(std::memory_order_relaxed);
  if (!s.shared) {
    sum.store(std::bit_cast<std::uint64_t>(std::bit_cast<double>(old) + v), std::memory_order_relaxed);
    return;
  }
  while (!sum.compare_exchange_weak(old, std::bit_cast<std::uint64_t>(std::bit_cast<double>(old) + v),
                                    std::memory_order_relaxed)) {
  }
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot snap;
  snap.cumulative.assign(bounds_.size() + 1, 0);
  for (std::size_t s = 0; s < kMetricShards; ++s) {
    for (std::size_t b = 0; b <= bounds_.size(); ++b)
      snap.cumulative[b] += cell(s, b).load(std::memory_order_relaxed);
    snap.sum += std::bit_cast<double>(cell(s, bounds_.size() + 1).load(std::memory_order_relaxed));
  }
  for (std::size_t b = 1; b < snap.cumulative.size(); ++b) snap.cumulative[b] += snap.cumulative[b - 1];
  snap.count = snap.cumulative.back();
  return snap;
}

Registry::Registry() = default;
Registry::~Registry() = default;

Registry::Family& Registry::family(std::string_view name, std::string_view help, MetricType type) {
  if (!metrics_detail::validMetricName(name))
    throw std::invalid_argument("bad metric name: " + std::string(name));
  std::string full(name);
  constexpr std::string_view kTotal = "_total";
  if (type == MetricType::Counter && !full.ends_with(kTotal)) full += kTotal;
  for (auto& f : families_) {
    if (f->name != full) continue;
    if (f->type != type) throw std::invalid_argument("metric " + full + " registered with another type");
    return *f;
  }
  auto f = std::make_unique<Family>();
  f->name = std::move(full);
  f->help = std::string(help);
  f->type = type;
  families_.push_back(std::move(f));
  return *families_.back();
}

Registry::Series& Registry::series(Family& f, const MetricLabels& labels) {
  for (const auto& [k, v] : labels) {
    if (!metrics_detail::validLabelName(k) || (f.type == MetricType::Histogram && k == "le"))
      throw std::invalid_argument("bad label name for " + f.name + ": " + k);
  }
  for (auto& s : f.series) {
    if (s->labels == labels) return *s;
  }
  auto s = std::make_unique<Series>();
  s->labels = labels;
  f.series.push_back(std::move(s));
  return *f.series.back();
}

Counter& Registry::counter(std::string_view name, std::string_view help, const MetricLabels& labels) {
  std::lock_guard lock(mutex_);
  Series& s = series(family(name, help, MetricType::Counter), labels);
  if (s.read) throw std::invalid_argument("metric " + std::string(name) + " is a callback series");
  if (!s.counter) s.counter = std::make_unique<Counter>();
  return *s.counter;
}

Gauge& Registry::gauge(std::string_view name, std::string_view help, const MetricLabels& labels) {
  std::lock_guard lock(mutex_);
  Series& s = series(family(name, help, MetricType::Gauge), labels);
  if (s.read) throw std::invalid_argument("metric " + std::string(name) + " is a callback series");
  if (!s.gauge) s.gauge = std::make_unique<Gauge>();
  return *s.gauge;
}

Histogram& Registry::histogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                               const MetricLabels& labels) {
  std::lock_guard lock(mutex_);
  Series& s = series(family(name, help, MetricType::Histogram), labels);
  if (!s.histogram) {
    s.histogram = std::make_unique<Histogram>(std::move(bounds));
  } else if (s.histogram->bounds() != bounds) {
    throw std::invalid_argument("histogram " + std::string(name) + " registered with other bounds");
  }
  return *s.histogram;
}

void Registry::counterFn(std::string_view name, std::string_view help, const MetricLabels& labels,
                         std::function<double()> read) {
  std::lock_guard lock(mutex_);
  Series& s = series(family(name, help, MetricType::Counter), labels);
  if (s.read || s.counter) throw std::invalid_argument("metric " + std::string(name) + " already registered");
  s.read = std::move(read);
}

void Registry::gaugeFn(std::string_view name, std::string_view help, const MetricLabels& labels,
                       std::function<double()> read) {
  std::lock_guard lock(mutex_);
  Series& s = series(family(name, help, MetricType::Gauge), labels);
  if (s.read || s.gauge) throw std::invalid_argument("metric " + std::string(name) + " already registered");
  s.read = std::move(read);
}

void Registry::onScrape(std::function<void()> hook) {
  std::lock_guard lock(mutex_);
  hooks_.push_back(std::move(hook));
}

std::vector<double> Registry::latencyBuckets() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
}

}  // namespace keel
