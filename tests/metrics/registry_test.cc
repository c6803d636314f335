// The registry and its text exposition: exact output for a known registry,
// escaping, cumulative histogram buckets, name rules, and shards written
// from many threads (more than kMetricShards, so the overflow shard is
// exercised) summing exactly. The threaded tests are what tsan checks.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "keel/metrics/Registry.h"

namespace keel {
namespace {

TEST(Registry, ExposesAKnownRegistryExactly) {
  Registry reg;
  Counter& requests = reg.counter("app_requests", "Requests served.", {{"code", "200"}});
  Counter& errors = reg.counter("app_requests_total", "ignored: the first help wins", {{"code", "500"}});
  Gauge& temp = reg.gauge("app_temperature_celsius", "Temperature.");
  Histogram& lat = reg.histogram("app_latency_seconds", "Latency.", {0.1, 0.5, 1});
  reg.gaugeFn("app_answer", "From a callback.", {}, [] { return 42.0; });
  requests.add(3);
  errors.inc();
  temp.set(-1.5);
  // Binary fractions, so that the sum prints exactly.
  lat.observe(0.0625);
  lat.observe(0.5);  // on a bound: counted in that bucket (le is inclusive)
  lat.observe(0.75);
  lat.observe(3);
  EXPECT_EQ(reg.expose(),
            "# HELP app_requests_total Requests served.\n"
            "# TYPE app_requests_total counter\n"
            "app_requests_total{code=\"200\"} 3\n"
            "app_requests_total{code=\"500\"} 1\n"
            "# HELP app_temperature_celsius Temperature.\n"
            "# TYPE app_temperature_celsius gauge\n"
            "app_temperature_celsius -1.5\n"
            "# HELP app_latency_seconds Latency.\n"
            "# TYPE app_latency_seconds histogram\n"
            "app_latency_seconds_bucket{le=\"0.1\"} 1\n"
            "app_latency_seconds_bucket{le=\"0.5\"} 2\n"
            "app_latency_seconds_bucket{le=\"1\"} 3\n"
            "app_latency_seconds_bucket{le=\"+Inf\"} 4\n"
            "app_latency_seconds_sum 4.3125\n"
            "app_latency_seconds_count 4\n"
            "# HELP app_answer From a callback.\n"
            "# TYPE app_answer gauge\n"
            "app_answer 42\n");
  EXPECT_EQ(reg.scrapes(), 1u);
}

TEST(Registry, EscapesLabelValuesAndHelp) {
  Registry reg;
  reg.counter("esc", "a \\ back\nslash", {{"path", "C:\\dir \"q\"\nnext"}}).inc();
  EXPECT_EQ(reg.expose(),
            "# HELP esc_total a \\\\ back\\nslash\n"
            "# TYPE esc_total counter\n"
            "esc_total{path=\"C:\\\\dir \\\"q\\\"\\nnext\"} 1\n");
}

TEST(Registry, HistogramLabelsComeBeforeLeAndSpecialValuesAreSpelledOut) {
  Registry reg;
  Histogram& h = reg.histogram("h", "H.", {1}, {{"loop", "0"}});
  h.observe(0.5);
  h.observe(std::numeric_limits<double>::quiet_NaN());  // ignored
  reg.gaugeFn("inf", "Inf.", {}, [] { return std::numeric_limits<double>::infinity(); });
  const std::string text = reg.expose();
  EXPECT_NE(text.find("h_bucket{loop=\"0\",le=\"1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_bucket{loop=\"0\",le=\"+Inf\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_count{loop=\"0\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("inf +Inf\n"), std::string::npos) << text;
}

TEST(Registry, SameNameAndLabelsGiveTheSameMetric) {
  Registry reg;
  Counter& a = reg.counter("c", "C.", {{"k", "v"}});
  Counter& b = reg.counter("c_total", "C.", {{"k", "v"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &reg.counter("c", "C.", {{"k", "w"}}));
}

TEST(Registry, ProgrammingErrorsThrow) {
  Registry reg;
  EXPECT_THROW(reg.counter("1bad", "x"), std::invalid_argument);
  EXPECT_THROW(reg.counter("bad-name", "x"), std::invalid_argument);
  EXPECT_THROW(reg.counter("ok", "x", {{"__reserved", "v"}}), std::invalid_argument);
  reg.gauge("g_total", "x");
  EXPECT_THROW(reg.counter("g", "x"), std::invalid_argument) << "a name keeps its type";
  EXPECT_THROW(reg.histogram("h", "x", {1, 1}), std::invalid_argument) << "bounds must increase";
  EXPECT_THROW(reg.histogram("h2", "x", {1}, {{"le", "1"}}), std::invalid_argument);
  reg.gaugeFn("fn", "x", {}, [] { return 1.0; });
  EXPECT_THROW(reg.gaugeFn("fn", "x", {}, [] { return 2.0; }), std::invalid_argument);
}

TEST(Registry, ScrapeHooksRunBeforeTheSeriesAreRead) {
  Registry reg;
  double snapshot = 0;
  int hooks = 0;
  reg.onScrape([&] {
    ++hooks;
    snapshot = 7;
  });
  reg.gaugeFn("snap", "S.", {}, [&] { return snapshot; });
  EXPECT_NE(reg.expose().find("snap 7\n"), std::string::npos);
  EXPECT_EQ(hooks, 1);
}

TEST(Registry, GaugeSetAndAdd) {
  Gauge g;
  g.set(10);
  g.add(-2.5);
  EXPECT_DOUBLE_EQ(g.value(), 7.5);
}

// More writer threads than shards, each incrementing while a scraper reads:
// the final sums are exact, and a scrape never goes backwards.
TEST(Registry, ShardsWrittenFromManyThreadsSumExactly) {
  Registry reg;
  Counter& c = reg.counter("hits", "Hits.");
  Histogram& h = reg.histogram("sizes", "Sizes.", {10, 100});
  constexpr int kThreads = static_cast<int>(kMetricShards) + 4;
  constexpr int kPerThread = 20000;
  std::atomic<bool> done{false};
  std::uint64_t lastSeen = 0;
  bool monotonic = true;
  std::thread scraper([&] {
    while (!done.load()) {
      const std::uint64_t v = c.value();
      if (v < lastSeen) monotonic = false;
      lastSeen = v;
      (void)reg.expose();
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        c.inc();
        h.observe(t % 2 == 0 ? 5.0 : 50.0);
      }
    });
  }
  for (auto& w : writers) w.join();
  done = true;
  scraper.join();
  EXPECT_TRUE(monotonic);
  EXPECT_EQ(c.value(), std::uint64_t{kThreads} * kPerThread);
  const Histogram::Snapshot s = h.snapshot();
  const std::uint64_t even = (kThreads + 1) / 2, odd = kThreads / 2;
  EXPECT_EQ(s.cumulative[0], even * kPerThread);
  EXPECT_EQ(s.cumulative[1], (even + odd) * kPerThread);
  EXPECT_EQ(s.count, std::uint64_t{kThreads} * kPerThread);
  EXPECT_DOUBLE_EQ(
      s.sum, 5.0 * static_cast<double>(even * kPerThread) + 50.0 * static_cast<double>(odd * kPerThread));
}

// A thread that exits gives its shard back; the next thread that takes it
// continues from the value left there.
TEST(Registry, ShardsAreReusedAfterThreadsExit) {
  Counter c;
  for (int round = 0; round < 3 * static_cast<int>(kMetricShards); ++round) {
    std::thread([&] { c.add(2); }).join();
  }
  EXPECT_EQ(c.value(), 6 * kMetricShards);
}

}  // namespace
}  // namespace keel
