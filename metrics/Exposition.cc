// The Prometheus text exposition format, version 0.0.4: per family a
// "# HELP" and a "# TYPE" line, then one sample per line; histograms as
// cumulative _bucket{le=...} samples ending with le="+Inf", then _sum and
// _count.
#include <charconv>
#include <cmath>

#include "keel/metrics/Registry.h"
#include "keel/metrics/internal/Families.h"

namespace keel {
namespace {

// Label values escape backslash, double quote and newline; help text
// escapes backslash and newline only.
void appendEscaped(std::string& out, std::string_view text, bool quote) {
  for (const char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

void appendNumber(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[64];
  // Integral values (most counters) print without an exponent: 1e+06 is
  // valid, but 1000000 is what a person grepping the output expects.
  const auto r = std::abs(v) < 9007199254740992.0 && v == std::trunc(v)
                     ? std::to_chars(buf, buf + sizeof buf, static_cast<std::int64_t>(v))
                     : std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void appendNumber(std::string& out, std::uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// name{k="v",...,extra="value"} with the braces left out when empty.
void appendSeriesName(std::string& out, std::string_view name, std::string_view suffix,
                      const MetricLabels& labels, std::string_view extraKey = {},
                      std::string_view extraValue = {}) {
  out += name;
  out += suffix;
  if (labels.empty() && extraKey.empty()) return;
  out += '{';
  bool first = true;
  auto one = [&](std::string_view k, std::string_view v) {
    if (!first) out += ',';
    first = false;
    out += k;
    out += "=\"";
    appendEscaped(out, v, true);
    out += '"';
  };
  for (const auto& [k, v] : labels) one(k, v);
  if (!extraKey.empty()) one(extraKey, extraValue);
  out += '}';
}

std::string_view typeName(MetricType t) noexcept {
  switch (t) {
    case MetricType::Counter:
      return "counter";
    case MetricType::Gauge:
      return "gauge";
    case MetricType::Histogram:
      return "histogram";
  }
  return "untyped";
}

void appendHistogram(std::string& out, const std::string& name, const MetricLabels& labels,
                     const Histogram& h) {
  const Histogram::Snapshot snap = h.snapshot();
  std::string le;
  for (std::size_t b = 0; b <= h.bounds().size(); ++b) {
    le.clear();
    if (b < h.bounds().size()) {
      appendNumber(le, h.bounds()[b]);
    } else {
      le = "+Inf";
    }
    appendSeriesName(out, name, "_bucket", labels, "le", le);
    out += ' ';
    appendNumber(out, snap.cumulative[b]);
    out += '\n';
  }
  appendSeriesName(out, name, "_sum", labels);
  out += ' ';
  appendNumber(out, snap.sum);
  out += '\n';
  appendSeriesName(out, name, "_count", labels);
  out += ' ';
  appendNumber(out, snap.count);
  out += '\n';
}

}  // namespace

std::string Registry::expose() const {
  std::lock_guard lock(mutex_);
  scrapes_.fetch_add(1, std::memory_order_relaxed);
  for (const auto& hook : hooks_) hook();
  std::string out;
  out.reserve(families_.size() * 160);
  for (const auto& f : families_) {
    if (f->series.empty()) continue;
    out += "# HELP ";
    out += f->name;
    out += ' ';
    appendEscaped(out, f->help, false);
    out += "\n# TYPE ";
    out += f->name;
    out += ' ';
    out += typeName(f->type);
    out += '\n';
    for (const auto& s : f->series) {
      if (s->histogram) {
        appendHistogram(out, f->name, s->labels, *s->histogram);
        continue;
      }
      appendSeriesName(out, f->name, {}, s->labels);
      out += ' ';
      if (s->read) {
        appendNumber(out, s->read());
      } else if (s->counter) {
        appendNumber(out, s->counter->value());
      } else if (s->gauge) {
        appendNumber(out, s->gauge->value());
      }
      out += '\n';
    }
  }
  return out;
}

}  // namespace keel
