// Copies that ended with an error, in the metrics registry: all of them
// (weft_copy_failures_total) and by error code (weft_copy_errors_total{code="PEER_DOWN"}), so an
// operator sees what kind of failure is rising, not only that one is.
#pragma once

#include <array>
#include <atomic>
#include <span>

#include "base/metrics.h"
#include "base/status.h"

namespace weft::engine {

class CopyFailures {
 public:
  explicit CopyFailures(MetricsRegistry& registry);
  // Counts s when it is an error (an OK status is not counted). Thread-safe, lock-free once the
  // code's series exists (made on its first failure: most codes never occur).
  void Count(const Status& s);
  void CountAll(std::span<const Status> results);

 private:
  MetricsRegistry& registry_;
  Counter* total_;
  std::array<std::atomic<Counter*>, static_cast<size_t>(kLastCode) + 1> by_code_{};
};

}  // namespace weft::engine
