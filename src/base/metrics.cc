#include "base/metrics.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <string_view>
#include <vector>

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

namespace {

// A name may carry labels: "weft_x_total{code=\"POOL_FULL\"}" is one series of the family
// weft_x_total (counters and gauges; histograms add their own le label and take none).
std::string_view Family(const std::string& name) { return std::string_view(name).substr(0, name.find('{')); }

}  // namespace

MetricsRegistry::ScrapeHook MetricsRegistry::OnScrape(std::function<void()> refresh) {
  uint64_t id;
  {
    std::lock_guard lock(hooks_mu_);
    id = next_hook_++;
    hooks_.emplace(id, std::move(refresh));
  }
  return ScrapeHook(nullptr, [this, id](void*) {
    std::lock_guard lock(hooks_mu_);
    hooks_.erase(id);
  });
}

std::string MetricsRegistry::PrometheusText() const {
  {
    std::lock_guard hooks(hooks_mu_);
    for (const auto& [id, refresh] : hooks_) refresh();
  }
  std::lock_guard lock(mu_);
  // The series of a family must be contiguous under one HELP and TYPE, and the map's order alone
  // would put "x_total_bytes" between "x_total" and "x_total{...}".
  std::vector<const std::pair<const std::string, Entry>*> order;
  for (const auto& kv : entries_) order.push_back(&kv);
  std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) { return Family(a->first) < Family(b->first); });
  std::string out;
  std::string_view last;
  for (const auto* kv : order) {
    const auto& [name, e] = *kv;
    const std::string_view family = Family(name);
    const bool first = family != last;
    last = family;
    if (first && !e.help.empty()) out += fmt::format("# HELP {} {}\n", family, e.help);
    if (e.counter) {
      if (first) out += fmt::format("# TYPE {} counter\n", family);
      out += fmt::format("{} {}\n", name, e.counter->value());
    }
    if (e.gauge) {
      if (first) out += fmt::format("# TYPE {} gauge\n", family);
      out += fmt::format("{} {}\n", name, e.gauge->value());
    }
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
