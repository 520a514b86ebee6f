// Metrics registry: counters, gauges and histograms, rendered in Prometheus text format.
// One registry per pool or engine (no process-global registry); instruments are created once
// and updated lock-free on hot paths.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace weft {

class Counter {
 public:
  // Returns the value before the addition.
  uint64_t Add(uint64_t n = 1) { return value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }
  // For a series that mirrors a total kept elsewhere (set by a scrape hook, MetricsRegistry::OnScrape).
  void SetTotal(uint64_t v) { value_.store(v, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void Set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  void Add(int64_t d) { value_.fetch_add(d, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// Power-of-two buckets: bucket i counts observations <= 2^i (in the histogram's unit).
class Histogram {
 public:
  static constexpr int kBuckets = 48;
  void Observe(uint64_t v);
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  uint64_t sum() const { return sum_.load(std::memory_order_relaxed); }
  uint64_t bucket(int i) const { return buckets_[i].load(std::memory_order_relaxed); }
  // Upper bound of the bucket holding quantile q (0 < q <= 1); 0 when empty.
  uint64_t Quantile(double q) const;

 private:
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_{0};
};

class MetricsRegistry {
 public:
  // Returns the instrument with this name, creating it on first use. Names follow Prometheus
  // rules (weft_copy_bytes_total); the pointer stays valid for the registry's life. A counter's
  // or gauge's name may carry labels, weft_x_total{code="POOL_FULL"}: one series of the family
  // weft_x_total, rendered with the family's other series under one HELP and TYPE. Each call
  // takes the registry's lock: look a series up once, not on every event.
  Counter* counter(const std::string& name, const std::string& help = "");
  Gauge* gauge(const std::string& name, const std::string& help = "");
  Histogram* histogram(const std::string& name, const std::string& help = "");

  // Runs `refresh` at the start of every PrometheusText, so that a source which keeps counts of
  // its own (a data server's statistics) sets its series when they are read instead of on every
  // event. Hooks run one at a time, outside the registry's lock (they may look series up). The
  // hook stays until the returned handle goes; once its destructor returns, `refresh` is not
  // running and never runs again, so destroy the handle before what `refresh` reads. The
  // registry must outlive the handle.
  using ScrapeHook = std::shared_ptr<void>;
  [[nodiscard]] ScrapeHook OnScrape(std::function<void()> refresh);

  std::string PrometheusText() const;

 private:
  struct Entry {
    std::string help;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  Entry& Find(const std::string& name, const std::string& help);
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
  mutable std::mutex hooks_mu_;  // held while hooks run, so a handle's destructor waits for them
  std::map<uint64_t, std::function<void()>> hooks_;
  uint64_t next_hook_ = 0;
};

}  // namespace weft
