#include "base/metrics.h"

#include <bit>
#include <cmath>

#include <fmt/format.h>

namespace weft {

void Histogram::Observe(uint64_t v) {
  int i = v <= 1 ? 0 : std::bit_width(v - 1);
  if (i >= kBuckets) i = kBuckets - 1;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

uint64_t Histogram::Quantile(double q) const {
  uint64_t total = count();
  if (total == 0) return 0;
  // The rank of the quantile, rounded up: the median of 5 observations is the 3rd.
  uint64_t want = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total)));
  if (want == 0) want = 1;
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += bucket(i);
    if (seen >= want) return uint64_t{1} << i;
  }
  return uint64_t{1} << (kBuckets - 1);
}

MetricsRegistry::Entry& MetricsRegistry::Find(const std::string& name, const std::string& help) {
  auto& e = entries_[name];
  if (e.help.empty()) e.help = help;
  return e;
}

Counter* MetricsRegistry::counter(const std::string& name, const std::string& help) {
  std::lock_guard lock(mu_);
  auto& e = Find(name, help);
  if (!e.counter) e.counter = std::make_unique<Counter>();
  return e.counter.get();
}

Gauge* MetricsRegistry::gauge(const std::string& name, const std::string& help) {
  std::lock_guard lock(mu_);
  auto& e = Find(name, help);
  if (!e.gauge) e.gauge = std::make_unique<Gauge>();
  return e.gauge.get();
}

Histogram* MetricsRegistry::histogram(const std::string& name, const std::string& help) {
  std::lock_guard lock(mu_);
  auto& e = Find(name, help);
  if (!e.histogram) e.histogram = std::make_unique<Histogram>();
  return e.histogram.get();
}

std::string MetricsRegistry::PrometheusText() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, e] : entries_) {
    if (!e.help.empty()) out += fmt::format("# HELP {} {}\n", name, e.help);
    if (e.counter) out += fmt::format("# TYPE {} counter\n{} {}\n", name, name, e.counter->value());
    if (e.gauge) out += fmt::format("# TYPE {} gauge\n{} {}\n", name, name, e.gauge->value());
    if (e.histogram) {
      out += fmt::format("# TYPE {} histogram\n", name);
      uint64_t cumulative = 0;
      for (int i = 0; i < Histogram::kBuckets; ++i) {
        cumulative += e.histogram->bucket(i);
        out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, uint64_t{1} << i, cumulative);
      }
      out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, e.histogram->count(), name,
                         e.histogram->sum(), name, e.histogram->count());
    }
  }
  return out;
}

}  // namespace weft
