// The registry's storage, shared by Registry.cc (registration) and
// Exposition.cc (the text format). Not installed.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "keel/metrics/Registry.h"

namespace keel {

struct Registry::Series {
  MetricLabels labels;
  std::unique_ptr<Counter> counter;
  std::unique_ptr<Gauge> gauge;
  std::unique_ptr<Histogram> histogram;
  std::function<double()> read;  // callback series
};

struct Registry::Family {
  std::string name;  // counters: with the _total suffix
  std::string help;
  MetricType type;
  std::vector<std::unique_ptr<Series>> series;
};

namespace metrics_detail {

// [a-zA-Z_:][a-zA-Z0-9_:]* for metric names; labels may not use ':'.
[[nodiscard]] bool validMetricName(std::string_view name) noexcept;
[[nodiscard]] bool validLabelName(std::string_view name) noexcept;

}  // namespace metrics_detail
}  // namespace keel
